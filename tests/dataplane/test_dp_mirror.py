"""Mirroring (shadowing) in the HTTP/2 and HTTP/1.1 engines: the mirror gets an exact copy
with the -shadow authority, while the original is served as if there were no mirror: not
slowed by a slow one, not failed by a dead one; oversize bodies are not copied, and every
copy reports its outcome exactly once."""
from __future__ import annotations

import http.client
import threading
import time

import pytest

from meshd.dataplane import Deferred, H1Engine, Refusal, Target
from tests.dataplane.h2client import H2Client, H2Origin
from tests.dataplane.harness import EchoOrigin, RelayThread, channel, unary, wait_for
from tests.dataplane.test_dp_h1 import Handler, Origin
from tests.dataplane.test_dp_tcp import LoopThread, dead_port

pytestmark = [pytest.mark.dataplane, pytest.mark.beyond]


class Mirroring:
    """A decide hook that forwards every request to `target` and mirrors it to `mirror`
    (head.mirror_to); each request's done calls are collected in `outcomes` (one list per
    request, so a second call would show)."""

    def __init__(self, target, mirror, answer=None, **mirror_kw):
        self.target = target
        self.mirror = mirror
        self.answer = answer            # returned instead of target when set (a Refusal)
        self.mirror_kw = mirror_kw
        self.outcomes: list[list[tuple[str, int]]] = []
        self.lock = threading.Lock()

    def decide(self, head):
        calls = []
        with self.lock:
            self.outcomes.append(calls)
        head.set_header("x-set-by-hook", "yes")
        head.mirror_to(self.mirror, lambda outcome, status: calls.append((outcome, status)), **self.mirror_kw)
        return self.answer if self.answer is not None else self.target

    def settled(self, n, timeout=10.0):
        """Wait until n requests each have an outcome; then a moment more for a second one."""
        ok = wait_for(lambda: len(self.outcomes) >= n and all(self.outcomes[:n]), timeout)
        time.sleep(0.1)
        return ok

    def results(self):
        """Each request's only outcome (fails if a request had none or several)."""
        assert all(len(calls) == 1 for calls in self.outcomes), self.outcomes
        return [calls[0] for calls in self.outcomes]


@pytest.fixture
def made():
    """made(thing): thing (an origin or a relay), stopped when the test ends."""
    things = []

    def keep(thing):
        things.append(thing)
        return thing
    yield keep
    for thing in reversed(things):
        thing.stop()


def h1_relay(decide):
    return LoopThread(lambda loop: H1Engine(decide, loop=loop))


def post(port, path, body, headers=(), n=1):
    """n POSTs on one HTTP/2 connection, one after another: [(status, body, seconds)]."""
    c = H2Client(port)
    out = []
    try:
        for _ in range(n):
            t0 = time.monotonic()
            sid = c.request(path, body=body, headers=headers)
            assert c.pump(lambda: c.streams[sid].done, timeout=10)
            out.append((c.streams[sid].status, bytes(c.streams[sid].body), time.monotonic() - t0))
    finally:
        c.close()
    return out


# -- HTTP/2 and gRPC ---------------------------------------------------------------------

def test_mirror_gets_an_exact_copy_with_the_shadow_authority(made):
    main, shadow = made(H2Origin()), made(H2Origin())
    m = Mirroring(Target("127.0.0.1", main.port), Target("127.0.0.1", shadow.port), max_body_bytes=1 << 20)
    relay = made(RelayThread(m.decide))
    body = bytes(range(256)) * 800
    assert [r[:2] for r in post(relay.port, "/copy?x=1", body, [("x-a", "1"), ("x-b", "two")])] == [
        (200, b"204800")]
    assert m.settled(1)
    assert m.results() == [("ok", 200)]
    (got, got_body), = shadow.requests
    (sent, sent_body), = main.requests
    assert got_body == sent_body == body
    assert got[":authority"] == "test-shadow" and sent[":authority"] == "test"
    assert {k: v for k, v in got.items() if k != ":authority"} == {
        k: v for k, v in sent.items() if k != ":authority"}
    assert (got[":method"], got[":path"], got["x-a"], got["x-b"], got["x-set-by-hook"]) == (
        "POST", "/copy?x=1", "1", "two", "yes")


def test_grpc_unary_calls_are_mirrored(made):
    # Answers of 200 kB, over the relay's 64 kB stream window: the copies' answers must be
    # drained (credited as read), not held, for the copies to finish.
    main, shadow = EchoOrigin(), EchoOrigin()
    try:
        m = Mirroring(Target("127.0.0.1", main.port), Target("127.0.0.1", shadow.port), max_body_bytes=1 << 20)
        relay = made(RelayThread(m.decide, stream_window=65535))
        ch = channel(relay.port)
        try:
            for i in range(10):
                payload = b"%d" % i * 200_000
                assert unary(ch)(payload, timeout=10, metadata=(("x-echo", str(i)),)) == payload
        finally:
            ch.close()
        assert m.settled(10)
        assert m.results() == [("ok", 200)] * 10
        assert wait_for(lambda: shadow.calls == 10)
        assert sorted(md["x-echo"] for md in shadow.seen_metadata) == sorted(str(i) for i in range(10))
    finally:
        main.stop()
        shadow.stop()


def test_parked_request_is_mirrored_with_the_body_that_arrived_while_parked(made):
    main, shadow = made(H2Origin()), made(H2Origin())
    target, mirror = Target("127.0.0.1", main.port), Target("127.0.0.1", shadow.port)
    outcomes = []

    def decide(head):
        head.mirror_to(mirror, lambda *a: outcomes.append(a))
        d = Deferred()
        relay.loop.call_later(0.3, d.resolve, target)
        return d

    relay = made(RelayThread(decide))
    assert [r[:2] for r in post(relay.port, "/late", b"y" * 30000)] == [(200, b"30000")]
    assert wait_for(lambda: outcomes == [("ok", 200)])
    assert shadow.requests[0][1] == b"y" * 30000


def test_slow_mirror_does_not_slow_the_original(made):
    main, slow = made(H2Origin()), made(H2Origin(1.0))
    m = Mirroring(Target("127.0.0.1", main.port), Target("127.0.0.1", slow.port))
    relay = made(RelayThread(m.decide))
    results = post(relay.port, "/fast", b"z" * 1000, n=20)
    assert [r[:2] for r in results] == [(200, b"1000")] * 20
    # Twenty originals in well under the one second the mirror takes for each copy.
    assert sum(r[2] for r in results) < 1.0, results
    assert m.settled(20)
    assert m.results() == [("ok", 200)] * 20
    assert len(slow.requests) == 20


def test_mirror_timeout_abandons_the_copy(made):
    main, slow = made(H2Origin()), made(H2Origin(5.0))
    m = Mirroring(Target("127.0.0.1", main.port), Target("127.0.0.1", slow.port), timeout=0.3)
    relay = made(RelayThread(m.decide))
    assert [r[:2] for r in post(relay.port, "/t", b"abc", n=3)] == [(200, b"3")] * 3
    assert m.settled(3)
    assert m.results() == [("timeout", 0)] * 3
    assert wait_for(lambda: slow.resets == 3)       # the copies' streams were cancelled


def test_dead_mirror_fails_no_original(made):
    main = made(H2Origin())
    m = Mirroring(Target("127.0.0.1", main.port), Target("127.0.0.1", dead_port()))
    relay = made(RelayThread(m.decide))
    assert [r[:2] for r in post(relay.port, "/d", b"q" * 100, n=20)] == [(200, b"100")] * 20
    assert m.settled(20)
    assert m.results() == [("failed", 0)] * 20


def test_oversize_body_is_not_mirrored(made):
    main, shadow = made(H2Origin()), made(H2Origin())
    m = Mirroring(Target("127.0.0.1", main.port), Target("127.0.0.1", shadow.port), max_body_bytes=1000)
    relay = made(RelayThread(m.decide))
    assert [r[:2] for r in post(relay.port, "/big", b"b" * 200_000)] == [(200, b"200000")]
    assert [r[:2] for r in post(relay.port, "/small", b"s" * 1000)] == [(200, b"1000")]
    assert m.settled(2)
    assert m.results() == [("too_large", 0), ("ok", 200)]
    assert [(h[":path"], len(b)) for h, b in shadow.requests] == [("/small", 1000)]


def test_refused_or_abandoned_requests_are_not_mirrored(made):
    main, shadow = made(H2Origin()), made(H2Origin())
    refusing = Mirroring(None, Target("127.0.0.1", shadow.port), answer=Refusal(429, reason="rate_limited"))
    relay = made(RelayThread(refusing.decide))
    assert [r[:2] for r in post(relay.port, "/no", b"n")] == [(429, b"")]
    assert refusing.settled(1)
    assert refusing.results() == [("cancelled", 0)]

    m = Mirroring(Target("127.0.0.1", main.port), Target("127.0.0.1", shadow.port))
    relay = made(RelayThread(m.decide))
    c = H2Client(relay.port)
    try:
        sid = c.request("/half", body=b"part", end=False)
        assert c.pump(lambda: len(m.outcomes) == 1, timeout=5)
        c.conn.reset_stream(sid)
        c.flush()
        assert m.settled(1)
        assert m.results() == [("cancelled", 0)]
    finally:
        c.close()
    time.sleep(0.2)
    assert shadow.opened == 0


# -- HTTP/1.1 ----------------------------------------------------------------------------

class SlowPosts(Handler):
    """The HTTP/1.1 test origin, answering POSTs one second late."""

    def do_POST(self):
        time.sleep(1.0)
        super().do_POST()


def h1_post(port, path, body, headers=None, n=1, chunked=False):
    """n POSTs on one keep-alive connection: [(status, body, seconds)]."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        for _ in range(n):
            t0 = time.monotonic()
            c.request("POST", path, body=iter([body]) if chunked else body, headers=dict(headers or {}),
                      encode_chunked=chunked)
            r = c.getresponse()
            out.append((r.status, r.read(), time.monotonic() - t0))
    finally:
        c.close()
    return out


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_h1_mirror_gets_an_exact_copy_with_the_shadow_host(made, chunked):
    main, shadow = made(Origin()), made(Origin())
    m = Mirroring(Target("127.0.0.1", main.port), Target("127.0.0.1", shadow.port), max_body_bytes=1 << 20)
    relay = made(h1_relay(m.decide))
    body = bytes(range(256)) * 300
    for i in range(3):
        assert [r[:2] for r in h1_post(relay.port, "/echo?1", body, {"x-a": "1"}, chunked=chunked)] == [
            (200, body)]
        assert m.settled(i + 1)         # each copy is done before the next one goes
    assert m.results() == [("ok", 200)] * 3
    assert wait_for(lambda: len(shadow.seen) == 3)
    assert shadow.connections == 1      # the copies share one pooled keep-alive connection
    (method, path, got) = shadow.seen[0]
    (_, _, sent) = main.seen[0]
    assert (method, path, got["host"], sent["host"]) == ("POST", "/echo?1", f"127.0.0.1:{relay.port}-shadow",
                                                         f"127.0.0.1:{relay.port}")
    assert {k: v for k, v in got.items() if k != "host"} == {k: v for k, v in sent.items() if k != "host"}
    assert got["x-a"] == "1" and got["x-set-by-hook"] == "yes"


def test_h1_slow_and_dead_mirrors_do_not_touch_the_original(made):
    main = made(Origin())
    slow_origin = made(Origin(handler=SlowPosts))
    m = Mirroring(Target("127.0.0.1", main.port), Target("127.0.0.1", slow_origin.port), timeout=0.3)
    relay = made(h1_relay(m.decide))
    # The mirror's copy takes a second to answer; the originals (echoed) do not wait.
    results = h1_post(relay.port, "/w", b"w" * 100, n=10)
    assert [r[:2] for r in results] == [(200, b"w" * 100)] * 10
    assert sum(r[2] for r in results) < 1.0, results
    assert m.settled(10)
    assert m.results() == [("timeout", 0)] * 10

    dead = Mirroring(Target("127.0.0.1", main.port), Target("127.0.0.1", dead_port()))
    relay = made(h1_relay(dead.decide))
    assert [r[:2] for r in h1_post(relay.port, "/d", b"d", n=10)] == [(200, b"d")] * 10
    assert dead.settled(10)
    assert dead.results() == [("failed", 0)] * 10


def test_h1_oversize_and_refused_requests_are_not_mirrored(made):
    main, shadow = made(Origin()), made(Origin())
    m = Mirroring(Target("127.0.0.1", main.port), Target("127.0.0.1", shadow.port), max_body_bytes=1000)
    relay = made(h1_relay(m.decide))
    assert [r[:2] for r in h1_post(relay.port, "/big", b"b" * 100_000)] == [(200, b"b" * 100_000)]
    assert [r[:2] for r in h1_post(relay.port, "/big", b"c" * 100_000, chunked=True)] == [(200, b"c" * 100_000)]
    refusing = Mirroring(None, Target("127.0.0.1", shadow.port), answer=Refusal(429, reason="rate_limited"))
    relay = made(h1_relay(refusing.decide))
    assert [r[:2] for r in h1_post(relay.port, "/no", b"n")] == [(429, b"")]
    assert m.settled(2) and refusing.settled(1)
    assert m.results() == [("too_large", 0)] * 2
    assert refusing.results() == [("cancelled", 0)]
    time.sleep(0.2)
    assert shadow.seen == []
