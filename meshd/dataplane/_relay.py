"""Pieces the HTTP/1.1 and TCP relays share: hook values, TLS over memory BIOs, pooled sessions.

The routing-hook contract is the HTTP/2 engine's (meshd.dataplane._h2): decide(head) returns a
Target or a Refusal, retry(head, failure) returns a Target, a Refusal or None. The h2 engine's
RequestHead and Failure are built in C and cannot be made from Python, so this module has
look-alikes with the same attributes; Target, Refusal, Deferred and FAILURE_RESPONSES are the
h2 ones.
"""
from __future__ import annotations

import abc
import asyncio
import logging
import ssl as _ssl

from meshd.dataplane._h2 import FAILURE_RESPONSES, Deferred, Refusal, Target

_log = logging.getLogger("meshd.dataplane")

__all__ = ["Deferred", "FAILURE_RESPONSES", "Failure", "Refusal", "RelayEngine", "Target", "TargetRewrite",
           "TlsDownstream", "TlsOverBio", "TlsUpstream", "open_upstream", "rewrite_of"]


class Failure:
    """Why an attempt failed, as handed to the retry hook (same attributes as the h2 Failure).

    kind: "connect_error", "reset", "timeout" or "status"; http_status: the response status
    that matched Target.retry_statuses (kind "status"), else 0; grpc_status: -1 (HTTP/1.1
    carries no gRPC); error_code: 0; target: the attempt's Target; reason: that response's
    `x-meshd-reason` (kind "status"), else "".
    """

    __slots__ = ("kind", "http_status", "grpc_status", "error_code", "target", "reason")

    def __init__(self, kind: str, target: Target, http_status: int = 0, reason: str = ""):
        self.kind = kind
        self.target = target
        self.http_status = http_status
        self.grpc_status = -1
        self.error_code = 0
        self.reason = reason

    def __repr__(self):
        return f"Failure({self.kind!r}, http={self.http_status})"


# --- Target's header rewrite -------------------------------------------------------------
# Target.rewrite gives the (authority, [name, value, ...]) pair the h2 engine applies; the
# HTTP/1.1 and TCP relays read it once per Target and cache it.


class TargetRewrite:
    """What a Target changes on the way: authority (bytes or None) and header (name, value) pairs."""

    __slots__ = ("authority", "pairs", "names")

    def __init__(self, authority, flat):
        self.authority = authority
        self.pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        self.names = frozenset(n for n, _ in self.pairs)


_EMPTY = TargetRewrite(None, [])
_rewrites: dict[int, tuple[Target, TargetRewrite]] = {}


def _state_rewrite(t: Target) -> TargetRewrite:
    authority, flat = t.rewrite
    if not flat and authority is None:
        return _EMPTY
    return TargetRewrite(authority, flat)


def rewrite_of(t: Target) -> TargetRewrite:
    """The Target's header rewrite, cached per Target object (Targets are immutable and reused)."""
    hit = _rewrites.get(id(t))
    if hit is not None and hit[0] is t:
        return hit[1]
    rw = _state_rewrite(t)
    if len(_rewrites) >= 4096:
        _rewrites.clear()
    _rewrites[id(t)] = (t, rw)     # holding t keeps its id from being reused while cached
    return rw




# --- TLS over memory BIOs: to upstreams with session resumption, and from downstreams ------


class TlsOverBio(asyncio.Protocol, abc.ABC):
    """TLS through memory BIOs between a raw transport and a relay protocol (app), which sees
    this object as its transport once the handshake is done.

    asyncio's SSL transport can neither offer a saved session nor half-close, so the relays
    run TLS themselves. A TCP half-close maps onto TLS both ways: the peer's close_notify
    reaches app as eof_received, and app's write_eof sends close_notify and then FIN while
    reading goes on (TLS 1.3 lets each side close its write side alone, RFC 8446 §6.1).
    A subclass makes self.sslobj and says what a finished and a failed handshake do.
    """

    # A FIN without close_notify (RFC 8446 §6.1 calls it truncation): passed on as EOF
    # when True, else the connection is dropped.
    truncation_is_eof = True

    def __init__(self, app):
        self.inc = _ssl.MemoryBIO()
        self.out = _ssl.MemoryBIO()
        self.sslobj = None
        self.app = app
        self.transport = None
        self.up = False
        self.closed = False
        self.eof_passed = False     # app has been told of the peer's EOF
        self._extra = {}

    @abc.abstractmethod
    def _established(self):
        """The handshake finished: hand the connection to app."""

    @abc.abstractmethod
    def _failed(self, exc):
        """The handshake failed or the connection ended during it (the transport is closing)."""

    def _truncated(self):
        """The peer sent FIN without close_notify and truncation_is_eof is False."""

    def _read_done(self):
        """After each batch of records has been read."""

    # -- raw side
    def connection_made(self, transport):
        self.transport = transport
        self._handshake()

    def _handshake(self):
        try:
            self.sslobj.do_handshake()
        except _ssl.SSLWantReadError:
            self._flush()
            return
        except (_ssl.SSLError, _ssl.CertificateError) as exc:
            self._flush()
            self.closed = True
            self.transport.close()
            self._failed(exc)
            return
        self._flush()
        self.up = True
        self._extra = {"ssl_object": self.sslobj, "peername": self.transport.get_extra_info("peername"),
                       "sockname": self.transport.get_extra_info("sockname")}
        self._established()

    def data_received(self, data):
        self.inc.write(data)
        if not self.up:
            self._handshake()
            if not self.up:
                return
        eof = False
        while not self.closed:
            try:
                chunk = self.sslobj.read(262144)
            except _ssl.SSLWantReadError:
                break
            except _ssl.SSLZeroReturnError:
                eof = True
                break
            except _ssl.SSLError:
                self.transport.close()
                return
            if not chunk:
                eof = True
                break
            self.app.data_received(chunk)
        self._flush()
        self._read_done()
        if eof and not self.closed and not self.eof_passed:
            self.eof_passed = True
            if not self.app.eof_received():
                self.close()

    def eof_received(self):
        if not self.up:
            return False
        if self.eof_passed:
            return True             # close_notify came first; our side may still write
        if not self.truncation_is_eof:
            self._truncated()
            return False
        self.eof_passed = True
        return bool(self.app.eof_received())

    def connection_lost(self, exc):
        failed, self.closed = self.closed, True
        if not self.up:
            if not failed:          # else the handshake's own error was reported
                self._failed(exc or ConnectionResetError("closed during TLS handshake"))
            return
        self.app.connection_lost(exc)

    def pause_writing(self):
        if self.up:
            self.app.pause_writing()

    def resume_writing(self):
        if self.up:
            self.app.resume_writing()

    def _flush(self):
        if self.out.pending and self.transport is not None:
            self.transport.write(self.out.read())

    # -- the transport the app sees
    def write(self, data):
        if self.closed:
            return
        try:
            self.sslobj.write(data)
        except _ssl.SSLError:
            self.transport.close()
            return
        self._flush()

    def writelines(self, parts):
        self.write(b"".join(parts))

    def can_write_eof(self):
        return True

    def write_eof(self):
        # close_notify, then TCP FIN. unwrap() raises SSLWantReadError until the peer's
        # close_notify arrives; reading goes on meanwhile.
        if self.closed:
            return
        try:
            self.sslobj.unwrap()
        except _ssl.SSLError:
            pass
        self._flush()
        if self.transport.can_write_eof():
            self.transport.write_eof()

    def pause_reading(self):
        self.transport.pause_reading()

    def resume_reading(self):
        self.transport.resume_reading()

    def is_reading(self):
        return self.transport.is_reading()

    def get_write_buffer_size(self):
        return self.transport.get_write_buffer_size()

    def set_write_buffer_limits(self, high=None, low=None):
        self.transport.set_write_buffer_limits(high, low)

    def get_extra_info(self, name, default=None):
        return self._extra.get(name, default)

    def is_closing(self):
        return self.closed or self.transport.is_closing()

    def close(self):
        self.closed = True
        self.transport.close()

    def abort(self):
        self.closed = True
        self.transport.abort()


class TlsUpstream(TlsOverBio):
    """Client TLS that offers the pool's saved SSLSession again (loop.create_connection(ssl=...)
    and loop.start_tls take no session). `ready` resolves once the handshake finished
    (app.connection_made has run) or fails. A FIN without close_notify is EOF: many servers
    end that way, and HTTP/1.1 framing finds a cut body by itself."""

    def __init__(self, ctx: _ssl.SSLContext, server_hostname, session, app, stats, sessions):
        super().__init__(app)
        self.sslobj = ctx.wrap_bio(self.inc, self.out, server_side=False,
                                   server_hostname=server_hostname, session=session)
        self.stats = stats          # dict with tls_full_handshakes / tls_resumed_handshakes
        self.sessions = sessions    # object whose .tls_session receives new sessions
        self.ready = asyncio.get_running_loop().create_future()

    def _established(self):
        self.stats["tls_resumed_handshakes" if self.sslobj.session_reused else "tls_full_handshakes"] += 1
        self._save_session()
        self.app.connection_made(self)
        if not self.ready.done():
            self.ready.set_result(self.app)

    def _failed(self, exc):
        if not self.ready.done():
            self.ready.set_exception(exc)

    def _save_session(self):
        # TLS 1.3 tickets arrive after the handshake, so look again after reads.
        s = self.sslobj.session
        if s is not None and (s.has_ticket or self.sslobj.version() != "TLSv1.3"):
            self.sessions.tls_session = s

    def _read_done(self):
        if self.sessions.tls_session is None or not self.sslobj.session_reused:
            self._save_session()


class TlsDownstream(TlsOverBio):
    """Server TLS in front of a relay's downstream protocol (app).

    The context's sni_callback may swap in a per-name context (SSLObject has .context too).
    A peer that fails the handshake, or does not finish it within handshake_timeout seconds,
    is closed before app sees anything; one that sends FIN without close_notify is dropped
    rather than passed on as a clean EOF. stats counts tls_handshake_failures and tls_truncated.
    """

    truncation_is_eof = False

    def __init__(self, ctx: _ssl.SSLContext, app, stats, handshake_timeout: float):
        super().__init__(app)
        self.sslobj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.stats = stats
        self.handshake_timeout = handshake_timeout
        self.timer = None

    def connection_made(self, transport):
        if self.handshake_timeout > 0:
            self.timer = asyncio.get_running_loop().call_later(self.handshake_timeout, self._too_slow)
        super().connection_made(transport)

    def _too_slow(self):
        if not self.up:
            self.transport.abort()

    def _established(self):
        if self.timer is not None:
            self.timer.cancel()
        self.app.connection_made(self)

    def _failed(self, exc):
        if self.timer is not None:
            self.timer.cancel()
        self.stats["tls_handshake_failures"] += 1
        _log.debug("TLS handshake from %s failed: %r", self.transport.get_extra_info("peername"), exc)

    def _truncated(self):
        self.stats["tls_truncated"] += 1


async def open_upstream(loop, target: Target, app, stats, sessions, timeout: float):
    """Connect app (an asyncio.Protocol) to target, through TLS with resumption when target.ssl.

    sessions: the pool object holding .tls_session. Raises OSError / ssl.SSLError /
    asyncio.TimeoutError on failure; stats["upstream_conns_opened"] counts successes.
    """
    async def connect():
        if target.ssl is None:
            await loop.create_connection(lambda: app, target.host, target.port)
            return
        tls = TlsUpstream(target.ssl, target.server_hostname, sessions.tls_session, app, stats, sessions)
        transport, _ = await loop.create_connection(lambda: tls, target.host, target.port)
        try:
            await tls.ready
        except BaseException:
            transport.abort()
            raise

    if timeout > 0:
        await asyncio.wait_for(connect(), timeout)
    else:
        await connect()
    stats["upstream_conns_opened"] += 1


class RelayEngine(abc.ABC):
    """What the HTTP/1.1 and TCP engines share: hooks, listeners, per-key pools, the sweeper.

    A subclass sets `connection_class` (the downstream protocol, built with the engine) and
    `pool_class` (built with the Target whose key it serves; it has .tls_session), and
    defines _sweep(), which reschedules itself in self.sweeper.
    """

    connection_class = None
    pool_class = None

    def __init__(self, decide, retry, loop):
        self.decide = decide
        self.retry = retry
        self.loop = loop
        self.conns = set()
        self.pools = {}
        self.listeners = []
        self.sweeper = None
        self.draining = False
        self.closed = False
        self.min_idle = 0.0         # the shortest idle timeout in use (seconds): the sweep period

    @property
    def downstream_connections(self) -> int:
        """Downstream connections currently open."""
        return len(self.conns)

    def pool_for(self, t: Target):
        p = self.pools.get(t.key)
        if p is None:
            p = self.pools[t.key] = self.pool_class(t)
        return p

    def has_tls_session(self, t: Target) -> bool:
        """Whether the pool of t's key holds a TLS session to resume."""
        p = self.pools.get(t.key)
        return p is not None and p.tls_session is not None

    def protocol_factory(self):
        """A downstream protocol for loop.create_server(engine.protocol_factory, ...)."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if self.sweeper is None and not self.closed:
            self._sweep()
        return self.connection_class(self)

    async def listen(self, host="127.0.0.1", port=0, ssl=None, **kwargs):
        """Start a listener (TLS-terminating when ssl is an SSLContext); returns the asyncio Server."""
        return await self.listen_with(self.protocol_factory, host, port, ssl, **kwargs)

    async def listen_with(self, factory, host, port, ssl, **kwargs):
        """listen(), with the downstream protocol made by factory() (see idle_factory)."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        factory, ssl = self.listener_protocol(ssl, factory)
        server = await self.loop.create_server(factory, host, port, ssl=ssl, **kwargs)
        self.listeners.append(server)
        return server

    def listener_protocol(self, ssl, factory):
        """(protocol factory, ssl for create_server) for a listener: here asyncio's TLS, if any."""
        return factory, ssl

    def note_idle(self, seconds):
        """An idle timeout is in use: the sweeper runs at least four times within it."""
        if seconds > 0 and (not self.min_idle or seconds < self.min_idle):
            self.min_idle = seconds

    def sweep_period(self, *timeouts):
        """A quarter of the shortest of timeouts and the idle timeouts in use, within 0.05-1 s."""
        return max(0.05, min((1.0, *(t / 4 for t in (*timeouts, self.min_idle) if t > 0))))

    def idle_factory(self, attr, seconds):
        """protocol_factory for a listener with its own idle timeout: each connection's
        `attr` is set to seconds (None: the engine's is kept)."""
        if seconds is None:
            return self.protocol_factory
        seconds = max(0.0, float(seconds))
        self.note_idle(seconds)

        def factory():
            conn = self.protocol_factory()
            setattr(conn, attr, seconds)
            return conn
        return factory

    def stop_listening(self, closing: bool):
        self.draining = True
        if closing:
            self.closed = True
            if self.sweeper is not None:
                self.sweeper.cancel()
                self.sweeper = None
        for s in self.listeners:
            s.close()

    @abc.abstractmethod
    def _sweep(self):
        """Each relay closes its idle and slow connections here (called every second)."""
