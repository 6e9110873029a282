"""Writes the seed corpus of each fuzz harness: well-formed inputs the fuzzer mutates from.

    python fuzz/seeds.py h2|h1|tls|admin_json DIRECTORY

Seeds are generated rather than committed so that they follow the harnesses' input
formats (byte 0 of the data-plane inputs is a mode byte, see each harness) and the App
Mesh documents of tests/corpus.
"""
from __future__ import annotations

import hashlib
import os
import ssl
import struct
import sys
from pathlib import Path

import hpack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import tls_contexts  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9113 §6 frame types and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20


def frame(ftype: int, flags: int = 0, sid: int = 0, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame (RFC 9113 §4.1)."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings(*pairs) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def request(enc: hpack.Encoder, path: bytes, method: bytes = b"GET", extra=()) -> bytes:
    return enc.encode([(b":method", method), (b":scheme", b"http"), (b":authority", b"api.shop.local"),
                       (b":path", path), *extra])


def h2_seeds() -> list[bytes]:
    out = []
    hello = PREFACE + settings((3, 100), (4, 65535))

    def conn(*frames, mode=0):
        out.append(bytes([mode]) + hello + b"".join(frames))

    for path in (b"/", b"/slow", b"/refuse", b"/down", b"/rw", b"/reset", b"/503", b"/grpc"):
        enc = hpack.Encoder()
        conn(frame(HEADERS, END_HEADERS | END_STREAM, 1, request(enc, path)), mode=16)
    enc = hpack.Encoder()
    body = b"x" * 300
    conn(frame(HEADERS, END_HEADERS, 1, request(enc, b"/", b"POST", [(b"content-length", b"300")])),
         frame(DATA, 0, 1, body[:100]), frame(DATA, END_STREAM, 1, body[100:]), mode=16)
    enc = hpack.Encoder()
    block = request(enc, b"/grpc", b"POST", [(b"content-type", b"application/grpc"), (b"te", b"trailers"),
                                            (b"grpc-timeout", b"100m"), (b"traceparent",
                                             b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")])
    conn(frame(HEADERS, 0, 1, block[:10]), frame(CONTINUATION, 0, 1, block[10:20]),
         frame(CONTINUATION, END_HEADERS, 1, block[20:]),
         frame(DATA, 0, 1, b"\x00\x00\x00\x00\x02hi"),
         frame(HEADERS, END_HEADERS | END_STREAM, 1, enc.encode([(b"x-trailer", b"t")])), mode=16)
    enc = hpack.Encoder()
    conn(frame(HEADERS, END_HEADERS, 1, request(enc, b"/slow", b"POST")),
         frame(RST_STREAM, 0, 1, struct.pack(">I", 8)),
         frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20)),
         frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100)),
         frame(PING, 0, 0, b"12345678"), frame(PING, ACK, 0, b"87654321"),
         frame(PRIORITY, 0, 3, struct.pack(">IB", 1, 16)),
         frame(SETTINGS, ACK), frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
    enc = hpack.Encoder()
    many = b"".join(frame(HEADERS, END_HEADERS | END_STREAM, sid, request(enc, b"/", extra=[(b"x-n", b"%d" % sid)]))
                    for sid in range(1, 24, 2))
    conn(many, mode=16)
    enc = hpack.Encoder()
    conn(frame(HEADERS, END_HEADERS | PADDED | PRIO, 1,
               b"\x04" + struct.pack(">IB", 0, 200) + request(enc, b"/rw") + b"\x00" * 4),
         frame(DATA, PADDED | END_STREAM, 1, b"\x02ab\x00\x00"), mode=16 | 8)
    enc = hpack.Encoder()
    conn(frame(HEADERS, END_HEADERS | END_STREAM, 1, request(enc, b"/", extra=[(b"host", b"h.local")])[:-1]))
    for mode in (1, 2, 3, 4, 8):
        enc = hpack.Encoder()
        conn(frame(HEADERS, END_HEADERS | END_STREAM, 1, request(enc, b"/grpc")), mode=mode | 16)
    out.append(b"\x00" + PREFACE[:10])
    out.append(b"\x00GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    return out


def h1_seeds() -> list[bytes]:
    reqs = [
        b"GET / HTTP/1.1\r\nhost: api.shop.local\r\n\r\n",
        b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET /refuse HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET /down HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET /reset HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET /503 HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET /grpc HTTP/1.1\r\nhost: a\r\n\r\n",
        b"POST /rw HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\nabc",
        b"GET /upgrade HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nearly bytes",
        b"GET http://other.local/abs?q=1 HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\n\r\nGET /grpc HTTP/1.1\r\nhost: a\r\n\r\nGET /503 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nhost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
    ]
    return [bytes([mode]) + r for r in reqs for mode in (16, 1 | 8 | 16)] + [b"\x00" + reqs[0][:20]]


def client_hello(ctx: ssl.SSLContext) -> bytes:
    """The first flight of a client that uses ctx."""
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inb, outb, server_side=False)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outb.read()


def tls_seeds() -> list[bytes]:
    _, client = tls_contexts()
    h2 = h2_seeds()
    h1 = h1_seeds()
    out = []
    for listener, alpn in ((0, ("h2",)), (4, ("http/1.1",))):
        hello = client_hello(client(alpn))
        out.append(bytes([0 | listener]) + hello)                 # raw: the first flight only
        out.append(bytes([0 | listener]) + hello[:40])            # cut in the middle of a record
        body = h2[0][1:] if listener == 0 else h1[0][1:]
        grpc = h2[7][1:] if listener == 0 else h1[12][1:]
        out.append(bytes([1 | listener]) + body)                  # handshake, then the request
        out.append(bytes([1 | listener]) + grpc)
        out.append(bytes([2 | listener]) + b"\x17\x03\x03\x00\x05hello")   # handshake, then a forged record
        out.append(bytes([3 | listener]) + body)                  # handshake, request, close_notify
    return out


def admin_json_seeds() -> list[bytes]:
    out = []
    for sub in ("valid", "invalid"):
        for p in sorted((REPO / "tests" / "corpus" / sub).glob("*.json")):
            out.append(p.read_bytes())
    # Several documents in one YAML stream, as meshctl apply -f takes them.
    valid = sorted((REPO / "tests" / "corpus" / "valid").glob("*.json"))
    out.append(b"\n---\n".join(p.read_bytes() for p in valid[:3]))
    out.append(b"[" + b",".join(p.read_bytes() for p in valid[3:6]) + b"]")
    return out


SEEDS = {"h2": h2_seeds, "h1": h1_seeds, "tls": tls_seeds, "admin_json": admin_json_seeds}


def write(name: str, directory: str | os.PathLike) -> int:
    """Write harness `name`'s seeds into directory (named by content hash, as libFuzzer does)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    seeds = SEEDS[name]()
    for s in seeds:
        (d / hashlib.sha1(s).hexdigest()).write_bytes(s)
    return len(seeds)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in SEEDS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(SEEDS)} DIRECTORY")
    print(f"{write(sys.argv[1], sys.argv[2])} seeds in {sys.argv[2]}")
