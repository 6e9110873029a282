"""Watchers at fleet size (issue 17): 1,000 etcd watch streams opened as meshd opens them
(a `registry.Store` each, watching the whole prefix from a revision, progress notifications
and previous values on) from a few driver processes; one change must reach every one of
them within 2 s at p99.

The full-size run (`-m scale`) also opens 5,000 watch streams, directly and through an
`etcd grpc-proxy` (which coalesces identical watches into one watch on etcd), and reports
etcd's memory per watcher, so docs/scale.md can say where etcd's own limits are.

    pytest bench/test_scale_watchers.py -m scale_ci -s      # CI: 1,000 watchers, 10 changes
    pytest bench/test_scale_watchers.py -m scale -s         # + 5,000 direct and via the proxy
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshd.embedded_etcd import EmbeddedEtcd, find_etcd, free_port
from registry import Store

pytestmark = [pytest.mark.etcd]

REPO = Path(__file__).resolve().parents[1]
PREFIX = "/meshd/v1/"
P99_BOUND = 2.0
# Watch streams per driver process: each is one thread blocked on its stream, as in meshd.
PER_DRIVER = 250
# A driver opens its watches, then says so; this long is allowed for all of them.
OPEN_TIMEOUT = 120.0


def drive(url: str, count: int, start_revision: int) -> None:
    """A driver process: `count` Stores on `url`, each watching PREFIX from `start_revision`;
    prints "<watcher> <path> <time.time()>" for every put it sees, "open" once every stream
    is being read, and ends when stdin closes."""
    lock = threading.Lock()

    def watch(i: int) -> None:
        store = Store([url], prefix=PREFIX, timeout=10.0)
        for _revision, events in store.watch("", start_revision=start_revision):
            now = time.time()
            lines = "".join(f"{i} {ev.path} {now:.6f}\n" for ev in events if ev.type == "put")
            if lines:
                with lock:
                    sys.stdout.write(lines)
                    sys.stdout.flush()
    for i in range(count):
        threading.Thread(target=watch, args=(i,), daemon=True).start()
    print("open", flush=True)
    sys.stdin.read()


@dataclass
class Run:
    """One measurement: per change, the seconds from the put's answer to each watcher's event."""

    watchers: int
    via: str
    latencies: list[float]
    missing: int  # (watcher, change) pairs that never arrived within the timeout
    etcd_rss_mb: tuple[float, float]  # etcd's RSS before the watches opened, and with them open

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))]

    def summary(self) -> str:
        before, after = self.etcd_rss_mb
        return (f"{self.watchers} watchers {self.via}: p50 {self.p(50) * 1000:.0f} ms, "
                f"p99 {self.p(99) * 1000:.0f} ms, max {max(self.latencies) * 1000:.0f} ms "
                f"over {len(self.latencies)} deliveries, {self.missing} missing; "
                f"etcd RSS {before:.0f} -> {after:.0f} MB "
                f"({(after - before) * 1024 / self.watchers:.1f} kB per watcher)")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class Drivers:
    """Driver processes holding `watchers` watch streams on `url`; collects their events."""

    def __init__(self, url: str, watchers: int, start_revision: int):
        code = ("import sys; from bench.test_scale_watchers import drive; "
                "drive(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.seen: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self.procs = []
        self._readers = []
        opened = []
        for d in range(0, watchers, PER_DRIVER):
            n = min(PER_DRIVER, watchers - d)
            proc = subprocess.Popen([sys.executable, "-c", code, url, str(n), str(start_revision)], cwd=REPO,
                                    env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.procs.append(proc)
            ready = threading.Event()
            opened.append(ready)
            reader = threading.Thread(target=self._read, args=(proc, ready), daemon=True)
            reader.start()
            self._readers.append(reader)
        deadline = time.monotonic() + OPEN_TIMEOUT
        for ready in opened:
            assert ready.wait(max(0.0, deadline - time.monotonic())), "a driver did not open its watches"

    def _read(self, proc: subprocess.Popen, ready: threading.Event) -> None:
        for line in proc.stdout:
            if line == "open\n":
                ready.set()
                continue
            _watcher, path, at = line.split()
            with self._lock:
                self.seen.setdefault(path, []).append(float(at))

    def arrivals(self, path: str) -> list[float]:
        with self._lock:
            return list(self.seen.get(path, ()))

    def close(self) -> None:
        for proc in self.procs:
            proc.stdin.close()
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()
        for reader in self._readers:
            reader.join(10)


def measure(url: str, etcd_pid: int, writer: Store, watchers: int, changes: int, via: str,
            timeout: float = 10.0) -> Run:
    """Open `watchers` streams on `url`, wait until each sees a first put, then make
    `changes` puts one at a time, each timed to its last watcher."""
    before = rss_mb(etcd_pid)
    drivers = Drivers(url, watchers, writer.revision() + 1)
    latencies, missing = [], 0
    try:
        def put_and_wait(path: str) -> list[float]:
            writer.put(path, b"x")
            acked = time.time()
            deadline = time.monotonic() + timeout
            while len(drivers.arrivals(path)) < watchers and time.monotonic() < deadline:
                time.sleep(0.005)
            return [max(0.0, t - acked) for t in drivers.arrivals(path)]
        # Streams open lazily: a first change, not timed, proves every one is reading.
        assert len(put_and_wait("scale/warm")) == watchers, "not every watcher saw the first change"
        after = rss_mb(etcd_pid)
        for k in range(changes):
            got = put_and_wait(f"scale/change-{k}")
            latencies.extend(got)
            missing += watchers - len(got)
            time.sleep(0.1)
    finally:
        drivers.close()
    return Run(watchers, via, latencies, missing, (before, after))


@pytest.fixture
def private_etcd(tmp_path):
    """An etcd of this benchmark's own, so its memory is the watchers' and nothing else's."""
    server = EmbeddedEtcd(tmp_path / "etcd", supervise=False).start()
    yield server
    server.stop()


@pytest.fixture
def writer(private_etcd):
    store = Store([private_etcd.url], prefix=PREFIX, timeout=10.0)
    yield store
    store.close()


@pytest.mark.scale_ci
def test_a_change_reaches_1000_watchers_within_2s(private_etcd, writer, gate_figure):
    run = measure(private_etcd.url, private_etcd.pid, writer, 1000, 10, "direct")
    print(run.summary())
    gate_figure("watchers: p99 s from a put to the last of 1,000 watch streams", run.p(99), P99_BOUND)
    assert run.missing == 0, run.summary()
    assert run.p(99) < P99_BOUND, run.summary()


class GrpcProxy:
    """`etcd grpc-proxy start` in front of one etcd: it serves the etcd API and coalesces
    watches of the same range into one watch on etcd."""

    def __init__(self, endpoint: str, log: Path):
        self.port = free_port()
        self._log = open(log, "wb")
        self.proc = subprocess.Popen([find_etcd(), "grpc-proxy", "start", f"--endpoints={endpoint}",
                                      f"--listen-addr=127.0.0.1:{self.port}"], stdout=self._log, stderr=self._log)
        self.url = f"http://127.0.0.1:{self.port}"
        probe = Store([self.url], prefix=PREFIX, timeout=2.0)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    probe.revision()
                    break
                except Exception:  # noqa: BLE001 - not listening yet
                    assert time.monotonic() < deadline, log.read_text()[-2000:]
                    time.sleep(0.2)
        finally:
            probe.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()


@pytest.mark.scale
@pytest.mark.parametrize("watchers", [1000, 5000])
def test_watchers_direct_and_through_the_grpc_proxy(private_etcd, writer, tmp_path, watchers, gate_figure):
    direct = measure(private_etcd.url, private_etcd.pid, writer, watchers, 50, "direct")
    print(direct.summary())
    proxy = GrpcProxy(f"127.0.0.1:{private_etcd.client_port}", tmp_path / "proxy.log")
    try:
        proxied = measure(proxy.url, private_etcd.pid, writer, watchers, 50, "through etcd grpc-proxy")
        proxied_rss = rss_mb(proxy.proc.pid)
    finally:
        proxy.stop()
    print(proxied.summary(), f"(the proxy's own RSS {proxied_rss:.0f} MB)")
    gate_figure(f"watchers: p99 s to the last of {watchers} direct watch streams", direct.p(99), P99_BOUND)
    assert direct.missing == 0 and proxied.missing == 0
    if watchers == 1000:
        assert direct.p(99) < P99_BOUND, direct.summary()
