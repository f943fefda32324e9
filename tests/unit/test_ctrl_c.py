"""A Ctrl-C the driver saw is never lost: if the KeyboardInterrupt it raised was swallowed on its way up,
Tune's next loop step raises it again."""
from __future__ import annotations

import os
import signal
import time

import pytest

from orchestrator import callbacks


def test_a_swallowed_ctrl_c_is_raised_again_at_the_next_step():
    previous = callbacks.catch_ctrl_c()
    try:
        with pytest.raises(KeyboardInterrupt):  # a library catching this would lose the Ctrl-C...
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # (cut short: the handler raises)
        with pytest.raises(KeyboardInterrupt):  # ...but the sweep's next step raises it again
            callbacks.StopOnCtrlC().on_step_end(iteration=1, trials=[])
        assert callbacks.INTERRUPTED.is_set()
        callbacks.catch_ctrl_c()  # the next sweep starts with no Ctrl-C remembered
        assert not callbacks.INTERRUPTED.is_set()
        callbacks.StopOnCtrlC().on_step_end(iteration=1, trials=[])  # and does not stop
    finally:
        signal.signal(signal.SIGINT, previous)
