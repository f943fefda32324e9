"""An MLflow tracking server on a sweep's store (or any store): the command and environment it runs with,
and the wait until it answers. The UI (`ui.py`) and the tests that need a live server start it so."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

from orchestrator.process import is_loopback


def server_command(backend_uri: str, artifacts: Any, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """`mlflow server` on a store and artifact folder (a sweep's: `SweepDir.mlflow_uri`, `.mlflow_artifact_location`),
    with the environment to run it in. Loopback unless told otherwise; a wider bind names the Host headers it
    answers. MLflow's job runner (huey consumers for GenAI judges and prompt optimisation, which no sweep
    uses) stays off: it is seven more processes per server and two seconds more before the UI answers."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
               "--artifacts-destination", str(artifacts), "--host", host, "--port", str(port), "--workers", "1"]
    if not is_loopback(host):
        import socket

        command += ["--allowed-hosts", f"{host}:{port},{socket.gethostname()}:{port},localhost:{port},127.0.0.1:{port}"]
    return command, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def wait_healthy(url: str, timeout: float = 120.0, path: str = "/health", alive: subprocess.Popen | None = None) -> None:
    """Until `url + path` answers 200 (MLflow's /health by default); a server process `alive` that ends
    first fails at once with its exit code instead of waiting out the timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with code {alive.returncode} before it answered")
        try:
            with urllib.request.urlopen(f"{url}{path}", timeout=2) as response:  # noqa: S310 - loopback URL we built
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the server at {url} did not answer {path} in {timeout:.0f} s")
