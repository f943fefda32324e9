"""A reused Tune worker gives back what a finished trial freed (orchestrator.process.return_freed_memory)."""
from __future__ import annotations

import ctypes.util
import os

import numpy as np
import pytest

from orchestrator import process


def resident_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm") or not ctypes.util.find_library("c"),
                    reason="needs Linux's /proc and a C library to trim")
def test_memory_a_trial_freed_goes_back_to_the_os():
    # 400 MB of small blocks (below glibc's mmap threshold, so on the heap), every other one freed: the
    # heap stays fragmented and resident until it is trimmed.
    blocks = [np.ones(10_000) for _ in range(5_000)]
    del blocks[::2]
    freed_before = resident_mb()
    process.return_freed_memory()
    assert freed_before - resident_mb() >= 100  # of the ~200 MB freed, at least half goes back
    assert len(blocks) == 2_500  # the live half is untouched
