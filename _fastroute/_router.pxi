# The router: service lookup, indexed route match, weighted pick, endpoint balancing,
# outlier detection and retry decisions. Mirrors reference.Router step for step.

cdef inline uint64_t rng_next(Rng *r) noexcept nogil:
    # xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift").
    cdef uint64_t x = r.state
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    r.state = x
    return x * RNG_MULT


cdef inline int64_t backoff_ns(Rng *rng, int n) noexcept nogil:
    # Envoy's fully jittered exponential back-off: uniform in [0, min((2^n-1)*base, cap)).
    if n > BACKOFF_MAX_EXP:
        n = BACKOFF_MAX_EXP
    cdef int64_t ceiling = ((<int64_t>1 << n) - 1) * BACKOFF_BASE_NS
    if ceiling > BACKOFF_CAP_NS:
        ceiling = BACKOFF_CAP_NS
    return <int64_t>(rng_next(rng) % <uint64_t>ceiling)


cdef bint _c_ints(object protocol, object port, object now_ns, int *proto, int *prt, int64_t *now):
    # Convert in C: comparing a Python int against a C constant would box the
    # constant, an allocation on every request. Out-of-range values are bad requests.
    try:
        proto[0], prt[0], now[0] = protocol, port, now_ns
    except OverflowError:
        return False
    return True


cdef inline bint _unprocessed(int kind) noexcept:
    # An attempt the upstream never processed: no connection (connect failure), or a stream
    # it refused (RFC 9113 §8.7: REFUSED_STREAM means not processed, safe to retry). Its
    # retry goes to another endpoint, costs the upstream nothing and cannot duplicate the
    # request, so it is bounded by maxRetries alone and does not spend the retry budget,
    # which exists to stop retries of processed requests from multiplying load. Spending
    # it here let one dead instance exhaust the budget of a route whose other endpoints
    # were healthy, failing calls that a second attempt would have served.
    return kind == RESULT_CONNECT_FAILURE or kind == RESULT_REFUSED_STREAM


cdef inline bint _was_tried(const Tried *t, EndpointState e) noexcept:
    cdef int i
    if t != NULL:
        for i in range(t.n):
            if t.eps[i] == <void *>e:
                return True
    return False


cdef inline void _remember(Tried *t, EndpointState e) noexcept:
    # Each endpoint once, so that a retry landing on one already tried (the fallback)
    # does not push out an older one.
    if not _was_tried(t, e):
        t.eps[t.next] = <void *>e
        t.next = (t.next + 1) % MAX_TRIED
        if t.n < MAX_TRIED:
            t.n += 1


cdef inline bint _usable(EndpointState e, int64_t now_ns, const Tried *avoid, bint panic) noexcept:
    return (panic or (e.healthy and e.ejected_until_ns <= now_ns)) and not _was_tried(avoid, e)


cdef inline EndpointState _least_of_two(EndpointState ea, EndpointState eb, int64_t now_ns, const Tried *avoid,
                                       bint panic):
    # Least request's choice between two drawn endpoints: the usable one with fewer
    # active requests (the first on a tie), or None when neither is usable.
    cdef bint ua = _usable(ea, now_ns, avoid, panic), ub = _usable(eb, now_ns, avoid, panic)
    if ua and ub:
        return eb if eb.active < ea.active else ea
    if ua:
        return ea
    return eb if ub else None


cdef inline bint _panic(_Node node, int64_t now_ns) noexcept:
    # Fewer than PANIC_THRESHOLD_PERCENT of the node's endpoints are available (healthy,
    # not ejected): Envoy's healthy panic threshold, compared in integers. The scan
    # runs only while an ejection may last.
    cdef Py_ssize_t available = node.healthy
    cdef EndpointState e
    if node.ejected_until_ns > now_ns:
        available = 0
        for e in node.endpoints:
            if e.healthy and e.ejected_until_ns <= now_ns:
                available += 1
    return available * 100 < PANIC_THRESHOLD_PERCENT * len(node.endpoints)


cdef Py_ssize_t _fallback(list eps, Py_ssize_t start, int64_t now_ns, bint panic) noexcept:
    # Only endpoints already tried are usable: retry on one of them anyway.
    cdef Py_ssize_t n = len(eps), k, i
    for k in range(n):
        i = (start + k) % n
        if _usable(<EndpointState>eps[i], now_ns, NULL, panic):
            return i
    return start


cdef EndpointState _new_endpoint(object ep, str identity, tuple own):
    cdef EndpointState e = EndpointState.__new__(EndpointState)
    e.id, e.address, e.port = ep.id, ep.address, ep.port
    e.pool_key = (e.id, identity)
    e.healthy = ep.healthy
    e.priority = locality_priority(own, check_locality("endpoint.locality", ep.locality))
    return e


cdef bint _same_limit(TokenBucket a, TokenBucket b) noexcept:
    return (b is not None and a.max_tokens == b.max_tokens and a.tokens_per_fill == b.tokens_per_fill
            and a.fill_interval_ns == b.fill_interval_ns)


cdef inline bint _per_million(Rng *rng, int64_t per_million) noexcept nogil:
    # One draw: true for `per_million` of a million equally likely outcomes.
    return <int64_t>(rng_next(rng) % PER_MILLION) < per_million


# A table is built on a compile thread while the data-plane loop serves on another. C
# loops never reach the interpreter's switch points, so a 1,000-route build would hold the
# GIL throughout; it is handed over every YIELD_EVERY routes and after each router's indexes.
cdef Py_ssize_t YIELD_EVERY = 32


cdef inline void _let_others_run():
    """Release and retake the GIL: a thread that asked for it (the loop) gets it now."""
    with nogil:
        pass


cdef _Part _compile_part(str name, list lroutes, list lindexes, dict retries):
    """One virtual router's routes and indexes; the GIL is let go every YIELD_EVERY routes
    and after the indexes (see YIELD_EVERY)."""
    cdef _Part p = _Part.__new__(_Part)
    cdef _Route r
    p.name, p.lroutes, p.lindexes = name, lroutes, lindexes
    p.routes, p.by_name, p.matches_headers = [], {}, False
    for lr in lroutes:
        r = _compile_route(lr, retries)
        p.routes.append(r)
        p.by_name[r.name] = r
        if len(r.headers) or len(r.fault_headers):
            p.matches_headers = True
        if len(p.routes) % YIELD_EVERY == 0:
            _let_others_run()
    p.indexes = [_compile_index(ix, p.routes) for ix in lindexes]
    return p


# Generations of Router in this process, counted: `adopt` tells its base by number, so a
# router holds no reference to the generation before it.
cdef Py_ssize_t _generations = 0


@cython.final
cdef class Router:
    """The router core: `decide` per request, `result` per attempt, endpoint updates."""

    def __init__(self, table, seed=1, locality=("", "", ""), Router base=None, endpoints=None):
        # A `spec.Lowered` is a table `lower` already validated (meshd's compile has one).
        # `locality` is this router's host's (region, zone, sub_zone), which endpoints'
        # priorities are counted from. `endpoints` (node name -> its endpoints) sets each
        # node's endpoints, as `set_endpoints` would.
        #
        # `base` is the generation this one replaces, built with the same locality from an
        # earlier lowering with the same `spec.LowerMemo`. What the two lowerings share is
        # shared, not built again, so a change costs what it changed:
        # - a virtual router whose LRoute and LIndex lists are the very objects `base` was
        #   built from keeps its compiled routes and indexes (with their retry budgets and
        #   rate limits, which a fresh route would adopt anyway);
        # - a node whose LNode is the very object `base` compiled it from, and whose
        #   `endpoints` entry is the very object `base` was given, is `base`'s node itself,
        #   with its endpoints and their live state. The caller promises that an unchanged
        #   entry means no instance change since: `base`'s endpoints are then the node's,
        #   as the loop has kept them (instance changes go to the live router's nodes).
        # Nothing of `base` is changed. `adopt(base)` then merges only what is new.
        global _generations
        _generations += 1
        self._serial, self._base_serial = _generations, 0
        self.locality = check_locality("locality", locality)
        low = table if isinstance(table, Lowered) else lower(table)
        self._low = low
        self.rng.state = (<uint64_t>(seed & MASK64)) or RNG_ZERO_SEED
        endpoints = {} if endpoints is None else endpoints
        cdef _Node n, b
        cdef _Part part
        shared_parts = False
        if base is not None:
            if base.locality != self.locality:
                raise ValueError(f"base locality {base.locality} is not {self.locality}")
            self._base_serial = base._serial
            # Routes name their target nodes by index: shared only under the same node order.
            shared_parts = base._low.node_by_name == low.node_by_name
        self._nodes, self._node_by_name, self._fresh_nodes = [], {}, []
        for ln in low.nodes:
            b = base._node_by_name.get(ln.name) if base is not None else None
            eps = endpoints.get(ln.name)
            if b is not None and b.lowered is ln and b.source is eps:
                n = b
            else:
                n = _compile_node(ln)
                self._fresh_nodes.append(n)
            self._nodes.append(n)
            self._node_by_name[n.name] = n
        for n in self._fresh_nodes:
            eps = endpoints.get(n.name)
            if eps is not None:
                self.set_endpoints(n.name, eps)
            n.source = eps
        retries = {}
        self._default_retry = _compile_retry(low.default_retry)
        retries[id(low.default_retry)] = self._default_retry
        self._parts, self._part_by_name, self._fresh_parts = [], {}, []
        self.matches_headers = False
        for ri, name in enumerate(low.routers):
            lroutes, lindexes = low.router_routes[ri], low.indexes[ri]
            part = base._part_by_name.get(name) if base is not None and shared_parts else None
            if part is None or part.lroutes is not lroutes or part.lindexes is not lindexes:
                part = _compile_part(name, lroutes, lindexes, retries)
                self._fresh_parts.append(part)
                _let_others_run()
            self._parts.append(part)
            self._part_by_name[name] = part
            # Fault injection's header conditions need the headers as much as a route match does.
            self.matches_headers = self.matches_headers or part.matches_headers
        cdef _Service s
        services = []
        for si, name in enumerate(low.services):
            s = _Service.__new__(_Service)
            s.name = name
            ri, ni = low.service_router[si], low.service_node[si]
            s.indexes = (<_Part>self._parts[ri]).indexes if ri >= 0 else None
            s.node = self._nodes[ni] if ni >= 0 else None
            s.budget = _Budget()
            services.append(s)
        self._services = services
        self._authority = {k: services[v] for k, v in low.authority.items()}
        self._authority_port = low.authority_port
        self._ports = {k: services[v] for k, v in low.ports.items()}

    # -- endpoints ---------------------------------------------------------------

    cdef _Node _node(self, str name):
        try:
            return self._node_by_name[name]
        except KeyError:
            raise UnknownNode(name) from None

    def set_endpoints(self, str node, endpoints):
        """Replace a node's instances; instances that stay (same id, address and port) keep
        their state. An instance re-registered at another address is a new endpoint."""
        cdef _Node n = self._node(node)
        cdef EndpointState e
        old = {e.id: e for e in n.endpoints}
        eps = []
        for ep in endpoints:
            e = old.get(ep.id)
            if e is None or e.address != ep.address or e.port != ep.port:
                e = _new_endpoint(ep, n.identity, self.locality)
            else:
                e.healthy = ep.healthy      # a health check's verdict, on the kept state
                e.priority = locality_priority(self.locality, check_locality("endpoint.locality", ep.locality))
            eps.append(e)
        n.endpoints = eps
        n.recount()

    def adopt(self, Router old):
        """Carry the live state of the previous table generation into this one, for what
        exists in both: endpoints (same node, id, address, port and identity) are the very
        EndpointState objects of `old`, so ejections, consecutive errors and in-flight
        counts continue, and requests still finishing on `old` give their counts back to
        the endpoints this router balances over; round-robin positions, retry budgets
        (per route, by virtual router and name; per service) and route rate limits (when
        the limit is unchanged) continue too. The instance health and locality priority
        in this table win. Call it before publishing this router.

        Nodes and routes this router shares with `old` (built on it as `base`) are old's
        own, state and all: when `old` is its base, only what it built anew is visited."""
        cdef _Node n, o
        cdef _Part part, op
        cdef EndpointState e, p
        cdef _Route r, o_r
        cdef _Service s
        incremental = old._serial == self._base_serial
        for n in (self._fresh_nodes if incremental else self._nodes):
            o = old._node_by_name.get(n.name)
            if o is None or o is n:
                continue
            prev = {p.id: p for p in o.endpoints}
            eps = []
            for e in n.endpoints:
                p = prev.get(e.id)
                if p is not None and p.address == e.address and p.port == e.port and p.pool_key == e.pool_key:
                    p.healthy, p.priority = e.healthy, e.priority
                    e = p
                eps.append(e)
            n.endpoints = eps
            n.recount()
            o.recount()  # the states it shares may have a new health or priority
            n.rr = o.rr
            if o.ejected_until_ns > n.ejected_until_ns:
                n.ejected_until_ns = o.ejected_until_ns
        for part in (self._fresh_parts if incremental else self._parts):
            op = old._part_by_name.get(part.name)
            if op is None or op is part:
                continue
            for r in part.routes:
                o_r = op.by_name.get(r.name)
                if o_r is not None:
                    r.budget = o_r.budget
                    if r.bucket is not None and _same_limit(r.bucket, o_r.bucket):
                        r.bucket = o_r.bucket
        by_service = {s.name: s.budget for s in old._services}
        for s in self._services:
            b = by_service.get(s.name)
            if b is not None:
                s.budget = b
        self.rng = old.rng

    def shared_with(self, Router other):
        """(virtual routers, nodes) whose compiled form this router and `other` share: the
        same objects, live state and all (see `base`)."""
        cdef _Part part
        cdef _Node n
        routers, nodes = set(), set()
        for part in self._parts:
            if other._part_by_name.get(part.name) is part:
                routers.add(part.name)
        for n in self._nodes:
            if other._node_by_name.get(n.name) is n:
                nodes.add(n.name)
        return frozenset(routers), frozenset(nodes)

    def add_endpoint(self, str node, endpoint):
        """An instance joins (or is replaced, keeping its place)."""
        cdef _Node n = self._node(node)
        new = _new_endpoint(endpoint, n.identity, self.locality)
        for i, e in enumerate(n.endpoints):
            if (<EndpointState>e).id == endpoint.id:
                n.endpoints[i] = new
                break
        else:
            n.endpoints.append(new)
        n.recount()

    def remove_endpoint(self, str node, str endpoint_id):
        """An instance leaves; in-flight decisions keep their detached state."""
        cdef _Node n = self._node(node)
        for i, e in enumerate(n.endpoints):
            if (<EndpointState>e).id == endpoint_id:
                del n.endpoints[i]
                n.recount()
                return True
        return False

    def endpoints(self, str node):
        """The node's endpoint states, in balancing order."""
        return list(self._node(node).endpoints)

    def node_limits(self, str node):
        """(max_connections, max_pending_requests, max_requests) of a node."""
        cdef _Node n = self._node(node)
        return (n.max_connections, n.max_pending, n.max_requests)

    def ejected(self, str node, now_ns):
        """How many of a node's endpoints are ejected at `now_ns`."""
        cdef int64_t now = now_ns
        return sum(1 for e in self._node(node).endpoints if (<EndpointState>e).ejected_until_ns > now)

    # -- the decision --------------------------------------------------------------

    def decide(self, protocol, authority, port, method, scheme, path, headers, now_ns):
        """Route one request: service, route, weighted target, endpoint."""
        # The one allocation of the hot path, made first so that a test can see any
        # other allocation as a rise of the peak above it.
        cdef Decision d = Decision.new(ROUTED)
        cdef int proto, prt
        cdef int64_t now
        if type(authority) is not str:
            authority = slow_str(authority)
        if type(method) is not str:
            method = slow_str(method)
        if type(scheme) is not str:
            scheme = slow_str(scheme)
        if type(path) is not str:
            path = slow_str(path)
        if (authority is None or method is None or scheme is None or path is None
                or type(protocol) is not int or type(port) is not int or type(now_ns) is not int
                or not (headers is None or type(headers) is dict)
                or not _c_ints(protocol, port, now_ns, &proto, &prt, &now)
                or not (0 <= proto <= 3 and 0 <= prt <= 65535 and 0 <= now <= MAX_NOW_NS)):
            d.status, d.reason, d.state = BAD_REQUEST, <str>STATUS_REASONS[BAD_REQUEST], ST_DONE
            return d
        self._decide(d, proto, <str>authority, port, prt, <str>method, <str>scheme, <str>path, <dict>headers, now)
        return d

    cdef void _decide(self, Decision d, int protocol, str authority, object port_obj, int port,
                      str method, str scheme, str path, dict headers, int64_t now_ns) except *:
        cdef PyObject *p = NULL
        cdef _Service svc = None
        cdef _Route route = None
        cdef _Node node
        cdef _Budget budget
        cdef CompiledRetry retry
        cdef int64_t per_request, idle, per_try, x
        cdef int t = 0, tport = -1
        cdef EndpointState ep
        if PyUnicode_GET_LENGTH(authority) > 0:
            p = PyDict_GetItem(self._authority, authority)
            if p != NULL:
                svc = <_Service>p
                if port == 0:  # no port of its own: the one its authority names
                    port = <object>PyDict_GetItem(self._authority_port, authority)
            else:
                svc = self._service_slow(authority, &port)
        if svc is None:
            p = PyDict_GetItem(self._ports, port_obj)
            if p == NULL:
                d.status, d.reason, d.state = NO_SERVICE, <str>STATUS_REASONS[NO_SERVICE], ST_DONE
                return
            svc = <_Service>p
        d.service, d.protocol = svc.name, protocol
        if svc.indexes is not None:
            route = self._match(<_Index>svc.indexes[protocol], method, scheme, port, path, headers)
            if route is None:
                d.status, d.reason, d.state = NO_ROUTE, <str>STATUS_REASONS[NO_ROUTE], ST_DONE
                return
            d.route, d.router = route.name, route.router
            # The route's policy, before any target is drawn: its token bucket, then the
            # fault draws. Refusals end here, with nothing to release or feed back.
            if route.bucket is not None and not route.bucket._take(now_ns):
                d.status, d.reason, d.state = RATE_LIMITED, <str>STATUS_REASONS[RATE_LIMITED], ST_DONE
                return
            if route.fault and self._fault(d, route, headers):
                d.status, d.reason, d.state = FAULT_ABORT, <str>STATUS_REASONS[FAULT_ABORT], ST_DONE
                return
            if route.n_targets > 1:
                # Integer weights: a uniform draw in [0, total) falls in exactly one
                # target's cumulative range; a zero weight owns an empty range.
                x = <int64_t>(rng_next(&self.rng) % <uint64_t>route.total)
                while x >= route.cum[t]:
                    t += 1
            node = <_Node>self._nodes[route.node_ids[t]]
            retry, per_request, idle = route.retry, route.per_request_ns, route.idle_ns
            budget, tport = route.budget, route.target_ports[t]
        else:
            node = svc.node
            retry, per_request, idle = self._default_retry, node.per_request_ns, node.idle_ns
            budget = svc.budget
        d.target, d.target_port, d.retry = node.name, tport, retry
        d.per_request_timeout_ns, d.idle_timeout_ns = per_request, idle
        ep = self._pick(node, now_ns, NULL)
        if ep is None:
            d.status, d.reason, d.state = NO_ENDPOINT, <str>STATUS_REASONS[NO_ENDPOINT], ST_DONE
            return
        _remember(&d._tried, ep)
        ep.active += 1
        budget.request(now_ns)
        d.endpoint, d.pool_key, d._node, d._budget = ep, ep.pool_key, node, budget
        # An injected delay comes before the request leaves: its timeout starts after it.
        d.deadline_ns = now_ns + d.fault_delay_ns + per_request if per_request else 0
        per_try = per_request
        if retry is not None and (per_try == 0 or retry.per_try_ns < per_try):
            per_try = retry.per_try_ns
        d.per_try_timeout_ns = per_try
        if route is not None and route.mirror_node >= 0 and _per_million(&self.rng, route.mirror_pm):
            # A shadow copy: balanced like any request to its node, but it takes no active
            # count and its answer is never fed back, so it cannot move the original's
            # balancing, outlier detection or budget.
            node = <_Node>self._nodes[route.mirror_node]
            ep = self._pick(node, now_ns, NULL)
            if ep is not None:
                d.mirror, d.mirror_endpoint, d.mirror_port = node.name, ep, route.mirror_port

    cdef bint _fault(self, Decision d, _Route route, dict headers) except -1:
        """The route's fault injection for one request (Envoy's fault filter): when its
        header conditions hold, the delay and the abort are drawn independently, delay
        first; True when the request is aborted."""
        cdef _Header h
        for h in route.fault_headers:
            if not header_ok(h, headers):
                return False
        if route.delay_pm >= 0 and _per_million(&self.rng, route.delay_pm):
            d.fault_delay_ns = route.delay_fixed_ns
            if route.delay_jitter_ns:
                d.fault_delay_ns += <int64_t>(rng_next(&self.rng) % <uint64_t>route.delay_jitter_ns)
        if route.abort_pm >= 0 and _per_million(&self.rng, route.abort_pm):
            d.fault_http_status, d.fault_grpc_status = route.abort_http, route.abort_grpc
            return True
        return False

    cdef _Service _service_slow(self, str authority, int *port):
        # Case-folded lookup, then without a numeric :port (RFC 9110 section 4.2.3); a
        # `port` of 0 becomes the one the matching key names.
        # Out of line: it allocates, and well-formed clients never reach it.
        host = authority.lower()
        svc = self._authority.get(host)
        if svc is None:
            h, colon, p = host.rpartition(":")
            if colon and p.isascii() and p.isdigit():
                host, svc = h, self._authority.get(h)
        if svc is not None and port[0] == 0:
            port[0] = self._authority_port[host]
        return svc

    cdef _Route _match(self, _Index ix, str method, str scheme, int port, str path, dict headers):
        """Best route by precedence among the buckets the path hits, in one pass.

        Envoy (config.route.v3.RouteMatch): exact and regex paths match :path without
        its query string, prefixes match the whole :path. One rolling hash over the
        path probes each distinct prefix length once, so the cost depends on the
        path, not on how many routes the router has.
        """
        cdef _Route best = None
        cdef _Route r
        cdef list bucket
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(path)
        # One character past the longest key, to see a '?' that ends an exact path.
        cdef Py_ssize_t limit = n if n <= ix.max_len else ix.max_len + 1
        cdef int kind = PyUnicode_KIND(path)
        cdef void *data = PyUnicode_DATA(path)
        cdef uint64_t h = FNV_OFFSET
        cdef Py_ssize_t i, pi = 0
        cdef bint exact_done = False
        cdef Py_UCS4 c
        for i in range(limit):
            c = PyUnicode_READ(kind, data, i)
            if c == u'?' and not exact_done:
                exact_done = True
                if i <= ix.max_exact:
                    bucket = ix._probe(path, i, h, True)
                    if bucket is not None:
                        best = self._scan(bucket, best, method, scheme, port, path, headers)
            h = fnv_step(h, c)
            while pi < ix.n_prefix_lengths and ix.prefix_lengths[pi] <= i + 1:
                if ix.prefix_lengths[pi] == i + 1:
                    bucket = ix._probe(path, i + 1, h, False)
                    if bucket is not None:
                        best = self._scan(bucket, best, method, scheme, port, path, headers)
                pi += 1
        if not exact_done and limit == n and n <= ix.max_exact:
            bucket = ix._probe(path, n, h, True)
            if bucket is not None:
                best = self._scan(bucket, best, method, scheme, port, path, headers)
        if ix.regex:
            best = self._match_regex(ix, best, method, scheme, port, path, headers)
        if ix.any:
            best = self._scan(ix.any, best, method, scheme, port, path, headers)
        return best

    cdef _Route _match_regex(self, _Index ix, _Route best, str method, str scheme, int port, str path,
                             dict headers):
        # Out of line: RE2's own work dwarfs the call, and a non-ASCII path allocates
        # (its UTF-8 form). The regex sees the path up to its query string, unsliced.
        cdef _Route r
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(path)
        cdef Py_ssize_t end = PyUnicode_FindChar(path, u'?', 0, n, 1)
        if end < 0:
            end = n
        for r in ix.regex:
            if best is not None and r.rank >= best.rank:
                break
            if r.regex.full(path, end) and _conditions(r, method, scheme, port, path, headers):
                return r
        return best

    cdef _Route _scan(self, list bucket, _Route best, str method, str scheme, int port, str path,
                      dict headers):
        cdef _Route r
        for r in bucket:
            # Buckets are sorted best-first, so stop at the first one not better.
            if best is not None and r.rank >= best.rank:
                return best
            if _conditions(r, method, scheme, port, path, headers):
                return r
        return best

    cdef EndpointState _pick(self, _Node node, int64_t now_ns, const Tried *avoid):
        """Round robin or least-request P2C over available endpoints (all of them in
        panic mode), avoiding those in `avoid` (NULL: none) while any other is usable."""
        cdef list eps = node.endpoints
        cdef Py_ssize_t n = len(eps), start, k, i, chosen = -1, a, b
        cdef EndpointState e
        cdef bint panic
        if n == 0:
            return None
        panic = _panic(node, now_ns)
        if node.by_priority and not panic:
            e = self._pick_priority(node, now_ns, avoid)
            if e is not None:
                return e
        if node.lb == LB_ROUND_ROBIN:
            start = node.rr % n
            for k in range(n):
                i = (start + k) % n
                if _usable(<EndpointState>eps[i], now_ns, avoid, panic):
                    chosen = i
                    break
            if chosen < 0:
                chosen = _fallback(eps, start, now_ns, panic)
            node.rr = chosen + 1
            return <EndpointState>eps[chosen]
        if n == 1:
            return <EndpointState>eps[0]
        # Least request, power of two choices (Mitzenmacher; Envoy LEAST_REQUEST with
        # choice_count 2): two distinct random endpoints, the one with fewer active wins.
        a = <Py_ssize_t>(rng_next(&self.rng) % <uint64_t>n)
        b = (a + 1 + <Py_ssize_t>(rng_next(&self.rng) % <uint64_t>(n - 1))) % n
        e = _least_of_two(<EndpointState>eps[a], <EndpointState>eps[b], now_ns, avoid, panic)
        if e is not None:
            return e
        for k in range(n):
            e = <EndpointState>eps[(a + k) % n]
            if _usable(e, now_ns, avoid, panic):
                return e
        return <EndpointState>eps[_fallback(eps, a, now_ns, panic)]

    cdef EndpointState _pick_priority(self, _Node node, int64_t now_ns, const Tried *avoid):
        """Locality-aware pick (Envoy's priority load): choose a priority, then balance
        within it. None when no priority has an available endpoint outside `avoid`.

        health_P = min(100, overprovisioning% x available_P / endpoints_P); priority 0
        takes min(100, health_0) of the load, each next one min(what is left, health_P);
        when the healths sum below 100 each is scaled by 100 / that sum (Envoy's
        normalized total health), the rounding rest going to the first healthy priority.
        The avoided endpoints (every one a retry's decision tried) count as unavailable,
        so a retry leaves a priority whose available endpoints have all failed it.
        """
        cdef list eps = node.endpoints
        cdef Py_ssize_t avail[N_PRIORITIES]
        cdef int64_t health[N_PRIORITIES]
        cdef int64_t load[N_PRIORITIES]
        cdef int64_t total = 0, left = PRIORITY_LOAD_TOTAL, x
        cdef int p, chosen = -1, first = -1
        cdef Py_ssize_t n = len(eps), m, k, i, start, a, b, ia = -1
        cdef EndpointState e, ea = None, eb = None
        for p in range(N_PRIORITIES):
            avail[p] = node.healthy_per_priority[p]
        if node.ejected_until_ns > now_ns:
            for p in range(N_PRIORITIES):
                avail[p] = 0
            for e in eps:
                if e.healthy and e.ejected_until_ns <= now_ns:
                    avail[e.priority] += 1
        if avoid != NULL:
            for e in eps:
                if (e.healthy and e.ejected_until_ns <= now_ns and avail[e.priority] > 0
                        and _was_tried(avoid, e)):
                    avail[e.priority] -= 1
        for p in range(N_PRIORITIES):
            health[p] = 0
            if node.per_priority[p]:
                health[p] = min(PRIORITY_LOAD_TOTAL, node.overprovisioning * avail[p] // node.per_priority[p])
            total += health[p]
            if first < 0 and health[p] > 0:
                first = p
        if total == 0:
            return None
        if total > PRIORITY_LOAD_TOTAL:
            total = PRIORITY_LOAD_TOTAL
        for p in range(N_PRIORITIES):
            load[p] = min(left, health[p] * PRIORITY_LOAD_TOTAL // total)
            left -= load[p]
        load[first] += left
        x = <int64_t>(rng_next(&self.rng) % <uint64_t>PRIORITY_LOAD_TOTAL)
        for p in range(N_PRIORITIES):
            if x < load[p]:
                chosen = p
                break
            x -= load[p]
        # Within the priority: the node's own policy over its members only. The members
        # are counted here, not taken from the node's counts: a router that gave its
        # endpoint states to the next generation (`adopt`) still picks for the retries of
        # its own requests, and the next one may have moved them to other priorities.
        if node.lb == LB_ROUND_ROBIN:
            start = node.rr % n
            for k in range(n):
                i = (start + k) % n
                e = <EndpointState>eps[i]
                if e.priority == chosen and _usable(e, now_ns, avoid, False):
                    node.rr = i + 1
                    return e
            return None  # none available there after all: the plain pick
        m = 0
        for e in eps:
            if e.priority == chosen:
                m += 1
        if m == 0:
            return None
        if m == 1:
            a = b = 0
        else:
            a = <Py_ssize_t>(rng_next(&self.rng) % <uint64_t>m)
            b = (a + 1 + <Py_ssize_t>(rng_next(&self.rng) % <uint64_t>(m - 1))) % m
        k = 0
        for i in range(n):
            e = <EndpointState>eps[i]
            if e.priority == chosen:
                if k == a:
                    ea, ia = e, i
                if k == b:
                    eb = e
                k += 1
        e = _least_of_two(ea, eb, now_ns, avoid, False)
        if e is not None:
            return e
        for k in range(n):
            e = <EndpointState>eps[(ia + k) % n]
            if e.priority == chosen and _usable(e, now_ns, avoid, False):
                return e
        return None

    # -- results, retries, outlier detection --------------------------------------

    def result(self, Decision d, kind, code, now_ns):
        """Feed one attempt's result; returns finish, retry or give up."""
        cdef int k, c, why, action
        cdef int64_t now, backoff = 0, per_try
        cdef bint server_error, retryable
        cdef CompiledRetry retry = d.retry
        cdef EndpointState ep, new
        if (type(kind) is not int or not RESULT_HTTP <= kind <= RESULT_TCP_DONE or type(code) is not int
                or not -2**31 <= code < 2**31 or type(now_ns) is not int or not 0 <= now_ns <= MAX_NOW_NS):
            raise BadResult(kind, code)
        k, c, now = kind, code, now_ns
        if d.state != ST_IN_FLIGHT:
            raise InvalidTransition(d.state, -1)
        if k == RESULT_HTTP:
            server_error = c >= 500
            retryable = retry is not None and 0 <= c < N_HTTP_CODES and retry.http_codes[c]
        elif k == RESULT_GRPC:
            server_error = 0 <= c < 32 and (GRPC_SERVER_ERRORS_MASK >> c) & 1
            retryable = retry is not None and 0 <= c < 32 and (retry.grpc_mask >> c) & 1
        elif k == RESULT_TCP_DONE:
            server_error = retryable = False
        else:
            server_error = True
            retryable = retry is not None and (retry.transport >> k) & 1
        ep = d.endpoint
        if ep is not None:
            if ep.active > 0:
                ep.active -= 1
            self._outlier(d._node, ep, server_error, now)
        if not (server_error or retryable):
            why = WHY_SUCCESS
        elif not retryable:
            why = WHY_NOT_RETRYABLE
        elif d.attempt >= retry.max_retries:
            why = WHY_RETRIES_EXHAUSTED
        else:
            backoff = backoff_ns(&self.rng, d.attempt + 1)
            if d.deadline_ns and now + backoff >= d.deadline_ns:
                why = WHY_DEADLINE
            elif not _unprocessed(k) and not d._budget.allows_retry(now):
                why = WHY_BUDGET
            else:
                why = WHY_RETRYABLE
        action = RETRY_ACTION[d.state][why]
        if action < 0:
            raise InvalidTransition(d.state, why)
        d.state = RETRY_NEXT[d.state][why]
        if action != ACT_RETRY:
            return RetryDecision.new(action, why, 0, 0, ep)
        d.attempt += 1
        if not _unprocessed(k):
            d._budget.retry(now)
        # Envoy's previous_hosts retry predicate: an endpoint this request tried is
        # chosen again only when no other is usable. Avoiding just the last one let a
        # retry go back to an earlier dead endpoint while healthy ones waited.
        new = self._pick(d._node, now, &d._tried)
        if new is not None:
            d.endpoint, d.pool_key = new, new.pool_key
        _remember(&d._tried, d.endpoint)
        d.endpoint.active += 1
        per_try = retry.per_try_ns
        if d.deadline_ns and d.deadline_ns - now - backoff < per_try:
            per_try = d.deadline_ns - now - backoff
        d.per_try_timeout_ns = per_try
        return RetryDecision.new(action, why, backoff, per_try, d.endpoint)

    def release(self, Decision d):
        """End an in-flight decision without a result: the caller cancelled, or this host
        refused it (a local limit, a policy). Nothing is known of the endpoint, so outlier
        detection, the retry budget and least-request counts see no error and no success;
        only the endpoint's active count is given back (Envoy does not count downstream
        resets or local overflows against a host either)."""
        cdef EndpointState ep
        if d.state != ST_IN_FLIGHT:
            raise InvalidTransition(d.state, -1)
        ep = d.endpoint
        if ep is not None and ep.active > 0:
            ep.active -= 1
        d.state = ST_DONE

    cdef void _outlier(self, _Node node, EndpointState ep, bint server_error, int64_t now_ns):
        # App Mesh outlier detection: maxServerErrors consecutive server errors, the
        # run no older than `interval`, eject for baseEjectionDuration x times ejected,
        # never beyond maxEjectionPercent of the node's endpoints.
        cdef int64_t ejected = 0
        cdef bint member = False
        cdef EndpointState e
        if node.max_errors == 0:
            return
        if not server_error:
            ep.errors = 0
            return
        if ep.errors == 0 or now_ns - ep.first_error_ns >= node.interval_ns:
            ep.errors, ep.first_error_ns = 0, now_ns
        ep.errors += 1
        if ep.errors < node.max_errors or ep.ejected_until_ns > now_ns:
            return
        for e in node.endpoints:
            if e.ejected_until_ns > now_ns:
                ejected += 1
            if e is ep:
                member = True
        if member and (ejected + 1) * 100 <= node.max_ejection_percent * len(node.endpoints):
            ep.times_ejected += 1
            ep.ejected_until_ns = now_ns + node.base_ejection_ns * ep.times_ejected
            ep.errors = 0
            if ep.ejected_until_ns > node.ejected_until_ns:
                node.ejected_until_ns = ep.ejected_until_ns


@cython.final
cdef class Conditions:
    """The method, port, header (or gRPC metadata) and query-parameter conditions of one
    route, checked by the router's own code.

    For route tables kept outside the Router (meshd's virtual gateways), so that their
    routes match these conditions exactly as virtual-router routes do. `headers` are
    `spec.lower_header` results, `query` (name, exact value or None) pairs; `port` None
    is any port.
    """

    def __init__(self, method=None, port=None, headers=(), query=()):
        cdef _Route r = _Route.__new__(_Route)
        query = tuple(query)
        if method is not None and type(method) is not str:
            raise TypeError(f"method must be a str or None, not {type(method).__name__}")
        for q in query:
            if type(q) is not tuple or len(q) != 2 or type(q[0]) is not str or not (q[1] is None or type(q[1]) is str):
                raise TypeError(f"query conditions are (name, exact or None) pairs of str, not {q!r}")
        r.name, r.method, r.scheme = "", method, None
        r.port = -1 if port is None else port
        r.headers = tuple(_compile_header(h) for h in headers)
        r.query = query
        self._route = r

    def holds(self, str method, int port, str path, dict headers):
        """Every condition holds for a request: its method, the port it arrived on, its
        :path with the query string, and its headers by lower-case name."""
        return _conditions(self._route, method, None, port, path, headers)


cdef bint _conditions(_Route r, str method, str scheme, int port, str path, dict headers) except -1:
    cdef _Header h
    cdef tuple q
    if r.method is not None and <str>r.method != method:
        return False
    if r.scheme is not None and <str>r.scheme != scheme:
        return False
    if r.port >= 0 and r.port != port:
        return False
    for h in r.headers:
        if not header_ok(h, headers):
            return False
    for q in r.query:
        if not query_ok(<str>q[0], q[1], path):
            return False
    return True
