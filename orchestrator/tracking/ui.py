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
import sys
from pathlib import Path

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
