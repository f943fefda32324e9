"""Facts about this process and host that results and runs record: free ports, package versions, the git
commit, peak memory (and giving freed memory back), the rank in a process group and rank 0's word on a decision. A leaf module (it imports nothing of the project), so the training loop, the trial
and the MLflow side can all use it without importing each other."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import importlib.metadata
import resource
import socket
import subprocess
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# Versions recorded with every result and sweep run: the packages whose behaviour decides the numbers.
VERSIONED = ("peft-arena", "torch", "transformers", "peft", "deepspeed", "ray", "optuna", "mlflow")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and its world's size in the torch process group (0, 1 outside one)."""
    import torch

    if not torch.distributed.is_initialized():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def rank_zeros(value: T) -> T:
    """Rank 0's `value` on every rank (the value itself outside a process group). What the ranks then do
    together (score the suites the base-score cache lacks, the checkpoints left unscored) must be decided
    once: files read on each rank could differ, another trial writing the cache meanwhile."""
    import torch

    if rank_and_world()[1] == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def package_versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_commit() -> str:
    """The commit of the code that runs, or "unknown" outside a git checkout (an installed wheel)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def return_freed_memory() -> None:
    """Hand what a finished trial freed back to the OS. A Tune worker runs trial after trial
    (`reuse_actors`), each in a new thread, and glibc keeps the memory a trial freed in its malloc arenas:
    on the default model a reused worker's resident memory grew by 0.5-0.9 GB a trial (10.6 GB after 16
    trials) until Ray's memory monitor killed it. glibc's `malloc_trim` is the one call that returns it; no
    library wraps it. Elsewhere (macOS, musl) there is nothing to trim."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:
        trim(0)


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS
