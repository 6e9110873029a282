"""Local upstream origins for the fuzz harnesses: an HTTP/2 one (python-hyper h2) and an HTTP/1.1 one (httptools), on the engine's own loop.

They run on the same loop as the engine under test, over real loopback sockets, so a
request the fuzzer manages to route is relayed, answered and streamed back within the
same input. The request path picks the answer, so the fuzzer reaches each kind of
upstream behaviour by mutating the path of a seed:

    /slow...     never answers (the engine's per-request timeout fires)
    /reset...    resets the stream (HTTP/2) or closes the connection mid-way (HTTP/1.1)
    /503...      503, which the targets mark retryable
    /grpc...     a gRPC-shaped answer with trailers (HTTP/2), chunked with trailers (HTTP/1.1)
    /upgrade...  101 and then an echo tunnel (HTTP/1.1, when the request asks to upgrade)
    anything else  200 with a small body
"""
from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httptools


def _kind(path: bytes) -> bytes:
    for k in (b"/slow", b"/reset", b"/503", b"/grpc", b"/upgrade"):
        if path.startswith(k):
            return k
    return b""


class H2Origin(asyncio.Protocol):
    """One HTTP/2 server connection; answers when the request has ended."""

    def __init__(self):
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False))
        self.paths: dict[int, bytes] = {}
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data):
        try:
            for ev in self.conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    self.paths[ev.stream_id] = dict(ev.headers).get(b":path", b"/")
                    if ev.stream_ended is not None:
                        self.answer(ev.stream_id)
                elif isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    if ev.stream_ended is not None:
                        self.answer(ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in self.paths:
                    self.answer(ev.stream_id)
        except h2.exceptions.H2Error:
            # The engine is the client here; a protocol error on this side would be its
            # bug, and shows as a reset or a closed upstream in the engine.
            self.transport.close()
            return
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def answer(self, sid: int):
        kind = _kind(self.paths.pop(sid, b"/"))
        c = self.conn
        try:
            if kind == b"/slow":
                return
            if kind == b"/reset":
                c.reset_stream(sid, 2)
            elif kind == b"/503":
                c.send_headers(sid, [(b":status", b"503")], end_stream=True)
            elif kind == b"/grpc":
                c.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
                c.send_data(sid, b"\x00\x00\x00\x00\x02ok")
                c.send_headers(sid, [(b"grpc-status", b"0"), (b"grpc-message", b"")], end_stream=True)
            else:
                c.send_headers(sid, [(b":status", b"200"), (b"content-length", b"2")])
                c.send_data(sid, b"ok", end_stream=True)
        except h2.exceptions.H2Error:
            pass        # the engine reset or closed the stream first


class H1Origin(asyncio.Protocol):
    """One HTTP/1.1 server connection; answers each request when it is complete."""

    def __init__(self):
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.transport = None
        self.tunnel = False

    def connection_made(self, transport):
        self.transport = transport

    def on_message_begin(self):
        self.url = b""

    def on_url(self, url):
        self.url += url

    def on_message_complete(self):
        kind = _kind(self.url)
        t = self.transport
        if kind == b"/slow":
            return
        if kind == b"/reset":
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok")
            t.close()
        elif kind == b"/503":
            t.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        elif kind == b"/grpc":
            t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-t\r\n\r\n"
                    b"2\r\nok\r\n0\r\nx-t: 1\r\n\r\n")
        elif kind == b"/upgrade" and self.parser.should_upgrade():
            t.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: fuzz\r\n\r\n")
            self.tunnel = True
        else:
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    def data_received(self, data):
        if self.tunnel:
            self.transport.write(data)      # echo
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as u:
            if self.tunnel and data[u.args[0]:]:
                self.transport.write(data[u.args[0]:])
        except httptools.HttpParserError:
            self.transport.close()


class Routes:
    """The routing hooks every data-plane harness gives its engine: decide() picks by path
    prefix among the origin (plain, header rewrite, short timeouts), a closed port and a
    refusal, and reads what a production hook reads, so its decoding runs on fuzzed values;
    retry() tries the origin twice more; complete() reads the finished request's record."""

    def __init__(self, target_cls, refusal_cls, origin_port: int, down_port: int):
        T = target_cls
        self.origin = T("127.0.0.1", origin_port, retry_statuses=(503,), retry_grpc=(14,))
        self.rewrite = T("127.0.0.1", origin_port, headers=((":authority", "up.local"), ("x-mesh", "1")))
        self.slow = T("127.0.0.1", origin_port, timeout=0.05, try_timeout=0.03)
        self.down = T("127.0.0.1", down_port)
        self.refused = refusal_cls(403, 7, "fuzz: denied", "denied")

    def decide(self, head):
        head.headers
        head.header("te")
        head.trace_context(64)
        p = head.path
        if p.startswith("/refuse"):
            return self.refused
        if p.startswith("/down"):
            return self.down
        if p.startswith("/slow"):
            return self.slow
        if p.startswith("/rw"):
            head.rewrite_path("/rewritten")
            head.set_header("x-fuzz", "1")
            return self.rewrite
        return self.origin

    def retry(self, head, failure):
        return self.origin if head.attempt < 2 else None

    def complete(self, head, target, http_status, grpc_status, reason, duration_ns):
        head.response_headers, head.upstream_path, head.bytes_sent


async def start(loop, factory) -> tuple[asyncio.Server, int]:
    """Listen on a free loopback port; returns the server and its port."""
    server = await loop.create_server(factory, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def closed_port(loop) -> int:
    """A loopback port with nothing listening (connections are refused): the engine's
    connect-error and retry path."""
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port
