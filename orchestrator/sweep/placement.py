"""Where trials run on Ray: connecting to (or starting) the cluster with the environment workers need,
what one trial reserves, and refusing a trial no node or the cluster could ever hold."""
from __future__ import annotations

import os

from orchestrator.config import ConfigError, SweepConfig


# The driver's settings that trial workers must see (workers on `ray start` nodes do not inherit them).
# Where object storage is and how to reach it, but never credentials: each node brings its own (its
# environment, credential files or instance role), and nothing secret lands in Ray's job metadata.
FORWARDED_ENV = ("PEFT_ARENA_CACHE", "HF_HUB_OFFLINE", "HF_HOME", "MLFLOW_TRACKING_URI", "DISABLE_MLFLOW_INTEGRATION",
                 "TOKENIZERS_PARALLELISM", "TRANSFORMERS_VERBOSITY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "MLFLOW_S3_ENDPOINT_URL")


# The project's four packages are shipped to remote workers (runtime_env py_modules), from a checkout or
# an installed wheel alike; caches and weights that may sit beside them stay home.
SHIPPED_EXCLUDES = ["**/__pycache__", "*.safetensors"]


def concurrent_trials(cfg: SweepConfig, cluster: dict[str, float] | None = None) -> tuple[int, str]:
    """(trials that can run at once, where that comes from): the cluster's totals when connected, capped
    by search.max_concurrent_trials; without a cluster, the config's cap alone."""
    cap = cfg.search.max_concurrent_trials
    if cluster is None:
        return cap, "search.max_concurrent_trials; a connected cluster may allow fewer"
    fits = min(int(cluster.get(kind, 0.0) // need) for kind, need in cfg.resources.totals().items() if need > 0)
    return min(cap, fits), f"cluster {cluster.get('CPU', 0):g} CPU / {cluster.get('GPU', 0):g} GPU, cap {cap}"


def check_placement(cfg: SweepConfig, nodes: list[dict[str, float]]) -> None:
    """A trial the cluster can never place is a config error now, not a sweep that waits forever (Tune and
    Train wait for resources that no node will free). `nodes`: each alive node's total resources."""
    res = cfg.resources
    for kind, need in (("CPU", res.cpus_per_worker), ("GPU", res.gpus_per_worker)):
        largest = max((node.get(kind, 0.0) for node in nodes), default=0.0)
        if need > largest:
            raise ConfigError(f"resources.{kind.lower()}s_per_worker = {need:g}: no node has that many {kind}s "
                              f"(largest: {largest:g}); allowed: at most {largest:g}")
    for kind, need in res.totals().items():
        total = sum(node.get(kind, 0.0) for node in nodes)
        if need > total:
            raise ConfigError(f"resources.workers_per_trial = {res.workers_per_trial}: a trial needs {need:g} {kind}s, "
                              f"the cluster has {total:g}; allowed: workers_per_trial x {kind.lower()}s_per_worker "
                              f"<= {total:g}")


def cluster_totals(cfg: SweepConfig) -> dict[str, float]:
    """The resources of the cluster at `ray.address` (connecting to it), once a trial is known to fit there."""
    import ray

    if cfg.ray.address != "auto":
        probe(cfg.ray.address)
    connect(cfg.ray.address, None)
    check_placement(cfg, alive_nodes())
    return dict(ray.cluster_resources())


def probe(address: str, timeout: float = 3.0) -> None:
    """Refuse an address where nothing listens at once: ray.init would wait minutes for it."""
    import socket

    host, port = address.removeprefix("ray://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except OSError as err:
        raise ConfigError(f"ray.address = {address!r}: nothing answers there ({err.strerror or err}); "
                          "start the cluster first (clusters/), or use local") from None


def connect(address: str, num_cpus: int | None) -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return
    env = {"env_vars": {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}}
    try:
        if address == "local":  # a private cluster (never one already running here), on loopback only
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level="error", runtime_env=env, _node_ip_address="127.0.0.1")
        else:  # remote workers import the driver's own copy of the project's packages
            import analysis
            import evals
            import methods
            import orchestrator

            ray.init(address=address, log_to_driver=False, logging_level="error",
                     runtime_env={**env, "py_modules": [orchestrator, methods, evals, analysis],
                                  "excludes": SHIPPED_EXCLUDES})
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ConfigError(f"ray.address = {address!r}: cannot connect ({str(err).splitlines()[0]})") from None


def alive_nodes() -> list[dict[str, float]]:
    """Each alive node's total resources (CPU, GPU, ...) in the connected cluster."""
    import ray

    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def trial_resources(cfg: SweepConfig) -> dict[str, float]:
    """What Tune reserves for a trial's own process: the one worker's resources, or nothing when Ray Train
    reserves the workers (a Tune trial holding CPUs the workers need could never be placed beside them)."""
    res = cfg.resources
    if res.workers_per_trial > 1:  # Tune refuses an empty request; one byte of memory holds nothing back
        return {"cpu": 0, "memory": 1}
    return {"cpu": res.cpus_per_worker, "gpu": res.gpus_per_worker}
