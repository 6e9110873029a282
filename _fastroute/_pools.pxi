# Connection and TLS-session pool bookkeeping over opaque handles; twin of pools.py.

@cython.final
cdef class PoolDecision:
    """What to do for one request: reuse a handle, connect, queue, or circuit open."""

    @staticmethod
    cdef PoolDecision new(int action, object handle, object tls_session, int limit):
        cdef PoolDecision p = PoolDecision.__new__(PoolDecision)
        p.action, p.handle, p.tls_session, p.limit = action, handle, tls_session, limit
        return p


@cython.final
cdef class _Conn:
    pass


@cython.final
cdef class _NodeCount:
    pass


@cython.final
cdef class Pools:
    """Counts connections, pending and active requests per node; idle expiry, LRU cap.

    Same life cycle as pools.Pools: checkout() -> REUSE | CONNECT (then opened() or
    connect_failed()) | QUEUE (then unqueue()) | CIRCUIT_OPEN; release() when done.
    """

    def __init__(self, Router router, Py_ssize_t max_idle=256, int64_t idle_timeout_ms=300_000):
        self._router = router
        self._max_idle = max_idle
        self._idle_ns = idle_timeout_ms * 1_000_000
        self._nodes, self._conns, self._by_key = {}, {}, {}
        self._sessions = OrderedDict()
        self._seq = 0

    cdef _NodeCount _count(self, str node):
        cdef _NodeCount nc = self._nodes.get(node)
        cdef _Node n
        if nc is None:
            n = self._router._node(node)
            nc = _NodeCount.__new__(_NodeCount)
            nc.max_connections, nc.max_pending, nc.max_requests = n.max_connections, n.max_pending, n.max_requests
            self._nodes[node] = nc
        return nc

    def checkout(self, Decision decision, int64_t now_ns):
        """Decide how the request on `decision` gets a connection."""
        cdef _NodeCount nc = self._count(decision.target)
        cdef list conns
        cdef _Conn c
        cdef Py_ssize_t i
        if nc.requests >= nc.max_requests:
            return PoolDecision.new(POOL_CIRCUIT_OPEN, None, None, LIMIT_MAX_REQUESTS)
        conns = self._by_key.get(decision.pool_key)
        if conns is not None:
            for i in range(len(conns) - 1, -1, -1):  # most recently used first
                c = <_Conn>conns[i]
                if c.streams < c.max_streams:
                    c.streams += 1
                    c.last_used = now_ns
                    nc.requests += 1
                    conns.append(conns.pop(i))
                    return PoolDecision.new(POOL_REUSE, c.handle, None, LIMIT_NONE)
        if nc.connections < nc.max_connections:
            nc.connections += 1
            nc.requests += 1
            return PoolDecision.new(POOL_CONNECT, None, self._sessions.get(decision.pool_key), LIMIT_NONE)
        if nc.pending < nc.max_pending:
            nc.pending += 1
            return PoolDecision.new(POOL_QUEUE, None, None, LIMIT_NONE)
        return PoolDecision.new(POOL_CIRCUIT_OPEN, None, None, LIMIT_MAX_PENDING)

    def opened(self, Decision decision, handle, int64_t max_streams, int64_t now_ns):
        """A CONNECT succeeded: `handle` carries this request and up to max_streams."""
        cdef _Conn c = _Conn.__new__(_Conn)
        c.handle, c.key, c.node = handle, decision.pool_key, decision.target
        c.streams, c.max_streams, c.last_used, c.seq = 1, max_streams, now_ns, self._seq
        self._seq += 1
        self._conns[handle] = c
        self._by_key.setdefault(c.key, []).append(c)

    def connect_failed(self, Decision decision):
        """A CONNECT failed: give back its connection and request slots."""
        cdef _NodeCount nc = self._count(decision.target)
        nc.connections -= 1
        nc.requests -= 1

    def unqueue(self, Decision decision):
        """A QUEUEd request leaves the queue (to check out again, or gives up)."""
        cdef _NodeCount nc = self._count(decision.target)
        nc.pending -= 1

    cdef _Conn _conn(self, object handle):
        try:
            return self._conns[handle]
        except KeyError:
            raise UnknownHandle(handle) from None

    def release(self, handle, int64_t now_ns):
        """A request on `handle` is done; True if its node has queued requests."""
        cdef _Conn c = self._conn(handle)
        cdef _NodeCount nc = self._nodes[c.node]
        c.streams -= 1
        c.last_used = now_ns
        nc.requests -= 1
        return nc.pending > 0

    def closed(self, handle):
        """The connection is gone; its unfinished requests end with it."""
        cdef _Conn c = self._conn(handle)
        cdef _NodeCount nc = self._nodes[c.node]
        del self._conns[c.handle]
        conns = self._by_key[c.key]
        conns.remove(c)
        if not conns:
            del self._by_key[c.key]
        nc.connections -= 1
        nc.requests -= c.streams

    def expire(self, int64_t now_ns):
        """Idle handles to close: idle past the timeout, then the least recently used
        beyond the `max_idle` cap. They are forgotten here; the caller closes them."""
        cdef _Conn c
        idle = sorted([c for c in self._conns.values() if c.streams == 0], key=_conn_age)
        out, rest = [], []
        for c in idle:
            (out if self._idle_ns and now_ns - c.last_used >= self._idle_ns else rest).append(c)
        out += rest[:max(0, len(rest) - self._max_idle)]
        for c in out:
            self.closed(c.handle)
        return [c.handle for c in out]

    def store_session(self, tuple pool_key, session):
        """Keep the TLS session of `pool_key` for resumption (LRU, max_idle slots)."""
        self._sessions[pool_key] = session
        self._sessions.move_to_end(pool_key)
        while len(self._sessions) > self._max_idle:
            self._sessions.popitem(last=False)

    def session(self, tuple pool_key):
        """The TLS session kept for `pool_key`, or None."""
        return self._sessions.get(pool_key)

    def stats(self, str node):
        """(connections, pending, requests) of a node."""
        cdef _NodeCount nc = self._count(node)
        return (nc.connections, nc.pending, nc.requests)


def _conn_age(_Conn c):
    return (c.last_used, c.seq)
