"""The loop-lag split of the data plane's metrics: how late the loop ran, and how much of
that its thread spent ready but without a CPU (RunQueueWait, Linux schedstat), which the
host's other processes cause, not meshd."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

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
        waits.join()
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


def test_the_set_counts_each_joined_thread_and_drops_one_that_ended():
    """The loop's set holds the process's other Python threads too: a GIL holder preempted
    by the kernel keeps the loop waiting on the GIL, host contention rather than meshd's own
    work. A thread joins itself, or is followed by id."""
    cpu = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    waits = RunQueueWait()
    busy_done, leave = threading.Event(), threading.Event()

    def other(join: bool) -> None:
        os.sched_setaffinity(0, {cpu})
        if join:
            waits.join()
        _busy(0.6)
        busy_done.set()
        leave.wait(10)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for h in hogs:
            os.sched_setaffinity(h.pid, {cpu})
        outsider = threading.Thread(target=other, args=(False,))
        outsider.start()
        assert busy_done.wait(10)
        assert waits.since_last() == 0.0      # nothing joined: a thread outside the set is not counted
        waits.follow_python_threads()         # now it is in (by its id), from here on
        leave.set()
        _ended(outsider)
        busy_done.clear()
        leave.clear()
        member = threading.Thread(target=other, args=(True,))
        member.start()
        assert busy_done.wait(10)
        shared = waits.since_last()
        leave.set()
        _ended(member)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        os.sched_setaffinity(0, before)
    assert shared > 0.2, shared   # about two thirds of its 0.6 s were run-queue wait
    waits.since_last()            # what the threads waited on their way out; then they drop out
    assert outsider.native_id not in waits._tids and member.native_id not in waits._tids
    assert threading.get_native_id() in waits._tids  # followed with the others, and alive
    waits.close()


def _ended(thread: threading.Thread) -> None:
    """Join `thread` and wait (bounded) for the kernel to drop its task."""
    tid = thread.native_id
    thread.join()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/self/task/{tid}"):
        assert time.monotonic() < deadline, f"task {tid} still there"
        time.sleep(0.01)


def _blocked_over(metrics, bound: float = 0.005) -> float:
    """How many loop-blocked observations exceeded `bound` so far."""
    value = metrics.registry.get_sample_value
    return (value("meshd_dataplane_loop_blocked_seconds_count")
            - value("meshd_dataplane_loop_blocked_seconds_bucket", {"le": str(bound)}))


@pytest.mark.etcd
def test_what_meshd_itself_holds_the_loop_for_is_still_counted_blocked(etcd, etcd_prefix, tmp_path):
    """Taking the other threads' run-queue wait off must not hide meshd's own stalls: a
    callback on the loop, or another thread holding the GIL while it runs, is blocked time
    (this host has a CPU free for each, so no run-queue wait explains it)."""
    from mesh_harness import Mesh, Origin  # noqa: PLC0415

    m = Mesh(etcd, etcd_prefix, tmp_path, {"i-a1": Origin("a1")})
    try:
        rt = m.a.runtime
        metrics = rt.observe.metrics
        time.sleep(0.3)
        start = _blocked_over(metrics)
        rt.loop.call_soon_threadsafe(time.sleep, 0.03)  # meshd's own callback, 30 ms on the loop
        time.sleep(0.3)
        assert _blocked_over(metrics) - start >= 1

        def hold_the_gil():
            # One C call that never gives the GIL up: sorting 1.5M distinct ints, well over 5 ms.
            sorted(range(1_500_000, 0, -1))
        start = _blocked_over(metrics)
        t = threading.Thread(target=hold_the_gil)
        t.start()
        t.join()
        time.sleep(0.3)
        assert _blocked_over(metrics) - start >= 1
    finally:
        m.close()
