"""The TCP relay: one routing decision per accepted connection, then a byte-exact, half-close-aware pipe.

    engine = TcpEngine(decide, retry=None)
    server = await engine.listen("127.0.0.1", 15010, ssl=None)

    decide(head: ConnectionHead) -> Target | TcpTarget | Refusal   # once per connection
    retry(head, failure: Failure) -> Target | Refusal | None          # on connect failure
    complete(head, target, 0, -1, reason, duration_ns)               # once, when it closes

Idle timeout (App Mesh's listener and route `timeout.tcp.idle`, 300 s by default): a
connection with no byte in either direction for that long is closed. The engine's
idle_timeout applies unless the listener sets its own (listen(idle_timeout=)), and a
Target.idle_timeout set by the routing hook wins over both (0: never).

The completion hook has the HTTP engines' signature (no HTTP or gRPC status: 0 and -1);
target is None when the connection was refused or never connected, reason is "" for a
relayed connection and a token otherwise; head.bytes_received/bytes_sent count the bytes
from and to the downstream client.

A Refusal closes the connection. A Target connects (TLS with session resumption when
Target.ssl is set); TcpTarget adds `preamble`, bytes written upstream before anything else
(the mesh's ingress learns the destination from it).

With ssl=ctx the listener terminates TLS itself (TlsDownstream), so a half-close crosses
it: a client's close_notify becomes a FIN upstream, the upstream's FIN a close_notify back.
"""
from __future__ import annotations

import asyncio
import logging
import time

from meshd.dataplane._relay import Failure, Refusal, RelayEngine, Target, TlsDownstream, open_upstream

_log = logging.getLogger("meshd.dataplane.tcp")

_C = dict.fromkeys((
    "connections", "active", "refused", "bytes_in", "bytes_out", "upstream_conns_opened",
    "upstream_connect_errors", "tls_full_handshakes", "tls_resumed_handshakes", "retries",
    "idle_closed", "half_closes", "tls_handshake_failures", "tls_truncated",
), 0)


def counters() -> dict:
    """A snapshot of the TCP relay's counters (all engines in this process)."""
    return dict(_C)


class TcpTarget:
    """A Target plus `preamble`, bytes sent upstream first; anything else is read from target."""

    __slots__ = ("target", "preamble")

    def __init__(self, target: Target, preamble: bytes = b""):
        self.target = target
        self.preamble = bytes(preamble)

    def __repr__(self):
        return f"TcpTarget({self.target!r}, preamble={len(self.preamble)}B)"


class ConnectionHead:
    """The accepted connection as the routing hook sees it."""

    __slots__ = ("local_port", "peer", "attempt", "sni", "peer_cert", "bytes_received", "bytes_sent",
                 "remote_address", "original_dst", "context")
    # What an HTTP request head has and a connection has not, for code that reads both.
    method = scheme = authority = path = ""
    grpc = False
    headers = response_headers = {}

    def __init__(self, local_port, peer, sni, peer_cert=None):
        self.local_port = local_port
        self.peer = peer            # (host, port) of the client
        self.attempt = 0
        self.sni = sni              # server name the client sent, when the listener is TLS
        self.peer_cert = peer_cert  # the client's verified certificate (DER), when it sent one
        self.bytes_received = 0     # from the client
        self.bytes_sent = 0         # to the client
        self.context = None         # the hooks' own per-connection record; never read here
        self.original_dst = None    # (host, port) dialled before an iptables REDIRECT, or None
        self.remote_address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""

    def header(self, name):
        """A connection has no headers (the HTTP heads' surface)."""
        return None

    def __repr__(self):
        return f"ConnectionHead(local_port={self.local_port}, peer={self.peer})"


class _Pool:
    """Per upstream key: only the TLS session to resume (TCP connections are not reused)."""

    __slots__ = ("tls_session",)

    def __init__(self, target):
        self.tls_session = None


class _Up(asyncio.Protocol):
    """The upstream half of one relayed connection."""

    __slots__ = ("down", "transport", "eof")

    def __init__(self, down: "_Down"):
        self.down = down
        self.transport = None
        self.eof = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        d = self.down
        d.last = d.engine.loop.time()
        _C["bytes_in"] += len(data)
        d.head.bytes_sent += len(data)
        d.transport.write(data)

    def eof_received(self):
        self.eof = True
        return self.down.peer_eof(self)

    def connection_lost(self, exc):
        self.down.lost(self, exc)

    def pause_writing(self):
        self.down.transport.pause_reading()

    def resume_writing(self):
        if not self.down.eof and not self.down.closed:
            self.down.transport.resume_reading()


class _Down(asyncio.Protocol):
    """The downstream half: decides, connects (retrying through the hook), then relays."""

    def __init__(self, engine: "TcpEngine"):
        self.engine = engine
        self.transport = None
        self.up: _Up | None = None
        self.eof = False
        self.closed = False
        self.task = None
        self.last = 0.0
        self.early = []         # bytes that arrived before the upstream was connected
        self.head = None
        self.original_dst = None  # set by an intercepting listener before connection_made
        self.target = None      # the Target connected to
        self.reason = ""        # why it ended without relaying: refused, upstream_connect_failure
        self.idle = engine.idle_timeout     # seconds without a byte either way (0: never)
        self.start_ns = time.monotonic_ns()

    # -- downstream events
    def connection_made(self, transport):
        e = self.engine
        self.transport = transport
        self.last = e.loop.time()
        transport.set_write_buffer_limits(e.high_water)
        _C["connections"] += 1
        _C["active"] += 1
        e.conns.add(self)
        if e.draining:
            transport.close()
            return
        # Read nothing until the upstream is connected (uvloop may still deliver one read,
        # which data_received keeps in self.early).
        transport.pause_reading()
        sock = transport.get_extra_info("sockname")
        sslobj = transport.get_extra_info("ssl_object")
        self.head = ConnectionHead(sock[1] if sock else None, transport.get_extra_info("peername"),
                                   *((sslobj.server_hostname, sslobj.getpeercert(True)) if sslobj is not None
                                     else (None, None)))
        self.head.original_dst = self.original_dst
        self.task = e.loop.create_task(self._route(e.call_decide(self.head)))

    async def _route(self, r):
        e = self.engine
        while True:
            if not isinstance(r, (Target, TcpTarget)):
                if not isinstance(r, Refusal):
                    _log.error("tcp routing hook returned %r", r)
                _C["refused"] += 1
                self.reason = r.reason if isinstance(r, Refusal) else "route_error"
                self._close()
                return
            t, preamble = (r.target, r.preamble) if isinstance(r, TcpTarget) else (r, b"")
            up = _Up(self)
            try:
                await open_upstream(e.loop, t, up, _C, e.pool_for(t), e.connect_timeout)
            except (OSError, asyncio.TimeoutError, ValueError) as exc:
                _C["upstream_connect_errors"] += 1
                if self.closed:
                    return
                _log.debug("tcp connect to %r failed: %r", t, exc)
                r = e.call_retry(self.head, Failure("connect_error", t))
                if r is None:
                    self.reason = "upstream_connect_failure"
                    self._close()
                    return
                self.head.attempt += 1
                if isinstance(r, (Target, TcpTarget)):
                    _C["retries"] += 1
                continue
            break
        if self.closed:
            up.transport.close()
            return
        self.up = up
        self.target = t
        if t.idle_timeout is not None:
            self.idle = t.idle_timeout      # the route's wins over the listener's
            e.note_idle(self.idle)
        up.transport.set_write_buffer_limits(e.high_water)
        if preamble:
            up.transport.write(preamble)
        if self.early:
            up.transport.write(b"".join(self.early))
            self.early = None
        if self.eof:
            self.peer_eof(self)
            return
        self.last = e.loop.time()
        self.transport.resume_reading()

    def data_received(self, data):
        self.last = self.engine.loop.time()
        _C["bytes_out"] += len(data)
        self.head.bytes_received += len(data)
        if self.up is None:
            self.early.append(data)
            self.transport.pause_reading()
            return
        self.up.transport.write(data)

    def eof_received(self):
        self.eof = True
        if self.up is None:
            return True         # passed on once the upstream is connected
        return self.peer_eof(self)

    def pause_writing(self):
        if self.up is not None:
            self.up.transport.pause_reading()

    def resume_writing(self):
        if self.up is not None and not self.up.eof and not self.closed:
            self.up.transport.resume_reading()

    def connection_lost(self, exc):
        self.lost(self, exc)

    # -- both halves
    def peer_eof(self, side) -> bool:
        """One side sent FIN: pass it on with write_eof and keep the other direction open."""
        _C["half_closes"] += 1
        other = self.up.transport if side is self else self.transport
        if not other.can_write_eof():
            self._close()
            return False
        other.write_eof()       # before closing too: over TLS it is the close_notify
        if self.eof and self.up.eof:
            self._close()
            return False
        return True             # keep our read side half-closed, still write the other way

    def lost(self, side, exc):
        # One side is gone (FIN both ways, reset, or close): close the other after its flush.
        self._close()

    def _close(self):
        if self.closed:
            return
        self.closed = True
        _C["active"] -= 1
        self.engine.conns.discard(self)
        self.transport.close()
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        complete = self.engine.complete
        if complete is not None and self.head is not None:
            try:
                complete(self.head, self.target, 0, -1, self.reason, time.monotonic_ns() - self.start_ns)
            except Exception:
                _log.exception("tcp completion hook failed for %r", self.head)


class TcpEngine(RelayEngine):
    """The TCP relay. Options: idle_timeout (seconds without a byte either way, 0 = none; the
    default for listeners that set none, see listen()),
    connect_timeout per attempt, high_water (write-buffer bytes before the other side's
    reading pauses), handshake_timeout (seconds a TLS listener waits for a client's
    handshake, 0 = none)."""

    connection_class = _Down
    pool_class = _Pool

    def __init__(self, decide, retry=None, *, loop=None, idle_timeout: float = 300.0,
                 connect_timeout: float = 5.0, high_water: int = 256 * 1024,
                 handshake_timeout: float = 10.0, complete=None):
        super().__init__(decide, retry, loop)
        self.complete = complete
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.high_water = high_water
        self.handshake_timeout = handshake_timeout
        self.note_idle(idle_timeout)

    async def listen(self, host="127.0.0.1", port=0, ssl=None, *, idle_timeout=None, **kwargs):
        """Start a listener (TLS-terminating when ssl is an SSLContext); returns the asyncio Server.

        idle_timeout: this listener's idle timeout in seconds (App Mesh's listener
        `timeout.tcp.idle`); None keeps the engine's."""
        return await self.listen_with(self.idle_factory("idle", idle_timeout), host, port, ssl, **kwargs)

    def listener_protocol(self, ssl, factory):
        # asyncio's SSL transport cannot write_eof, so TLS is ours (TlsDownstream).
        if ssl is None:
            return factory, None
        return lambda: TlsDownstream(ssl, factory(), _C, self.handshake_timeout), None

    def call_decide(self, head):
        try:
            return self.decide(head)
        except Exception:
            _log.exception("tcp decide failed for %r", head)
            return None

    def call_retry(self, head, failure):
        if self.retry is None:
            return None
        try:
            return self.retry(head, failure)
        except Exception:
            _log.exception("tcp retry hook failed for %r", head)
            return None

    def _sweep(self):
        # Runs even when the engine's idle timeout is off: a listener or a route may set one.
        self.sweeper = self.loop.call_later(self.sweep_period(), self._sweep)
        now = self.loop.time()
        for d in [d for d in self.conns if d.idle > 0 and now - d.last > d.idle]:
            _C["idle_closed"] += 1
            d._close()

    async def drain(self, grace: float = 5.0) -> int:
        """Stop accepting; wait up to grace seconds for open connections to end, then cut them.

        Returns how many were still open when the grace ran out."""
        self.stop_listening(False)
        end = self.loop.time() + grace
        while self.conns and self.loop.time() < end:
            await asyncio.sleep(0.02)
        left = len(self.conns)
        for d in list(self.conns):
            d._close()
        return left

    def close(self):
        """Close listeners and every connection now."""
        self.stop_listening(True)
        for d in list(self.conns):
            d._close()


__all__ = ["ConnectionHead", "TcpEngine", "TcpTarget", "counters"]
