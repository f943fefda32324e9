"""`peft-arena doctor`: is this machine ready? Each check says OK, WARN or FAIL and what to do."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Callable

Check = tuple[str, str, str]  # (status, what, how to fix)
MIN_FREE_GB = 5.0


def _packages() -> Check:
    missing = [m for m in ("torch", "transformers", "peft", "deepspeed", "ray", "optuna", "mlflow", "reasoning_gym")
               if importlib.util.find_spec(m) is None]
    if missing:
        return "FAIL", f"missing packages: {', '.join(missing)}", "run `make install`"
    import torch

    return "OK", f"packages installed (torch {torch.__version__})", ""


def _accelerator() -> Check:
    import torch

    if torch.cuda.is_available():
        return "OK", f"GPU: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)} (DeepSpeed uses NCCL)", ""
    return "OK", "no GPU: DeepSpeed runs on its CPU accelerator with gloo (functional, not fast)", ""


def _deepspeed() -> Check:
    try:
        from orchestrator.trials import trainer  # noqa: F401 - sets DS_ACCELERATOR before deepspeed loads
        from deepspeed.accelerator import get_accelerator

        return "OK", f"DeepSpeed accelerator: {get_accelerator().device_name()}", ""
    except Exception as err:  # noqa: BLE001 - report whatever breaks the import
        return "FAIL", f"DeepSpeed does not load: {str(err).splitlines()[0][:120]}", "reinstall deepspeed (`make install`)"


def _assets() -> Check:
    from evals.sources import cache_dir
    from orchestrator.trials import assets

    missing = assets.missing()
    if missing:
        return "WARN", f"offline assets not prepared: {', '.join(missing)}", "run `peft-arena assets` (or `make assets`)"
    return "OK", f"offline assets in {cache_dir()}", ""


def _disk() -> Check:
    from evals.sources import cache_dir

    free = min(shutil.disk_usage(cache_dir()).free, shutil.disk_usage(Path.cwd()).free) / 1e9
    if free < MIN_FREE_GB:
        return "WARN", f"only {free:.1f} GB free for the cache and runs", f"free at least {MIN_FREE_GB:g} GB"
    return "OK", f"{free:.0f} GB free", ""


def _ray(address: str | None) -> Check:
    if not address or address == "local":
        return "OK", "Ray: a private local cluster is started per sweep", ""
    from orchestrator.config import ConfigError
    from orchestrator.sweep.placement import probe

    try:
        probe(address)
        return "OK", f"Ray cluster answers at {address}", ""
    except ConfigError as err:
        return "FAIL", str(err), "start the cluster (see clusters/) or drop --address"


def _mlflow(uri: str | None) -> Check:
    if not uri:
        return "OK", "MLflow: each sweep keeps a SQLite store in its dir", ""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as response:  # noqa: S310 - user's URI
            return "OK", f"MLflow server healthy at {uri} ({response.status})", ""
    except OSError as err:
        return "FAIL", f"MLflow server not reachable at {uri} ({err})", "start it (`peft-arena ui SWEEP_DIR`) or fix the URI"


def _browser() -> Check:
    if shutil.which("chromium"):
        return "OK", "chromium present (UI and report tests render pages)", ""
    return "WARN", "chromium missing: UI/report browser tests will skip", "apt-get install chromium (make test does)"


def run_checks(address: str | None = None, mlflow_uri: str | None = None) -> list[Check]:
    checks: list[Callable[[], Check]] = [_packages, _accelerator, _deepspeed, _assets, _disk,
                                         lambda: _ray(address), lambda: _mlflow(mlflow_uri), _browser]
    return [check() for check in checks]
