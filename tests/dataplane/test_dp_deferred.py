"""Deferred routing answers in the HTTP/2 engine: a parked stream is forwarded or refused when
the answer comes, holds at most its stream window of body meanwhile, and ends cleanly when the
client resets or a timeout fires first."""
from __future__ import annotations

import time

import grpc
import pytest

from meshd.dataplane import Deferred, Refusal, Target
from tests.dataplane.h2client import H2Client, H2Origin
from tests.dataplane.harness import RelayThread, channel, unary, wait_for

pytestmark = [pytest.mark.dataplane, pytest.mark.beyond]


class Parking:
    """A decide hook that parks every request: each gets a Deferred, kept in `waiting`, that the
    test resolves (or a delay does, from the relay's loop); completions land in `done`."""

    def __init__(self, delay=None, answer=None):
        self.delay = delay
        self.answer = answer
        self.waiting: list[Deferred] = []
        self.done = []
        self.relay = None
        self.closing = []

    def decide(self, head):
        d = Deferred()
        self.waiting.append(d)
        if self.delay is not None:
            self.relay.loop.call_later(self.delay, d.resolve, self.answer)
        return d

    def complete(self, head, target, status, grpc_status, reason, duration_ns):
        self.done.append((target, status, grpc_status, reason, duration_ns))

    def start(self, **kw):
        self.relay = RelayThread(self.decide, complete=self.complete, **kw)
        return self.relay

    def resolve_all(self, answer):
        self.relay.call(lambda: [d.resolve(answer) for d in self.waiting])

    def client(self):
        """An H2Client (closed with the relay) or a gRPC channel to the relay."""
        c = H2Client(self.relay.port)
        self.closing.append(c)
        return c

    def channel(self):
        ch = channel(self.relay.port)
        self.closing.append(ch)
        return ch

    def stop(self):
        for c in self.closing:
            c.close()
        if self.relay is not None:
            self.relay.stop()


@pytest.fixture
def parking():
    """Parking(delay, answer): the test sets it up and starts its relay; stopped here."""
    made = []

    def make(delay=None, answer=None):
        made.append(Parking(delay, answer))
        return made[-1]
    yield make
    for p in made:
        p.stop()


@pytest.fixture
def h2origin():
    o = H2Origin()
    yield o
    o.stop()


def test_parked_grpc_call_is_forwarded_when_the_deferred_resolves(origin, parking):
    p = parking(delay=0.3, answer=Target("127.0.0.1", origin.port))
    p.start()
    payload = bytes(range(256)) * 400
    t0 = time.monotonic()
    assert unary(p.channel())(payload, timeout=10) == payload
    assert time.monotonic() - t0 >= 0.3
    assert origin.calls == 1
    assert wait_for(lambda: len(p.done) == 1)
    target, status, grpc_status, reason, duration_ns = p.done[0]
    assert (target.port, status, grpc_status, reason) == (origin.port, 200, 0, "")
    assert duration_ns >= 300_000_000


def test_answer_resolved_inside_the_hook_is_acted_on_at_once(origin):
    target = Target("127.0.0.1", origin.port)

    def decide(head):
        d = Deferred()
        d.resolve(target)
        return d

    relay = RelayThread(decide)
    ch = channel(relay.port)
    try:
        assert unary(ch)(b"now", timeout=10) == b"now"
    finally:
        ch.close()
        relay.stop()


def test_parked_body_is_held_within_the_stream_window_then_relayed_whole(h2origin, parking):
    window = 65535
    p = parking()
    relay = p.start(stream_window=window)
    c = p.client()
    sid = c.request("/upload", body=b"x" * 300_000)
    # The client sends what the window allows and no more: nothing is credited while the
    # stream is parked.
    assert c.pump(lambda: relay.call(lambda: relay.engine.buffered_bytes) >= window, timeout=5)
    c.pump(lambda: False, timeout=0.3)
    assert relay.call(lambda: relay.engine.buffered_bytes) == window
    assert h2origin.opened == 0 and len(p.waiting) == 1
    p.resolve_all(Target("127.0.0.1", h2origin.port))
    assert c.pump(lambda: c.streams[sid].done, timeout=10)
    assert (c.streams[sid].status, bytes(c.streams[sid].body)) == (200, b"300000")
    assert h2origin.requests[0][1] == b"x" * 300_000


def test_parked_request_is_refused_when_the_deferred_resolves_with_a_refusal(origin, h2origin, parking):
    p = parking(delay=0.2, answer=Refusal(429, 8, "slow down", "rate_limited"))
    p.start()
    with pytest.raises(grpc.RpcError) as err:
        unary(p.channel())(b"hi", timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("x-meshd-reason", "rate_limited") in err.value.trailing_metadata()
    c = p.client()
    sid = c.request("/plain", body=b"abc")
    assert c.pump(lambda: c.streams[sid].done, timeout=5)
    assert c.streams[sid].status == 429
    assert c.streams[sid].headers["x-meshd-reason"] == "rate_limited"
    assert origin.calls == 0 and h2origin.opened == 0
    assert wait_for(lambda: len(p.done) == 2)
    assert sorted((d[0], d[3]) for d in p.done) == [(None, "rate_limited")] * 2


def test_client_reset_while_parked_completes_as_reset_and_the_late_answer_is_dropped(h2origin, parking):
    p = parking()
    relay = p.start()
    c = p.client()
    sid = c.request("/gone", body=b"partial", end=False)
    assert c.pump(lambda: len(p.waiting) == 1, timeout=5)
    c.conn.reset_stream(sid)
    c.flush()
    assert wait_for(lambda: len(p.done) == 1)
    target, _, _, reason, _ = p.done[0]
    assert (target, reason) == (None, "reset")
    # A whole connection lost while parked is a reset too.
    c2 = H2Client(relay.port)
    c2.request("/gone-too", body=b"all", end=True)
    assert wait_for(lambda: len(p.waiting) == 2)
    c2.close()
    assert wait_for(lambda: len(p.done) == 2)
    assert (p.done[1][0], p.done[1][3]) == (None, "reset")
    p.resolve_all(Target("127.0.0.1", h2origin.port))
    time.sleep(0.3)
    assert h2origin.opened == 0
    assert len(p.done) == 2
    assert relay.call(lambda: relay.engine.open_streams) == 0
    # The connection whose stream was reset still serves.
    p.delay, p.answer = 0.0, Target("127.0.0.1", h2origin.port)
    sid = c.request("/after", body=b"12345")
    assert c.pump(lambda: c.streams[sid].done, timeout=5)
    assert (c.streams[sid].status, bytes(c.streams[sid].body)) == (200, b"5")


def test_callers_deadline_runs_while_parked(origin, parking):
    p = parking()
    p.start()
    c = p.client()
    t0 = time.monotonic()
    sid = c.request("/echo.Echo/Unary", body=b"\x00\x00\x00\x00\x00", grpc=True,
                    headers=[("grpc-timeout", "300m")])
    assert c.pump(lambda: c.streams[sid].done, timeout=5)
    st = c.streams[sid]
    assert (st.status, st.headers.get("grpc-status"), st.headers.get("x-meshd-reason")) == (
        200, "4", "request_timeout")
    assert 0.3 <= time.monotonic() - t0 < 2
    assert wait_for(lambda: len(p.done) == 1)
    assert p.done[0][3] == "request_timeout"
    p.resolve_all(Target("127.0.0.1", origin.port))
    time.sleep(0.2)
    assert origin.calls == 0 and len(p.done) == 1


def test_stream_idle_timeout_ends_a_parked_stream(h2origin, parking):
    p = parking()
    p.start(stream_idle_timeout=0.5)
    c = p.client()
    sid = c.request("/never", body=b"abc")
    # A gRPC stream whose request is still open: answered trailers-only and left half-open
    # (no reset for gRPC clients), so only the parked flag keeps the late answer from
    # sending it upstream.
    gsid = c.request("/echo.Echo/ClientStream", body=b"\x00\x00\x00\x00\x01x", grpc=True, end=False)
    assert c.pump(lambda: c.streams[sid].done and "grpc-status" in c.streams[gsid].headers, timeout=5)
    assert c.streams[sid].status == 504
    assert c.streams[sid].headers["x-meshd-reason"] == "stream_idle_timeout"
    assert c.streams[gsid].headers["grpc-status"] == "4"
    assert c.streams[gsid].headers["x-meshd-reason"] == "stream_idle_timeout"
    p.resolve_all(Target("127.0.0.1", h2origin.port))
    # The half-open gRPC stream is reset at the next expiry; both complete as idle.
    c.pump(lambda: c.streams[gsid].done, timeout=5)
    assert wait_for(lambda: len(p.done) == 2)
    assert [d[3] for d in p.done] == ["stream_idle_timeout"] * 2
    assert h2origin.opened == 0


def test_route_timeout_counts_from_the_resolution(origin, parking):
    # Parked 0.5 s, then a route with a 0.4 s timeout to an origin that takes 0.1 s: the call
    # succeeds (counted from the start it would have timed out while parked). The same route
    # to an origin slower than its timeout still times out.
    p = parking(delay=0.5, answer=Target("127.0.0.1", origin.port, timeout=0.4))
    p.start()
    ch = p.channel()
    assert unary(ch, "Sleep")(b"0.1", timeout=10) == b"slept"
    with pytest.raises(grpc.RpcError) as err:
        unary(ch, "Sleep")(b"1", timeout=10)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(lambda: len(p.done) == 2)
    # The engine passes the route's timeout upstream as grpc-timeout, so the origin's own
    # deadline races the engine's timer: either may answer DEADLINE_EXCEEDED first (the
    # origin's answer completes with no reason of the engine's). Both prove the timeout.
    assert p.done[0][3] == "" and p.done[1][3] in ("request_timeout", "")
