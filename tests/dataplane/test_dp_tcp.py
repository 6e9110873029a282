"""The TCP relay: byte-exact echo with half-close, refusals, connect retries, preamble, TLS resumption."""
from __future__ import annotations

import hashlib
import os
import socket
import socketserver
import ssl
import threading
import time

import pytest
import uvloop

from meshd.dataplane import Refusal, Target
from meshd.dataplane.tcp import TcpEngine, TcpTarget, counters
from tests.dataplane.certs import make_ca_and_server
from tests.dataplane.harness import RelayThread

pytestmark = pytest.mark.dataplane

EOF_MARK = b"<server saw eof>"


class LoopThread(RelayThread):
    """RelayThread's loop thread (call, stop) around any engine made by make(loop)."""

    def __init__(self, make, ssl=None):
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.engine = make(self.loop)
        self.server = self.call(self.engine.listen("127.0.0.1", 0, ssl=ssl))
        self.port = self.server.sockets[0].getsockname()[1]


class EchoServer:
    """A threaded TCP (or TLS) echo server: echoes until EOF, then sends EOF_MARK and FIN."""

    def __init__(self, ssl_ctx=None, first=None):
        self.first = first if first is not None else []    # first bytes each connection sent
        self.connections = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer.connections += 1
                sock = self.request
                if ssl_ctx is not None:
                    sock = ssl_ctx.wrap_socket(sock, server_side=True)
                sock.settimeout(20)
                head = b""
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    if len(head) < 64:
                        head += data[:64 - len(head)]
                    sock.sendall(data)
                outer.first.append(head)
                sock.sendall(EOF_MARK)
                if ssl_ctx is None:
                    sock.shutdown(socket.SHUT_WR)
                sock.close()

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def tls_contexts(tmp_path):
    """(server, client) SSLContexts for a throwaway CA and a localhost certificate."""
    paths = make_ca_and_server(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(paths["cert"], paths["key"])
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(paths["ca"])
    return server_ctx, client_ctx


def dead_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]       # closed again: nothing listens there


def recv_all(sock, timeout=20.0):
    sock.settimeout(timeout)
    out = bytearray()
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return bytes(out)
        out += data


def echo_through(port, payload):
    """Send payload, shut the write side, read until the relay closes: what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        reader = []
        t = threading.Thread(target=lambda: reader.append(recv_all(s)))
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join(30)
        return reader[0]


@pytest.fixture
def echo():
    e = EchoServer()
    yield e
    e.stop()


def test_echo_with_half_close_is_byte_exact(echo):
    """The client shuts its write side; the server sees EOF and still gets its answer through."""
    heads = []
    relay = LoopThread(lambda loop: TcpEngine(
        lambda h: heads.append(h) or Target("127.0.0.1", echo.port), loop=loop))
    try:
        payload = os.urandom(8 << 20)
        c0 = counters()
        got = echo_through(relay.port, payload)
        assert len(got) == len(payload) + len(EOF_MARK)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload + EOF_MARK).digest()
        assert heads[0].local_port == relay.port and heads[0].peer[0] == "127.0.0.1"
        c1 = counters()
        assert c1["bytes_out"] - c0["bytes_out"] == len(payload)
        assert c1["bytes_in"] - c0["bytes_in"] == len(payload) + len(EOF_MARK)
        assert c1["half_closes"] - c0["half_closes"] >= 2
    finally:
        relay.stop()


def test_many_connections_in_parallel_stay_separate(echo):
    relay = LoopThread(lambda loop: TcpEngine(lambda h: Target("127.0.0.1", echo.port), loop=loop))
    try:
        results = {}

        def one(i):
            data = (b"%04d" % i) * 20000
            results[i] = echo_through(relay.port, data) == data + EOF_MARK
        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == {i: True for i in range(16)}
    finally:
        relay.stop()


def test_refusal_closes_without_connecting(echo):
    relay = LoopThread(lambda loop: TcpEngine(lambda h: Refusal(403, reason="denied"), loop=loop))
    try:
        before = counters()["refused"]
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
            assert recv_all(s, 5) == b""
        assert counters()["refused"] == before + 1
        assert echo.connections == 0
    finally:
        relay.stop()


def test_connect_failure_asks_the_retry_hook_and_follows_it(echo):
    dead = Target("127.0.0.1", dead_port())
    live = Target("127.0.0.1", echo.port)
    failures = []

    def retry(head, failure):
        failures.append((head.attempt, failure.kind, failure.target))
        return live

    relay = LoopThread(lambda loop: TcpEngine(lambda h: dead, retry, loop=loop))
    try:
        before = counters()
        assert echo_through(relay.port, b"hello") == b"hello" + EOF_MARK
        assert failures == [(0, "connect_error", dead)]
        after = counters()
        assert after["retries"] - before["retries"] == 1
        assert after["upstream_connect_errors"] - before["upstream_connect_errors"] == 1
    finally:
        relay.stop()


def test_connect_failure_without_retry_closes_the_client():
    relay = LoopThread(lambda loop: TcpEngine(lambda h: Target("127.0.0.1", dead_port()), loop=loop))
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
            s.sendall(b"anyone?")
            assert recv_all(s, 5) == b""
    finally:
        relay.stop()


def test_preamble_goes_first(echo):
    relay = LoopThread(lambda loop: TcpEngine(
        lambda h: TcpTarget(Target("127.0.0.1", echo.port), b"DEST api.shop.local:9000\n"), loop=loop))
    try:
        got = echo_through(relay.port, b"payload")
        assert got == b"DEST api.shop.local:9000\npayload" + EOF_MARK
        assert echo.first == [b"DEST api.shop.local:9000\npayload"]
    finally:
        relay.stop()


def test_idle_connection_is_closed(echo):
    relay = LoopThread(lambda loop: TcpEngine(lambda h: Target("127.0.0.1", echo.port),
                                               loop=loop, idle_timeout=0.3))
    try:
        before = counters()["idle_closed"]
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
            s.sendall(b"x")
            s.settimeout(5)
            assert s.recv(10) == b"x"
            t0 = time.monotonic()
            assert recv_all(s, 5) == b""       # the relay cut it, the server never saw EOF
            assert time.monotonic() - t0 < 3
        assert counters()["idle_closed"] == before + 1
    finally:
        relay.stop()


def test_slow_reader_backpressure_keeps_bytes_exact(echo):
    """A client that reads slowly: the relay pauses the upstream instead of buffering it all."""
    relay = LoopThread(lambda loop: TcpEngine(lambda h: Target("127.0.0.1", echo.port),
                                               loop=loop, high_water=64 * 1024))
    try:
        payload = os.urandom(4 << 20)
        with socket.create_connection(("127.0.0.1", relay.port), timeout=20) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)),
                             daemon=True).start()
            time.sleep(0.5)         # let buffers fill up everywhere
            buffered = relay.call(lambda: sum(
                d.transport.get_write_buffer_size() for d in relay.engine.conns))
            assert buffered < 1 << 20
            got = recv_all(s)
        assert got == payload + EOF_MARK
    finally:
        relay.stop()


def test_tls_upstream_resumes_sessions(tmp_path):
    server_ctx, client_ctx = tls_contexts(tmp_path)
    origin = EchoServer(ssl_ctx=server_ctx)
    target = Target("127.0.0.1", origin.port, ssl=client_ctx, server_hostname="localhost")
    relay = LoopThread(lambda loop: TcpEngine(lambda h: target, loop=loop))
    try:
        c0 = counters()
        for i in range(4):
            with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
                s.sendall(b"ping %d" % i)
                s.settimeout(10)
                assert s.recv(100) == b"ping %d" % i
            time.sleep(0.1)
        c1 = counters()
        full = c1["tls_full_handshakes"] - c0["tls_full_handshakes"]
        resumed = c1["tls_resumed_handshakes"] - c0["tls_resumed_handshakes"]
        assert (full, resumed) == (1, 3)
    finally:
        relay.stop()
        origin.stop()


def test_drain_waits_for_open_connections(echo):
    relay = LoopThread(lambda loop: TcpEngine(lambda h: Target("127.0.0.1", echo.port), loop=loop))
    try:
        s = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        assert relay.call(relay.engine.drain(0.3)) == 1
        assert recv_all(s, 5) == b""
        s.close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", relay.port), timeout=1).close()
    finally:
        relay.stop()


def test_tls_listener_passes_half_close_both_ways(tmp_path, echo):
    """client → relay → TLS → TLS-terminating relay → server: the client's FIN arrives as a
    FIN (via close_notify), and the server's answer after it comes all the way back."""
    server_ctx, client_ctx = tls_contexts(tmp_path)
    back = LoopThread(lambda loop: TcpEngine(lambda h: Target("127.0.0.1", echo.port), loop=loop),
                      ssl=server_ctx)
    front = LoopThread(lambda loop: TcpEngine(lambda h: Target(
        "127.0.0.1", back.port, ssl=client_ctx, server_hostname="localhost"), loop=loop))
    try:
        payload = os.urandom(2 << 20)
        c0 = counters()
        got = echo_through(front.port, payload)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload + EOF_MARK).digest()
        assert counters()["half_closes"] - c0["half_closes"] >= 4      # two FINs, two relays
        assert relay_is_empty(back) and relay_is_empty(front)
    finally:
        front.stop()
        back.stop()


def relay_is_empty(relay, timeout=5.0):
    deadline = time.monotonic() + timeout
    while relay.call(lambda: len(relay.engine.conns)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return relay.call(lambda: len(relay.engine.conns)) == 0


def test_tls_listener_drops_bad_handshakes_and_keeps_serving(tmp_path, echo):
    """Plaintext, garbage and a client that never finishes its handshake are closed without
    reaching the routing hook; a good TLS client on the same listener is answered meanwhile."""
    server_ctx, client_ctx = tls_contexts(tmp_path)
    heads = []
    relay = LoopThread(lambda loop: TcpEngine(lambda h: heads.append(h) or Target("127.0.0.1", echo.port),
                                               loop=loop, handshake_timeout=0.5), ssl=server_ctx)
    front = LoopThread(lambda loop: TcpEngine(lambda h: Target(
        "127.0.0.1", relay.port, ssl=client_ctx, server_hostname="localhost"), loop=loop))
    try:
        c0 = counters()
        silent = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        for junk in (b"GET / HTTP/1.1\r\nHost: db\r\n\r\n", b"\x16\x03\x01\x00\x08notahello" * 4):
            with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
                s.sendall(junk)
                got = recv_all(s, 5)        # at most a TLS alert record (RFC 8446 §6), then EOF
                assert got == b"" or (got[:1] == b"\x15" and len(got) == 7), got
        assert echo_through(front.port, b"still here") == b"still here" + EOF_MARK
        t0 = time.monotonic()
        assert recv_all(silent, 5) == b""
        assert time.monotonic() - t0 < 3
        silent.close()
        assert counters()["tls_handshake_failures"] - c0["tls_handshake_failures"] == 3
        assert len(heads) == 1
    finally:
        front.stop()
        relay.stop()
