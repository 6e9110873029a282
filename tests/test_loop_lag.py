"""The loop-lag split of the data plane's metrics: how late the loop ran, and how much of
that its thread spent ready but without a CPU (RunQueueWait, Linux schedstat), which the
host's other processes cause, not meshd."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from meshd.proxy.lifecycle import RunQueueWait


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_run_queue_wait_counts_the_time_a_ready_thread_had_no_cpu():
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for h in hogs:
            os.sched_setaffinity(h.pid, {cpu})
        os.sched_setaffinity(0, {cpu})     # this thread shares one CPU with two busy processes
        waits = RunQueueWait()
        _busy(0.6)
        shared = waits.since_last()
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        os.sched_setaffinity(0, before)
    time.sleep(0.2)                        # idle: sleeping is not waiting for a CPU
    alone = waits.since_last()
    waits.close()
    # Ready all along, it ran about a third of the time: the rest was run-queue wait.
    assert shared > 0.2, shared
    assert alone < 0.05, alone
    assert waits.since_last() == 0.0       # closed: nothing more is read
