"""Cancellation both ways, deadlines, refusals, upstream failures and the retry hook."""
import re
import socket
import threading
import time

import grpc
import pytest

from meshd.dataplane import Failure, RequestHead
from tests.tcp_listener import Blackhole, Listener
from tests.dataplane.h2client import H2Client
from meshd.embedded_etcd import free_port
from tests.dataplane.harness import (
    EchoOrigin, Refusal, RelayThread, Target, channel, counters, frame, to, unary, wait_for,
)

pytestmark = pytest.mark.dataplane


def test_client_cancel_reaches_origin(origin, ch):
    before = counters()["resets_sent"]
    fut = unary(ch, "Sleep").future(b"10", timeout=30)
    assert wait_for(lambda: origin.calls == 1)
    fut.cancel()
    assert origin.cancelled.wait(5), "origin never saw the cancellation"
    assert fut.cancelled()
    assert counters()["resets_sent"] > before


def test_origin_reset_reaches_client(ch):
    before = counters()["resets_from_upstream"]
    it = ch.unary_stream("/echo.Echo/SelfCancel")(b"", timeout=10)
    assert next(it) == b"first"
    with pytest.raises(grpc.RpcError) as info:
        next(it)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert counters()["resets_from_upstream"] > before


def test_grpc_timeout_propagates(origin, ch):
    """The caller's deadline reaches the origin. That the next hop never gets more time than
    is left is checked exactly, on the grpc-timeout header itself, by
    test_the_next_hop_never_gets_more_time_than_is_left: grpcio's time_remaining() here reads
    a clock that can be several ms stale under load (it read 3.009 s of a 3 s deadline)."""
    assert unary(ch)(b"x", timeout=3.0) == b"x"
    remaining = origin.time_remaining[-1]
    assert remaining is not None and 1.5 < remaining


GRPC_TIMEOUT = re.compile(r"^[0-9]{1,8}[HMSmun]$")   # gRPC over HTTP/2: TimeoutValue TimeoutUnit
UNIT_NS = {"H": 3600 * 10**9, "M": 60 * 10**9, "S": 10**9, "m": 10**6, "u": 10**3, "n": 1}


def _forward_grpc_timeout(origin, value: str):
    """A unary call with `grpc-timeout: value` through relay a to relay b to the origin:
    (the call's stream, the grpc-timeout values b's routing hook saw)."""
    seen = []
    b = RelayThread(lambda h: seen.append(h.header("grpc-timeout")) or Target("127.0.0.1", origin.port))
    a = RelayThread(to(b.port))
    c = H2Client(a.port)
    try:
        sid = c.request("/echo.Echo/Unary", frame(b"hi"), grpc=True, headers=[("grpc-timeout", value)])
        assert c.pump(lambda: c.streams[sid].done, 10)
        return c.streams[sid], seen
    finally:
        c.close()
        a.stop()
        b.stop()


@pytest.mark.parametrize("sent", ["3S", "3000m", "2500000u", "90S"])
def test_the_next_hop_never_gets_more_time_than_is_left(origin, sent):
    """The grpc-timeout a relay forwards, read as the next hop's routing hook sees it (not
    through a gRPC server's clock): what was left of the caller's, never more. Rounding the
    remainder up to whole milliseconds handed the next hop up to 1 ms more than remained."""
    stream, seen = _forward_grpc_timeout(origin, sent)
    assert stream.trailers.get("grpc-status") == "0"
    assert len(seen) == 1 and GRPC_TIMEOUT.match(seen[0]), seen
    forwarded = int(seen[0][:-1]) * UNIT_NS[seen[0][-1]]
    original = int(sent[:-1]) * UNIT_NS[sent[-1]]
    assert original - 1_000_000_000 < forwarded < original, (sent, seen)


@pytest.mark.hardening
@pytest.mark.hardening
@pytest.mark.parametrize("value", ["7000000H", "99999999H", "123456789S", "99999999999999999999S"])
def test_overlong_grpc_timeout_is_clamped_not_overflowed(origin, value):
    """7000000 hours is 2.5e22 ns, beyond int64; more than 8 digits breaks the grammar. Both mean
    "as long as can be": the call goes through and the next hop gets a valid, huge deadline."""
    stream, seen = _forward_grpc_timeout(origin, value)
    assert stream.trailers.get("grpc-status") == "0"
    assert bytes(stream.body) == frame(b"hi")
    assert len(seen) == 1 and GRPC_TIMEOUT.match(seen[0]), seen
    assert int(seen[0][:-1]) * UNIT_NS[seen[0][-1]] > 100 * 365 * 86400 * 10**9   # > 100 years


def test_route_timeout_answers_deadline_exceeded_and_cancels_origin(origin):
    relay = RelayThread(to(origin.port, timeout=0.3))
    try:
        with channel(relay.port) as ch:
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                unary(ch, "Sleep")(b"5", timeout=10)
            assert time.monotonic() - t0 < 2.0
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert dict(info.value.trailing_metadata())["x-meshd-reason"] == "request_timeout"
            assert origin.cancelled.wait(5)
            # The origin also saw the route timeout as its deadline.
            assert origin.time_remaining[-1] is not None and origin.time_remaining[-1] <= 0.3
    finally:
        relay.stop()


def test_refusal_is_trailers_only_grpc_status():
    seen = []

    def decide(head):
        seen.append((head.method, head.scheme, head.authority, head.path, head.headers.get("x-k"),
                     head.grpc, head.attempt))
        return Refusal(404, reason="no_route", message="no route for this")

    relay = RelayThread(decide)
    try:
        with channel(relay.port) as ch:
            with pytest.raises(grpc.RpcError) as info:
                unary(ch, "Nope")(b"", metadata=(("x-k", "v"),), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert info.value.details() == "no route for this"
        assert dict(info.value.trailing_metadata())["x-meshd-reason"] == "no_route"
        assert seen == [("POST", "http", f"127.0.0.1:{relay.port}", "/echo.Echo/Nope", "v", True, 0)]
    finally:
        relay.stop()


def test_h2_answer_before_the_request_body_ended_reaches_the_client():
    """Our own answer to a request still sending its body (a refusal here, an idle timeout
    below) arrives complete, and only then is the body stopped (RFC 9113 §8.1)."""
    relay = RelayThread(lambda h: Refusal(403, reason="not_a_backend"))
    c = H2Client(relay.port)
    try:
        sid = c.request("/upload", b"first bytes", end=False)
        assert c.pump(lambda: c.streams[sid].done, 10)
        st = c.streams[sid]
        assert st.status == 403 and st.headers["x-meshd-reason"] == "not_a_backend"
        assert c.pump(lambda: st.reset is not None, 5) and st.reset == 0     # NO_ERROR
    finally:
        c.close()
        relay.stop()


def test_connect_error_without_retry_is_unavailable():
    relay = RelayThread(to(free_port()))
    try:
        before = counters()["upstream_connect_errors"]
        with channel(relay.port) as ch:
            with pytest.raises(grpc.RpcError) as info:
                unary(ch)(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert dict(info.value.trailing_metadata())["x-meshd-reason"] == "upstream_connect_failure"
        assert counters()["upstream_connect_errors"] == before + 1
    finally:
        relay.stop()


def test_retry_hook_moves_a_failed_connect_to_another_upstream(origin):
    dead = Target("127.0.0.1", free_port(), context="dead")
    good = Target("127.0.0.1", origin.port, context="good")
    failures = []

    def retry(head: RequestHead, failure: Failure):
        failures.append((failure.kind, failure.target.context, head.attempt))
        return good

    relay = RelayThread(lambda head: dead, retry)
    try:
        before = counters()["retries"]
        with channel(relay.port) as ch:
            body = b"r" * 5000
            assert unary(ch)(body, timeout=5) == body
        assert failures == [("connect_error", "dead", 0)]
        assert counters()["retries"] == before + 1
    finally:
        relay.stop()


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_an_upstream_that_accepts_and_stays_silent_fails_fast_and_is_retried(origin, tls):
    """A blackholed peer (accepts, never answers: no TLS handshake, no SETTINGS) fails its
    attempt with connect_error after the engine's connect_timeout, and the retry hook sends
    the request elsewhere, well before any request timeout."""
    import ssl as _ssl

    silent = Blackhole()
    ctx = _ssl.create_default_context() if tls else None
    if ctx is not None:
        ctx.set_alpn_protocols(["h2"])
    dead = Target("127.0.0.1", silent.port, ssl=ctx, server_hostname="silent.test",
                  context="silent", timeout=10.0)
    good = Target("127.0.0.1", origin.port, context="good")
    failures = []

    def retry(head, failure):
        failures.append((failure.kind, failure.target.context))
        return good

    relay = RelayThread(lambda head: dead, retry, connect_timeout=0.3)
    try:
        with channel(relay.port) as ch:
            t0 = time.monotonic()
            assert unary(ch)(b"ok", timeout=8) == b"ok"
            assert time.monotonic() - t0 < 2.0
        assert failures == [("connect_error", "silent")]
    finally:
        relay.stop()
        silent.close()


class FreezableProxy(Listener):
    """A TCP relay to `port` that can go silent: frozen, it keeps every socket open and
    forwards nothing either way, like a host whose network was cut."""

    def __init__(self, port):
        self.port_to = port
        self.frozen = threading.Event()
        super().__init__()

    def accepted(self, down):
        up = socket.create_connection(("127.0.0.1", self.port_to))
        self.conns += [down, up]
        for a, b in ((down, up), (up, down)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a, b):
        while True:
            try:
                data = a.recv(65536)
            except OSError:
                return
            if not data:
                return
            while self.frozen.is_set():
                time.sleep(0.05)        # hold it: a cut network neither delivers nor resets
            try:
                b.sendall(data)
            except OSError:
                return


def test_a_pooled_upstream_that_goes_silent_is_detected_by_ping_and_retried(origin):
    """With requests in flight on a pooled connection whose peer stops answering, the
    engine PINGs after ping_interval, closes it when no answer comes within ping_timeout,
    and the failed attempt (a reset) is retried elsewhere, long before the request timeout."""
    proxy = FreezableProxy(origin.port)
    via = Target("127.0.0.1", proxy.port, context="via-proxy", timeout=20.0)
    good = Target("127.0.0.1", origin.port, context="good")
    failures = []

    def retry(head, failure):
        failures.append((failure.kind, failure.target.context))
        return good

    relay = RelayThread(lambda head: via, retry, ping_interval=0.2, ping_timeout=0.3)
    try:
        with channel(relay.port) as ch:
            assert unary(ch)(b"warm", timeout=5) == b"warm"      # the pooled connection is up
            proxy.frozen.set()
            before = counters()["ping_timeouts"]
            t0 = time.monotonic()
            assert unary(ch)(b"after", timeout=10) == b"after"
            assert time.monotonic() - t0 < 3.0
        assert failures == [("reset", "via-proxy")]
        assert counters()["ping_timeouts"] == before + 1
    finally:
        relay.stop()
        proxy.close()


def test_retry_on_status_then_give_up_passes_the_status_through():
    flaky = EchoOrigin()
    good = EchoOrigin()
    first = Target("127.0.0.1", flaky.port, retry_grpc=(14,))
    second = Target("127.0.0.1", good.port)
    calls = []

    def retry(head, failure):
        calls.append((failure.kind, failure.grpc_status, head.attempt))
        return second if head.attempt == 0 else None

    relay = RelayThread(lambda head: first, retry)
    try:
        with channel(relay.port) as ch:
            # The flaky origin answers UNAVAILABLE trailers-only; the retry goes to `good`.
            with pytest.raises(grpc.RpcError) as info:
                unary(ch, "Fail")(b"UNAVAILABLE", timeout=5)
        # `good` answers the same method with UNAVAILABLE too; the hook gives up and that
        # answer passes through unchanged.
        assert calls == [("status", 14, 0)]
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info.value.details() == "failing as asked: UNAVAILABLE"
        assert flaky.calls == 1 and good.calls == 1
    finally:
        relay.stop()
        flaky.stop()
        good.stop()


def test_routing_hook_exception_is_internal():
    def decide(head):
        raise RuntimeError("boom")

    relay = RelayThread(decide)
    try:
        with channel(relay.port) as ch:
            with pytest.raises(grpc.RpcError) as info:
                unary(ch)(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert dict(info.value.trailing_metadata())["x-meshd-reason"] == "route_error"
    finally:
        relay.stop()


def test_peer_max_concurrent_streams_opens_more_connections():
    o = EchoOrigin(max_concurrent_streams=2)
    relay = RelayThread(to(o.port))
    try:
        with channel(relay.port) as ch:
            futs = [unary(ch, "Sleep").future(b"0.5", timeout=20) for _ in range(6)]
            assert [f.result() for f in futs] == [b"slept"] * 6
        conns = list(relay.call(relay.engine.upstream_connections).values())[0]
        assert len(conns) >= 3
    finally:
        relay.stop()
        o.stop()


def test_drain_lets_in_flight_finish_and_refuses_new(origin):
    relay = RelayThread(to(origin.port))
    try:
        with channel(relay.port) as ch:
            fut = unary(ch, "Sleep").future(b"0.5", timeout=10)
            assert wait_for(lambda: origin.calls == 1)
            left = relay.call(relay.engine.drain(grace=5.0))
            assert left == 0
            assert fut.result() == b"slept"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", relay.port), timeout=1).close()
    finally:
        relay.stop()


def test_upstream_goaway_retires_the_pooled_connection(origin):
    """relay A -> relay B; B drains (GOAWAY) and a new relay takes its port; A's next request
    must go over a fresh connection, not the retired one."""
    b = RelayThread(to(origin.port))
    port = b.port
    a = RelayThread(to(port))
    try:
        with channel(a.port) as ch:
            assert unary(ch)(b"one", timeout=5) == b"one"
            assert b.call(b.engine.drain(grace=1.0)) == 0
            b.stop()
            # A saw GOAWAY and the close, and dropped the connection from its pool.
            assert wait_for(lambda: not any(a.call(a.engine.upstream_connections).values()))
            b = RelayThread(to(origin.port), port=port)
            opened = counters()["upstream_conns_opened"]
            assert unary(ch)(b"two", timeout=5) == b"two"
            assert counters()["upstream_conns_opened"] >= opened + 1
    finally:
        a.stop()
        b.stop()
