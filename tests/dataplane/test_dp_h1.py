"""The HTTP/1.1 relay: keep-alive pools, chunked and large streamed bodies, WebSocket tunnels,
TLS resumption upstream, refusals, timeouts, retries and hostile clients."""
from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os
import socket
import struct
import threading
import time

import pytest

from meshd.dataplane import H1Engine, Refusal, Target
from meshd.dataplane.h1 import counters
from tests.dataplane.test_dp_tcp import LoopThread, dead_port, recv_all, tls_contexts

pytestmark = pytest.mark.dataplane

MiB = 1 << 20
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"     # RFC 6455 §1.3


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.connections += 1

    def _pieces(self):
        """The request body, piece by piece (chunked or content-length), never all at once."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        left = int(self.headers.get("content-length") or 0)
        while left:
            piece = self.rfile.read(min(left, 1 << 16))
            left -= len(piece)
            yield piece

    def _body(self):
        return b"".join(self._pieces())

    def _send(self, status, body, ctype="application/octet-stream", extra=()):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.server.seen.append((self.command, self.path, dict(self.headers.items())))
        path, _, query = self.path.partition("?")
        if path == "/headers":
            self._send(200, json.dumps([[k.lower(), v] for k, v in self.headers.items()]).encode(),
                       "application/json")
        elif path == "/big":
            n = int(query)
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            block = bytes(range(256)) * 256
            sent = 0
            while sent < n:
                piece = block[: min(len(block), n - sent)]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            self.wfile.write(b"0\r\nx-sum: done\r\n\r\n")
        elif path == "/slow":
            time.sleep(float(query))
            self._send(200, b"slow")
        elif path == "/status":
            self._send(int(query), b"status %s" % query.encode())
        elif path == "/ws":
            self._websocket()
        else:
            self._send(200, b"hello " + path.encode())

    def do_POST(self):
        if self.path == "/hash":
            h, n = hashlib.sha256(), 0
            for piece in self._pieces():
                h.update(piece)
                n += len(piece)
            self._send(200, b"%d:%s" % (n, h.hexdigest().encode()))
            return
        body = self._body()
        self.server.seen.append((self.command, self.path, dict(self.headers.items())))
        if self.path.startswith("/status"):
            self._send(int(self.path.partition("?")[2]), b"status")
            return
        # Echo chunked, in uneven pieces.
        self.send_response(200)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i in range(0, len(body), 7777):
            piece = body[i:i + 7777]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def _websocket(self):
        key = self.headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        self.send_response(101)
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.send_header("sec-websocket-accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            op, payload = ws_read(self.rfile)
            if op is None:
                return
            if op == 8:                         # close: answer it and end (RFC 6455 §5.5.1)
                self.wfile.write(ws_frame(8, payload, mask=False))
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(ws_frame(op, payload, mask=False))
            self.wfile.flush()


def ws_frame(op, payload, mask=True):
    """One final RFC 6455 frame (§5.2), masked as a client must."""
    head = bytes([0x80 | op])
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_read(f):
    """Read one frame from a file-like object: (opcode, unmasked payload) or (None, b"")."""
    h = f.read(2)
    if len(h) < 2:
        return None, b""
    n = h[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", f.read(8))[0]
    key = f.read(4) if h[1] & 0x80 else None
    data = f.read(n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return h[0] & 0x0F, data


class Origin:
    def __init__(self, ssl_ctx=None, handler=Handler):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.connections = 0
        self.server.seen = []
        if ssl_ctx is not None:
            self.server.socket = ssl_ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def connections(self):
        return self.server.connections

    @property
    def seen(self):
        return self.server.seen

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.stop()


def h1_relay(decide, retry=None, **kw):
    return LoopThread(lambda loop: H1Engine(decide, retry, loop=loop, **kw))


@pytest.fixture
def relay(origin):
    heads = []
    target = Target("127.0.0.1", origin.port)
    r = h1_relay(lambda h: heads.append(h) or target, header_timeout=0.5)
    r.heads = heads
    r.target = target
    yield r
    r.stop()


def conn(port, timeout=10):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def raw_exchange(port, data, timeout=5.0):
    """Send raw bytes; return everything the relay answered until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return recv_all(s, timeout)


def still_serving(port):
    c = conn(port)
    c.request("GET", "/alive")
    r = c.getresponse()
    ok = r.status == 200 and r.read() == b"hello /alive"
    c.close()
    return ok


def test_keep_alive_reuses_one_upstream_connection(relay, origin):
    before = counters()
    c = conn(relay.port)
    for i in range(5):
        c.request("GET", "/n%d?q=1" % i, headers={"Host": "api.shop.local", "X-Trace": "t%d" % i})
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"hello /n%d" % i)
    c.close()
    assert origin.connections == 1
    after = counters()
    assert after["upstream_conns_opened"] - before["upstream_conns_opened"] == 1
    assert after["upstream_reused"] - before["upstream_reused"] == 4
    h = relay.heads[2]
    assert (h.method, h.scheme, h.authority, h.path) == ("GET", "http", "api.shop.local", "/n2?q=1")
    assert h.headers["x-trace"] == "t2" and h.grpc is False and h.attempt == 0
    assert h.local_port == relay.port
    assert (b"x-trace", b"t2") in h.raw_headers


def test_hop_by_hop_fields_are_removed_and_target_headers_applied(origin):
    target = Target("127.0.0.1", origin.port, headers=[("host", "backend.internal"), ("x-mesh", "1"),
                                                        ("x-replaced", "new")])
    relay = h1_relay(lambda h: target)
    try:
        c = conn(relay.port)
        c.request("GET", "/headers", headers={
            "Connection": "keep-alive, x-private", "Keep-Alive": "timeout=5", "X-Private": "secret",
            "TE": "trailers", "Proxy-Connection": "keep-alive", "X-Replaced": "old", "X-Kept": "yes"})
        r = c.getresponse()
        got = dict(json.loads(r.read()))
        assert r.status == 200
        assert got["host"] == "backend.internal"
        assert got["x-mesh"] == "1" and got["x-replaced"] == "new" and got["x-kept"] == "yes"
        for gone in ("keep-alive", "x-private", "te", "proxy-connection"):
            assert gone not in got, gone
        assert "connection" not in got
        c.close()
    finally:
        relay.stop()


def test_chunked_bodies_both_ways_are_byte_exact(relay):
    pieces = [os.urandom(n) for n in (1, 100, 65536, 3, 200000, 17)]
    c = conn(relay.port)
    c.request("POST", "/echo", body=iter(pieces), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("transfer-encoding") == "chunked"
    assert r.read() == b"".join(pieces)
    # and a content-length body on the same connection
    c.request("POST", "/hash", body=b"x" * 1000)
    r = c.getresponse()
    assert r.read() == b"1000:" + hashlib.sha256(b"x" * 1000).hexdigest().encode()
    c.close()


def test_response_trailers_pass_through(relay):
    out = raw_exchange(relay.port, b"GET /big?1000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.endswith(b"0\r\nx-sum: done\r\n\r\n")


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_50_mib_bodies_stream_without_buffering(relay):
    n = 50 * MiB
    block = bytes(range(256)) * 256
    expected = hashlib.sha256()
    for _ in range(n // len(block)):
        expected.update(block)
    expected = expected.hexdigest()
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.02)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        c = conn(relay.port, timeout=60)
        c.request("GET", "/big?%d" % n)
        r = c.getresponse()
        h = hashlib.sha256()
        got = 0
        while True:
            chunk = r.read(256 * 1024)
            if not chunk:
                break
            got += len(chunk)
            h.update(chunk)
        assert got == n
        assert h.hexdigest() == expected

        def upload():
            for _ in range(n // len(block)):
                yield block
        c.request("POST", "/hash", body=upload(), encode_chunked=True,
                  headers={"Transfer-Encoding": "chunked"})
        r = c.getresponse()
        assert r.read() == b"%d:%s" % (n, expected.encode())
        c.close()
    finally:
        stop.set()
        sampler.join()
    # Everything (client, relay, origin) lives in this process: buffering one body would show.
    assert peak[0] - base < 32 * MiB, (peak[0] - base) / MiB


def test_refusal_is_a_status_with_reason_and_keeps_the_connection(origin):
    relay = h1_relay(lambda h: Refusal(403, reason="egress_denied") if h.path == "/no"
                     else Target("127.0.0.1", origin.port))
    try:
        c = conn(relay.port)
        c.request("GET", "/no")
        r = c.getresponse()
        assert r.status == 403 and r.read() == b""
        assert r.getheader("x-meshd-reason") == "egress_denied"
        assert r.getheader("content-length") == "0"
        c.request("GET", "/yes")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"hello /yes")
        c.close()
        assert [s[1] for s in origin.seen] == ["/yes"]
    finally:
        relay.stop()


def test_connect_failure_is_503_or_follows_the_retry_hook(origin):
    dead = Target("127.0.0.1", dead_port())
    live = Target("127.0.0.1", origin.port)
    failures = []

    def retry(head, failure):
        failures.append((head.attempt, failure.kind, failure.target))
        return live

    plain = h1_relay(lambda h: dead)
    retrying = h1_relay(lambda h: dead, retry)
    try:
        c = conn(plain.port)
        c.request("GET", "/x")
        r = c.getresponse()
        assert r.status == 503 and r.getheader("x-meshd-reason") == "upstream_connect_failure"
        r.read()
        c.close()
        c = conn(retrying.port)
        c.request("POST", "/echo", body=b"replayed body")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"replayed body")
        assert failures == [(0, "connect_error", dead)]
        c.close()
    finally:
        plain.stop()
        retrying.stop()


def test_retry_on_status_replays_the_body(origin):
    first = Target("127.0.0.1", origin.port, retry_statuses=[503])
    second = Target("127.0.0.1", origin.port, headers=[("x-second", "1")])
    relay = h1_relay(lambda h: first, lambda h, f: second if f.kind == "status" else None)
    try:
        before = counters()["retries"]
        c = conn(relay.port)
        c.request("POST", "/status?503", body=b"payload")
        r = c.getresponse()
        assert r.status == 503          # the second attempt answers 503 too, not retried again
        r.read()
        c.close()
        assert counters()["retries"] == before + 1
        posts = [s for s in origin.seen if s[0] == "POST"]
        assert len(posts) == 2 and "x-second" in {k.lower() for k in posts[1][2]}
    finally:
        relay.stop()


def test_request_timeout_is_504(origin):
    relay = h1_relay(lambda h: Target("127.0.0.1", origin.port, timeout=0.3))
    try:
        c = conn(relay.port)
        t0 = time.monotonic()
        c.request("GET", "/slow?2")
        r = c.getresponse()
        assert r.status == 504 and r.getheader("x-meshd-reason") == "request_timeout"
        assert time.monotonic() - t0 < 1.5
        r.read()
        c.request("GET", "/slow?0")         # the connection still works
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"slow")
        c.close()
    finally:
        relay.stop()


def test_expect_100_continue(relay):
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        s.settimeout(5)
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            data += s.recv(4096)
        assert data.startswith(b"HTTP/1.1 200") and b"\r\n5\r\nhello\r\n0\r\n\r\n" in data


def test_pipelined_requests_answer_in_order(relay):
    reqs = b"".join(b"GET /p%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(3))
    out = raw_exchange(relay.port, reqs + b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    bodies = [b"hello /p0", b"hello /p1", b"hello /p2", b"hello /last"]
    positions = [out.find(b) for b in bodies]
    assert all(p > 0 for p in positions) and positions == sorted(positions)
    assert out.count(b"HTTP/1.1 200") == 4


def test_head_response_has_no_body_and_keeps_alive(relay):
    c = conn(relay.port)
    c.request("HEAD", "/thing")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("content-length") == "12" and r.read() == b""
    c.request("GET", "/thing")
    r = c.getresponse()
    assert r.read() == b"hello /thing"
    c.close()


def test_websocket_echo_through_the_relay(relay):
    key = base64.b64encode(os.urandom(16))
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        # The first frame rides in the same write as the handshake: the relay must hold it.
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
                  + ws_frame(1, b"early bird"))
        f = s.makefile("rb")
        status = f.readline()
        assert status.startswith(b"HTTP/1.1 101")
        headers = {}
        while (line := f.readline()) != b"\r\n":
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        assert headers["sec-websocket-accept"] == base64.b64encode(
            hashlib.sha1(key + WS_GUID).digest()).decode()
        assert headers["upgrade"].lower() == "websocket"
        assert ws_read(f) == (1, b"early bird")
        messages = [b"m%d" % i * (i + 1) for i in range(50)] + [os.urandom(200000)]
        for m in messages:
            s.sendall(ws_frame(2, m))
            assert ws_read(f) == (2, m)
        s.sendall(ws_frame(8, b"\x03\xe8bye"))
        assert ws_read(f) == (8, b"\x03\xe8bye")
        assert f.read() == b""          # the server closed; the relay passed it on
    assert counters()["upgrades"] >= 1


def test_tls_upstream_resumes_sessions(tmp_path):
    server_ctx, client_ctx = tls_contexts(tmp_path)
    origin = Origin(ssl_ctx=server_ctx)
    target = Target("127.0.0.1", origin.port, ssl=client_ctx, server_hostname="localhost")
    relay = h1_relay(lambda h: target, upstream_idle_timeout=0.1)
    try:
        c0 = counters()
        c = conn(relay.port)
        for i in range(4):
            c.request("GET", "/tls%d" % i)
            r = c.getresponse()
            assert (r.status, r.read()) == (200, b"hello /tls%d" % i)
            time.sleep(0.35)        # the idle upstream expires: the next request reconnects
        c.close()
        c1 = counters()
        full = c1["tls_full_handshakes"] - c0["tls_full_handshakes"]
        resumed = c1["tls_resumed_handshakes"] - c0["tls_resumed_handshakes"]
        assert (full, resumed) == (1, 3)
        assert origin.connections == 4
    finally:
        relay.stop()
        origin.stop()


# --- hostile clients ----------------------------------------------------------------------

def test_garbage_gets_400_and_others_are_served(relay):
    before = counters()["protocol_errors"]
    out = raw_exchange(relay.port, b"\x16\x03\x01" + os.urandom(2000))
    assert out.startswith(b"HTTP/1.1 400") and b"x-meshd-reason: bad_request" in out
    assert counters()["protocol_errors"] > before
    assert still_serving(relay.port)


def test_oversized_headers_get_431(relay, origin):
    out = raw_exchange(relay.port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 431")
    assert origin.seen == []
    assert still_serving(relay.port)


@pytest.mark.parametrize("smuggle", [
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
], ids=["cl-and-te", "two-cl", "te-not-chunked", "two-hosts"])
def test_request_smuggling_shapes_are_rejected(relay, origin, smuggle):
    out = raw_exchange(relay.port, smuggle)
    assert out.startswith(b"HTTP/1.1 400"), out[:100]
    assert origin.seen == []
    assert still_serving(relay.port)


def test_slowloris_is_cut_by_the_header_timeout(relay):
    before = counters()["slow_closed"]
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        t0 = time.monotonic()
        for _ in range(5):
            time.sleep(0.1)
            try:
                s.sendall(b"X-Drip: 1\r\n")
            except OSError:
                break
        out = recv_all(s, 5)
        assert out.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - t0 < 3
    assert counters()["slow_closed"] == before + 1
    assert still_serving(relay.port)


def test_drain_finishes_in_flight_requests(origin):
    relay = h1_relay(lambda h: Target("127.0.0.1", origin.port))
    try:
        idle = conn(relay.port)
        idle.request("GET", "/warm")
        idle.getresponse().read()
        busy = conn(relay.port)
        busy.request("GET", "/slow?0.5")
        time.sleep(0.1)
        left = relay.call(relay.engine.drain(3.0))
        r = busy.getresponse()
        assert (r.status, r.read(), r.getheader("connection")) == (200, b"slow", "close")
        assert left == 0
    finally:
        relay.stop()
