"""The plain-Python twin of the Cython router core: same API, same indexed algorithms.

It is the model the differential tests compare `_core` against and the baseline the
"compilation pays" gate measures; it is not a fallback. Every choice that draws a
random number draws it in the same order as `_core`, so equally seeded routers make
identical decisions.
"""
from __future__ import annotations

from . import constants as C
from .errors import BadResult, InvalidTransition, UnknownNode
from .spec import Endpoint, Lowered, RateLimit, Table, check_locality, locality_priority, lower, lower_rate_limit

_EXACT, _PREFIX, _SUFFIX, _REGEX, _RANGE = C.HM_EXACT, C.HM_PREFIX, C.HM_SUFFIX, C.HM_REGEX, C.HM_RANGE

# The retry state table: (state, input) -> (action, next state); inputs are WHY_*
# codes. A pair that is not here is an InvalidTransition (h2-style state machine).
RETRY_TABLE = {
    (C.ST_IN_FLIGHT, C.WHY_SUCCESS): (C.ACT_FINISH, C.ST_DONE),
    (C.ST_IN_FLIGHT, C.WHY_RETRYABLE): (C.ACT_RETRY, C.ST_IN_FLIGHT),
    (C.ST_IN_FLIGHT, C.WHY_NOT_RETRYABLE): (C.ACT_GIVE_UP, C.ST_DONE),
    (C.ST_IN_FLIGHT, C.WHY_RETRIES_EXHAUSTED): (C.ACT_GIVE_UP, C.ST_DONE),
    (C.ST_IN_FLIGHT, C.WHY_DEADLINE): (C.ACT_GIVE_UP, C.ST_DONE),
    (C.ST_IN_FLIGHT, C.WHY_BUDGET): (C.ACT_GIVE_UP, C.ST_DONE),
}


class Rng:
    """xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift")."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = (seed & C.MASK64) or C.RNG_ZERO_SEED

    def next(self) -> int:
        """The next 64-bit output."""
        x = self.state
        x ^= x >> 12
        x ^= (x << 25) & C.MASK64
        x ^= x >> 27
        self.state = x
        return (x * C.RNG_MULT) & C.MASK64


class EndpointState:
    """One instance with its health, balancing and outlier-detection state."""

    __slots__ = ("id", "address", "port", "pool_key", "healthy", "active", "errors", "first_error_ns",
                 "ejected_until_ns", "times_ejected", "priority")

    def __init__(self, ep: Endpoint, identity: str, own: tuple[str, str, str]) -> None:
        self.id, self.address, self.port = ep.id, ep.address, ep.port
        self.pool_key = (ep.id, identity)
        self.healthy = bool(ep.healthy)
        self.active = self.errors = self.first_error_ns = 0
        self.ejected_until_ns = self.times_ejected = 0
        self.priority = _priority(own, ep)


def _priority(own, ep: Endpoint) -> int:
    return locality_priority(own, check_locality("endpoint.locality", ep.locality))


class NodeState:
    """A target node's endpoints, round-robin cursor and policies.

    `healthy` counts the health-checked healthy endpoints; no endpoint is ejected at or
    after `ejected_until_ns`, so the panic check scans only while an ejection may last.
    `per_priority` / `healthy_per_priority` count them by locality priority; `by_priority`:
    locality-aware balancing is on and more than one priority is present.
    """

    __slots__ = ("low", "endpoints", "rr", "healthy", "ejected_until_ns", "per_priority", "healthy_per_priority",
                 "by_priority")

    def __init__(self, low) -> None:
        self.low, self.endpoints, self.rr = low, [], 0
        self.ejected_until_ns = 0
        self.recount()

    def recount(self) -> None:
        """After the endpoint list changed: count the healthy ones again, in all and per priority."""
        self.healthy = sum(1 for e in self.endpoints if e.healthy)
        self.per_priority = [0] * C.N_PRIORITIES
        self.healthy_per_priority = [0] * C.N_PRIORITIES
        for e in self.endpoints:
            self.per_priority[e.priority] += 1
            self.healthy_per_priority[e.priority] += e.healthy
        self.by_priority = self.low.locality and sum(1 for c in self.per_priority if c) > 1


class TokenBucket:
    """Envoy's local rate limit bucket (see the core's `TokenBucket`): starts full, whole
    fill intervals add tokens_per_fill up to max_tokens, one token per request."""

    __slots__ = ("max_tokens", "tokens_per_fill", "fill_interval_ns", "tokens", "last_fill_ns")

    def __init__(self, max_tokens: int, tokens_per_fill: int, fill_interval_ms: int) -> None:
        self.max_tokens, self.tokens_per_fill, self.fill_interval_ns = lower_rate_limit(
            "rate_limit", RateLimit(max_tokens, tokens_per_fill, fill_interval_ms))
        self.tokens, self.last_fill_ns = self.max_tokens, -1

    @classmethod
    def lowered(cls, limit: tuple[int, int, int]) -> "TokenBucket":
        """A bucket from `lower_rate_limit`'s (max_tokens, tokens_per_fill, fill_interval_ns)."""
        b = cls.__new__(cls)
        b.max_tokens, b.tokens_per_fill, b.fill_interval_ns = limit
        b.tokens, b.last_fill_ns = b.max_tokens, -1
        return b

    def limit(self) -> tuple[int, int, int]:
        return (self.max_tokens, self.tokens_per_fill, self.fill_interval_ns)

    def take(self, now_ns: int) -> bool:
        """Take one token at `now_ns`: True if there was one."""
        if not 0 <= now_ns <= C.MAX_NOW_NS:
            raise ValueError(now_ns)
        if self.last_fill_ns < 0:
            self.last_fill_ns = now_ns
        elif now_ns - self.last_fill_ns >= self.fill_interval_ns:
            k = (now_ns - self.last_fill_ns) // self.fill_interval_ns
            self.last_fill_ns += k * self.fill_interval_ns
            self.tokens = min(self.max_tokens, self.tokens + k * self.tokens_per_fill)
        if self.tokens == 0:
            return False
        self.tokens -= 1
        return True


class Budget:
    """Per-route retry budget over BUDGET_WINDOW_S one-second buckets."""

    __slots__ = ("stamps", "requests", "retries")

    def __init__(self) -> None:
        n = C.BUDGET_WINDOW_S
        self.stamps, self.requests, self.retries = [-1] * n, [0] * n, [0] * n

    def _bucket(self, now_ns: int) -> int:
        s = now_ns // C.NS_PER_S
        i = s % C.BUDGET_WINDOW_S
        if self.stamps[i] != s:
            self.stamps[i], self.requests[i], self.retries[i] = s, 0, 0
        return i

    def request(self, now_ns: int) -> None:
        """Count one original request."""
        self.requests[self._bucket(now_ns)] += 1

    def allows_retry(self, now_ns: int) -> bool:
        """True while one more retry keeps retries <= 20% of requests + 10/s."""
        s = now_ns // C.NS_PER_S
        req = ret = 0
        for i in range(C.BUDGET_WINDOW_S):
            if s - C.BUDGET_WINDOW_S < self.stamps[i] <= s:
                req += self.requests[i]
                ret += self.retries[i]
        limit = C.BUDGET_PERCENT * req + 100 * C.BUDGET_MIN_PER_S * C.BUDGET_WINDOW_S
        return 100 * (ret + 1) <= limit

    def retry(self, now_ns: int) -> None:
        """Count one retry."""
        self.retries[self._bucket(now_ns)] += 1


class Decision:
    """A routing decision; `status` 0 means routed, else `reason` says why not."""

    __slots__ = ("status", "reason", "protocol", "service", "route", "target", "target_port",
                 "endpoint", "pool_key", "retry", "per_request_timeout_ns", "idle_timeout_ns",
                 "per_try_timeout_ns", "deadline_ns", "attempt", "state", "router", "fault_delay_ns",
                 "fault_http_status", "fault_grpc_status", "mirror", "mirror_endpoint", "mirror_port",
                 "_node", "_budget", "_tried")

    def __init__(self, status: int) -> None:
        self.status, self.reason = status, C.STATUS_REASONS[status]
        self.protocol = -1
        self.service = self.route = self.target = self.endpoint = self.pool_key = None
        self.retry = self._node = self._budget = None
        self._tried = []  # what a retry's pick avoids (Envoy's previous_hosts), oldest first
        self.target_port = -1
        self.per_request_timeout_ns = self.idle_timeout_ns = self.per_try_timeout_ns = 0
        self.deadline_ns = self.attempt = 0
        self.state = C.ST_DONE if status else C.ST_IN_FLIGHT
        self.router = self.mirror = self.mirror_endpoint = None
        self.fault_delay_ns = self.fault_http_status = 0
        self.fault_grpc_status = self.mirror_port = -1


class RetryDecision:
    """The answer to one attempt's result: finish, retry (after backoff) or give up."""

    __slots__ = ("action", "why", "backoff_ns", "per_try_timeout_ns", "endpoint")

    def __init__(self, action, why, backoff_ns, per_try_timeout_ns, endpoint):
        self.action, self.why, self.backoff_ns = action, why, backoff_ns
        self.per_try_timeout_ns, self.endpoint = per_try_timeout_ns, endpoint


def _as_str(v):
    """Requests may carry bytes; latin-1 maps every byte, so decoding never fails."""
    if type(v) is str:
        return v
    if type(v) is bytes:
        return v.decode("latin-1")
    return None


def _parse_int(v: str):
    """Envoy-style strict integer parse of a header value for range matches."""
    digits = v[1:] if v[:1] in ("+", "-") else v
    if not 1 <= len(digits) <= 18:
        return None
    for ch in digits:
        if not "0" <= ch <= "9":
            return None
    return -int(digits) if v[0] == "-" else int(digits)


def _header_ok(h, headers) -> bool:
    v = _as_str(headers.get(h.name)) if headers else None
    if v is None:
        matched = False
    elif h.kind == _EXACT:
        matched = v == h.value
    elif h.kind == _PREFIX:
        matched = v.startswith(h.value)
    elif h.kind == _SUFFIX:
        matched = v.endswith(h.value)
    elif h.kind == _REGEX:
        matched = h.regex.fullmatch(v)
    elif h.kind == _RANGE:
        n = _parse_int(v)
        matched = n is not None and h.lo <= n < h.hi
    else:
        matched = True
    return matched != h.invert


def _query_ok(name, exact, path, q) -> bool:
    """App Mesh queryParameters: the first `name[=value]` pair; raw, not decoded."""
    if q < 0:
        return False
    for pair in path[q + 1:].split("&"):
        k, eq, v = pair.partition("=")
        if k == name:
            return exact is None or v == exact
    return False


class Router:
    """The router core: `decide` per request, `result` per attempt, endpoint updates."""

    def __init__(self, table: Table | Lowered, seed: int = 1,
                 locality: tuple[str, str, str] = ("", "", ""), base: "Router | None" = None,
                 endpoints=None) -> None:
        # A `Lowered` is a table `lower` already validated (meshd's compile has one).
        # `endpoints` (node -> endpoints) sets nodes' endpoints, as `set_endpoints` would;
        # `base` is accepted for the core's signature: this model shares nothing with it.
        self.locality = check_locality("locality", locality)
        low = table if isinstance(table, Lowered) else lower(table)
        self._low = low
        self._rng = Rng(seed)
        self._nodes = [NodeState(n) for n in low.nodes]
        self._node_by_name = {n.name: s for n, s in zip(low.nodes, self._nodes)}
        # A route's live state by (virtual router, route name), which names it in a table.
        self._budgets = {(r.router_name, r.name): Budget() for r in low.routes}
        self._buckets = {(r.router_name, r.name): None if r.rate_limit is None else TokenBucket.lowered(r.rate_limit)
                         for r in low.routes}
        # A route (or its fault injection) has header conditions: decide needs the headers
        # (without, None will do).
        self.matches_headers = any(r.headers or r.fault_headers for r in low.routes)
        self._service_budgets = [Budget() for _ in low.services]
        for node, eps in (endpoints or {}).items():
            self.set_endpoints(node, eps)

    # -- endpoints ---------------------------------------------------------------

    def _node(self, name: str) -> NodeState:
        try:
            return self._node_by_name[name]
        except KeyError:
            raise UnknownNode(name) from None

    def set_endpoints(self, node: str, endpoints) -> None:
        """Replace a node's instances; instances that stay (same id, address and port) keep
        their state. An instance re-registered at another address is a new endpoint."""
        ns = self._node(node)
        old = {e.id: e for e in ns.endpoints}
        eps = []
        for ep in endpoints:
            e = old.get(ep.id)
            if e is None or e.address != ep.address or e.port != ep.port:
                e = EndpointState(ep, ns.low.identity, self.locality)
            else:
                e.healthy = bool(ep.healthy)     # a health check's verdict, on the kept state
                e.priority = _priority(self.locality, ep)
            eps.append(e)
        ns.endpoints = eps
        ns.recount()

    def adopt(self, old: "Router") -> None:
        """Carry the previous generation's live state into this one (see the core's
        `Router.adopt`): shared endpoint states, round-robin positions, retry budgets,
        unchanged route rate limits."""
        for ns in self._nodes:
            o = old._node_by_name.get(ns.low.name)
            if o is None:
                continue
            prev = {p.id: p for p in o.endpoints}
            eps = []
            for e in ns.endpoints:
                p = prev.get(e.id)
                if p is not None and (p.address, p.port, p.pool_key) == (e.address, e.port, e.pool_key):
                    p.healthy, p.priority = e.healthy, e.priority
                    e = p
                eps.append(e)
            ns.endpoints = eps
            ns.recount()
            o.recount()  # the states it shares may have a new health or priority
            ns.rr = o.rr
            ns.ejected_until_ns = max(ns.ejected_until_ns, o.ejected_until_ns)
        for key, budget in old._budgets.items():
            if key in self._budgets:
                self._budgets[key] = budget
                bucket, mine = old._buckets[key], self._buckets[key]
                if mine is not None and bucket is not None and bucket.limit() == mine.limit():
                    self._buckets[key] = bucket
        by_service = dict(zip(old._low.services, old._service_budgets))
        for i, name in enumerate(self._low.services):
            if name in by_service:
                self._service_budgets[i] = by_service[name]
        self._rng.state = old._rng.state

    def shared_with(self, other: "Router") -> tuple[frozenset, frozenset]:
        """The core's (virtual routers, nodes) shared with `other`: this model shares none."""
        return frozenset(), frozenset()

    def add_endpoint(self, node: str, endpoint: Endpoint) -> None:
        """An instance joins (or is replaced, keeping its place)."""
        ns = self._node(node)
        new = EndpointState(endpoint, ns.low.identity, self.locality)
        for i, e in enumerate(ns.endpoints):
            if e.id == endpoint.id:
                ns.endpoints[i] = new
                break
        else:
            ns.endpoints.append(new)
        ns.recount()

    def remove_endpoint(self, node: str, endpoint_id: str) -> bool:
        """An instance leaves; in-flight decisions keep their detached state."""
        ns = self._node(node)
        for i, e in enumerate(ns.endpoints):
            if e.id == endpoint_id:
                del ns.endpoints[i]
                ns.recount()
                return True
        return False

    def endpoints(self, node: str) -> list:
        """The node's endpoint states, in balancing order."""
        return list(self._node(node).endpoints)

    def node_limits(self, node: str) -> tuple[int, int, int]:
        """(max_connections, max_pending_requests, max_requests) of a node."""
        low = self._node(node).low
        return (low.max_connections, low.max_pending, low.max_requests)

    # -- the decision --------------------------------------------------------------

    def decide(self, protocol, authority, port, method, scheme, path, headers, now_ns) -> Decision:
        """Route one request: service, route, weighted target, endpoint."""
        low = self._low
        authority, method, scheme, path = _as_str(authority), _as_str(method), _as_str(scheme), _as_str(path)
        if (authority is None or method is None or scheme is None or path is None
                or type(protocol) is not int or type(port) is not int or type(now_ns) is not int
                or not (headers is None or type(headers) is dict)
                or not (0 <= protocol <= 3 and 0 <= port <= 65535 and 0 <= now_ns <= C.MAX_NOW_NS)):
            return Decision(C.BAD_REQUEST)
        si, key = (low.authority.get(authority), authority) if authority else (None, None)
        if si is None and authority:
            si, key = self._authority_slow(authority)
        if si is not None and port == 0:
            port = low.authority_port[key]  # no port of its own: the one its authority names
        if si is None:
            si = low.ports.get(port)
            if si is None:
                return Decision(C.NO_SERVICE)
        ri = low.service_router[si]
        if ri >= 0:
            route = self._match(low.indexes[ri][protocol], low.router_routes[ri], method, scheme, port, path,
                                headers)
            if route is None:
                d = Decision(C.NO_ROUTE)
                d.service, d.protocol = low.services[si], protocol
                return d
            # The route's policy, before any target is drawn: its token bucket, then the
            # fault draws.
            bucket = self._buckets[route.router_name, route.name]
            delay = 0
            if bucket is not None and not bucket.take(now_ns):
                return self._refused(C.RATE_LIMITED, protocol, si, route)
            if route.fault:
                delay, abort = self._fault(route, headers)
                if abort is not None:
                    d = self._refused(C.FAULT_ABORT, protocol, si, route)
                    d.fault_delay_ns, (d.fault_http_status, d.fault_grpc_status) = delay, abort
                    return d
            if len(route.nodes) == 1:
                t = 0
            else:
                x = self._rng.next() % route.total
                t = 0
                while x >= route.cum[t]:
                    t += 1
            ns = self._nodes[route.nodes[t]]
            retry, per_request, idle = route.retry, route.per_request_ns, route.idle_ns
            budget, route_name, tport = self._budgets[route.router_name, route.name], route.name, route.target_ports[t]
        else:
            ns = self._nodes[low.service_node[si]]
            retry, per_request, idle = low.default_retry, ns.low.per_request_ns, ns.low.idle_ns
            budget, route_name, tport = self._service_budgets[si], None, -1
            route, delay = None, 0
        ep = self._pick(ns, now_ns, None)
        d = Decision(C.ROUTED if ep is not None else C.NO_ENDPOINT)
        d.protocol, d.service, d.route = protocol, low.services[si], route_name
        d.target, d.target_port = ns.low.name, tport
        d.retry, d.per_request_timeout_ns, d.idle_timeout_ns = retry, per_request, idle
        d.router, d.fault_delay_ns = None if route is None else route.router_name, delay
        if ep is None:
            return d
        _remember(d._tried, ep)
        ep.active += 1
        budget.request(now_ns)
        d.endpoint, d.pool_key, d._node, d._budget = ep, ep.pool_key, ns, budget
        # An injected delay comes before the request leaves: its timeout starts after it.
        d.deadline_ns = now_ns + delay + per_request if per_request else 0
        per_try = per_request
        if retry is not None and (per_try == 0 or retry.per_try_ns < per_try):
            per_try = retry.per_try_ns
        d.per_try_timeout_ns = per_try
        if route is not None and route.mirror_node >= 0 and self._per_million(route.mirror_pm):
            # A shadow copy: balanced like any request to its node, no active count, no feedback.
            mirror = self._nodes[route.mirror_node]
            mep = self._pick(mirror, now_ns, None)
            if mep is not None:
                d.mirror, d.mirror_endpoint, d.mirror_port = mirror.low.name, mep, route.mirror_port
        return d

    def _refused(self, status, protocol, si, route) -> Decision:
        """A decision the route's policy answers itself: nothing to release or feed back."""
        d = Decision(status)
        d.service, d.protocol, d.route, d.router = self._low.services[si], protocol, route.name, route.router_name
        return d

    def _per_million(self, per_million: int) -> bool:
        return self._rng.next() % C.PER_MILLION < per_million

    def _fault(self, route, headers):
        """Envoy's fault filter on one request whose route has a fault: (delay_ns, abort),
        abort being (http_status, grpc_status) or None. Delay and abort are drawn
        independently, delay first, only when the fault's header conditions hold."""
        if not all(_header_ok(h, headers) for h in route.fault_headers):
            return 0, None
        delay = 0
        if route.delay_pm >= 0 and self._per_million(route.delay_pm):
            delay = route.delay_fixed_ns
            if route.delay_jitter_ns:
                delay += self._rng.next() % route.delay_jitter_ns
        if route.abort_pm >= 0 and self._per_million(route.abort_pm):
            return delay, (route.abort_http, route.abort_grpc)
        return delay, None

    def _authority_slow(self, authority: str):
        """Case-folded lookup, then without a numeric :port (RFC 9110 section 4.2.3): the
        service index and the key that found it."""
        host = authority.lower()
        si = self._low.authority.get(host)
        if si is None:
            h, colon, p = host.rpartition(":")
            if colon and p.isascii() and p.isdigit():
                host, si = h, self._low.authority.get(h)
        return si, host

    def _match(self, ix, routes, method, scheme, port, path, headers):
        """Best route by precedence among the indexed buckets the path hits; `routes` are
        the router's, which the index's ids are places in."""
        best = None
        q = path.find("?")
        base = path if q < 0 else path[:q]
        # Envoy: exact and regex paths match :path without the query string; prefixes
        # match the whole :path (config.route.v3.RouteMatch).
        bucket = ix.exact.get(base)
        if bucket is not None:
            best = self._scan(routes, bucket, best, method, scheme, port, path, q, headers)
        n = len(path)
        for length in ix.prefix_lengths:
            if length <= n:
                bucket = ix.prefix.get(path[:length])
                if bucket is not None:
                    best = self._scan(routes, bucket, best, method, scheme, port, path, q, headers)
        for i in ix.regex:
            r = routes[i]
            if best is not None and r.rank >= best.rank:
                break
            if r.regex.fullmatch(base) and self._conditions(r, method, scheme, port, path, q, headers):
                best = r
                break
        if ix.any:
            best = self._scan(routes, ix.any, best, method, scheme, port, path, q, headers)
        return best

    def _scan(self, routes, bucket, best, method, scheme, port, path, q, headers):
        for i in bucket:
            r = routes[i]
            # Buckets are sorted best-first, so stop at the first one not better.
            if best is not None and r.rank >= best.rank:
                return best
            if self._conditions(r, method, scheme, port, path, q, headers):
                return r
        return best

    @staticmethod
    def _conditions(r, method, scheme, port, path, q, headers) -> bool:
        if r.method is not None and r.method != method:
            return False
        if r.scheme is not None and r.scheme != scheme:
            return False
        if r.port >= 0 and r.port != port:
            return False
        for h in r.headers:
            if not _header_ok(h, headers):
                return False
        for name, exact in r.query:
            if not _query_ok(name, exact, path, q):
                return False
        return True

    def _pick(self, ns: NodeState, now_ns: int, avoid):
        """Round robin or least-request P2C over available endpoints (all of them in
        panic mode), avoiding those in `avoid` (None: none) while any other is usable."""
        eps = ns.endpoints
        n = len(eps)
        if n == 0:
            return None
        panic = _panic(ns, now_ns)
        if ns.by_priority and not panic:
            e = self._pick_priority(ns, now_ns, avoid)
            if e is not None:
                return e
        if ns.low.lb == C.LB_ROUND_ROBIN:
            start = ns.rr % n
            chosen = -1
            for k in range(n):
                i = (start + k) % n
                if _usable(eps[i], now_ns, avoid, panic):
                    chosen = i
                    break
            if chosen < 0:
                chosen = self._fallback(eps, start, now_ns, panic)
            ns.rr = chosen + 1
            return eps[chosen]
        if n == 1:
            return eps[0]
        # Least request, power of two choices (Mitzenmacher; Envoy LEAST_REQUEST with
        # choice_count 2): two distinct random endpoints, the one with fewer active wins.
        a = self._rng.next() % n
        b = (a + 1 + self._rng.next() % (n - 1)) % n
        e = _least_of_two(eps[a], eps[b], now_ns, avoid, panic)
        if e is not None:
            return e
        for k in range(n):
            e = eps[(a + k) % n]
            if _usable(e, now_ns, avoid, panic):
                return e
        return eps[self._fallback(eps, a, now_ns, panic)]

    def _pick_priority(self, ns: NodeState, now_ns: int, avoid):
        """Locality-aware pick by Envoy's priority load (see the core's `_pick_priority`):
        a priority drawn by load, then the node's policy among its members."""
        eps = ns.endpoints
        n = len(eps)
        avail = list(ns.healthy_per_priority)
        if ns.ejected_until_ns > now_ns:
            avail = [0] * C.N_PRIORITIES
            for e in eps:
                if e.healthy and e.ejected_until_ns <= now_ns:
                    avail[e.priority] += 1
        if avoid is not None:
            # Endpoints the decision tried count as unavailable for the retry's priority.
            for e in eps:
                if e.healthy and e.ejected_until_ns <= now_ns and avail[e.priority] > 0 and _was_tried(avoid, e):
                    avail[e.priority] -= 1
        over = ns.low.overprovisioning
        health = [min(C.PRIORITY_LOAD_TOTAL, over * a // t) if t else 0 for a, t in zip(avail, ns.per_priority)]
        total = min(C.PRIORITY_LOAD_TOTAL, sum(health))
        if total == 0:
            return None
        left = C.PRIORITY_LOAD_TOTAL
        load = []
        for h in health:
            share = min(left, h * C.PRIORITY_LOAD_TOTAL // total)
            left -= share
            load.append(share)
        load[next(p for p, h in enumerate(health) if h > 0)] += left
        x = self._rng.next() % C.PRIORITY_LOAD_TOTAL
        chosen = 0
        while x >= load[chosen]:
            x -= load[chosen]
            chosen += 1
        if ns.low.lb == C.LB_ROUND_ROBIN:
            start = ns.rr % n
            for k in range(n):
                i = (start + k) % n
                if eps[i].priority == chosen and _usable(eps[i], now_ns, avoid, False):
                    ns.rr = i + 1
                    return eps[i]
            return None
        members = [i for i, e in enumerate(eps) if e.priority == chosen]  # counted afresh, as the core does
        m = len(members)
        if m == 0:
            return None
        if m == 1:
            a = b = 0
        else:
            a = self._rng.next() % m
            b = (a + 1 + self._rng.next() % (m - 1)) % m
        e = _least_of_two(eps[members[a]], eps[members[b]], now_ns, avoid, False)
        if e is not None:
            return e
        for k in range(n):
            e = eps[(members[a] + k) % n]
            if e.priority == chosen and _usable(e, now_ns, avoid, False):
                return e
        return None

    @staticmethod
    def _fallback(eps, start, now_ns, panic) -> int:
        """Only endpoints already tried are usable: retry on one of them anyway."""
        n = len(eps)
        for k in range(n):
            i = (start + k) % n
            if _usable(eps[i], now_ns, None, panic):
                return i
        return start

    # -- results, retries, outlier detection --------------------------------------

    def result(self, d: Decision, kind: int, code: int, now_ns: int) -> RetryDecision:
        """Feed one attempt's result; returns finish, retry or give up."""
        if (type(kind) is not int or not C.RESULT_HTTP <= kind <= C.RESULT_TCP_DONE or type(code) is not int
                or not -2**31 <= code < 2**31 or type(now_ns) is not int or not 0 <= now_ns <= C.MAX_NOW_NS):
            raise BadResult(kind, code)
        if d.state != C.ST_IN_FLIGHT:
            raise InvalidTransition(d.state, -1)
        retry = d.retry
        if kind == C.RESULT_HTTP:
            server_error = code >= 500
            retryable = retry is not None and code in retry.http_codes
        elif kind == C.RESULT_GRPC:
            server_error = code in C.GRPC_SERVER_ERRORS
            retryable = retry is not None and code in retry.grpc_codes
        elif kind == C.RESULT_TCP_DONE:
            server_error = retryable = False
        else:
            server_error = True
            retryable = retry is not None and (retry.transport >> kind) & 1 == 1
        ep = d.endpoint
        if ep is not None:
            if ep.active > 0:
                ep.active -= 1
            self._outlier(d._node, ep, server_error, now_ns)
        backoff = 0
        if not (server_error or retryable):
            why = C.WHY_SUCCESS
        elif not retryable:
            why = C.WHY_NOT_RETRYABLE
        elif d.attempt >= retry.max_retries:
            why = C.WHY_RETRIES_EXHAUSTED
        else:
            backoff = _backoff(self._rng, d.attempt + 1)
            if d.deadline_ns and now_ns + backoff >= d.deadline_ns:
                why = C.WHY_DEADLINE
            elif not _unprocessed(kind) and not d._budget.allows_retry(now_ns):
                why = C.WHY_BUDGET
            else:
                why = C.WHY_RETRYABLE
        try:
            action, d.state = RETRY_TABLE[(d.state, why)]
        except KeyError:
            raise InvalidTransition(d.state, why) from None
        if action != C.ACT_RETRY:
            return RetryDecision(action, why, 0, 0, ep)
        d.attempt += 1
        if not _unprocessed(kind):
            d._budget.retry(now_ns)
        # Envoy's previous_hosts: a tried endpoint only when no other is usable.
        new = self._pick(d._node, now_ns, d._tried)
        if new is not None:
            d.endpoint, d.pool_key = new, new.pool_key
        _remember(d._tried, d.endpoint)
        d.endpoint.active += 1
        per_try = retry.per_try_ns
        if d.deadline_ns and d.deadline_ns - now_ns - backoff < per_try:
            per_try = d.deadline_ns - now_ns - backoff
        d.per_try_timeout_ns = per_try
        return RetryDecision(action, why, backoff, per_try, d.endpoint)

    def release(self, d: Decision) -> None:
        """End an in-flight decision without a result (a cancel or a local refusal): only
        the endpoint's active count is given back."""
        if d.state != C.ST_IN_FLIGHT:
            raise InvalidTransition(d.state, -1)
        ep = d.endpoint
        if ep is not None and ep.active > 0:
            ep.active -= 1
        d.state = C.ST_DONE

    def _outlier(self, ns: NodeState, ep: EndpointState, server_error: bool, now_ns: int) -> None:
        """App Mesh outlier detection: maxServerErrors consecutive server errors, the
        run no older than `interval`, eject for baseEjectionDuration x times ejected,
        never beyond maxEjectionPercent of the node's endpoints."""
        low = ns.low
        if low.max_errors == 0:
            return
        if not server_error:
            ep.errors = 0
            return
        if ep.errors == 0 or now_ns - ep.first_error_ns >= low.interval_ns:
            ep.errors, ep.first_error_ns = 0, now_ns
        ep.errors += 1
        if ep.errors < low.max_errors or ep.ejected_until_ns > now_ns:
            return
        eps = ns.endpoints
        ejected = 0
        member = False
        for e in eps:
            if e.ejected_until_ns > now_ns:
                ejected += 1
            if e is ep:
                member = True
        if member and (ejected + 1) * 100 <= low.max_ejection_percent * len(eps):
            ep.times_ejected += 1
            ep.ejected_until_ns = now_ns + low.base_ejection_ns * ep.times_ejected
            ep.errors = 0
            if ep.ejected_until_ns > ns.ejected_until_ns:
                ns.ejected_until_ns = ep.ejected_until_ns

    def ejected(self, node: str, now_ns: int) -> int:
        """How many of a node's endpoints are ejected at `now_ns`."""
        return sum(1 for e in self._node(node).endpoints if e.ejected_until_ns > now_ns)


def _was_tried(tried, e: EndpointState) -> bool:
    """By identity, as the core compares its borrowed pointers."""
    return tried is not None and any(t is e for t in tried)


def _remember(tried: list, e: EndpointState) -> None:
    """Each endpoint once; beyond MAX_TRIED the oldest is forgotten."""
    if not _was_tried(tried, e):
        tried.append(e)
        if len(tried) > C.MAX_TRIED:
            del tried[0]


def _usable(e: EndpointState, now_ns: int, avoid, panic: bool) -> bool:
    return (panic or (e.healthy and e.ejected_until_ns <= now_ns)) and not _was_tried(avoid, e)


def _least_of_two(ea, eb, now_ns: int, avoid, panic: bool):
    """Least request's choice between two drawn endpoints: the usable one with fewer
    active requests (the first on a tie), or None when neither is usable."""
    ua, ub = _usable(ea, now_ns, avoid, panic), _usable(eb, now_ns, avoid, panic)
    if ua and ub:
        return eb if eb.active < ea.active else ea
    if ua:
        return ea
    return eb if ub else None


def _panic(ns: NodeState, now_ns: int) -> bool:
    """Fewer than PANIC_THRESHOLD_PERCENT of the node's endpoints are available (healthy,
    not ejected): Envoy's healthy panic threshold, compared in integers."""
    available = ns.healthy
    if ns.ejected_until_ns > now_ns:
        available = sum(1 for e in ns.endpoints if e.healthy and e.ejected_until_ns <= now_ns)
    return available * 100 < C.PANIC_THRESHOLD_PERCENT * len(ns.endpoints)


def _unprocessed(kind: int) -> bool:
    """An attempt the upstream never processed (connect failure; REFUSED_STREAM, RFC 9113
    §8.7): its retry is bounded by maxRetries alone and spends no retry budget."""
    return kind in (C.RESULT_CONNECT_FAILURE, C.RESULT_REFUSED_STREAM)


def _backoff(rng: Rng, n: int) -> int:
    """Backoff before retry `n` (1-based): uniform in [0, min((2^n-1)*base, cap))."""
    if n > C.BACKOFF_MAX_EXP:
        n = C.BACKOFF_MAX_EXP
    ceiling = ((1 << n) - 1) * C.BACKOFF_BASE_NS
    if ceiling > C.BACKOFF_CAP_NS:
        ceiling = C.BACKOFF_CAP_NS
    return rng.next() % ceiling
