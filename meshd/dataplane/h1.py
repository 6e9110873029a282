"""The HTTP/1.1 relay (with Upgrade/WebSocket tunnels) on the h2 engine's routing-hook contract.

    engine = H1Engine(decide, retry=None)
    server = await engine.listen("127.0.0.1", 15002, ssl=None)

    decide(head: H1RequestHead) -> Target | Refusal      # exactly once per request
    retry(head, failure: Failure) -> Target | Refusal | None

Requests and responses are parsed by llhttp (httptools); this module only moves the pieces
llhttp hands back. Bodies stream with backpressure both ways; at most retry_buffer request
body bytes are kept for a retry. Upstream connections are pooled per Target key, one request
at a time each, TLS sessions resumed. A request whose upstream answers 101 becomes a
byte tunnel until both sides have closed (half-close passed on).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import httptools

from meshd.dataplane._h2 import Mirror, trace_context
from meshd.dataplane._relay import (
    Deferred, FAILURE_RESPONSES, Failure, Refusal, RelayEngine, Target, open_upstream, rewrite_of,
)

_log = logging.getLogger("meshd.dataplane.h1")

_C = dict.fromkeys((
    "requests", "downstream_conns", "upstream_conns_opened", "upstream_reused",
    "upstream_connect_errors", "tls_full_handshakes", "tls_resumed_handshakes", "retries",
    "synthetic_responses", "timeouts", "protocol_errors", "slow_closed", "upgrades",
    "bytes_in", "bytes_out", "stale_retries", "idle_timeouts",
), 0)


def counters() -> dict:
    """A snapshot of the HTTP/1.1 relay's counters (all engines in this process)."""
    return dict(_C)


# Hop-by-hop fields, never forwarded (RFC 9110 §7.6.1), plus fields named by Connection.
_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te",
                  b"transfer-encoding", b"upgrade"))
_PHRASES = {100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 400: b"Bad Request",
            403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
            408: b"Request Timeout", 413: b"Content Too Large",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
            502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n"

# Reasons a downstream connection's reading is paused; reading resumes when none is left.
_P_UPSTREAM = 1     # the upstream's write buffer is full
_P_HELD = 2         # body held while the upstream connects is over the bound
_P_QUEUE = 4        # a pipelined request waits behind the active one
_P_UPGRADE = 8      # waiting for the upstream's answer to an Upgrade


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing; the connection says why in .error."""


def _callback_failed(err: Exception, side: str) -> None:
    """httptools reports an exception raised in one of our own parser callbacks as a parse
    error: without this the relay's bug would look like a client's malformed request (a 400
    and a protocol-error count). Say so, with the cause (found by fuzzing)."""
    cause = err.__context__
    if isinstance(err, httptools.HttpParserCallbackError) and not isinstance(cause, _Stop):
        _log.error("HTTP/1.1 relay: a %s parser callback failed", side, exc_info=cause or err)


class H1RequestHead:
    """The request as the routing hook sees it: the h2 engine's RequestHead attributes."""

    __slots__ = ("method", "scheme", "authority", "path", "raw_headers", "grpc", "attempt",
                 "local_port", "peer_cert", "remote_address", "original_dst", "_dict", "_up_path", "_up_authority",
                 "_up_set", "_mirror", "bytes_received", "bytes_sent", "_resp_raw", "context", "backoff")

    def __init__(self, method, scheme, authority, path, raw, local_port, peer_cert=None, remote_address="",
                 original_dst=None):
        self.method = method
        self.scheme = scheme
        self.authority = authority
        self.path = path
        self.raw_headers = raw          # [(lowercase name bytes, value bytes)], arrival order
        self.grpc = False
        self.attempt = 0
        self.local_port = local_port
        self.peer_cert = peer_cert      # the TLS client's certificate (DER), as on the h2 head
        self.remote_address = remote_address
        self.original_dst = original_dst  # (host, port) dialled before an iptables REDIRECT, or None
        self._dict = None
        self._up_path = self._up_authority = self._up_set = self._resp_raw = self._mirror = None
        self.context = None             # the hooks' own per-request record; never read here
        self.backoff = 0.0              # seconds to wait before the retry the hook returned
        self.bytes_received = self.bytes_sent = 0

    # Per-request rewrites and what happened: the h2 RequestHead's surface, same meaning.
    def rewrite_path(self, path):
        self._up_path = path.encode("latin-1") if isinstance(path, str) else bytes(path)

    def rewrite_authority(self, authority):
        self._up_authority = authority.encode("latin-1") if isinstance(authority, str) else bytes(authority)

    def set_header(self, name, value):
        n = (name.encode("latin-1") if isinstance(name, str) else bytes(name)).lower()
        if n.startswith(b":"):
            raise ValueError(f"use rewrite_path/rewrite_authority for {name!r}")
        if self._up_set is None:
            self._up_set = []
        self._up_set.append((n, value.encode("latin-1") if isinstance(value, str) else bytes(value)))

    def mirror_to(self, target, done=None, max_body_bytes=65536, timeout=None):
        """The h2 RequestHead's: send a copy of this request to target too (see _h2.Mirror)."""
        if self._mirror is not None:
            raise ValueError("this request is already mirrored")
        self._mirror = Mirror(target, done, max_body_bytes, timeout)
        return self._mirror

    @property
    def upstream_path(self):
        return self._up_path.decode("latin-1") if self._up_path is not None else self.path

    @property
    def response_headers(self):
        d = {}
        if self._resp_raw is not None:
            d[":status"] = str(self._resp_raw[0])
            for k, v in self._resp_raw[1]:
                d[k.decode("latin-1")] = v.decode("latin-1")
        return d

    @property
    def headers(self):
        """{lowercase name: value}; repeated fields joined with ", " (RFC 9110 §5.3)."""
        if self._dict is None:
            d = {}
            for k, v in self.raw_headers:
                k = k.decode("latin-1")
                v = v.decode("latin-1")
                d[k] = d[k] + ", " + v if k in d else v
            self._dict = d
        return self._dict

    def header(self, name):
        """`headers.get(name)` (`name` lowercase): the h2 RequestHead's surface."""
        return self.headers.get(name)

    def trace_context(self, bound):
        """The h2 RequestHead's: this request's W3C trace context and new span."""
        return trace_context(self, bound)

    def __repr__(self):
        return f"H1RequestHead({self.method} {self.scheme}://{self.authority}{self.path})"


def _reason_of(raw) -> str:
    """A response head's `x-meshd-reason` (its (name, value) pairs as they came), or ""."""
    for name, value in raw:
        if name.lower() == b"x-meshd-reason":
            return value.decode("latin-1")
    return ""


def _status_line(status, phrase=None):
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase or _PHRASES.get(status, b"Status"))


def _connection_tokens(raw):
    out = set()
    for k, v in raw:
        if k == b"connection":
            out.update(t.strip().lower() for t in v.split(b","))
    return out


class _Pool:
    """Idle keep-alive connections to one upstream key, and its TLS session to resume."""

    __slots__ = ("target", "idle", "tls_session")

    def __init__(self, target):
        self.target = target
        self.idle: list[_Up] = []
        self.tls_session = None

    def take(self):
        while self.idle:
            c = self.idle.pop()
            if not c.closed:
                return c
        return None


class _Up(asyncio.Protocol):
    """One upstream HTTP/1.1 connection: a response parser feeding the exchange it serves."""

    def __init__(self, engine, pool):
        self.engine = engine
        self.pool = pool
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.ex: _Ex | None = None
        self.closed = False
        self.tunnel = False
        self.eof = False
        self.reading_paused = False
        self.idle_since = 0.0
        self.used = 0            # requests sent on it

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(self.engine.high_water)

    # parser callbacks: forwarded to the exchange being served. One feed_data may run
    # several; when one of them ends the exchange (its client left, so the connection is
    # closing), the rest have no exchange and stop the parser (found by fuzzing).
    def _served(self):
        ex = self.ex
        if ex is None:
            raise _Stop()
        return ex

    def on_status(self, phrase):
        self._served().resp_phrase = phrase

    def on_header(self, name, value):
        self._served().resp_header(name.lower(), value)

    def on_headers_complete(self):
        self._served().resp_headers_complete(self.parser.get_status_code(), self.parser)

    def on_body(self, data):
        self._served().resp_body(data)

    def on_message_complete(self):
        if not self.tunnel:
            self._served().resp_complete()

    def data_received(self, data):
        ex = self.ex
        if self.tunnel:
            ex.down.last = self.engine.loop.time()
            ex.down.transport.write(data)
            return
        if ex is None:          # an idle connection must not talk: drop it
            self.close()
            return
        ex.down.last = self.engine.loop.time()      # a byte either way keeps the request alive
        ex.resp_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as u:
            if self.tunnel:
                rest = data[u.args[0]:]
                if rest:
                    ex.down.transport.write(rest)
        except httptools.HttpParserError as err:
            _callback_failed(err, "upstream")
            if self.ex is ex and ex.up is self:
                _C["protocol_errors"] += 1
                ex.up_failed(self, "reset")
            self.close()

    def eof_received(self):
        self.eof = True
        if self.tunnel:
            return self.ex.down.tunnel_eof(self)
        return False

    def connection_lost(self, exc):
        self.closed = True
        if self.ex is not None:
            ex, self.ex = self.ex, None
            if self.tunnel:
                ex.down.close()
            else:
                ex.up_lost(self)

    def pause_writing(self):
        if self.ex is not None:
            self.ex.down.pause(_P_UPSTREAM)

    def resume_writing(self):
        if self.ex is not None:
            self.ex.down.resume(_P_UPSTREAM)

    def pause_reading(self):
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self):
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def release(self, reusable):
        """The exchange is done with this connection: back to the pool idle, or closed."""
        self.ex = None
        if not reusable or self.closed or self.engine.closed:
            self.close()
            return
        self.resume_reading()       # an idle connection must notice the server closing it
        self.idle_since = self.engine.loop.time()
        self.pool.idle.append(self)

    def close(self):
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Ex:
    """One request/response exchange: routing, attempts, body relay both ways, timeout."""

    def __init__(self, down: "_Down"):
        self.down = down
        self.url = b""
        self.raw = []
        self.trailers = None
        self.head = None
        self.method = b""
        self.http11 = True
        self.keep_alive = True
        self.chunked = False
        self.has_body = False
        self.upgrade = False
        self.expect100 = False
        self.sent_continue = False
        self.req_done = False
        self.held = []
        self.held_bytes = 0
        self.replay = bytearray()
        self.target = None
        self.up: _Up | None = None
        self.connecting = None
        self.timer = None
        self.done = False
        self.tunnel_early = []
        self.sent_any = False       # an attempt got the request: a retry replays self.replay
        self.stale_retried = False
        # response
        self.resp_phrase = b""
        self.resp_raw = []
        self.resp_trailers = None
        self.resp_status = 0
        self.out_status = 0         # what the client got, for the completion hook
        self.out_reason = ""
        self.t0_ns = time.monotonic_ns()
        self.resp_head_done = False
        self.resp_started = False
        self.resp_chunked_down = False
        self.resp_close_delimited = False
        self.resp_bytes = 0
        self.idle = down.stream_idle    # seconds without a byte either way (0: never)
        self.mirror = None              # the Mirror whose copy of the body is being collected
        self.mirror_body = None

    # -- request side (called by the downstream parser)
    def req_body(self, data):
        self.head.bytes_received += len(data)
        if self.mirror is not None:
            self.mirror_data(data)
        replay = self.replay
        if replay is not None:
            replay += data
            if len(replay) > self.down.engine.retry_buffer:
                self.replay = None
        if self.up is not None:
            self._write_body(data)
        elif not self.done:
            self.held.append(data)
            self.held_bytes += len(data)
            if self.held_bytes > self.down.engine.high_water:
                self.down.pause(_P_HELD)

    def _write_body(self, data):
        _C["bytes_out"] += len(data)
        if self.chunked:
            self.up.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.up.transport.write(data)

    def req_complete(self):
        self.req_done = True
        if self.up is not None and self.chunked:
            self._write_end()
        if self.mirror is not None:
            self.send_mirror()

    def _write_end(self):
        self.up.transport.writelines((_LAST_CHUNK, *self._trailer_lines(self.trailers), b"\r\n"))

    @staticmethod
    def _trailer_lines(trailers):
        return [k + b": " + v + b"\r\n" for k, v in trailers] if trailers else ()

    # -- routing and attempts
    def start(self):
        e = self.down.engine
        try:
            r = e.decide(self.head)
        except Exception:
            _log.exception("h1 decide failed for %r", self.head)
            r = None
        if type(r) is Deferred:
            r.then(self.route)  # queued by the hook: routed when it resolves
            return
        self.route(r)

    def route(self, r):
        if self.done:
            return
        e = self.down.engine
        if type(r) is Refusal:
            self.synthetic(r.http_status, r.reason)
            return
        if type(r) is not Target:
            if r is not None:
                _log.error("h1 routing hook returned %r", r)
            status, _, reason = FAILURE_RESPONSES["route_error"]
            self.synthetic(status, reason)
            return
        self.target = r
        if self.head._mirror is not None:
            self.take_mirror()
        if r.idle_timeout is not None:
            self.idle = r.idle_timeout          # the route's wins over the listener's
            e.note_idle(self.idle)
        if self.timer is None and r.timeout > 0:
            self.timer = e.loop.call_later(r.timeout, self.on_timeout)
        if self.expect100 and not self.sent_continue and not self.req_done:
            # Expect: 100-continue is answered here once a route is found, and not sent on
            # (RFC 9110 §10.1.1 lets a proxy do either); a refusal is final instead.
            self.sent_continue = True
            self.down.transport.write(_CONTINUE)
        pool = e.pool_for(r)
        c = pool.take()
        if c is not None:
            _C["upstream_reused"] += 1
            self.attach(c)
        else:
            self.connecting = e.loop.create_task(self.connect(r, pool))

    async def connect(self, t, pool):
        e = self.down.engine
        c = _Up(e, pool)
        try:
            await open_upstream(e.loop, t, c, _C, pool, e.connect_timeout)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            _C["upstream_connect_errors"] += 1
            _log.debug("h1 connect to %r failed: %r", t, exc)
            if self.target is t and not self.done:
                self.attempt_failed(Failure("connect_error", t))
            return
        if self.target is t and not self.done and self.up is None:
            self.attach(c)
        else:
            c.release(True)

    def attach(self, c):
        """Send the request head and what we have of the body on connection c."""
        self.up = c
        c.ex = self
        c.used += 1
        c.transport.write(self.request_head())
        if self.sent_any:
            self.held = []
            if self.replay:
                self._write_body(bytes(self.replay))
        elif self.held:
            for piece in self.held:
                self._write_body(piece)
            self.held = []
        self.held_bytes = 0
        self.sent_any = True
        self.down.resume(_P_HELD)
        if self.req_done and self.chunked:
            self._write_end()
        if c.transport.get_write_buffer_size() > self.down.engine.high_water:
            self.down.pause(_P_UPSTREAM)

    # -- mirroring (head.mirror_to; see _h2.Mirror): the copy of the body is collected
    # beside the relay's own buffers, so it never holds back the original; once the request
    # has ended it goes out whole as a _Shadow on the mirror Target's pool.
    def take_mirror(self):
        """The request is forwarded: start its copy with the body held so far (nothing of
        it went upstream yet: this is the first Target)."""
        m, self.head._mirror = self.head._mirror, None
        held = b"".join(self.held)
        if self.upgrade:
            m.report("cancelled")       # a tunnel is not a request to copy
        elif len(held) > m.max_body_bytes:
            m.report("too_large")
        else:
            self.mirror, self.mirror_body = m, bytearray(held)
            if self.req_done:
                self.send_mirror()

    def mirror_data(self, data):
        if len(self.mirror_body) + len(data) > self.mirror.max_body_bytes:
            self.drop_mirror("too_large")
        else:
            self.mirror_body += data

    def drop_mirror(self, outcome):
        """Abandon the copy (of a request refused, too large or left unfinished)."""
        m = self.mirror if self.mirror is not None else self.head._mirror
        self.mirror = self.head._mirror = self.mirror_body = None
        if m is not None:
            m.report(outcome)

    def send_mirror(self):
        m, body = self.mirror, bytes(self.mirror_body)
        self.mirror = self.mirror_body = None
        if self.chunked:
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"".join(
                (_LAST_CHUNK, *self._trailer_lines(self.trailers), b"\r\n"))
        _Shadow(self.down.engine, m, self.request_head(m.target, True) + body, self.method == b"HEAD").start()

    def request_head(self, target=None, shadow=False):
        """The request head for target (the exchange's by default). A mirror's copy (shadow)
        names its host with Envoy's -shadow suffix and drops Expect: its body goes with it."""
        rw = rewrite_of(target or self.target)
        h = self.head
        authority = h._up_authority if h._up_authority is not None else rw.authority
        if shadow:
            authority = (authority if authority is not None else h.authority.encode("latin-1")) + b"-shadow"
        extra = h._up_set or ()
        drop = _HOP | rw.names
        if extra:
            drop = drop | {k for k, _ in extra}
        conn_tokens = _connection_tokens(self.raw)
        if conn_tokens:
            drop = drop | conn_tokens
        if authority is not None:
            drop = drop | {b"host"}
        if self.sent_continue or shadow:
            drop = drop | {b"expect"}
        strip = (target or self.target).strip_prefix
        out = [self.method, b" ", h._up_path if h._up_path is not None else self.url, b" HTTP/1.1\r\n"]
        for k, v in self.raw:
            if k not in drop and not (strip is not None and k.startswith(strip)):
                out += (k, b": ", v, b"\r\n")
        if authority is not None:
            out += (b"host: ", authority, b"\r\n")
        for k, v in rw.pairs:
            out += (k, b": ", v, b"\r\n")
        for k, v in extra:
            out += (k, b": ", v, b"\r\n")
        if self.chunked:
            out.append(b"transfer-encoding: chunked\r\n")
        if self.upgrade:
            for k, v in self.raw:
                if k == b"upgrade":
                    out += (b"upgrade: ", v, b"\r\n")
            out.append(b"connection: upgrade\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    def attempt_failed(self, f: Failure):
        """This attempt ended before any response byte went downstream."""
        if self.done or self.resp_started:
            return
        self.detach_up(False)
        e = self.down.engine
        r = None
        if e.retry is not None and self.replay is not None:
            try:
                r = e.retry(self.head, f)
            except Exception:
                _log.exception("h1 retry hook failed for %r", self.head)
        if r is None:
            status, _, reason = FAILURE_RESPONSES[f.kind]
            self.synthetic(status, reason)
            return
        self.follow(r)

    def follow(self, r):
        self.head.attempt += 1
        if type(r) is Target:
            _C["retries"] += 1
            wait, self.head.backoff = self.head.backoff, 0.0
            if wait > 0:
                # The router's backoff before the retry; `route` does nothing once the
                # exchange is done (the client left or the request timed out meanwhile).
                self.down.engine.loop.call_later(wait, self.route, r)
                return
        self.route(r)

    def detach_up(self, reusable):
        c, self.up = self.up, None
        if c is not None:
            self.down.resume(_P_UPSTREAM)
            if c.ex is self:
                c.release(reusable)
        self.resp_raw = []
        self.resp_trailers = None
        self.resp_head_done = False
        self.resp_bytes = 0

    def up_failed(self, c, kind):
        if self.up is not c:
            return
        if self.resp_started:
            self.finish_broken()
            return
        if (kind == "reset" and c.used > 1 and self.resp_bytes == 0 and self.replay is not None
                and self.head.attempt == 0 and not self.stale_retried):
            # A pooled keep-alive connection the server closed as we reused it: nothing
            # was processed (RFC 9112 §9.3.1 allows a retry), so try once on a fresh one.
            self.stale_retried = True
            _C["stale_retries"] += 1
            self.detach_up(False)
            self.route(self.target)
            return
        self.attempt_failed(Failure(kind, self.target))

    def up_lost(self, c):
        if self.up is not c or self.done:
            return
        if self.resp_head_done and self.resp_close_delimited:
            self.resp_complete()            # the body ended with the connection (RFC 9112 §6.3)
            return
        self.up_failed(c, "reset")

    def idle_expired(self):
        """No byte moved either way for self.idle seconds: Envoy's stream idle timeout.

        Before a response started, a local reply: 408 while the request is still arriving,
        504 once it has (FAILURE_RESPONSES); after, HTTP/1.1 can only close the connection.
        The upstream connection is closed either way."""
        _C["idle_timeouts"] += 1
        if self.resp_started:
            self.out_reason = "stream_idle_timeout"
            self.finish_broken()
            return
        self.detach_up(False)
        if self.connecting is not None:
            self.connecting.cancel()
        status, _, reason = FAILURE_RESPONSES["idle_timeout" if self.req_done else "request_idle_timeout"]
        self.synthetic(status, reason)

    def on_timeout(self):
        self.timer = None
        if self.done:
            return
        _C["timeouts"] += 1
        if self.resp_started:
            self.finish_broken()
            return
        self.detach_up(False)
        if self.connecting is not None:
            self.connecting.cancel()
        status, _, reason = FAILURE_RESPONSES["timeout"]
        self.synthetic(status, reason)

    # -- response side (called by the upstream parser)
    def resp_header(self, name, value):
        strip = self.target.strip_response_prefix
        if strip is not None and name.startswith(strip):
            return  # the upstream's copy of a header only this proxy may set
        if self.resp_head_done:
            if self.resp_trailers is None:
                self.resp_trailers = []
            self.resp_trailers.append((name, value))
        else:
            self.resp_raw.append((name, value))

    def resp_headers_complete(self, status, parser):
        raw, self.resp_raw = self.resp_raw, []
        if 100 <= status < 200 and status != 101:
            # Interim responses (RFC 9110 §15.2): our own 100 went already; others pass on.
            if not (status == 100 and self.sent_continue) and self.http11:
                self.down.transport.write(self._response_head(status, raw, False))
            return
        self.resp_head_done = True
        self.resp_status = status
        t = self.target
        if (t.retry_statuses is not None and status in t.retry_statuses
                and self.down.engine.retry is not None and self.replay is not None):
            r = None
            try:
                r = self.down.engine.retry(self.head, Failure("status", t, status, _reason_of(raw)))
            except Exception:
                _log.exception("h1 retry hook failed for %r", self.head)
            if r is not None:
                c = self.up
                self.detach_up(False)
                self.follow(r)
                c.close()
                raise _Stop()
        if status == 101 and self.upgrade:
            self.start_tunnel(raw)
            return
        body = status not in (204, 304) and self.method != b"HEAD"
        has_cl = False
        chunked = False
        for k, v in raw:
            if k == b"content-length":
                has_cl = True
            elif k == b"transfer-encoding":
                chunked = True
        self.resp_close_delimited = body and not has_cl and not chunked
        self.resp_chunked_down = body and not has_cl and self.http11
        if body and not has_cl and not self.http11:
            self.keep_alive = False     # an HTTP/1.0 client reads to the close
        if self.upgrade:
            self.keep_alive = False     # the downstream parser stopped at the Upgrade
        self.down.transport.write(self._response_head(status, raw, True))
        self.resp_started = True
        self.head._resp_raw = (status, raw)
        if self.method == b"HEAD":
            # llhttp cannot be told the response has no body; a fresh parser starts clean.
            self.up.parser = httptools.HttpResponseParser(self.up)
            self.resp_complete()

    def _response_head(self, status, raw, final):
        drop = _HOP | _connection_tokens(raw) if final else _HOP
        out = [_status_line(status, self.resp_phrase)]
        for k, v in raw:
            if k not in drop:
                out += (k, b": ", v, b"\r\n")
        if final:
            if self.resp_chunked_down:
                out.append(b"transfer-encoding: chunked\r\n")
            if not self.keep_alive or self.down.closing:
                out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    def resp_body(self, data):
        _C["bytes_in"] += len(data)
        self.head.bytes_sent += len(data)
        if self.resp_chunked_down:
            self.down.transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            self.down.transport.write(data)

    def resp_complete(self):
        if self.done or not self.resp_started:
            return
        if self.resp_chunked_down:
            self.down.transport.writelines(
                (_LAST_CHUNK, *self._trailer_lines(self.resp_trailers), b"\r\n"))
        c = self.up
        reusable = (c is not None and self.req_done and not self.resp_close_delimited
                    and c.parser.should_keep_alive())
        self.detach_up(reusable)
        self.finish()

    def start_tunnel(self, raw):
        """The upstream switched protocols: send its 101 on, then relay bytes verbatim both ways."""
        _C["upgrades"] += 1
        c = self.up
        c.tunnel = True
        self.resp_started = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        out = [_status_line(101, self.resp_phrase)]
        for k, v in raw:
            out += (k, b": ", v, b"\r\n")
        out.append(b"\r\n")
        d = self.down
        d.transport.write(b"".join(out))
        d.tunnel = c
        d.upgrading = False
        if self.tunnel_early:
            c.transport.write(b"".join(self.tunnel_early))
            self.tunnel_early = []
        if d.eof:
            d.tunnel_eof(d)
        d.resume(_P_UPGRADE)

    # -- endings
    def synthetic(self, status, reason):
        """Answer downstream ourselves (a Refusal or a failure), if no response byte went yet."""
        if self.done:
            return
        if self.resp_started:
            self.finish_broken()
            return
        _C["synthetic_responses"] += 1
        d = self.down
        close = not self.keep_alive or not self.req_done or self.upgrade or d.closing
        self.keep_alive = not close
        head = [_status_line(status), b"content-length: 0\r\n"]
        if reason:
            head += (b"x-meshd-reason: ", reason.encode("latin-1"), b"\r\n")
        if close:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        d.transport.write(b"".join(head))
        self.resp_started = True
        self.out_status, self.out_reason = status, reason
        self.finish()

    def report(self):
        """Tell the engine's completion hook how this request ended (once)."""
        cb = self.down.engine.complete
        if cb is None or getattr(self, "head", None) is None:
            return
        try:
            cb(self.head, self.target, self.out_status or self.resp_status, -1, self.out_reason,
               time.monotonic_ns() - self.t0_ns)
        except Exception:  # noqa: BLE001 - a hook bug must not break the connection
            _log.exception("completion hook failed for %r", self.head)

    def finish(self):
        if self.done:
            return
        self.done = True
        self.report()
        if self.mirror is not None or self.head._mirror is not None:
            self.drop_mirror("cancelled")
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()
        self.held = []
        self.down.exchange_done(self, self.keep_alive and self.req_done)

    def finish_broken(self):
        """The response was cut midway: nothing can be said downstream but closing."""
        if not self.done:
            self.out_reason = self.out_reason or "reset"
            self.report()
        if self.mirror is not None or self.head._mirror is not None:
            self.drop_mirror("cancelled")
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.detach_up(False)
        self.down.close(abort=True)


class _Shadow:
    """A mirror's copy of one request, sent whole on a pooled connection to the mirror
    Target; its response is parsed and dropped, and Mirror.report says how it ended.

    It stands where _Up expects its exchange: the resp_* parser callbacks, up_failed and
    up_lost. _Up also reports activity and write backpressure to the exchange's downstream
    (ex.down); a copy has none, so that is the shadow itself, with nothing to pause: its
    request, at most max_body_bytes, is written at once."""

    def __init__(self, engine, mirror, request, head_only):
        self.engine = engine
        self.mirror = mirror
        self.request = request          # head, framed body and trailers, as bytes
        self.head_only = head_only      # a HEAD's response has no body (llhttp cannot tell)
        self.down = self
        self.last = 0.0
        self.up = None
        self.task = None
        self.timer = None
        self.status = 0
        self.resp_phrase = b""
        self.resp_bytes = 0
        self.retried = False

    def pause(self, why):
        """Nothing to pause (see the class)."""

    def resume(self, why):
        """Nothing to resume (see the class)."""

    def start(self):
        loop = self.engine.loop
        if self.mirror.timeout > 0:
            self.timer = loop.call_later(self.mirror.timeout, self.end, "timeout")
        self.attempt()

    def attempt(self):
        pool = self.engine.pool_for(self.mirror.target)
        c = pool.take()
        if c is not None:
            self.attach(c)
        else:
            self.task = self.engine.loop.create_task(self.connect(pool))

    async def connect(self, pool):
        e = self.engine
        c = _Up(e, pool)
        try:
            await open_upstream(e.loop, self.mirror.target, c, _C, pool, e.connect_timeout)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            _C["upstream_connect_errors"] += 1
            _log.debug("h1 mirror connect to %r failed: %r", self.mirror.target, exc)
            self.end("failed")
            return
        if self.mirror.reported:        # timed out meanwhile
            c.release(True)
        else:
            self.attach(c)

    def attach(self, c):
        self.up = c
        c.ex = self
        c.used += 1
        c.transport.write(self.request)

    # -- _Up's callbacks
    def resp_header(self, name, value):
        """Response fields are not kept."""

    def resp_headers_complete(self, status, parser):
        if 100 <= status < 200:
            return                      # interim (RFC 9110 §15.2); the final one follows
        self.status = status
        if self.head_only:
            self.up.parser = httptools.HttpResponseParser(self.up)
            self.resp_complete()

    def resp_body(self, data):
        """Read and dropped: a copy's answer is never stored."""

    def resp_complete(self):
        c, self.up = self.up, None
        c.release(c.parser.should_keep_alive())
        self.end("ok")

    def up_failed(self, c, kind):
        if self.up is not c:
            return
        self.up = None
        c.ex = None
        c.close()
        if c.used > 1 and self.resp_bytes == 0 and not self.retried:
            # A pooled keep-alive connection the server had closed: nothing was processed
            # (RFC 9112 §9.3.1), so once more on a fresh one, as for the original.
            self.retried = True
            self.attempt()
            return
        self.end("failed")

    def up_lost(self, c):
        if self.up is c and self.status and not c.parser.should_keep_alive():
            self.up = None              # a close-delimited answer ended (RFC 9112 §6.3)
            self.end("ok")
            return
        self.up_failed(c, "reset")

    def end(self, outcome):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None and not self.task.done() and outcome == "timeout":
            self.task.cancel()
        if self.up is not None:
            c, self.up = self.up, None
            c.ex = None
            c.close()
        self.mirror.report(outcome, self.status)


class _Down(asyncio.Protocol):
    """One downstream connection: the request parser, the queue of pipelined exchanges."""

    def __init__(self, engine: "H1Engine"):
        self.engine = engine
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.cur: _Ex | None = None
        self.queue = deque()
        self.paused = 0
        self.closing = False
        self.closed = False
        self.error = None
        self.hdr_bytes = 0
        self.partial_since = 0.0
        self.last = 0.0
        self.tunnel: _Up | None = None
        self.upgrading = False
        self.eof = False
        self.scheme = "http"
        self.local_port = None
        self.remote_address = ""
        self.original_dst = None  # set by an intercepting listener before connection_made
        self.stream_idle = engine.stream_idle_timeout     # the listener's (see H1Engine.listen)

    def connection_made(self, transport):
        e = self.engine
        self.transport = transport
        transport.set_write_buffer_limits(e.high_water)
        e.conns.add(self)
        _C["downstream_conns"] += 1
        self.last = self.partial_since = e.loop.time()
        sock = transport.get_extra_info("sockname")
        self.local_port = sock[1] if sock else None
        peer = transport.get_extra_info("peername")
        self.remote_address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
        self.peer_cert = None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.scheme = "https"
            self.peer_cert = ssl_object.getpeercert(True)
        if e.draining:
            self.close()

    # -- parser callbacks
    def on_message_begin(self):
        self.cur = _Ex(self)
        self.hdr_bytes = 0
        if not self.partial_since:
            self.partial_since = self.engine.loop.time()

    def on_url(self, url):
        self.cur.url += url
        self.hdr_bytes += len(url)
        if self.hdr_bytes > self.engine.max_header_bytes:
            self.error = (431, "header_too_large")
            raise _Stop()

    def on_header(self, name, value):
        x = self.cur
        self.hdr_bytes += len(name) + len(value) + 4
        if self.hdr_bytes > self.engine.max_header_bytes:
            self.error = (431, "header_too_large")
            raise _Stop()
        if x.head is None:
            x.raw.append((name.lower(), value))
        else:
            if x.trailers is None:
                x.trailers = []
            x.trailers.append((name.lower(), value))

    def on_headers_complete(self):
        x = self.cur
        p = self.parser
        self.partial_since = 0.0
        _C["requests"] += 1
        x.method = p.get_method()
        x.http11 = p.get_http_version() == "1.1"
        x.keep_alive = p.should_keep_alive() and not self.closing
        host = None
        for k, v in x.raw:
            if k == b"host":
                if host is not None:        # RFC 9112 §3.2: more than one Host is a 400
                    self.error = (400, "bad_request")
                    raise _Stop()
                host = v
            elif k == b"transfer-encoding":
                # RFC 9112 §6.3: a request whose final coding is not chunked is a 400
                # (llhttp rejects Content-Length with Transfer-Encoding, and duplicates).
                if not v.lower().rstrip().endswith(b"chunked"):
                    self.error = (400, "bad_request")
                    raise _Stop()
                x.chunked = True
                x.has_body = True
            elif k == b"content-length":
                x.has_body = v.strip() != b"0"
            elif k == b"expect":
                x.expect100 = v.lower() == b"100-continue"
        if x.method == b"CONNECT":
            self.error = (405, "connect_unsupported")
            raise _Stop()
        x.upgrade = p.should_upgrade()
        url = x.url
        if url[:7].lower() == b"http://" or url[:8].lower() == b"https://":
            # absolute-form (RFC 9112 §3.2.2): the authority comes from the target, not Host.
            rest = url.split(b"//", 1)[1]
            slash = rest.find(b"/")
            host, url = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
            x.url = url
        x.head = H1RequestHead(x.method.decode("latin-1"), self.scheme,
                               (host or b"").decode("latin-1"), url.decode("latin-1"),
                               x.raw, self.local_port, self.peer_cert, self.remote_address, self.original_dst)
        self.queue.append(x)
        if len(self.queue) == 1:
            x.start()
        else:
            self.pause(_P_QUEUE)

    def on_body(self, data):
        self.cur.req_body(data)

    def on_message_complete(self):
        x, self.cur = self.cur, None
        x.req_complete()

    # -- transport events
    def data_received(self, data):
        self.last = self.engine.loop.time()
        if self.tunnel is not None:
            self.tunnel.transport.write(data)
            return
        if self.upgrading:
            self.queue[0].tunnel_early.append(data)
            self.pause(_P_UPGRADE)
            return
        if self.error is not None or self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as u:
            rest = data[u.args[0]:]
            x = self.queue[-1] if self.queue else None
            if x is not None and x.upgrade and not x.done:
                self.upgrading = True
                if rest:
                    x.tunnel_early.append(rest)
                self.pause(_P_UPGRADE)
            else:
                self.close()
        except httptools.HttpParserError as err:
            _callback_failed(err, "downstream")
            if self.error is None:
                _C["protocol_errors"] += 1
                self.error = (400, "bad_request")
            self.reject()

    def reject(self):
        """Answer a request we could not parse (after the ones before it), then close."""
        self.pause(_P_QUEUE)
        self.closing = True
        x = self.cur
        if x is not None and x in self.queue:
            # Broken inside a routed request's body: answer it if it is the active one and
            # nothing went downstream yet, else all we can do is close.
            err, self.error = self.error, None
            if self.queue[0] is x and not x.resp_started:
                x.keep_alive = False
                x.synthetic(*err)
            else:
                self.close(abort=True)
        elif not self.queue:
            self.send_error()

    def send_error(self):
        status, reason = self.error
        _C["synthetic_responses"] += 1
        self.transport.write(_status_line(status) + b"content-length: 0\r\nx-meshd-reason: "
                             + reason.encode() + b"\r\nconnection: close\r\n\r\n")
        self.close()

    def exchange_done(self, x, keep_alive):
        if self.queue and self.queue[0] is x:
            self.queue.popleft()
        if self.tunnel is not None or self.closed:
            return
        self.last = self.engine.loop.time()
        if self.error is not None and not self.queue:
            self.send_error()           # the unparseable request after this one
            return
        if not keep_alive or self.eof or (self.closing and not self.queue):
            self.close()
            return
        self.resume(_P_UPSTREAM)
        if self.queue:
            self.queue[0].start()
        if len(self.queue) <= 1:
            self.resume(_P_QUEUE)

    def eof_received(self):
        self.eof = True
        if self.tunnel is not None:
            return self.tunnel_eof(self)
        if self.upgrading:
            return True             # passed on when the tunnel opens
        # A client's FIN while a request is open is the client going away, as Envoy (no
        # half-close on HTTP connections) and nginx (499) read it: HTTP/1.1 has no other
        # way to cancel, and a client that closed its socket can no longer take the
        # answer. Returning False closes the connection, and with it the upstream one.
        return False

    def tunnel_eof(self, side):
        """One side of a tunnel sent FIN: pass it on, keep the other direction (half-close)."""
        up = self.tunnel
        if self.eof and up.eof:
            self.close()
            return False
        other = up.transport if side is self else self.transport
        if other.can_write_eof():
            other.write_eof()
            return True
        self.close()
        return False

    def connection_lost(self, exc):
        self.closed = True
        self.engine.conns.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
        for x in list(self.queue):
            if not x.done:
                # Every routed request is reported once, as the h2 engine does: a tunnel when
                # it ends (its 101 succeeded), anything else the client left as a reset.
                if not (x.upgrade and x.resp_status == 101):
                    x.out_reason = x.out_reason or "reset"
                x.report()
            if x.mirror is not None or x.head._mirror is not None:
                x.drop_mirror("cancelled")
            x.done = True
            if x.timer is not None:
                x.timer.cancel()
            if x.connecting is not None and not x.connecting.done():
                x.connecting.cancel()
            if x.up is not None:
                c, x.up = x.up, None
                c.ex = None
                c.close()
        self.queue.clear()

    def pause_writing(self):
        x = self.queue[0] if self.queue else None
        if self.tunnel is not None:
            self.tunnel.pause_reading()
        elif x is not None and x.up is not None:
            x.up.pause_reading()

    def resume_writing(self):
        x = self.queue[0] if self.queue else None
        if self.tunnel is not None:
            self.tunnel.resume_reading()
        elif x is not None and x.up is not None:
            x.up.resume_reading()

    def pause(self, why):
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= why

    def resume(self, why):
        if self.paused & why:
            self.paused &= ~why
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def close(self, abort=False):
        if not self.closed:
            self.closed = True
            self.engine.conns.discard(self)
            if abort:
                self.transport.abort()
            else:
                self.transport.close()


class H1Engine(RelayEngine):
    """The HTTP/1.1 relay: decide(head) once per request, upstream keep-alive pools per Target key.

    Options: header_timeout (seconds to receive a request's head: slowloris guard),
    idle_timeout (keep-alive and tunnel idleness), stream_idle_timeout (a request in
    progress, its body or its response, with no byte either way for this long is ended as
    Envoy's stream idle timeout does: 408 while the request is still arriving, 504 once it
    has, the connection closed once the response has started; App Mesh's listener
    `timeout.http.idle`, 300 s by default, 0 = none; a listener may set its own with
    listen(stream_idle_timeout=), a route's Target.idle_timeout wins over both),
    upstream_idle_timeout (pooled idle connections), connect_timeout (per attempt),
    max_header_bytes (beyond it: 431),
    retry_buffer (request body bytes kept for a retry), high_water (write-buffer bytes
    before the other side's reading pauses).
    """

    connection_class = _Down
    pool_class = _Pool

    def __init__(self, decide, retry=None, *, loop=None, header_timeout: float = 10.0,
                 idle_timeout: float = 300.0, upstream_idle_timeout: float = 60.0,
                 connect_timeout: float = 5.0, max_header_bytes: int = 65536,
                 retry_buffer: int = 65536, high_water: int = 256 * 1024, complete=None,
                 stream_idle_timeout: float = 300.0):
        super().__init__(decide, retry, loop)
        # complete(head, target, http_status, -1, reason, duration_ns): once per request,
        # as the HTTP/2 engine's hook; it feeds outlier detection, retries' budget, metrics.
        self.complete = complete
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.upstream_idle_timeout = upstream_idle_timeout
        self.connect_timeout = connect_timeout
        self.max_header_bytes = max_header_bytes
        self.retry_buffer = retry_buffer
        self.high_water = high_water
        self.stream_idle_timeout = max(0.0, stream_idle_timeout)
        self.note_idle(self.stream_idle_timeout)

    async def listen(self, host="127.0.0.1", port=0, ssl=None, *, stream_idle_timeout=None, **kwargs):
        """Start a listener (TLS-terminating when ssl is an SSLContext); returns the asyncio Server.

        stream_idle_timeout: this listener's request idle timeout in seconds (App Mesh's
        listener `timeout.http.idle`); None keeps the engine's."""
        return await self.listen_with(self.idle_factory("stream_idle", stream_idle_timeout),
                                      host, port, ssl, **kwargs)

    def idle_upstreams(self, t: Target) -> int:
        """How many idle keep-alive connections the pool of t's key holds."""
        p = self.pools.get(t.key)
        return 0 if p is None else sum(not c.closed for c in p.idle)

    def _sweep(self):
        """Periodically: cut slow request heads (slowloris) and idle connections both sides."""
        now = self.loop.time()
        self.sweeper = self.loop.call_later(
            self.sweep_period(self.header_timeout, self.upstream_idle_timeout), self._sweep)
        for d in list(self.conns):
            if d.partial_since and now - d.partial_since > self.header_timeout and not d.queue:
                _C["slow_closed"] += 1
                d.error = (408, "header_timeout")
                d.send_error()
            elif ((d.tunnel is not None or (not d.queue and d.cur is None))
                  and now - d.last > self.idle_timeout):
                d.close()
            elif d.queue and d.tunnel is None:
                x = d.queue[0]          # the request being served; those behind it wait
                if x.idle > 0 and not x.done and now - d.last > x.idle:
                    x.idle_expired()
        for p in self.pools.values():
            if p.idle:
                keep = []
                for c in p.idle:
                    if c.closed:
                        continue
                    if now - c.idle_since > self.upstream_idle_timeout:
                        c.close()
                    else:
                        keep.append(c)
                p.idle[:] = keep

    async def drain(self, grace: float = 5.0) -> int:
        """Stop accepting; close idle keep-alive connections, let in-flight requests finish
        within grace seconds (their responses say connection: close), then cut the rest.

        Returns the number of connections still busy when the grace ran out."""
        self.stop_listening(False)
        end = self.loop.time() + grace
        while True:
            for d in list(self.conns):
                d.closing = True
                if not d.queue and d.cur is None and d.tunnel is None:
                    d.close()
            if not self.conns or self.loop.time() >= end:
                break
            await asyncio.sleep(0.02)
        left = len(self.conns)
        for d in list(self.conns):
            d.close()
        return left

    def close(self):
        """Close listeners and every connection at once (no drain)."""
        self.stop_listening(True)
        for d in list(self.conns):
            d.close()
        for p in self.pools.values():
            for c in p.idle:
                c.close()
        self.pools.clear()


__all__ = ["H1Engine", "H1RequestHead", "counters"]
