"""Test harness: a relay Engine on its own uvloop thread, a byte-level gRPC echo origin, clients."""
from __future__ import annotations

import asyncio
import hashlib
import struct
import threading
import time
from concurrent import futures

import grpc
import uvloop

from meshd.dataplane import Engine, Refusal, Target, counters

MiB = 1 << 20
BIG = 64 * MiB
CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_receive_message_length", BIG),
    ("grpc.max_send_message_length", BIG),
]


class RelayThread:
    """Runs Engine(decide, retry) with a listener on a uvloop loop in a background thread."""

    def __init__(self, decide, retry=None, ssl=None, port=0, **engine_kw):
        self.loop = uvloop.new_event_loop()
        self.engine = Engine(decide, retry, loop=self.loop, **engine_kw)
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.server = self.call(self.engine.listen("127.0.0.1", port, ssl=ssl))
        self.port = self.server.sockets[0].getsockname()[1]

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, what, timeout=30):
        """Run a coroutine, or a plain function, on the relay's loop and return its result."""
        if asyncio.iscoroutine(what):
            return asyncio.run_coroutine_threadsafe(what, self.loop).result(timeout)

        async def wrap():
            return what()

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def stop(self):
        try:
            self.call(self.engine.close)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def frame(payload: bytes) -> bytes:
    """One gRPC length-prefixed message (gRPC over HTTP/2, "Length-Prefixed-Message")."""
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class EchoOrigin:
    """A grpcio server of raw-bytes methods under /echo.Echo/, recording what it saw."""

    def __init__(self, max_concurrent_streams=None, creds=None, workers=32):
        self.seen_metadata = []
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.time_remaining = []
        self.calls = 0
        opts = list(CHANNEL_OPTIONS)
        if max_concurrent_streams:
            opts.append(("grpc.max_concurrent_streams", max_concurrent_streams))
        self.server = grpc.server(futures.ThreadPoolExecutor(workers), options=opts)
        h = grpc
        handlers = {
            "Unary": h.unary_unary_rpc_method_handler(self.unary),
            "ClientStream": h.stream_unary_rpc_method_handler(self.client_stream),
            "ServerStream": h.unary_stream_rpc_method_handler(self.server_stream),
            "Bidi": h.stream_stream_rpc_method_handler(self.bidi),
            "Sleep": h.unary_unary_rpc_method_handler(self.sleep),
            "Fail": h.unary_unary_rpc_method_handler(self.fail),
            "SelfCancel": h.unary_stream_rpc_method_handler(self.self_cancel),
            "Trickle": h.unary_stream_rpc_method_handler(self.trickle),
        }
        self.server.add_generic_rpc_handlers((h.method_handlers_generic_handler("echo.Echo", handlers),))
        addr = "127.0.0.1:0"
        self.port = (self.server.add_secure_port(addr, creds) if creds
                     else self.server.add_insecure_port(addr))
        self.server.start()

    def stop(self):
        self.server.stop(0).wait(5)

    def _note(self, context):
        self.calls += 1
        self.seen_metadata.append(dict(context.invocation_metadata()))
        self.time_remaining.append(context.time_remaining())

    def unary(self, request, context):
        self._note(context)
        md = dict(context.invocation_metadata())
        context.send_initial_metadata((("x-initial", "i-" + md.get("x-echo", "")),))
        context.set_trailing_metadata((("x-trailer", "t-" + md.get("x-echo", "")),
                                       ("x-trailer-bin", b"\x00\xffbin")))
        return request

    def client_stream(self, request_iterator, context):
        self._note(context)
        h = hashlib.sha256()
        n = 0
        for m in request_iterator:
            h.update(struct.pack(">I", len(m)) + m)
            n += 1
        return b"%d:" % n + h.hexdigest().encode()

    def server_stream(self, request, context):
        self._note(context)
        count, size = struct.unpack(">II", request)
        for i in range(count):
            yield struct.pack(">I", i) * (size // 4)

    def bidi(self, request_iterator, context):
        self._note(context)
        for m in request_iterator:
            yield m

    def sleep(self, request, context):
        self._note(context)
        context.add_callback(self._on_done)
        deadline = time.monotonic() + float(request.decode() or "5")
        while time.monotonic() < deadline:
            if not context.is_active():
                self.cancelled.set()
                return b"late"
            time.sleep(0.01)
        return b"slept"

    def _on_done(self):
        self.finished.set()

    def fail(self, request, context):
        self._note(context)
        code = grpc.StatusCode[request.decode()]
        context.set_trailing_metadata((("x-why", "asked"), ("x-detail-bin", b"\x01\x02")))
        context.abort(code, "failing as asked: " + request.decode())

    def trickle(self, request, context):
        # (count, interval_ms, then_ms): count small messages interval_ms apart, then silence
        # for then_ms before the end; a cancel during the silence sets self.cancelled.
        self._note(context)
        count, interval_ms, then_ms = struct.unpack(">III", request)
        for i in range(count):
            if i:
                time.sleep(interval_ms / 1000)
            yield struct.pack(">I", i)
        context.add_callback(self._on_done)
        deadline = time.monotonic() + then_ms / 1000
        while time.monotonic() < deadline:
            if not context.is_active():
                self.cancelled.set()
                return
            time.sleep(0.01)

    def self_cancel(self, request, context):
        # Send one message, then reset the stream from the server side (RST_STREAM CANCEL).
        self._note(context)
        yield b"first"
        time.sleep(0.2)
        context.cancel()


def to(port, **kw):
    """A decide() that sends everything to 127.0.0.1:port."""
    target = Target("127.0.0.1", port, **kw)
    return lambda head: target


def channel(port):
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)


def unary(ch, method="Unary"):
    return ch.unary_unary(f"/echo.Echo/{method}")


def wait_for(pred, timeout=5.0, step=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


__all__ = ["RelayThread", "EchoOrigin", "Refusal", "Target", "counters", "channel", "unary", "to",
           "wait_for", "frame", "MiB", "CHANNEL_OPTIONS"]
