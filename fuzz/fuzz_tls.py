"""Coverage-guided fuzzing of the TLS ingress: fuzzed records before and after the handshake, into the engines' TLS listeners.

Run (see fuzz/README.md):  python fuzz/fuzz_tls.py CORPUS_DIR -max_total_time=300 -timeout=10

Two real loopback listeners, as meshd's ingress has them: the HTTP/2 Engine and the
HTTP/1.1 H1Engine, each with a server context from meshd.security.tls (mutual TLS, a
mesh CA made with meshd.security.certs). Input byte 0: bit 2 picks the listener (0:
HTTP/2, 1: HTTP/1.1); bits 0-1 what the client does with the rest of the input:
  0  sends it as raw bytes: a ClientHello or other records, before any handshake;
  1  completes a real handshake (client certificate from the same CA), then sends it
     as application data, i.e. as a request through TLS;
  2  completes the handshake, then sends it raw: forged or garbage records mid-session;
  3  as 1, then close_notify.
Then the client sends FIN. The listener must close the connection within two seconds
and every engine must release it; anything the engines or the loop report is a crash.
"""
from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_native_h2  # noqa: E402

NATIVE = load_native_h2()    # None unless MESHD_FUZZ_NATIVE=1
with atheris.instrument_imports(include=["meshd.dataplane.h1", "meshd.dataplane._relay"]):
    from meshd.dataplane import Engine, H1Engine, Refusal, Target, counters
    from meshd.dataplane.h1 import _Stop
    from meshd.dataplane.h1 import counters as h1_counters

from _common import Bug, Signals, moved, new_loop, released, run, tls_contexts, watch_llhttp  # noqa: E402
from _origins import H1Origin, H2Origin, Routes, closed_port, start  # noqa: E402

loop, errors = new_loop()
watch_llhttp(errors, expected=_Stop)
_, H2_ORIGIN = loop.run_until_complete(start(loop, H2Origin))
_, H1_ORIGIN = loop.run_until_complete(start(loop, H1Origin))
DOWN_PORT = loop.run_until_complete(closed_port(loop))
SERVER_CTX, client_ctx = tls_contexts()
CLIENTS = (client_ctx(["h2"]), client_ctx(["http/1.1"]))

h2_routes = Routes(Target, Refusal, H2_ORIGIN, DOWN_PORT)
h1_routes = Routes(Target, Refusal, H1_ORIGIN, DOWN_PORT)
h2 = Engine(h2_routes.decide, h2_routes.retry, loop=loop, complete=h2_routes.complete,
            header_timeout=0.5, connect_timeout=0.2)
h1 = H1Engine(h1_routes.decide, h1_routes.retry, loop=loop, complete=h1_routes.complete,
              header_timeout=0.5, connect_timeout=0.2)
PORTS = tuple(loop.run_until_complete(e.listen("127.0.0.1", 0, ssl=SERVER_CTX)).sockets[0].getsockname()[1]
              for e in (h2, h1))
signals = Signals()


async def _recv(sock, timeout):
    """Bytes from the server; b"" when it closed; None when it said nothing in time."""
    try:
        return await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
    except asyncio.TimeoutError:
        return None
    except OSError:
        return b""


async def _handshake(sock, obj, inb, outb, seen) -> bool:
    """Drive the client side of a handshake over sock; False if the server refused it."""
    for _ in range(20):
        try:
            obj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLError:
            seen.append("client saw a bad handshake")
            return False
        out = outb.read()
        if out:
            await loop.sock_sendall(sock, out)
        if done:
            return True
        data = await _recv(sock, 2.0)
        if not data:
            return False
        inb.write(data)
    return False


async def _session(mode: int, payload: bytes, seen: list) -> bool:
    """One client connection; returns whether the server closed it in time."""
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", PORTS[(mode >> 2) & 1]))
        kind = mode & 3
        if kind == 0:
            await loop.sock_sendall(sock, payload)
        else:
            inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = CLIENTS[(mode >> 2) & 1].wrap_bio(inb, outb, server_side=False)
            if await _handshake(sock, obj, inb, outb, seen):
                seen.append(("handshake", obj.selected_alpn_protocol()))
                if kind == 2:
                    await loop.sock_sendall(sock, payload)
                else:
                    if payload:
                        obj.write(payload)
                    if kind == 3:
                        try:
                            obj.unwrap()
                        except ssl.SSLError:
                            pass
                    await loop.sock_sendall(sock, outb.read())
                    # Give the request time to be routed and answered before FIN.
                    while (data := await _recv(sock, 0.02)):
                        seen.append(("answered", data[:1]))
        sock.shutdown(socket.SHUT_WR)
        for _ in range(200):
            data = await _recv(sock, 2.0)
            if data is None:
                return False
            if not data:
                return True
            seen.append(("record", data[:1], data[5:7] if data[:1] == b"\x15" else b""))
        return False
    except OSError:
        return True     # the server reset the connection: closed
    finally:
        sock.close()


def both_counters() -> dict:
    return {**counters(), **{"h1_" + k: v for k, v in h1_counters().items()}}


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, payload = data[0], data[1:]
    before = both_counters()
    seen: list = []
    closed = loop.run_until_complete(_session(mode, payload, seen))
    signals.report(seen + moved(before, both_counters()))
    released(loop, errors, lambda: h2.downstream_connections == 0 and h2.open_streams == 0 and not h1.conns,
             lambda: f"h2 connections={h2.downstream_connections} h2 streams={h2.open_streams} "
                     f"h1 connections={len(h1.conns)}")
    if not closed:
        raise Bug("the TLS listener kept the connection open two seconds after the client's FIN")


if __name__ == "__main__":
    run(one_input, NATIVE)
