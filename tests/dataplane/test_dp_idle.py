"""Idle timeouts on every engine: App Mesh's listener and route `idle`, on each protocol.

Issue 12, item 5. App Mesh: an HTTP/1.1 request, HTTP/2 or gRPC stream with no byte in either
direction for `idle` is ended, and so is a TCP connection; the default is 300 s, a route's value
wins over the listener's, and 0 turns it off. What the caller gets is Envoy's stream idle
timeout: before a response started, 408 while the request is still arriving and 504 once it
has arrived; after, the stream is reset (HTTP/2) or the connection closed (HTTP/1.1).
"""
import socket
import struct
import threading
import time

import grpc
import pytest

from meshd.dataplane import H1Engine, Target
from meshd.dataplane.tcp import TcpEngine, counters as tcp_counters
from tests.dataplane.h2client import H2Client, H2Origin
from tests.dataplane.harness import MiB, RelayThread, channel, counters, frame, to, wait_for
from tests.dataplane.test_dp_tcp import LoopThread, echo, recv_all  # noqa: F401 (echo: a fixture)

pytestmark = [pytest.mark.dataplane, pytest.mark.hardening]

IDLE = 0.3          # seconds; every "quickly" below is well under the 5-10 s a hang is given
QUICK = 2.0


def reason(err):
    return dict(err.trailing_metadata() or ()).get("x-meshd-reason")


@pytest.fixture
def h2origin():
    o = H2Origin()
    yield o
    o.stop()


# -- HTTP/2 -------------------------------------------------------------------------------

def test_h2_request_that_stops_arriving_gets_408(h2origin):
    relay = RelayThread(lambda h: Target("127.0.0.1", h2origin.port), stream_idle_timeout=IDLE)
    c = H2Client(relay.port)
    try:
        t0 = time.monotonic()
        sid = c.request("/upload", b"first bytes", end=False)       # and then nothing
        assert c.pump(lambda: c.streams[sid].done, 10)
        assert time.monotonic() - t0 < QUICK
        st = c.streams[sid]
        assert st.status == 408 and st.headers["x-meshd-reason"] == "stream_idle_timeout"
        assert wait_for(lambda: h2origin.resets == 1)             # the upstream stream is reset too
    finally:
        c.close()
        relay.stop()


def test_h2_upstream_that_never_answers_gets_504_with_per_request_timeout_off(h2origin):
    # perRequest 0 (Target.timeout=0): only the route's idle timeout ends the stream.
    relay = RelayThread(lambda h: Target("127.0.0.1", h2origin.port, timeout=0, idle_timeout=IDLE))
    c = H2Client(relay.port)
    try:
        t0 = time.monotonic()
        sid = c.request("/stall", method="GET")
        assert c.pump(lambda: c.streams[sid].done, 10)
        assert time.monotonic() - t0 < QUICK
        assert c.streams[sid].status == 504
        assert c.streams[sid].headers["x-meshd-reason"] == "stream_idle_timeout"
        assert wait_for(lambda: h2origin.resets == 1)
        assert counters()["idle_timeouts"] >= 1
    finally:
        c.close()
        relay.stop()


def test_h2_stalled_reader_is_reset_both_ways_and_its_buffer_freed(origin):
    """A client that stops crediting one download: no byte moves, so after idle the stream is
    reset downstream and upstream, and the relay lets go of what it held for it."""
    relay = RelayThread(to(origin.port), stream_idle_timeout=IDLE)
    c = H2Client(relay.port)
    try:
        sid = c.request("/echo.Echo/ServerStream", frame(struct.pack(">II", 96, 256 * 1024)), grpc=True)
        c.hold.add(sid)
        assert c.pump(lambda: relay.call(lambda: relay.engine.buffered_bytes) > MiB // 2, 10)
        t0 = time.monotonic()
        assert c.pump(lambda: c.streams[sid].done, 10)
        assert time.monotonic() - t0 < QUICK
        assert c.streams[sid].reset is not None
        assert wait_for(lambda: relay.call(lambda: relay.engine.open_streams) == 0)
        assert relay.call(lambda: relay.engine.buffered_bytes) == 0
    finally:
        c.close()
        relay.stop()


def test_grpc_response_that_goes_silent_midway_is_reset_and_the_origin_cancelled(origin):
    relay = RelayThread(to(origin.port), stream_idle_timeout=IDLE)
    try:
        with channel(relay.port) as ch:
            call = ch.unary_stream("/echo.Echo/Trickle")(struct.pack(">III", 2, 10, 5000), timeout=10)
            got = []
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError):
                for m in call:
                    got.append(m)
            assert len(got) == 2
            assert time.monotonic() - t0 < QUICK
        assert origin.cancelled.wait(5)
    finally:
        relay.stop()


def test_grpc_stream_with_traffic_outlives_the_idle_timeout(origin):
    # Any byte resets the timer: 12 messages 100 ms apart take 1.1 s, nearly 4 idle timeouts.
    relay = RelayThread(to(origin.port), stream_idle_timeout=IDLE)
    try:
        with channel(relay.port) as ch:
            got = list(ch.unary_stream("/echo.Echo/Trickle")(struct.pack(">III", 12, 100, 0), timeout=10))
            assert [struct.unpack(">I", m)[0] for m in got] == list(range(12))
    finally:
        relay.stop()


def test_grpc_stalled_client_stream_ends_with_the_listeners_idle_timeout(origin):
    """The listener's value (listen(stream_idle_timeout=)) applies to its streams only."""
    relay = RelayThread(to(origin.port))                    # the engine's default: 300 s
    short = relay.call(relay.engine.listen("127.0.0.1", 0, stream_idle_timeout=IDLE))
    port = short.sockets[0].getsockname()[1]

    def one_then_silence():
        yield b"one"
        time.sleep(5)

    try:
        with channel(port) as ch:
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                ch.stream_unary("/echo.Echo/ClientStream")(one_then_silence(), timeout=10)
            assert time.monotonic() - t0 < QUICK
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert reason(e.value) == "stream_idle_timeout"
    finally:
        relay.stop()


def test_route_idle_timeout_wins_over_the_listeners(origin):
    """Target.idle_timeout: shorter than the listener's, it cuts a silent upstream; 0 turns the
    listener's off for that route."""
    short = Target("127.0.0.1", origin.port, timeout=0, idle_timeout=IDLE)
    off = Target("127.0.0.1", origin.port, timeout=0, idle_timeout=0)
    relay = RelayThread(lambda h: off if h.header("x-route") == "off" else short, stream_idle_timeout=IDLE * 2)
    try:
        with channel(relay.port) as ch:
            sleep = ch.unary_unary("/echo.Echo/Sleep")
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                sleep(b"3", timeout=10)
            assert time.monotonic() - t0 < QUICK
            assert reason(e.value) == "stream_idle_timeout"
            assert origin.cancelled.wait(5)
            assert sleep(b"1.5", metadata=(("x-route", "off"),), timeout=10) == b"slept"
    finally:
        relay.stop()


# -- HTTP/1.1 -------------------------------------------------------------------------------

class RawOrigin:
    """An HTTP/1.1 origin on a socket: reads a request head, sends a response head announcing
    `length` bytes, then `chunks` pieces `interval` s apart, then stays silent until closed."""

    def __init__(self, chunks, interval, length=None):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.chunks, self.interval = chunks, interval
        self.length = length if length is not None else chunks * 10
        self.closed_by_relay = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        s, _ = self.sock.accept()
        with s:
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            s.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % self.length)
            for i in range(self.chunks):
                if i:
                    time.sleep(self.interval)
                s.sendall(b"%010d" % i)
            s.settimeout(10)
            try:
                if s.recv(1) == b"":
                    self.closed_by_relay.set()
            except OSError:
                self.closed_by_relay.set()

    def stop(self):
        self.sock.close()


def h1(decide, **kw):
    return LoopThread(lambda loop: H1Engine(decide, loop=loop, **kw))


def test_h1_request_body_that_stops_arriving_gets_408():
    silent = socket.create_server(("127.0.0.1", 0))      # waits for the whole request, forever
    port = silent.getsockname()[1]
    relay = h1(lambda h: Target("127.0.0.1", port), stream_idle_timeout=IDLE)
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
            t0 = time.monotonic()
            s.sendall(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
            got = recv_all(s, 5)
            assert time.monotonic() - t0 < QUICK
        assert got.startswith(b"HTTP/1.1 408 ")
        assert b"x-meshd-reason: stream_idle_timeout" in got
    finally:
        relay.stop()
        silent.close()


def test_h1_upstream_that_never_answers_gets_504_with_per_request_timeout_off():
    silent = socket.create_server(("127.0.0.1", 0))      # accepts (the backlog) and never answers
    port = silent.getsockname()[1]
    relay = h1(lambda h: Target("127.0.0.1", port, timeout=0, idle_timeout=IDLE))
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
            t0 = time.monotonic()
            s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            s.settimeout(5)
            got = s.recv(4096)
            assert time.monotonic() - t0 < QUICK
        assert got.startswith(b"HTTP/1.1 504 ") and b"stream_idle_timeout" in got
    finally:
        relay.stop()
        silent.close()


def test_h1_response_that_goes_silent_midway_closes_both_sides():
    origin = RawOrigin(1, 0, length=1000)
    relay = h1(lambda h: Target("127.0.0.1", origin.port), stream_idle_timeout=IDLE)
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            t0 = time.monotonic()
            got = recv_all(s, 5)
            assert time.monotonic() - t0 < QUICK
        assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b"0000000000")
        assert origin.closed_by_relay.wait(5)
    finally:
        relay.stop()
        origin.stop()


def test_h1_response_with_traffic_outlives_the_idle_timeout():
    origin = RawOrigin(12, 0.1)
    relay = h1(lambda h: Target("127.0.0.1", origin.port), stream_idle_timeout=IDLE)
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            s.settimeout(5)
            got = b""
            while not got.endswith(b"%010d" % 11):
                piece = s.recv(4096)
                assert piece, got
                got += piece
        assert got.startswith(b"HTTP/1.1 200 ")
    finally:
        relay.stop()
        origin.stop()


# -- TCP ------------------------------------------------------------------------------------

def silent_for(port, seconds):
    """Connect, echo one byte, stay silent; True if the relay closed within `seconds`."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"x")
        s.settimeout(5)
        assert s.recv(10) == b"x"
        s.settimeout(seconds)
        try:
            return s.recv(10) == b""
        except socket.timeout:
            s.sendall(b"y")             # still open: and still relaying
            s.settimeout(5)
            assert s.recv(10) == b"y"
            return False


def test_tcp_idle_timeout_per_listener(echo):
    relay = LoopThread(lambda loop: TcpEngine(lambda h: Target("127.0.0.1", echo.port), loop=loop))
    short = relay.call(relay.engine.listen("127.0.0.1", 0, idle_timeout=IDLE))
    try:
        before = tcp_counters()["idle_closed"]
        assert silent_for(short.sockets[0].getsockname()[1], QUICK)
        assert not silent_for(relay.port, 1.0)              # the engine's default, 300 s
        assert tcp_counters()["idle_closed"] == before + 1
    finally:
        relay.stop()


def test_tcp_idle_timeout_per_route(echo):
    short = Target("127.0.0.1", echo.port, idle_timeout=IDLE)
    off = Target("127.0.0.1", echo.port, idle_timeout=0)
    relay = LoopThread(lambda loop: TcpEngine(lambda h: short, loop=loop))
    other = LoopThread(lambda loop: TcpEngine(lambda h: off, loop=loop, idle_timeout=IDLE))
    try:
        assert silent_for(relay.port, QUICK)
        assert not silent_for(other.port, 1.0)
    finally:
        relay.stop()
        other.stop()
