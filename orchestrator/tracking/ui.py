"""The browser views of a sweep: the MLflow UI on its tracking store, and optuna-dashboard on its Optuna
study (Pareto front, parallel coordinates, parameter importances), both on 127.0.0.1 unless told otherwise.

A UI bound beyond loopback serves every run to whoever reaches the port, so it runs MLflow's own
basic-auth app, whose admin password comes from the environment (`MLFLOW_AUTH_ADMIN_PASSWORD`) or a
file, never from a default; `--insecure` is the explicit, warned way without it. optuna-dashboard has no
authentication, so beyond loopback it needs `--insecure` too.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from orchestrator.config import ConfigError
from orchestrator.process import is_loopback
from orchestrator.storage.sweep_dir import SweepDir
from orchestrator.tracking import server

PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"


def admin_password(password_file: str | None) -> str | None:
    """From `--password-file` (its first line) or the environment; None when neither gives one."""
    if password_file:
        try:
            lines = Path(password_file).read_text().splitlines()
        except OSError as err:
            raise ConfigError(f"--password-file = {password_file!r}: cannot be read ({err.strerror})") from None
        if not lines or not lines[0].strip():
            raise ConfigError(f"--password-file = {password_file!r}: empty; allowed: a file whose first line is the password")
        return lines[0].strip()
    return os.environ.get(PASSWORD_ENV) or None


def mlflow_ui(where: SweepDir, host: str, port: int, password: str | None, insecure: bool) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command and environment for a sweep's UI: plain on loopback; beyond it, MLflow's
    basic-auth app (admin `admin`, the given password) unless `insecure`."""
    command, server_env = server.server_command(where.mlflow_uri, where.mlflow_artifact_location, host, port)
    if is_loopback(host) or insecure:
        return command, server_env
    if password is None:
        raise ConfigError(f"--host = {host!r}: a UI others can reach needs a password for MLflow's basic-auth app; "
                          f"allowed: set {PASSWORD_ENV} or --password-file FILE, or pass --insecure to serve it "
                          "without authentication")
    where.mlflow_auth_config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {where.mlflow_auth_uri}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    # the password goes through the environment only, never into a file of the sweep dir; the CSRF key
    # is the user's if set, else fresh for this server (its sessions end with it)
    env = {"MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32), **server_env,
           "MLFLOW_AUTH_CONFIG_PATH": str(where.mlflow_auth_config), PASSWORD_ENV: password}
    return [*command, "--app-name", "basic-auth"], env


def study_dashboard(where: SweepDir, host: str, port: int, insecure: bool) -> list[str]:
    """optuna-dashboard on the sweep's study storage."""
    if not is_loopback(host) and not insecure:
        raise ConfigError(f"--host = {host!r}: optuna-dashboard has no authentication; allowed: a loopback host "
                          "(127.0.0.1, localhost), or --insecure to serve the study to the network anyway")
    program = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which("optuna-dashboard")
    if program is None:
        raise ConfigError("--study: optuna-dashboard is not installed; allowed: pip install optuna-dashboard")
    return [program, where.optuna_url, "--host", host, "--port", str(port)]


class _Stop(Exception):
    """SIGINT or SIGTERM reached `serve`: stop the server and return."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the server's whole process group, then SIGKILL to whatever is left of it after `grace`:
    a server's workers (gunicorn's, uvicorn's) share its group, and one that ignores SIGTERM would keep the
    port and hang its clients after the server itself has gone."""
    def group_alive() -> bool:
        proc.poll()  # reap the server itself once it has exited: a zombie still counts as a member
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + grace
    while time.time() < deadline and group_alive():
        time.sleep(0.2)
    if group_alive():
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def serve(command: list[str], env: dict[str, str] | None, url: str, ready_path: str, on_ready: Callable[[], None]) -> int:
    """Run a UI server in a process group of its own until it ends, or until this process gets SIGINT
    (Ctrl-C) or SIGTERM; either way the server and every process it started are stopped, so the port is
    free again. `on_ready` runs once the server answers `ready_path` (the URL is printed then, not before)."""
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        try:
            server.wait_healthy(url, timeout=300, path=ready_path, alive=proc)
        except RuntimeError as err:  # it ended on its own: most often, the port was taken
            raise ConfigError(f"--port: {err}; allowed: a free port") from None
        on_ready()
        return proc.wait()
    except _Stop as stop:
        return 128 + stop.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_group(proc)
