"""Watchers at fleet size (issue 17): 1,000 etcd watch streams opened as meshd opens them
(a `registry.Store` each, watching the whole prefix from a revision, progress notifications
and previous values on) from a few driver processes; one change must reach every one of
them within 2 s at p99.

The full-size run (`-m scale`) measures each count directly and through an `etcd
grpc-proxy` (which coalesces identical watches into one watch on etcd), and reports etcd's
memory per stream and CPU per change, so docs/scale.md can say where etcd's own limits are.
Past 1,000 streams a thread per stream starves this machine (5,000 threads did not open in
two minutes), so 5,000 and 20,000 streams are light ones: the same Watch request on
grpc.aio (`drive_light`).

    pytest bench/test_scale_watchers.py -m scale_ci -s      # CI: 1,000 watchers, 10 changes
    pytest bench/test_scale_watchers.py -m scale -s         # 1,000, 5,000, 20,000, direct and through the proxy
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
from registry import Store, Unavailable

pytestmark = [pytest.mark.etcd]

REPO = Path(__file__).resolve().parents[1]
PREFIX = "/meshd/v1/"
P99_BOUND = 2.0
# Watch streams per driver process: each is one thread blocked on its stream, as in meshd.
PER_DRIVER = 250
LIGHT_PER_DRIVER = 2500
# A driver opens its watches OPEN_SPACING apart (all at once, 5,000 connections timed out
# before etcd's HTTP/2 SETTINGS frame here), then says so; OPEN_TIMEOUT allows for all.
OPEN_SPACING = 0.02
OPEN_TIMEOUT = 120.0
# Changes timed per full-size run: at 5,000 streams each is 5,000 deliveries to time.
CHANGES = 20
# drive_light: watch streams sharing one HTTP/2 connection, as a relay would multiplex them.
STREAMS_PER_CHANNEL = 100


def drive(url: str, count: int, start_revision: int) -> None:
    """A driver process: `count` Stores on `url`, each watching PREFIX from `start_revision`;
    prints "<watcher> <path> <time.time()>" for every put it sees, "open" once every stream
    is being read, and ends when stdin closes."""
    lock = threading.Lock()

    def watch(i: int) -> None:
        store = Store([url], prefix=PREFIX, timeout=10.0)
        resume = start_revision
        while True:  # as meshd's watch does: a broken stream resumes after the last revision seen
            try:
                for revision, events in store.watch("", start_revision=resume):
                    now = time.time()
                    lines = "".join(f"{i} {ev.path} {now:.6f}\n" for ev in events if ev.type == "put")
                    if lines:
                        with lock:
                            sys.stdout.write(lines)
                            sys.stdout.flush()
                    # Events come in revision order; an empty batch is a progress notification,
                    # which says every event up to its revision was sent.
                    resume = max(resume, (events[-1].revision if events else revision) + 1)
            except Unavailable as err:
                with lock:
                    sys.stdout.write(f"broken {err}\n".replace("\n", " ").strip() + "\n")
                    sys.stdout.flush()
                time.sleep(0.5)
    for i in range(count):
        threading.Thread(target=watch, args=(i,), daemon=True).start()
        time.sleep(OPEN_SPACING)
    print("open", flush=True)
    sys.stdin.read()


def drive_light(url: str, count: int, start_revision: int) -> None:
    """A driver for counts that a thread per stream cannot hold on this machine: `count`
    etcd Watch streams with the request `registry.Watch` sends (the prefix, progress
    notifications, previous values), as coroutines on grpc.aio, STREAMS_PER_CHANNEL to a
    connection; prints as `drive` does. What it measures is etcd's side, not meshd's."""
    import asyncio  # noqa: PLC0415

    import grpc  # noqa: PLC0415
    from etcd3 import etcdrpc  # noqa: PLC0415

    from registry.store import prefix_end  # noqa: PLC0415

    raw = PREFIX.encode()
    create = etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
        key=raw, range_end=prefix_end(raw), start_revision=start_revision, progress_notify=True, prev_kv=True))
    target = url.split("://", 1)[-1]

    async def requests(done: asyncio.Event):
        yield create
        await done.wait()

    async def watch(i: int, stub, done: asyncio.Event) -> None:
        async for resp in stub.Watch(requests(done), metadata=(("hasleader", "true"),)):
            now = time.time()
            lines = "".join(f"{i} {ev.kv.key[len(raw):].decode()} {now:.6f}\n"
                            for ev in resp.events if ev.type == ev.PUT)
            if lines:
                sys.stdout.write(lines)
                sys.stdout.flush()

    async def main() -> None:
        done = asyncio.Event()
        stubs = [etcdrpc.WatchStub(grpc.aio.insecure_channel(target))
                 for _ in range(-(-count // STREAMS_PER_CHANNEL))]
        tasks = []
        for i in range(count):
            tasks.append(asyncio.ensure_future(watch(i, stubs[i // STREAMS_PER_CHANNEL], done)))
            await asyncio.sleep(OPEN_SPACING / 10)
        print("open", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        done.set()
        for t in tasks:
            t.cancel()
    asyncio.run(main())


@dataclass
class Run:
    """One measurement: per change, the seconds from the put's answer to each watcher's event."""

    watchers: int
    via: str
    latencies: list[float]
    missing: int  # (watcher, change) pairs that never arrived within the timeout
    silent: int  # streams that never delivered the first change: not timed afterwards
    etcd_rss_mb: tuple[float, float]  # etcd's RSS before the watches opened, and with them open
    etcd_cpu: float  # etcd's CPU seconds (user + system) per change, fan-out to every stream included
    drivers_cpu: float  # the driver processes' CPU seconds per change: the watchers' side of it
    broken: int  # streams that broke (etcd refused or dropped them) and were resumed

    def p(self, q: float) -> float:
        """The nearest-rank percentile of the latencies; infinite when none arrived."""
        if not self.latencies:
            return float("inf")
        ordered = sorted(self.latencies)
        return ordered[max(0, min(len(ordered) - 1, -(-len(ordered) * q // 100) - 1))]

    def summary(self) -> str:
        before, after = self.etcd_rss_mb
        return (f"{self.watchers} watchers {self.via}: p50 {self.p(50) * 1000:.0f} ms, "
                f"p99 {self.p(99) * 1000:.0f} ms, max {self.p(100) * 1000:.0f} ms "
                f"over {len(self.latencies)} deliveries, {self.missing} missing, {self.silent} streams silent, "
                f"{self.broken} resumed; "
                f"etcd RSS {before:.0f} -> {after:.0f} MB "
                f"({(after - before) * 1024 / self.watchers:.1f} kB per watcher), "
                f"CPU per change: etcd {self.etcd_cpu * 1000:.0f} ms, watchers {self.drivers_cpu * 1000:.0f} ms")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (proc(5): fields 14 and 15 of stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Drivers:
    """Driver processes holding `watchers` watch streams on `url`; collects their events."""

    def __init__(self, url: str, watchers: int, start_revision: int, *, light: bool = False):
        code = (f"import sys; from bench.test_scale_watchers import {'drive_light' if light else 'drive'} as drive; "
                "drive(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.seen: dict[str, list[float]] = {}
        self.broken = 0  # streams that broke and resumed
        self._lock = threading.Lock()
        self.procs = []
        self._readers = []
        opened = []
        per_driver = LIGHT_PER_DRIVER if light else PER_DRIVER
        for d in range(0, watchers, per_driver):
            n = min(per_driver, watchers - d)
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
            if line.startswith("broken "):
                with self._lock:
                    self.broken += 1
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
            timeout: float = 10.0, light: bool = False) -> Run:
    """Open `watchers` streams on `url`, wait until each sees a first put (those that do not
    within OPEN_TIMEOUT are counted as silent), then make `changes` puts one at a time, each
    timed to its last watcher."""
    before = rss_mb(etcd_pid)
    drivers = Drivers(url, watchers, writer.revision() + 1, light=light)
    latencies, missing = [], 0
    try:
        def put_and_wait(path: str, expected: int, timeout: float = timeout) -> list[float]:
            writer.put(path, b"x")
            acked = time.time()
            deadline = time.monotonic() + timeout
            while len(drivers.arrivals(path)) < expected and time.monotonic() < deadline:
                time.sleep(0.005)
            return [max(0.0, t - acked) for t in drivers.arrivals(path)]
        # Streams open lazily: a first change, not timed, proves which are reading.
        silent = watchers - len(put_and_wait("scale/warm", watchers, OPEN_TIMEOUT))
        after = rss_mb(etcd_pid)
        cpu = cpu_seconds(etcd_pid)
        watchers_cpu = sum(cpu_seconds(p.pid) for p in drivers.procs)
        for k in range(changes):
            got = put_and_wait(f"scale/change-{k}", watchers - silent)
            latencies.extend(got)
            missing += watchers - silent - len(got)
            time.sleep(0.1)
        cpu = (cpu_seconds(etcd_pid) - cpu) / changes
        watchers_cpu = (sum(cpu_seconds(p.pid) for p in drivers.procs) - watchers_cpu) / changes
    finally:
        drivers.close()
    return Run(watchers, via, latencies, missing, silent, (before, after), cpu, watchers_cpu, drivers.broken)


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
    assert run.missing == 0 and run.silent == 0, run.summary()
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
@pytest.mark.parametrize(("watchers", "light"), [(1000, False), (5000, True), (20000, True)],
                         ids=["1000-registry", "5000-light", "20000-light"])
def test_watchers_direct_and_through_the_grpc_proxy(private_etcd, writer, tmp_path, watchers, light, gate_figure):
    kind = "light (grpc.aio) " if light else ""
    direct = measure(private_etcd.url, private_etcd.pid, writer, watchers, CHANGES, f"{kind}direct", light=light)
    print(direct.summary())
    proxy = GrpcProxy(f"127.0.0.1:{private_etcd.client_port}", tmp_path / "proxy.log")
    try:
        proxied = measure(proxy.url, private_etcd.pid, writer, watchers, CHANGES, f"{kind}through etcd grpc-proxy",
                          light=light)
        proxied_rss = rss_mb(proxy.proc.pid)
    finally:
        proxy.stop()
    print(proxied.summary(), f"(the proxy's own RSS {proxied_rss:.0f} MB)")
    gate_figure(f"watchers: p99 s to the last of {watchers} direct watch streams", direct.p(99), P99_BOUND)
    assert direct.missing == 0 and direct.silent == 0, direct.summary()
    if watchers == 1000:
        assert direct.p(99) < P99_BOUND, direct.summary()
    if proxied.missing or proxied.silent:
        # Seen at 20,000 streams with etcd 3.4.23's proxy: one stream never served.
        pytest.xfail(f"etcd grpc-proxy left streams unserved: {proxied.summary()}")
