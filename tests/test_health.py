"""meshd.health: the threshold machine by property, and each probe against a real loopback server."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.embedded_etcd import free_port
from meshd.health import (HEALTHY, UNHEALTHY, UNKNOWN, CheckSpec, HealthChecker, InvalidCheckSpec,
                          Track, advance)

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
KEY = "node-a/127.0.0.1"


# --- Builders ------------------------------------------------------------------------------

def spec(protocol="http", **kw) -> CheckSpec:
    """A CheckSpec on test time scales: 50 ms interval, 1 s timeout, thresholds 2 and 3."""
    values = dict(path="/healthz", interval_ms=50, timeout_ms=1000, healthy_threshold=2,
                  unhealthy_threshold=3)
    values.update(kw)
    return CheckSpec(protocol, **values)


def run(coro, loop="asyncio", limit=20.0):
    """Run one test coroutine to completion on a fresh loop, bounded by ``limit`` seconds."""
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(asyncio.wait_for(coro, limit))


class Transitions:
    """on_change recorder: each call with the probe count the server had seen at that moment.

    ``probes`` is one counter, or one per key. ``actions[n]`` runs inside the n-th call (1-based), before the next probe can start, so a
    test can flip its server at an exact point of the probe sequence.
    """

    def __init__(self, probes=lambda: None):
        self.probes = probes
        self.seen: list[tuple] = []
        self.actions: dict[int, callable] = {}

    def __call__(self, key, old, new, detail):
        probes = self.probes[key] if isinstance(self.probes, dict) else self.probes
        self.seen.append((key, old, new, detail, probes()))
        action = self.actions.pop(len(self.seen), None)
        if action:
            action()

    async def until(self, n, limit=5.0):
        deadline = time.monotonic() + limit
        while len(self.seen) < n:
            assert time.monotonic() < deadline, f"waited for {n} transitions, saw {self.seen}"
            await asyncio.sleep(0.01)


async def probes_reach(count, n, limit=5.0):
    deadline = time.monotonic() + limit
    while count() < n:
        assert time.monotonic() < deadline, f"waited for {n} probes, saw {count()}"
        await asyncio.sleep(0.01)


async def watch(seen, port, check, transitions):
    """Check KEY on 127.0.0.1:port with ``check`` until ``seen`` has that many transitions."""
    checker = HealthChecker(seen, jitter=0)
    checker.add(KEY, "127.0.0.1", port, check)
    await checker.start()
    await seen.until(transitions)
    await checker.stop()


def wait_listening(port, limit=5.0):
    deadline = time.monotonic() + limit
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.02)


# --- Servers -------------------------------------------------------------------------------

class HttpApp:
    """An HTTP/1.1 app on loopback: answers ``script`` statuses in turn, then ``status``."""

    def __init__(self):
        self.status = 200
        self.script: list[int] = []
        self.requests: list[tuple[str, str]] = []
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                # Counted before answering: the probe that sees this answer is already counted.
                app.requests.append((self.path, self.headers.get("Host")))
                self.send_response(app.script.pop(0) if app.script else app.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def count(self):
        return len(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class CountingHealth(health.HealthServicer):
    """The stock gRPC health service, counting Check calls before answering them."""

    def __init__(self):
        super().__init__()
        self.checks = 0

    def Check(self, request, context):
        self.checks += 1
        return super().Check(request, context)


class SilentListener:
    """Accepts connections, counts them and never answers (nor closes them)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.done = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.done:
            try:
                self.held.append(self.sock.accept()[0])
            except (TimeoutError, OSError):
                pass

    def close(self):
        self.done = True
        self.thread.join(5)
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def http_app():
    app = HttpApp()
    yield app
    app.close()


@pytest.fixture
def grpc_app():
    servicer = CountingHealth()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.port = port
    yield servicer
    server.stop(None).wait(5)


class Nghttpd:
    """nghttpd serving a directory over h2c on one port; it can be stopped and started again.

    ``count()`` reads the requests it served from its -v log. nghttpd caches open files, so
    removing a served file does not make it answer 404: a test stops the server instead.
    """

    def __init__(self, tmp_path):
        self.exe = shutil.which("nghttpd")
        assert self.exe, "nghttpd (Debian nghttp2-server) is part of the test setup"
        self.www = tmp_path / "www"
        self.www.mkdir()
        (self.www / "healthz").write_text("ok\n")
        self.log = tmp_path / "nghttpd.log"
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        with open(self.log, "ab") as log_file:
            self.proc = subprocess.Popen([self.exe, "--no-tls", "-v", "-d", str(self.www), str(self.port)],
                                         stdout=log_file, stderr=subprocess.STDOUT)
        wait_listening(self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)

    def count(self):
        return self.log.read_text(errors="replace").count(":path: /healthz")


@pytest.fixture
def nghttpd(tmp_path):
    server = Nghttpd(tmp_path)
    yield server
    server.stop()


# --- CheckSpec and the threshold machine ---------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("protocol", "https"), ("path", "healthz"), ("port", 0), ("port", 70000),
    ("interval_ms", 0), ("timeout_ms", -1), ("healthy_threshold", 0), ("unhealthy_threshold", 1.5),
])
def test_check_spec_names_the_bad_field(field, value):
    values = {"protocol": "http", field: value}
    with pytest.raises(InvalidCheckSpec) as err:
        spec(values.pop("protocol"), **values)
    assert (err.value.field, err.value.value) == (field, value)


def test_check_spec_ignores_path_for_grpc_and_tcp():
    assert spec("grpc", path="").protocol == "grpc"
    assert spec("tcp", path="").protocol == "tcp"


def reference_states(results, healthy, unhealthy):
    """The App Mesh rule read literally: the state changes when the last N results since the
    previous change all agree (N = the threshold of the state they point to)."""
    state, since, states = UNKNOWN, [], []
    for passed in results:
        since.append(passed)
        if state != HEALTHY and len(since) >= healthy and all(since[-healthy:]):
            state, since = HEALTHY, []
        elif state != UNHEALTHY and len(since) >= unhealthy and not any(since[-unhealthy:]):
            state, since = UNHEALTHY, []
        states.append(state)
    return states


@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), max_size=60), st.integers(1, 10), st.integers(1, 10))
def test_advance_matches_the_consecutive_threshold_rule(results, healthy, unhealthy):
    track, states = Track(), []
    for passed in results:
        track = advance(track, passed, healthy, unhealthy)
        states.append(track.state)
    assert states == reference_states(results, healthy, unhealthy)


def test_advance_one_result_never_flips_a_settled_state():
    healthy = advance(advance(Track(), True, 2, 3), True, 2, 3)
    assert healthy.state == HEALTHY
    once = advance(healthy, False, 2, 3)
    twice = advance(once, False, 2, 3)
    assert (once.state, twice.state) == (HEALTHY, HEALTHY)
    assert advance(advance(twice, True, 2, 3), False, 2, 3).state == HEALTHY  # streak broken
    assert advance(twice, False, 2, 3).state == UNHEALTHY


# --- Probes against real servers -----------------------------------------------------------

@pytest.mark.parametrize("loop", LOOPS)
def test_http_thresholds_recovery_and_what_arrived(http_app, loop):
    seen = Transitions(http_app.count)
    seen.actions = {1: lambda: setattr(http_app, "status", 503),
                    2: lambda: setattr(http_app, "status", 200)}

    async def main():
        checker = HealthChecker(seen, jitter=0)
        checker.add(KEY, "127.0.0.1", http_app.port, spec())
        assert checker.state(KEY) == UNKNOWN
        await checker.start()
        await seen.until(3)
        assert checker.state(KEY) == HEALTHY
        await probes_reach(http_app.count, 12)  # a steady HEALTHY run reports nothing more
        await checker.stop()

    run(main(), loop)
    assert seen.seen == [
        (KEY, UNKNOWN, HEALTHY, "http 200", 2),
        (KEY, HEALTHY, UNHEALTHY, "http 503", 5),
        (KEY, UNHEALTHY, HEALTHY, "http 200", 7),
    ]
    host = f"127.0.0.1:{http_app.port}"
    assert set(http_app.requests) == {("/healthz", host)}


def test_http_broken_streak_starts_over(http_app):
    http_app.script = [200, 503, 200, 503, 503, 200, 200]
    seen = Transitions(http_app.count)
    run(watch(seen, http_app.port, spec(), 1))
    assert seen.seen == [(KEY, UNKNOWN, HEALTHY, "http 200", 7)]


@pytest.mark.parametrize("status, state", [(204, HEALTHY), (299, HEALTHY), (301, UNHEALTHY),
                                            (404, UNHEALTHY), (500, UNHEALTHY)])
def test_http_passes_on_2xx_only(http_app, status, state):
    http_app.status = status
    seen = Transitions(http_app.count)
    run(watch(seen, http_app.port, spec(healthy_threshold=2, unhealthy_threshold=2), 1))
    assert seen.seen == [(KEY, UNKNOWN, state, f"http {status}", 2)]


@pytest.mark.parametrize("loop", LOOPS)
def test_http2_prior_knowledge_through_nghttpd(nghttpd, loop):
    seen = Transitions(nghttpd.count)
    seen.actions = {1: nghttpd.stop, 2: nghttpd.start}

    run(watch(seen, nghttpd.port, spec("http2"), 3), loop)
    assert seen.seen == [
        (KEY, UNKNOWN, HEALTHY, "http2 200", 2),
        (KEY, HEALTHY, UNHEALTHY, "connect refused", 2),
        (KEY, UNHEALTHY, HEALTHY, "http2 200", 4),
    ]


def test_http2_missing_path_is_a_404(nghttpd):
    seen = Transitions()
    run(watch(seen, nghttpd.port, spec("http2", path="/missing", unhealthy_threshold=2), 1))
    assert [s[1:4] for s in seen.seen] == [(UNKNOWN, UNHEALTHY, "http2 404")]


@pytest.mark.parametrize("loop", LOOPS)
def test_grpc_follows_the_serving_status(grpc_app, loop):
    serving = health_pb2.HealthCheckResponse
    seen = Transitions(lambda: grpc_app.checks)
    seen.actions = {1: lambda: grpc_app.set("", serving.NOT_SERVING),
                    2: lambda: grpc_app.set("", serving.SERVING)}

    run(watch(seen, grpc_app.port, spec("grpc", unhealthy_threshold=2), 3), loop)
    assert seen.seen == [
        (KEY, UNKNOWN, HEALTHY, "grpc SERVING", 2),
        (KEY, HEALTHY, UNHEALTHY, "grpc NOT_SERVING", 4),
        (KEY, UNHEALTHY, HEALTHY, "grpc SERVING", 6),
    ]


def test_grpc_without_a_server_is_unavailable():
    seen = Transitions()
    run(watch(seen, free_port(), spec("grpc", unhealthy_threshold=2), 1))
    assert [s[1:4] for s in seen.seen] == [(UNKNOWN, UNHEALTHY, "grpc UNAVAILABLE")]


@pytest.mark.parametrize("loop", LOOPS)
def test_tcp_listener_closed_and_reopened(loop):
    listener = {"sock": socket.create_server(("127.0.0.1", 0))}
    port = listener["sock"].getsockname()[1]

    def reopen():
        listener["sock"] = socket.create_server(("127.0.0.1", port))

    seen = Transitions()
    seen.actions = {1: lambda: listener["sock"].close(), 2: reopen}

    try:
        run(watch(seen, port, spec("tcp", path=""), 3), loop)
    finally:
        listener["sock"].close()
    assert [s[1:4] for s in seen.seen] == [
        (UNKNOWN, HEALTHY, "connected"),
        (HEALTHY, UNHEALTHY, "connect refused"),
        (UNHEALTHY, HEALTHY, "connected"),
    ]


@pytest.mark.parametrize("protocol, state, detail", [
    ("http", UNHEALTHY, "timeout after 150 ms"),
    ("http2", UNHEALTHY, "timeout after 150 ms"),
    ("grpc", UNHEALTHY, "timeout after 150 ms"),
    ("tcp", HEALTHY, "connected"),  # connect-only: a silent app still accepts
])
def test_a_server_that_never_answers_times_out(protocol, state, detail):
    silent = SilentListener()
    seen = Transitions(lambda: len(silent.held))

    async def main():
        checker = HealthChecker(seen, jitter=0)
        checker.add(KEY, "127.0.0.1", silent.port,
                    spec(protocol, timeout_ms=150, healthy_threshold=2, unhealthy_threshold=2))
        started = time.monotonic()
        await checker.start()
        await seen.until(1)
        await checker.stop()
        return time.monotonic() - started

    try:
        elapsed = run(main())
    finally:
        silent.close()
    assert [s[1:4] for s in seen.seen] == [(UNKNOWN, state, detail)]
    if state == UNHEALTHY:
        # Counted exactly: each probe waits its whole timeout, time enough for the accept.
        assert seen.seen[0][4] == 2
        # Two checks of 150 ms each and one 50 ms pause, and not much more.
        assert 0.34 <= elapsed < 2.0


def test_remove_stops_probing_and_reports_nothing(http_app):
    other = HttpApp()
    seen = Transitions({KEY: http_app.count, "other": other.count})

    async def main():
        checker = HealthChecker(seen, jitter=0)
        seen.actions = {1: lambda: checker.remove(KEY)}
        checker.add(KEY, "127.0.0.1", http_app.port, spec())
        checker.add("other", "127.0.0.1", other.port, spec(healthy_threshold=9))
        await checker.start()
        await seen.until(1)
        removed_at = http_app.count()
        await probes_reach(other.count, 12)  # the other key keeps its own schedule
        assert http_app.count() == removed_at == 2
        with pytest.raises(KeyError):
            checker.state(KEY)
        assert checker.keys() == ["other"]
        await checker.stop()

    try:
        run(main())
    finally:
        other.close()
    assert seen.seen == [(KEY, UNKNOWN, HEALTHY, "http 200", 2),
                         ("other", UNKNOWN, HEALTHY, "http 200", 9)]


def test_add_again_is_idempotent_and_a_new_spec_starts_over(http_app):
    seen = Transitions(http_app.count)

    async def main():
        checker = HealthChecker(seen, jitter=0)
        checker.add(KEY, "127.0.0.1", http_app.port, spec())
        await checker.start()
        await seen.until(1)
        checker.add(KEY, "127.0.0.1", http_app.port, spec())
        assert checker.state(KEY) == HEALTHY
        checker.add(KEY, "127.0.0.1", http_app.port, spec(path="/other"))
        assert checker.state(KEY) == UNKNOWN
        await seen.until(3)
        await checker.stop()

    run(main())
    assert [s[1:4] for s in seen.seen] == [
        (UNKNOWN, HEALTHY, "http 200"),
        (HEALTHY, UNKNOWN, "check replaced"),
        (UNKNOWN, HEALTHY, "http 200"),
    ]
    assert ("/other", f"127.0.0.1:{http_app.port}") in http_app.requests


def test_stop_ends_every_check_and_keeps_states(http_app):
    seen = Transitions(http_app.count)

    async def main():
        before = asyncio.all_tasks()
        checker = HealthChecker(seen, jitter=0)
        checker.add(KEY, "127.0.0.1", http_app.port, spec())
        await checker.start()
        await seen.until(1)
        await checker.stop()
        assert asyncio.all_tasks() == before
        stopped_at = http_app.count()
        await asyncio.sleep(0.3)
        assert http_app.count() == stopped_at
        assert checker.state(KEY) == HEALTHY

    run(main())


def test_spec_port_wins_over_the_instance_port(http_app):
    seen = Transitions(http_app.count)
    run(watch(seen, free_port(), spec(port=http_app.port), 1))
    assert [s[2] for s in seen.seen] == [HEALTHY]


def test_a_failing_callback_does_not_end_the_check(http_app):
    calls = []

    def on_change(key, old, new, detail):
        calls.append(new)
        if len(calls) == 1:
            http_app.status = 500
            raise RuntimeError("callback bug")

    async def main():
        checker = HealthChecker(on_change, jitter=0)
        checker.add(KEY, "127.0.0.1", http_app.port, spec())
        await checker.start()
        await probes_reach(lambda: len(calls), 2)
        await checker.stop()

    run(main())
    assert calls == [HEALTHY, UNHEALTHY]


def test_jitter_spreads_the_first_check_and_lengthens_pauses(http_app):
    async def main():
        checker = HealthChecker(lambda *a: None, jitter=0.5)
        checker.add(KEY, "127.0.0.1", http_app.port, spec(interval_ms=100))
        started = time.monotonic()
        await checker.start()
        await probes_reach(http_app.count, 4)
        await checker.stop()
        return time.monotonic() - started

    # Three pauses of 100-150 ms each, plus a first wait of 0-50 ms.
    assert 0.3 <= run(main()) < 2.0
