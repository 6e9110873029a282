# The compiled table: typed twins of spec's lowered objects, built once per config.

@cython.final
cdef class _Header:
    pass


@cython.final
cdef class CompiledRetry:
    """A retry policy as a status-code bitmap, a gRPC-code mask and a transport mask."""

    @property
    def http_codes(self):
        return frozenset(i for i in range(N_HTTP_CODES) if self.http_codes[i])

    @property
    def grpc_codes(self):
        return frozenset(i for i in range(32) if (self.grpc_mask >> i) & 1)


@cython.final
cdef class _Budget:
    def __cinit__(self):
        cdef int i
        for i in range(BUDGET_WINDOW_S):
            self.stamps[i] = -1
            self.requests[i] = 0
            self.retries[i] = 0

    cdef inline int _bucket(self, int64_t now_ns) noexcept:
        cdef int64_t s = now_ns // NS_PER_S
        cdef int i = <int>(s % BUDGET_WINDOW_S)
        if self.stamps[i] != s:
            self.stamps[i] = s
            self.requests[i] = 0
            self.retries[i] = 0
        return i

    cdef inline void request(self, int64_t now_ns) noexcept:
        self.requests[self._bucket(now_ns)] += 1

    cdef bint allows_retry(self, int64_t now_ns) noexcept:
        # Retries stay <= 20% of requests + 10 per second over the window (Linkerd's
        # retry budget), in integers: 100*retries <= 20*requests + 100*10*10.
        cdef int64_t s = now_ns // NS_PER_S
        cdef int64_t req = 0, ret = 0
        cdef int i
        for i in range(BUDGET_WINDOW_S):
            if s - BUDGET_WINDOW_S < self.stamps[i] <= s:
                req += self.requests[i]
                ret += self.retries[i]
        return 100 * (ret + 1) <= BUDGET_PERCENT * req + 100 * BUDGET_MIN_PER_S * BUDGET_WINDOW_S

    cdef void retry(self, int64_t now_ns) noexcept:
        self.retries[self._bucket(now_ns)] += 1


@cython.final
cdef class TokenBucket:
    """A token bucket with Envoy's local rate limit semantics: it starts full, and every
    whole `fill_interval_ms` adds `tokens_per_fill` tokens, never above `max_tokens`;
    each request takes one. Integer arithmetic on `now_ns`; the first take sets the grid
    of fill times. A route's rate limit, and the data plane's per-listener limits."""

    def __init__(self, max_tokens, tokens_per_fill, fill_interval_ms):
        self.max_tokens, self.tokens_per_fill, self.fill_interval_ns = lower_rate_limit(
            "rate_limit", RateLimit(max_tokens, tokens_per_fill, fill_interval_ms))
        self.tokens = self.max_tokens
        self.last_fill_ns = -1

    def take(self, now_ns):
        """Take one token at `now_ns`: True if there was one."""
        cdef int64_t now = now_ns
        if not 0 <= now <= MAX_NOW_NS:
            raise ValueError(now_ns)
        return self._take(now)

    cdef bint _take(self, int64_t now_ns) noexcept:
        cdef int64_t k, need
        if self.last_fill_ns < 0:
            self.last_fill_ns = now_ns
        elif now_ns - self.last_fill_ns >= self.fill_interval_ns:
            k = (now_ns - self.last_fill_ns) // self.fill_interval_ns
            self.last_fill_ns += k * self.fill_interval_ns
            need = self.max_tokens - self.tokens
            # Compared before multiplying: k fills may be far more than the bucket holds.
            if k >= (need + self.tokens_per_fill - 1) // self.tokens_per_fill:
                self.tokens = self.max_tokens
            else:
                self.tokens += k * self.tokens_per_fill
        if self.tokens == 0:
            return False
        self.tokens -= 1
        return True

    def __repr__(self):
        return f"TokenBucket({self.max_tokens}, {self.tokens_per_fill}, {self.fill_interval_ns // 1_000_000})"


@cython.final
cdef class EndpointState:
    """One instance of a virtual node with its balancing and outlier state."""

    def __repr__(self):
        return f"EndpointState({self.id!r}, {self.address!r}, {self.port})"


@cython.final
cdef class _Node:
    """A target node's endpoints, round-robin cursor and policies (see the .pxd)."""

    cdef void recount(self):
        # After the endpoint list changed: count the healthy ones again, in all and per
        # priority, so that a pick reads counts instead of scanning.
        cdef Py_ssize_t healthy = 0
        cdef int p, levels = 0
        cdef EndpointState e
        for p in range(N_PRIORITIES):
            self.per_priority[p] = self.healthy_per_priority[p] = 0
        for e in self.endpoints:
            self.per_priority[e.priority] += 1
            if e.healthy:
                healthy += 1
                self.healthy_per_priority[e.priority] += 1
        self.healthy = healthy
        for p in range(N_PRIORITIES):
            if self.per_priority[p]:
                levels += 1
        self.by_priority = self.locality and levels > 1


@cython.final
cdef class _Route:
    pass


@cython.final
cdef class _Service:
    pass


@cython.final
cdef class _Index:
    """Routes of one router and protocol, hashed by (path length, path hash)."""

    def __cinit__(self, Py_ssize_t n_buckets, list prefix_lengths):
        cdef Py_ssize_t cap = 8, i
        while cap < 2 * n_buckets + 2:
            cap *= 2
        self.mask = cap - 1
        self.keys = <uint64_t *>PyMem_Malloc(cap * sizeof(uint64_t))
        self.lens = <int32_t *>PyMem_Malloc(cap * sizeof(int32_t))
        self.vals = <int32_t *>PyMem_Malloc(cap * sizeof(int32_t))
        self.n_prefix_lengths = len(prefix_lengths)
        self.prefix_lengths = <int32_t *>PyMem_Malloc((self.n_prefix_lengths + 1) * sizeof(int32_t))
        if not (self.keys and self.lens and self.vals and self.prefix_lengths):
            raise MemoryError()
        for i in range(cap):
            self.vals[i] = -1
        for i in range(self.n_prefix_lengths):
            self.prefix_lengths[i] = prefix_lengths[i]
        self.max_len = max(prefix_lengths) if prefix_lengths else 0
        self.max_exact = -1
        self.bucket_paths, self.bucket_routes, self.bucket_exact = [], [], []
        self.regex, self.any = [], []

    def __dealloc__(self):
        PyMem_Free(self.keys)
        PyMem_Free(self.lens)
        PyMem_Free(self.vals)
        PyMem_Free(self.prefix_lengths)

    cdef void _insert(self, str path, bint exact, list routes) except *:
        cdef Py_ssize_t length = len(path)
        cdef uint64_t h = fnv_str(path)
        cdef Py_ssize_t slot = <Py_ssize_t>((h ^ (<uint64_t>length * FNV_PRIME)) & <uint64_t>self.mask)
        while self.vals[slot] >= 0:
            slot = (slot + 1) & self.mask
        self.keys[slot] = h
        self.lens[slot] = <int32_t>(length * 2 + (1 if exact else 0))
        self.vals[slot] = <int32_t>len(self.bucket_routes)
        self.bucket_paths.append(path)
        self.bucket_routes.append(routes)
        self.bucket_exact.append(exact)
        if exact and length > self.max_exact:
            self.max_exact = length
        if length > self.max_len:
            self.max_len = length

    cdef inline list _probe(self, str path, Py_ssize_t length, uint64_t h, bint exact):
        """The bucket whose path equals path[:length], or None; linear probing."""
        cdef Py_ssize_t slot = <Py_ssize_t>((h ^ (<uint64_t>length * FNV_PRIME)) & <uint64_t>self.mask)
        cdef int32_t tag = <int32_t>(length * 2 + (1 if exact else 0))
        cdef int32_t v
        while True:
            v = self.vals[slot]
            if v < 0:
                return None
            # Confirm a hash hit against the stored path: a 64-bit collision must not
            # route a request to the wrong service.
            if self.keys[slot] == h and self.lens[slot] == tag and substr_eq(path, 0, <str>self.bucket_paths[v]):
                return <list>self.bucket_routes[v]
            slot = (slot + 1) & self.mask


cdef CompiledRetry _compile_retry(object lr):
    if lr is None:
        return None
    cdef CompiledRetry r = CompiledRetry.__new__(CompiledRetry)
    cdef int c
    r.max_retries = lr.max_retries
    r.per_try_ns = lr.per_try_ns
    r.transport = lr.transport
    r.grpc_mask = 0
    for c in range(N_HTTP_CODES):
        r.http_codes[c] = 1 if c in lr.http_codes else 0
    for c in lr.grpc_codes:
        r.grpc_mask |= (<uint32_t>1) << c
    return r


cdef _Node _compile_node(object ln):
    cdef _Node n = _Node.__new__(_Node)
    n.name, n.identity, n.lb, n.rr = ln.name, ln.identity, ln.lb, 0
    n.max_errors, n.interval_ns = ln.max_errors, ln.interval_ns
    n.base_ejection_ns, n.max_ejection_percent = ln.base_ejection_ns, ln.max_ejection_percent
    n.max_connections, n.max_pending, n.max_requests = ln.max_connections, ln.max_pending, ln.max_requests
    n.per_request_ns, n.idle_ns = ln.per_request_ns, ln.idle_ns
    n.locality, n.overprovisioning = ln.locality, ln.overprovisioning
    n.endpoints = []
    n.ejected_until_ns = 0
    n.lowered, n.source = ln, None
    n.recount()
    return n


cdef _Header _compile_header(object lh):
    cdef _Header h = _Header.__new__(_Header)
    h.name, h.kind, h.value, h.regex, h.invert = lh.name, lh.kind, lh.value, lh.regex, lh.invert
    h.lo, h.hi = lh.lo, lh.hi
    return h


cdef _Route _compile_route(object lr, dict retries):
    cdef _Route r = _Route.__new__(_Route)
    cdef int i
    r.name, r.rank, r.path_kind, r.regex = lr.name, lr.rank, lr.path_kind, lr.regex
    r.router = lr.router_name
    r.method, r.scheme, r.port = lr.method, lr.scheme, lr.port
    r.headers = tuple(_compile_header(h) for h in lr.headers)
    r.query = lr.query
    r.n_targets, r.total = len(lr.nodes), lr.total
    for i in range(r.n_targets):
        r.cum[i] = lr.cum[i]
        r.target_ports[i] = lr.target_ports[i]
        r.node_ids[i] = lr.nodes[i]
    # Routes sharing one lowered policy (the table default) share one compiled policy.
    key = id(lr.retry)
    if key not in retries:
        retries[key] = _compile_retry(lr.retry)
    r.retry = retries[key]
    r.per_request_ns, r.idle_ns = lr.per_request_ns, lr.idle_ns
    r.budget = _Budget()
    r.bucket = None if lr.rate_limit is None else _new_bucket(lr.rate_limit)
    r.fault = lr.fault
    r.fault_headers = tuple(_compile_header(h) for h in lr.fault_headers)
    r.delay_pm, r.delay_fixed_ns, r.delay_jitter_ns = lr.delay_pm, lr.delay_fixed_ns, lr.delay_jitter_ns
    r.abort_pm, r.abort_http, r.abort_grpc = lr.abort_pm, lr.abort_http, lr.abort_grpc
    r.mirror_node = lr.mirror_node
    r.mirror_pm, r.mirror_port = lr.mirror_pm, lr.mirror_port
    return r


cdef TokenBucket _new_bucket(tuple lowered):
    # From `lower_rate_limit`'s validated (max_tokens, tokens_per_fill, fill_interval_ns).
    cdef TokenBucket b = TokenBucket.__new__(TokenBucket)
    b.max_tokens, b.tokens_per_fill, b.fill_interval_ns = lowered
    b.tokens, b.last_fill_ns = b.max_tokens, -1
    return b


cdef _Index _compile_index(object li, list routes):
    cdef _Index ix = _Index(len(li.exact) + len(li.prefix), sorted(li.prefix_lengths))
    for path, gids in li.exact.items():
        ix._insert(path, True, [routes[g] for g in gids])
    for path, gids in li.prefix.items():
        ix._insert(path, False, [routes[g] for g in gids])
    ix.regex = [routes[g] for g in li.regex]
    ix.any = [routes[g] for g in li.any]
    return ix

