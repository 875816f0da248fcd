"""`ftune serve workers=N`'s supervision (ftune/serve/workers.py), with stand-in worker processes: a signal
stops every worker, a worker that exits on its own takes the others down (exit 1). The real server processes
answering behind one port: tests/serve/test_server.py."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from ftune.serve.workers import supervise

SLEEPER = (time.sleep, (120,))


def test_a_worker_that_exits_stops_the_others_and_the_server_exits_1():
    started = time.monotonic()
    with pytest.raises(SystemExit, match=r"ftune-serve-1 exited with 3; the others were stopped"):
        supervise([SLEEPER, (os._exit, (3,)), SLEEPER])
    assert time.monotonic() - started < 60  # the sleepers were stopped, not waited for


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_is_forwarded_to_every_worker_and_supervise_returns(sig):
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    timer = threading.Timer(3, os.kill, (os.getpid(), sig))  # while the workers start or run
    timer.start()
    started = time.monotonic()
    try:
        supervise([SLEEPER, SLEEPER, SLEEPER])  # returns: no SystemExit, no KeyboardInterrupt
    finally:
        timer.cancel()
    assert time.monotonic() - started < 60  # every worker got the signal, also one started after it
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
