"""Active health checks of local app instances with App Mesh HealthCheckPolicy semantics.

The module takes plain values (no protobuf, etcd or registry) and reports each state
transition through a callback:

    checker = HealthChecker(on_change)          # on_change(key, old, new, detail)
    checker.add("node-a/10.0.0.5:8080", "10.0.0.5", 8080, CheckSpec("http", "/healthz", ...))
    await checker.start()
    ...
    await checker.stop()

Two layers, kept apart as STYLE.md asks:

* ``advance`` is the sans-IO threshold machine: a ``Track`` and one probe result in, the
  next ``Track`` out. It never awaits and never reads the clock.
* ``probe`` runs one check (http, http2, grpc or tcp) against one address, bounded by
  ``timeout_ms``, and returns an ``Outcome``. ``HealthChecker`` loops it per key.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httptools
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger("meshd.health")

UNKNOWN = "UNKNOWN"
HEALTHY = "HEALTHY"
UNHEALTHY = "UNHEALTHY"

PROTOCOLS = ("http", "http2", "grpc", "tcp")

# Statuses that pass an http/http2 check: 200-299. Envoy's own default (HttpHealthCheck
# expected_statuses unset) is 200 alone; App Mesh does not document the set, and we accept
# the whole 2xx class so that a 204 "no content" health endpoint passes. 3xx fails: a
# redirect says nothing about the app behind it.
HTTP_EXPECTED = range(200, 300)

# Bytes read while waiting for an HTTP/1.1 status line and headers, or for an HTTP/2
# response HEADERS frame, before the answer counts as a failure.
MAX_RESPONSE_HEAD = 64 * 1024

_USER_AGENT = "meshd-health"


class HealthError(Exception):
    """Base of this module's errors."""


class InvalidCheckSpec(HealthError):
    """A CheckSpec value is out of range; ``field`` names it, ``value`` is what was given."""

    def __init__(self, field: str, value: object, reason: str):
        super().__init__(f"{field}={value!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


@dataclass(frozen=True)
class CheckSpec:
    """One App Mesh HealthCheckPolicy, as plain values.

    ``port`` None means the instance's own port. ``path`` is used by http and http2 only
    (App Mesh: "For any other protocol, this value is ignored"). App Mesh's API ranges
    (interval 5000-300000 ms, timeout 2000-60000 ms, thresholds 2-10) are enforced where
    the policy is translated from protobuf; here any positive value is accepted, so that
    tests can run on short intervals.
    """

    protocol: str
    path: str = "/"
    port: Optional[int] = None
    interval_ms: int = 5000
    timeout_ms: int = 2000
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise InvalidCheckSpec("protocol", self.protocol, f"not one of {PROTOCOLS}")
        if self.protocol in ("http", "http2") and not self.path.startswith("/"):
            raise InvalidCheckSpec("path", self.path, "must start with /")
        if self.port is not None and not 0 < self.port < 65536:
            raise InvalidCheckSpec("port", self.port, "must be 1-65535")
        for name in ("interval_ms", "timeout_ms", "healthy_threshold", "unhealthy_threshold"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidCheckSpec(name, value, "must be a positive integer")


@dataclass(frozen=True)
class Outcome:
    """One probe's result: passed or not, and a short detail such as "http 503"."""

    ok: bool
    detail: str


# --- The threshold machine (sans-IO) ---------------------------------------------------

# (state, probe passed) -> the state that a full streak of such results leads to, or None
# when such a result only confirms the current state. App Mesh HealthCheckPolicy:
# healthyThreshold "consecutive successful health checks that must occur before declaring
# listener healthy", unhealthyThreshold "consecutive failed health checks ... before
# declaring a virtual node unhealthy". An instance starts UNKNOWN and needs a full streak
# either way. A pair missing from this table is a bug (KeyError).
_TABLE: dict[tuple[str, bool], Optional[str]] = {
    (UNKNOWN, True): HEALTHY,
    (UNKNOWN, False): UNHEALTHY,
    (HEALTHY, True): None,
    (HEALTHY, False): UNHEALTHY,
    (UNHEALTHY, True): HEALTHY,
    (UNHEALTHY, False): None,
}


@dataclass(frozen=True)
class Track:
    """Where one instance stands: its state and the streak of results toward ``toward``."""

    state: str = UNKNOWN
    toward: Optional[str] = None
    streak: int = 0


def advance(track: Track, passed: bool, healthy_threshold: int, unhealthy_threshold: int) -> Track:
    """The Track after one more probe result; the state changes only when a streak is full."""
    target = _TABLE[(track.state, passed)]
    if target is None:
        return Track(track.state)
    streak = track.streak + 1 if track.toward == target else 1
    needed = healthy_threshold if target == HEALTHY else unhealthy_threshold
    if streak >= needed:
        return Track(target)
    return Track(track.state, target, streak)


# --- Probes ------------------------------------------------------------------------------


def _authority(host: str, port: int) -> str:
    # RFC 9110 §7.2 / RFC 3986 §3.2.2: an IPv6 literal is bracketed in Host and :authority.
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _ResponseHead:
    """httptools callbacks: keep the first final (non-1xx) status code."""

    def __init__(self):
        self.status: Optional[int] = None
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self):
        code = self.parser.get_status_code()
        # RFC 9110 §15.2: 1xx responses are interim; the final answer follows them.
        if code >= 200 and self.status is None:
            self.status = code


async def _probe_http(host: str, port: int, spec: CheckSpec) -> Outcome:
    """HTTP/1.1 GET spec.path; passes on a status in HTTP_EXPECTED."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        # A fresh connection per check with Connection: close, so that no idle keep-alive
        # connection to the app outlives the check (RFC 9112 §9.6).
        writer.write(
            f"GET {spec.path} HTTP/1.1\r\nHost: {_authority(host, port)}\r\n"
            f"User-Agent: {_USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        head = _ResponseHead()
        seen = 0
        while head.status is None:
            data = await reader.read(16384)
            if not data:
                return Outcome(False, "http closed before response")
            seen += len(data)
            try:
                head.parser.feed_data(data)
            except httptools.HttpParserError:
                return Outcome(False, "http malformed response")
            if head.status is None and seen > MAX_RESPONSE_HEAD:
                return Outcome(False, "http response head too large")
        return Outcome(head.status in HTTP_EXPECTED, f"http {head.status}")
    finally:
        writer.close()


async def _probe_http2(host: str, port: int, spec: CheckSpec) -> Outcome:
    """HTTP/2 prior-knowledge (h2c, RFC 9113 §3.3) GET spec.path; passes on :status in HTTP_EXPECTED.

    This uses the pure-Python ``h2`` package: a check every few seconds is off the data
    path, and the nghttp2 engine in meshd.dataplane is a forwarding server with no client
    that can be called on its own.
    """
    reader, writer = await asyncio.open_connection(host, port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    try:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [
            (b":method", b"GET"), (b":scheme", b"http"),
            (b":authority", _authority(host, port).encode("latin-1")),
            (b":path", spec.path.encode("latin-1")), (b"user-agent", _USER_AGENT.encode()),
        ], end_stream=True)
        writer.write(conn.data_to_send())
        seen = 0
        while True:
            data = await reader.read(16384)
            if not data:
                return Outcome(False, "http2 closed before response")
            seen += len(data)
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError as err:
                return Outcome(False, f"http2 protocol error {type(err).__name__}")
            writer.write(conn.data_to_send())  # SETTINGS and PING acknowledgements
            for event in events:
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    status = int(dict(event.headers)[b":status"])
                    conn.close_connection()
                    writer.write(conn.data_to_send())
                    return Outcome(status in HTTP_EXPECTED, f"http2 {status}")
                if isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                    return Outcome(False, f"http2 stream reset {event.error_code.name}")
                if isinstance(event, h2.events.ConnectionTerminated):
                    return Outcome(False, f"http2 goaway {event.error_code.name}")
            if seen > MAX_RESPONSE_HEAD:
                return Outcome(False, "http2 response head too large")
    finally:
        writer.close()


async def _probe_grpc(host: str, port: int, spec: CheckSpec) -> Outcome:
    """grpc.health.v1.Health/Check with an empty service name (the server as a whole).

    gRPC Health Checking Protocol (grpc/doc/health-checking.md): only SERVING passes.
    A channel per check: no reconnect backoff carries over from one check to the next.
    """
    options = [("grpc.enable_retries", 0), ("grpc.max_receive_message_length", MAX_RESPONSE_HEAD)]
    async with grpc.aio.insecure_channel(_authority(host, port), options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""),
                                     timeout=spec.timeout_ms / 1000)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError from err
            return Outcome(False, f"grpc {err.code().name}")
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return Outcome(reply.status == health_pb2.HealthCheckResponse.SERVING, f"grpc {name}")


async def _probe_tcp(host: str, port: int, spec: CheckSpec) -> Outcome:
    """A TCP connect that completes passes (Envoy's connect-only TCP health check)."""
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    return Outcome(True, "connected")


_PROBES: dict[str, Callable[[str, int, CheckSpec], Awaitable[Outcome]]] = {
    "http": _probe_http,
    "http2": _probe_http2,
    "grpc": _probe_grpc,
    "tcp": _probe_tcp,
}


async def probe(host: str, port: int, spec: CheckSpec) -> Outcome:
    """Run one check of ``spec.protocol`` against host:port; never raises for a failed check.

    App Mesh timeoutMillis bounds the whole check, connect included, and a check that runs
    out of time is a failure like any other.
    """
    try:
        async with asyncio.timeout(spec.timeout_ms / 1000):
            return await _PROBES[spec.protocol](host, port, spec)
    except TimeoutError:
        return Outcome(False, f"timeout after {spec.timeout_ms} ms")
    except ConnectionRefusedError:
        return Outcome(False, "connect refused")
    except ConnectionResetError:
        return Outcome(False, "connection reset")
    except OSError as err:
        return Outcome(False, f"connect error {err.strerror or type(err).__name__}")


# --- The scheduler -----------------------------------------------------------------------

OnChange = Callable[[str, str, str, str], None]


@dataclass
class _Check:
    """One key's check: what to probe, where it stands and the task that runs it."""

    address: str
    port: int
    spec: CheckSpec
    track: Track
    task: Optional[asyncio.Task] = None


class HealthChecker:
    """Runs every added check on its own interval and reports state transitions.

    ``on_change(key, old_state, new_state, detail)`` is called from the event loop on each
    transition, and only then; ``detail`` is the detail of the probe that completed the
    streak. Checks of one key never overlap: the next starts ``interval_ms`` (plus up to
    ``jitter`` of it, at random) after the previous one ended, as Envoy schedules its
    interval after each response. The first check of a key waits up to ``jitter`` of one
    interval, so that instances added together are not probed in lockstep.
    """

    def __init__(self, on_change: OnChange, *, jitter: float = 0.1,
                 rng: Optional[random.Random] = None):
        self._on_change = on_change
        self._jitter = jitter
        self._rng = rng or random.Random()
        self._checks: dict[str, _Check] = {}
        self._running = False

    def add(self, key: str, address: str, port: int, spec: CheckSpec) -> None:
        """Check ``address`` on ``spec.port`` (or ``port`` when the spec has none).

        Adding a key again with the same values does nothing. With other values the old
        check is replaced and the key starts again from UNKNOWN, reported as a transition
        if it was not UNKNOWN already.
        """
        old = self._checks.get(key)
        if old is not None and (old.address, old.port, old.spec) == (address, port, spec):
            return
        if old is not None:
            self._cancel(old)
        check = _Check(address, port, spec, Track())
        self._checks[key] = check
        if old is not None and old.track.state != UNKNOWN:
            self._report(key, old.track.state, UNKNOWN, "check replaced")
        if self._running:
            check.task = asyncio.get_running_loop().create_task(self._run(key, check))

    def remove(self, key: str) -> None:
        """Stop checking ``key`` and forget it; no transition is reported. Unknown keys are ignored."""
        check = self._checks.pop(key, None)
        if check is not None:
            self._cancel(check)

    def state(self, key: str) -> str:
        """The current state of ``key``; KeyError if it is not checked."""
        return self._checks[key].track.state

    def keys(self) -> list[str]:
        """The keys being checked."""
        return list(self._checks)

    async def start(self) -> None:
        """Start every added check on the running loop; later adds start at once."""
        self._running = True
        loop = asyncio.get_running_loop()
        for key, check in self._checks.items():
            if check.task is None:
                check.task = loop.create_task(self._run(key, check))

    async def stop(self) -> None:
        """Cancel every check and wait until none is running; states are kept."""
        self._running = False
        tasks = [c.task for c in self._checks.values() if c.task is not None]
        for check in self._checks.values():
            self._cancel(check)
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _cancel(check: _Check) -> None:
        if check.task is not None:
            check.task.cancel()
            check.task = None

    def _report(self, key: str, old: str, new: str, detail: str) -> None:
        try:
            self._on_change(key, old, new, detail)
        except Exception:  # a faulty callback must not end the check loop
            log.exception("health on_change(%s, %s -> %s) failed", key, old, new)

    def _pause(self, spec: CheckSpec) -> float:
        return spec.interval_ms / 1000 * (1 + self._jitter * self._rng.random())

    async def _run(self, key: str, check: _Check) -> None:
        spec = check.spec
        port = spec.port or check.port
        await asyncio.sleep(spec.interval_ms / 1000 * self._jitter * self._rng.random())
        while True:
            outcome = await probe(check.address, port, spec)
            if self._checks.get(key) is not check:  # removed or replaced meanwhile
                return
            old = check.track.state
            check.track = advance(check.track, outcome.ok, spec.healthy_threshold,
                                  spec.unhealthy_threshold)
            if check.track.state != old:
                self._report(key, old, check.track.state, outcome.detail)
            await asyncio.sleep(self._pause(spec))
