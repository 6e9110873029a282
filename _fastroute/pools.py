"""Reference connection and TLS-session pool bookkeeping over opaque handles.

The data plane owns the sockets; this only counts them. Pools are keyed by
(endpoint id, identity) (`Decision.pool_key`); limits are the target node's
App Mesh connectionPool (Envoy circuit breakers: max_connections,
max_pending_requests, max_requests). `_core.Pools` is the compiled twin.
"""
from __future__ import annotations

from collections import OrderedDict

from . import constants as C
from .errors import UnknownHandle


class PoolDecision:
    """What to do for one request: reuse a handle, connect, queue, or circuit open."""

    __slots__ = ("action", "handle", "tls_session", "limit")

    def __init__(self, action, handle=None, tls_session=None, limit=C.LIMIT_NONE):
        self.action, self.handle, self.tls_session, self.limit = action, handle, tls_session, limit


class _Conn:
    __slots__ = ("handle", "key", "node", "streams", "max_streams", "last_used", "seq")


class _NodeCount:
    __slots__ = ("connections", "pending", "requests", "limits")

    def __init__(self, limits):
        self.connections = self.pending = self.requests = 0
        self.limits = limits


class Pools:
    """Counts connections, pending and active requests per node; idle expiry, LRU cap.

    Life cycle of a request: checkout() -> REUSE (send on handle) | CONNECT (open,
    then opened() or connect_failed()) | QUEUE (wait; unqueue() when leaving the
    queue, then checkout() again) | CIRCUIT_OPEN (answer 503 / UNAVAILABLE); then
    release() the handle. closed() forgets a connection; expire() says which idle
    connections to close.
    """

    def __init__(self, router, max_idle: int = 256, idle_timeout_ms: int = 300_000) -> None:
        self._router = router
        self._max_idle = max_idle
        self._idle_ns = idle_timeout_ms * 1_000_000
        self._nodes: dict[str, _NodeCount] = {}
        self._conns: dict[object, _Conn] = {}
        self._by_key: dict[tuple, list] = {}
        self._sessions: OrderedDict = OrderedDict()
        self._seq = 0

    def _count(self, node: str) -> _NodeCount:
        nc = self._nodes.get(node)
        if nc is None:
            nc = self._nodes[node] = _NodeCount(self._router.node_limits(node))
        return nc

    def checkout(self, decision, now_ns: int) -> PoolDecision:
        """Decide how the request on `decision` gets a connection."""
        nc = self._count(decision.target)
        max_connections, max_pending, max_requests = nc.limits
        if nc.requests >= max_requests:
            return PoolDecision(C.POOL_CIRCUIT_OPEN, limit=C.LIMIT_MAX_REQUESTS)
        conns = self._by_key.get(decision.pool_key, ())
        for i in range(len(conns) - 1, -1, -1):  # most recently used first
            c = conns[i]
            if c.streams < c.max_streams:
                c.streams += 1
                c.last_used = now_ns
                nc.requests += 1
                conns.append(conns.pop(i))
                return PoolDecision(C.POOL_REUSE, c.handle)
        if nc.connections < max_connections:
            nc.connections += 1
            nc.requests += 1
            return PoolDecision(C.POOL_CONNECT, tls_session=self._sessions.get(decision.pool_key))
        if nc.pending < max_pending:
            nc.pending += 1
            return PoolDecision(C.POOL_QUEUE)
        return PoolDecision(C.POOL_CIRCUIT_OPEN, limit=C.LIMIT_MAX_PENDING)

    def opened(self, decision, handle, max_streams: int, now_ns: int) -> None:
        """A CONNECT succeeded: `handle` carries this request and up to max_streams."""
        c = _Conn()
        c.handle, c.key, c.node = handle, decision.pool_key, decision.target
        c.streams, c.max_streams, c.last_used, c.seq = 1, max_streams, now_ns, self._seq
        self._seq += 1
        self._conns[handle] = c
        self._by_key.setdefault(c.key, []).append(c)

    def connect_failed(self, decision) -> None:
        """A CONNECT failed: give back its connection and request slots."""
        nc = self._count(decision.target)
        nc.connections -= 1
        nc.requests -= 1

    def unqueue(self, decision) -> None:
        """A QUEUEd request leaves the queue (to check out again, or gives up)."""
        self._count(decision.target).pending -= 1

    def _conn(self, handle) -> _Conn:
        try:
            return self._conns[handle]
        except KeyError:
            raise UnknownHandle(handle) from None

    def release(self, handle, now_ns: int) -> bool:
        """A request on `handle` is done; True if its node has queued requests."""
        c = self._conn(handle)
        c.streams -= 1
        c.last_used = now_ns
        nc = self._nodes[c.node]
        nc.requests -= 1
        return nc.pending > 0

    def closed(self, handle) -> None:
        """The connection is gone; its unfinished requests end with it."""
        c = self._conns.pop(self._conn(handle).handle)
        self._by_key[c.key].remove(c)
        if not self._by_key[c.key]:
            del self._by_key[c.key]
        nc = self._nodes[c.node]
        nc.connections -= 1
        nc.requests -= c.streams

    def expire(self, now_ns: int) -> list:
        """Idle handles to close: idle past the timeout, then the least recently used
        beyond the `max_idle` cap. They are forgotten here; the caller closes them."""
        idle = sorted((c for c in self._conns.values() if c.streams == 0), key=lambda c: (c.last_used, c.seq))
        out = [c for c in idle if self._idle_ns and now_ns - c.last_used >= self._idle_ns]
        rest = [c for c in idle if not (self._idle_ns and now_ns - c.last_used >= self._idle_ns)]
        out += rest[:max(0, len(rest) - self._max_idle)]
        for c in out:
            self.closed(c.handle)
        return [c.handle for c in out]

    def store_session(self, pool_key: tuple, session) -> None:
        """Keep the TLS session of `pool_key` for resumption (LRU, max_idle slots)."""
        self._sessions[pool_key] = session
        self._sessions.move_to_end(pool_key)
        while len(self._sessions) > self._max_idle:
            self._sessions.popitem(last=False)

    def session(self, pool_key: tuple):
        """The TLS session kept for `pool_key`, or None."""
        return self._sessions.get(pool_key)

    def stats(self, node: str) -> tuple[int, int, int]:
        """(connections, pending, requests) of a node."""
        nc = self._count(node)
        return (nc.connections, nc.pending, nc.requests)
