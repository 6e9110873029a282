"""HTTP/2 flow control: a stalled stream holds at most its own window and never the connection.

Issue 12, item 4. A reader that stops reading one stream must not stall the other streams of
the connection they share, in either direction: the pooled upstream connection that every
caller's responses come back on, and a downstream connection (one meshd's pooled connection
into another's ingress) that carries several callers' uploads.
"""
import concurrent.futures
import struct
import time

import pytest

from meshd.dataplane import Target
from tests.dataplane.h2client import H2Client, H2Origin
from tests.dataplane.harness import MiB, RelayThread, channel, frame, to, unary, wait_for

pytestmark = [pytest.mark.dataplane, pytest.mark.hardening]

STREAM_WINDOW = 1 * MiB


def stall_downloads(port, n, mib=24):
    """A caller on its own connection asks for n server-streamed downloads of `mib` MiB each
    and then never reads its socket again."""
    c = H2Client(port)
    for _ in range(n):
        c.request("/echo.Echo/ServerStream", frame(struct.pack(">II", mib * 4, 256 * 1024)), grpc=True)
    return c


def hundred_calls(port, timeout=5.0):
    """100 unary calls from another caller, ten at a time; the first failure ends a worker."""
    def worker(i):
        with channel(port) as ch:
            call = unary(ch)
            for j in range(10):
                body = b"call %d.%d" % (i, j)
                assert call(body, timeout=timeout) == body
        return 10

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        return sum(pool.map(worker, range(10)))


def buffered(relay):
    return relay.call(lambda: relay.engine.buffered_bytes)


def settle(origin, n):
    """Wait until the origin streams to all n stalled calls, then for their windows to fill."""
    assert wait_for(lambda: origin.calls >= n, 10)
    time.sleep(1.0)


@pytest.mark.parametrize("stalled, engine_kw", [
    # One stalled download is enough when the connection window is no larger than a stream
    # window (nghttp2's and RFC 9113 §6.9.2's default, 65,535 each, is the same shape).
    (1, dict(stream_window=STREAM_WINDOW, connection_window=STREAM_WINDOW)),
    # The default windows (1 MiB per stream, 4 MiB per connection): five stalled downloads.
    (5, dict()),
    (8, dict()),
], ids=["one-stalled-small-connection-window", "five-stalled", "eight-stalled"])
def test_stalled_downloads_do_not_stall_the_pooled_upstream_connection(origin, stalled, engine_kw):
    relay = RelayThread(to(origin.port), **engine_kw)
    c = stall_downloads(relay.port, stalled)
    try:
        settle(origin, stalled)
        t0 = time.monotonic()
        assert hundred_calls(relay.port) == 100
        assert time.monotonic() - t0 < 20
        # Everything went over the one pooled connection the stalled downloads hold open.
        conns = relay.call(relay.engine.upstream_connections)
        assert [len(v) for v in conns.values()] == [1]
        # Each stalled stream holds at most its own stream window in the relay.
        held = buffered(relay)
        assert held <= stalled * STREAM_WINDOW
        assert held >= stalled * STREAM_WINDOW // 2       # and they did fill up
    finally:
        c.close()
        relay.stop()


def test_stalled_downloads_through_two_hops(origin):
    """Egress relay -> ingress relay -> origin, as between two meshds: the ingress's listener
    connection is the egress's pooled upstream, so both sides of that connection and the
    ingress's own pool to the origin carry the stalled streams and everyone else's."""
    ingress = RelayThread(to(origin.port))
    egress = RelayThread(to(ingress.port))
    c = stall_downloads(egress.port, 6)
    try:
        settle(origin, 6)
        assert hundred_calls(egress.port) == 100
        for relay in (egress, ingress):
            assert [len(v) for v in relay.call(relay.engine.upstream_connections).values()] == [1]
            assert buffered(relay) <= 6 * STREAM_WINDOW
    finally:
        c.close()
        egress.stop()
        ingress.stop()


def test_stalled_uploads_do_not_stall_their_downstream_connection():
    """Five uploads on one connection go to an upstream that never reads them; 100 small
    uploads on the same downstream connection (and the same pooled upstream) still finish."""
    up = H2Origin()
    relay = RelayThread(lambda head: Target("127.0.0.1", up.port))
    c = H2Client(relay.port)
    try:
        stalls = [c.request("/stall", b"x" * (8 * MiB)) for _ in range(5)]
        assert c.pump(lambda: up.stalled == 5, 10)
        c.pump(lambda: False, 1.0)       # let the windows fill
        small = [c.request("/small", b"y" * 4096) for _ in range(100)]
        done = c.pump(lambda: all(c.streams[s].done for s in small), 10)
        assert done, f"{sum(c.streams[s].done for s in small)} of 100 small uploads finished"
        assert all(c.streams[s].status == 200 and bytes(c.streams[s].body) == b"4096" for s in small)
        assert not any(c.streams[s].done for s in stalls)
        held = buffered(relay)
        assert held <= 5 * (STREAM_WINDOW + 65536)       # the window, plus the retry buffer
        assert held >= 5 * STREAM_WINDOW // 2
    finally:
        c.close()
        relay.stop()
        up.stop()
