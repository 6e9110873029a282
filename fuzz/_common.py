"""What the fuzz harnesses share: one uvloop loop, capture of swallowed errors, a downstream byte pipe, bounded waits."""
from __future__ import annotations

import asyncio
import ctypes
import glob
import importlib.util
import logging
import os
import sys
import traceback
import zlib

import uvloop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Bug(Exception):
    """Raised by a harness so that libFuzzer records the input as a crash."""


class Errors(logging.Handler):
    """Collects what the engines would otherwise only log: exceptions they caught and
    logged at ERROR (an nghttp2 callback that raised, a failed flush), and exceptions
    that reached the event loop's handler (a callback or task that raised).

    The engines catch these on purpose so one bad connection cannot stop the loop, which
    is why a fuzzer would never see them as crashes without this.
    """

    def __init__(self):
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record):
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.seen.append(f"{record.name}: {text}")

    def on_loop_error(self, loop, context):
        exc = context.get("exception")
        text = context.get("message", "")
        if exc is not None:
            text += "\n" + "".join(traceback.format_exception(exc))
        self.seen.append(f"event loop: {text}")

    def check(self):
        """Raise Bug with everything seen since the last check."""
        if self.seen:
            seen, self.seen = self.seen, []
            raise Bug("\n---\n".join(seen))


def new_loop() -> tuple[asyncio.AbstractEventLoop, Errors]:
    """The loop the engines run on in production (uvloop), wired to an Errors collector."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    errors = Errors()
    loop.set_exception_handler(errors.on_loop_error)
    log = logging.getLogger("meshd")
    log.addHandler(errors)
    log.propagate = False       # the collector reports them; no duplicate on stderr per input
    # asyncio's own warnings (e.g. "returning true from eof_received() has no effect when
    # using ssl", which the HTTP/1.1 engine's half-close support triggers under TLS) would
    # print once per input; what matters from the loop reaches on_loop_error.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    return loop, errors


def spin(loop, until=None, limit: float = 0.05) -> bool:
    """Run the loop until until() is true or `limit` seconds passed; returns until()'s last value.

    The first iterations only poll (sleep(0)), so an in-process origin answers within
    microseconds; later ones sleep briefly so a timer-driven wait does not burn the CPU
    that the other side of the machine's two cores needs.
    """
    async def run():
        end = loop.time() + limit
        n = 0
        while True:
            if until is not None and until():
                return True
            await asyncio.sleep(0 if n < 64 else 0.0005)
            n += 1
            if loop.time() >= end:
                return until is None or bool(until())

    return loop.run_until_complete(run())


class Pipe(asyncio.Transport):
    """The downstream socket, in memory: bytes written by the engine pile up in `out`.

    The harness calls the engine's protocol (connection_made, data_received, eof_received,
    pause_writing, ...) exactly as asyncio would, so each input runs synchronously and
    deterministically and a hang inside one call is a libFuzzer timeout. Closing schedules
    connection_lost on the loop, as asyncio's transports do. Everything past this pipe
    (the engine, its upstream connections, the origin) is the real thing over real sockets.
    """

    def __init__(self, loop, protocol, sockname=("127.0.0.1", 15001), peername=("127.0.0.1", 40001)):
        super().__init__({"sockname": sockname, "peername": peername})
        self.loop = loop
        self.protocol = protocol
        self.out = bytearray()
        self.closed = False
        self.lost = False
        self.reading = True
        self.eof_written = False

    def write(self, data):
        if not self.closed:
            self.out += data

    def writelines(self, chunks):
        for c in chunks:
            self.write(c)

    def write_eof(self):
        self.eof_written = True

    def can_write_eof(self):
        return True

    def is_closing(self):
        return self.closed

    def close(self):
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self._lose)

    abort = close

    def _lose(self):
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(None)

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def is_reading(self):
        return self.reading

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_write_buffer_size(self):
        return 0

    def get_write_buffer_limits(self):
        return (0, 0)


def chunks(data: bytes, size: int):
    """data in pieces of `size` bytes (all at once when size is 0)."""
    if size <= 0:
        yield data
        return
    for i in range(0, len(data), size):
        yield data[i:i + size]


def feed(loop, pipe: Pipe, data: bytes, size: int, settle: float = 0.02) -> None:
    """Deliver data to pipe.protocol in chunks, letting the loop run in between; while the
    engine has paused reading, wait (bounded) for it to resume, as a socket would."""
    for piece in chunks(data, size):
        if pipe.closed:
            return
        if not pipe.reading and not spin(loop, lambda: pipe.reading or pipe.closed, settle):
            return      # still paused (its upstream is slow): the rest stays unread
        if pipe.closed:
            return
        pipe.protocol.data_received(piece)
        if size:
            spin(loop, None, 0)     # one loop turn between pieces, as between two reads


def close_down(loop, pipe: Pipe, eof: bool) -> None:
    """The client goes away: FIN first when eof (the protocol may keep the connection for a
    response), then the socket is gone."""
    if not pipe.closed and eof:
        if not pipe.protocol.eof_received():
            pipe.close()
    spin(loop, None, 0)
    if not pipe.lost:
        pipe.closed = pipe.lost = True
        pipe.protocol.connection_lost(None)


# The mode byte (byte 0) of a data-plane input: bits 0-1 the read size (whole, 1, 7 or 64
# bytes per data_received), bit 2 a pause_writing/resume_writing pair halfway through (a
# client that stops reading for a moment), bit 3 FIN before the close, bit 4 wait for the
# answers before the client leaves.
SIZES = (0, 1, 7, 64)


def drive(loop, proto, data: bytes, mode: int, answered) -> Pipe:
    """One downstream connection of proto (a fresh engine protocol) that sends data, shaped
    by the mode byte; answered(proto) tells when no request waits for its response."""
    pipe = Pipe(loop, proto)
    proto.connection_made(pipe)
    half = len(data) // 2 if mode & 4 else len(data)
    feed(loop, pipe, data[:half], SIZES[mode & 3])
    if mode & 4 and not pipe.lost:
        # The engine pauses its reading in turn, so the second half waits for the resume,
        # while answers from upstream arrive and queue up.
        proto.pause_writing()
        spin(loop, None, 0.005)
        proto.resume_writing()
        feed(loop, pipe, data[half:], SIZES[mode & 3])
    if mode & 16:
        spin(loop, lambda: pipe.closed or answered(proto), 0.1)
    close_down(loop, pipe, bool(mode & 8))
    return pipe


def load_native_h2():
    """With MESHD_FUZZ_NATIVE=1, import the coverage-instrumented HTTP/2 engine that
    fuzz/build_native.sh built, in place of the shipped one. Returns a function to call
    from the first fuzz input (it hands the engine's coverage tables to libFuzzer, see
    fuzz/sancov_shim.c), or None when not asked to.

    Must run before anything imports meshd.dataplane.
    """
    if os.environ.get("MESHD_FUZZ_NATIVE") != "1":
        return None
    import atheris

    core = glob.glob(os.path.join(os.path.dirname(atheris.__file__), "core_with_libfuzzer*.so"))
    built = glob.glob(os.path.join(REPO, "build", "fuzz-native", "_h2.*.so"))
    shim_path = os.path.join(REPO, "build", "fuzz-native", "sancov_shim.so")
    if not core or not built or not os.path.exists(shim_path):
        raise SystemExit("MESHD_FUZZ_NATIVE=1 needs fuzz/build_native.sh to have run")
    shim = ctypes.CDLL(shim_path, mode=os.RTLD_GLOBAL | os.RTLD_NOW)
    shim.meshd_fuzz_core(core[0].encode())
    name = "meshd.dataplane._h2"
    spec = importlib.util.spec_from_file_location(name, built[0])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

    def flush():
        n = shim.meshd_fuzz_flush()
        if n < 1:
            raise SystemExit(f"instrumented engine: no coverage tables handed to libFuzzer ({n})")
        print(f"INFO: instrumented {name}: {n} coverage module(s) handed to libFuzzer", file=sys.stderr)

    return flush


def _slots_function(n: int):
    # One `if` per slot: atheris instruments each as its own branch, so every distinct slot
    # that an input sets is a coverage feature libFuzzer can keep the input for.
    src = "def hit(slots):\n" + "".join(f"    if {i} in slots: pass\n" for i in range(n))
    scope: dict = {}
    exec(compile(src, "<fuzz-signals>", "exec"), scope)
    return scope["hit"]


class Signals:
    """Coverage for behaviour that atheris cannot see: what an uninstrumented native
    engine did (the frames it answered with, the counters it moved) becomes Python
    branches that atheris does trace. Keys are hashed into 32 x 32 slots."""

    ROWS = 32

    def __init__(self):
        import atheris

        # Many small functions: atheris's instrumentation time grows faster than linearly
        # with a function's size (one function of 1024 branches takes seconds).
        self.rows = [atheris.instrument_func(_slots_function(self.ROWS)) for _ in range(self.ROWS)]

    def report(self, keys) -> None:
        by_row: dict[int, set] = {}
        for k in keys:
            slot = zlib.crc32(repr(k).encode()) % (self.ROWS * self.ROWS)
            by_row.setdefault(slot // self.ROWS, set()).add(slot % self.ROWS)
        for row, slots in by_row.items():
            self.rows[row](slots)


def h2_frames(out: bytes):
    """(type, flags, error code or None) of each whole HTTP/2 frame a server wrote."""
    i = 0
    while i + 9 <= len(out):
        n = int.from_bytes(out[i:i + 3], "big")
        t, f = out[i + 3], out[i + 4]
        p = out[i + 9:i + 9 + n]
        code = None
        if t == 3 and len(p) >= 4:          # RST_STREAM (RFC 9113 §6.4)
            code = int.from_bytes(p[:4], "big")
        elif t == 7 and len(p) >= 8:        # GOAWAY (RFC 9113 §6.8)
            code = int.from_bytes(p[4:8], "big")
        yield t, f, code
        i += 9 + n


def moved(before: dict, after: dict) -> list:
    """(counter, size of its change) for each counter that changed: 0, 1, 2-3, 4-7, ... as
    0, 1, 2, 3, ..., so that counters are coverage without a slot per value."""
    return [(k, (after[k] - before[k]).bit_length()) for k in after if after[k] != before[k]]


def released(loop, errors: Errors, idle, describe) -> None:
    """After the client left: raise what the engines reported, then Bug if idle() is not
    true within a second (a connection, stream or count still held: a hang or a leak)."""
    ok = spin(loop, idle, 1.0)
    errors.check()
    if not ok:
        raise Bug("still held a second after the client left: " + describe())


def run(target, native=None) -> None:
    """Fuzz target(data) with atheris, with sys.argv as libFuzzer's arguments; native is
    what load_native_h2() returned, called once from the first input."""
    import atheris

    def one_input(data: bytes) -> None:
        nonlocal native
        if native is not None:
            native, flush = None, native
            flush()
        target(data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


def tls_contexts():
    """(server context, client context factory by ALPN list): a mesh CA, a server and a
    client certificate made with the project's own helpers, and the ingress's contexts."""
    from datetime import timedelta

    from meshd.security import certs, tls

    now = certs.utcnow()
    ca_cert, ca_key = certs.make_ca("fuzz mesh CA", now=now, lifetime=timedelta(days=2))
    pem = {}
    for who in ("server", "client"):
        key = certs.new_private_key()
        leaf = certs.issue_leaf(ca_cert, ca_key, key.public_key(), f"spiffe://fuzz.local/mesh/m/virtualNode/{who}",
                                not_before=now - timedelta(minutes=5), not_after=now + timedelta(days=1))
        pem[who] = (certs.cert_to_pem(leaf), certs.key_to_pem(key))
    bundle = certs.cert_to_pem(ca_cert)
    return (tls.server_context(*pem["server"], bundle),
            lambda alpn: tls.client_context(*pem["client"], bundle, alpn=alpn))


def watch_llhttp(errors: Errors, expected=()) -> None:
    """Make exceptions raised inside httptools parser callbacks visible to errors.

    llhttp hands an exception from a callback back as HttpParserCallbackError, with the
    exception as its __context__, and the HTTP/1.1 engine treats every parse error as the
    peer's bad message (400, protocol_errors): a bug in the engine's own callbacks would
    pass for a bad request. Subclasses of the parsers, installed under httptools' names
    (which the engine looks up per connection), note each such exception that is not one
    of `expected` (the engine's own stop signal) and re-raise it unchanged.
    """
    import httptools

    def watched(base):
        class Watched(base):
            def feed_data(self, data):
                try:
                    return super().feed_data(data)
                except httptools.HttpParserCallbackError as err:
                    cause = err.__context__
                    if cause is not None and not isinstance(cause, expected):
                        errors.seen.append("parser callback: " + "".join(traceback.format_exception(cause)))
                    raise

        Watched.__name__ = Watched.__qualname__ = base.__name__
        return Watched

    httptools.HttpRequestParser = watched(httptools.HttpRequestParser)
    httptools.HttpResponseParser = watched(httptools.HttpResponseParser)
