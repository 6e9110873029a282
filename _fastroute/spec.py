"""The route-table input format, its validation, and its lowering into indexes.

`meshd/compile.py` builds a `Table` of the frozen dataclasses below (plain values, no
protobuf) and hands it to `Router(table, seed=...)` of either implementation. Field
names follow App Mesh's API in snake_case; durations are integer milliseconds, weights
and percentages are integers. `lower(table)` validates everything once and raises
`TableError(path, reason, value)` naming the first bad field, so neither router ever
sees an invalid table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import constants as C
from ._re2 import Regex
from .errors import BadRegex, TableError

# App Mesh's HttpMethod enum (API reference, HttpRouteMatch.method).
HTTP_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
# App Mesh retry event classes (API reference, HttpRetryPolicy / GrpcRetryPolicy).
HTTP_EVENTS = frozenset({"server-error", "gateway-error", "client-error", "stream-error"})
GRPC_EVENTS = {"cancelled": 1, "deadline-exceeded": 4, "internal": 13, "resource-exhausted": 8, "unavailable": 14}
TCP_EVENTS = frozenset({"connection-error"})

# Transport failures as a bit mask, so a policy answers "retry on a reset?" in one AND.
T_RESET = 1 << C.RESULT_RESET
T_CONNECT = 1 << C.RESULT_CONNECT_FAILURE
T_REFUSED = 1 << C.RESULT_REFUSED_STREAM
T_TIMEOUT = 1 << C.RESULT_TIMEOUT
# Which transport failures each event class covers. App Mesh maps server-error to
# Envoy's `5xx`, gateway-error to `gateway-error`, stream-error to `refused-stream` and
# connection-error to `connect-failure`; Envoy retries every non-overflow reset
# (including per-try timeouts and connect failures) under `5xx` and `gateway-error`
# (envoy source/common/router/retry_state_impl.cc, wouldRetryFromReset).
_TRANSPORT_OF_EVENT = {
    "server-error": T_RESET | T_CONNECT | T_REFUSED | T_TIMEOUT,
    "gateway-error": T_RESET | T_CONNECT | T_REFUSED | T_TIMEOUT,
    "client-error": 0,
    "stream-error": T_REFUSED,
    "connection-error": T_CONNECT,
}
# HTTP status codes of each class, as the issue and App Mesh define them.
_CODES_OF_EVENT = {
    "server-error": frozenset([*range(500, 509), 510, 511]),
    "gateway-error": frozenset({502, 503, 504}),
    "client-error": frozenset({409}),
    "stream-error": frozenset(),
}

NS_PER_MS = 1_000_000


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """One header (HTTP) or metadata (gRPC) condition; App Mesh HttpRouteHeader.

    At most one of exact/prefix/suffix/regex/range is set; none means "present".
    `range` is (start, end) with end exclusive, as Envoy's Int64Range. A missing
    header matches only when `invert` is true (Envoy HeaderUtility::matchHeaders).
    """

    name: str
    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    regex: str | None = None
    range: tuple[int, int] | None = None
    invert: bool = False


@dataclass(frozen=True, slots=True)
class QueryMatch:
    """A query parameter condition; `exact=None` means the parameter is present."""

    name: str
    exact: str | None = None


@dataclass(frozen=True, slots=True)
class HttpMatch:
    """App Mesh HttpRouteMatch: exactly one of prefix, path_exact, path_regex."""

    prefix: str | None = None
    path_exact: str | None = None
    path_regex: str | None = None
    method: str | None = None
    scheme: str | None = None
    port: int | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class GrpcMatch:
    """App Mesh GrpcRouteMatch; method_name needs service_name, as in App Mesh."""

    service_name: str | None = None
    method_name: str | None = None
    metadata: tuple[HeaderMatch, ...] = ()
    port: int | None = None


@dataclass(frozen=True, slots=True)
class TcpMatch:
    """App Mesh TcpRouteMatch: the listener port only."""

    port: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """A weighted target: a virtual node, an integer weight 0..100 (0 = never)."""

    node: str
    weight: int
    port: int | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """App Mesh HttpRetryPolicy / GrpcRetryPolicy, plus single status codes.

    `http_status_codes` holds codes outside App Mesh's classes; it exists so the hidden
    default policy (HTTP 503 only) is representable.
    """

    max_retries: int
    per_retry_timeout_ms: int
    http_events: tuple[str, ...] = ()
    grpc_events: tuple[str, ...] = ()
    tcp_events: tuple[str, ...] = ()
    http_status_codes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-request and idle timeouts in ms; 0 disables. Defaults are App Mesh's."""

    per_request_ms: int = 15_000
    idle_ms: int = 300_000


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """App Mesh OutlierDetection: eject after max_server_errors consecutive errors."""

    max_server_errors: int
    interval_ms: int
    base_ejection_ms: int
    max_ejection_percent: int


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    """App Mesh VirtualNodeConnectionPool limits; defaults are Envoy's (1024 each)."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024


@dataclass(frozen=True, slots=True)
class FaultDelay:
    """Delay `per_million` of a route's requests by `fixed_ms` + uniform [0, `jitter_ms`)."""

    per_million: int
    fixed_ms: int
    jitter_ms: int = 0


@dataclass(frozen=True, slots=True)
class FaultAbort:
    """Answer `per_million` of a route's requests at once, without an upstream: with
    `http_status` (200-599) or `grpc_status` (1-16); exactly one is set."""

    per_million: int
    http_status: int | None = None
    grpc_status: int | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    """Fault injection on a route (meshd's RoutePolicy): only requests whose headers match
    every one of `headers` are eligible; the delay and the abort are drawn independently,
    the delay applied first (Envoy's fault filter)."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class Mirror:
    """Copy `per_million` of a route's routed requests to `node` (which must be in the
    table's nodes), at `port` (None: the node's only listener)."""

    node: str
    per_million: int
    port: int | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: at most `max_tokens`, `tokens_per_fill` added every `fill_interval_ms`
    (whole intervals only, as Envoy's local rate limit), one taken per request. Starts full."""

    max_tokens: int
    tokens_per_fill: int
    fill_interval_ms: int


@dataclass(frozen=True, slots=True)
class LocalityLb:
    """Locality-aware balancing of a node's endpoints (Envoy's priority failover by
    locality distance). `overprovisioning_percent`: Envoy's overprovisioning factor x 100."""

    enabled: bool = True
    overprovisioning_percent: int = 140


@dataclass(frozen=True, slots=True)
class Route:
    """A route: a match, weighted targets, retry policy, timeouts, priority.

    `retry=None` takes the table's default retry policy (App Mesh's hidden default);
    use `NO_RETRY` to turn retries off. `timeouts=None` takes the table default.
    """

    name: str
    protocol: str  # "http" | "http2" | "grpc" | "tcp"
    match: HttpMatch | GrpcMatch | TcpMatch
    targets: tuple[Target, ...]
    priority: int | None = None
    retry: RetryPolicy | None = None
    timeouts: Timeouts | None = None
    # meshd's RoutePolicy (not App Mesh): decided by the router per request.
    fault: Fault | None = None
    mirror: Mirror | None = None
    rate_limit: RateLimit | None = None


@dataclass(frozen=True, slots=True)
class VirtualRouter:
    """A virtual router and its routes (of any protocols)."""

    name: str
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True, slots=True)
class VirtualNode:
    """A target node: balancing policy, outlier detection, pool limits, identity.

    `identity` (e.g. the node's SPIFFE ID) is half of every pool key of its endpoints.
    `timeouts` apply when a virtual service's provider is this node directly.
    """

    name: str
    lb: str = "round_robin"  # or "least_request"
    outlier: OutlierDetection | None = None
    pool: ConnectionPool = field(default_factory=ConnectionPool)
    identity: str = ""
    timeouts: Timeouts = field(default_factory=Timeouts)
    # meshd's NodePolicy: locality-aware balancing of the requests sent to this node.
    locality: LocalityLb = field(default_factory=LocalityLb)


@dataclass(frozen=True, slots=True)
class VirtualService:
    """A virtual service: exactly one of `router` / `node` names its provider.

    The authority index holds `name` and `name:port` for each of `ports`; each of
    `local_ports` (dedicated egress listener ports, TCP) maps to this service alone.
    A request that gives no port of its own arrives on the port its authority names, or
    on the only one of `ports` when the authority names none (routes matching `port`).
    """

    name: str
    router: str | None = None
    node: str | None = None
    ports: tuple[int, ...] = ()
    local_ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One registered instance of a virtual node; `id` is stable across updates.

    `healthy` is False when its health check failed: the router then passes it over,
    unless too few of the node's endpoints are available (constants.PANIC_THRESHOLD_PERCENT).
    """

    id: str
    address: str
    port: int
    healthy: bool = True
    # (region, zone, sub_zone); empty strings: unknown. Compared with the router's own
    # locality (Router(..., locality=...)) to give the endpoint its priority.
    locality: tuple[str, str, str] = ("", "", "")


# App Mesh's hidden default: 2 retries on gRPC UNAVAILABLE, HTTP 503 and connection
# failure, 15 s per try (DESIGN.md, "Hidden App Mesh defaults").
DEFAULT_RETRY = RetryPolicy(
    max_retries=2,
    per_retry_timeout_ms=15_000,
    grpc_events=("unavailable",),
    tcp_events=("connection-error",),
    http_status_codes=(503,),
)
NO_RETRY = RetryPolicy(max_retries=0, per_retry_timeout_ms=15_000)


@dataclass(frozen=True, slots=True)
class Table:
    """The whole input of a router: services, routers, nodes and defaults."""

    services: tuple[VirtualService, ...] = ()
    routers: tuple[VirtualRouter, ...] = ()
    nodes: tuple[VirtualNode, ...] = ()
    default_retry: RetryPolicy | None = DEFAULT_RETRY
    default_timeouts: Timeouts = field(default_factory=Timeouts)


# ---------------------------------------------------------------------------------
# Lowered form: validated, indexed, shared by both implementations (cold path).


class LRetry:
    """A retry policy as sets: status codes, gRPC codes, transport-failure mask."""

    __slots__ = ("max_retries", "per_try_ns", "http_codes", "grpc_codes", "transport")

    def __init__(self, max_retries, per_try_ns, http_codes, grpc_codes, transport):
        self.max_retries = max_retries
        self.per_try_ns = per_try_ns
        self.http_codes = http_codes
        self.grpc_codes = grpc_codes
        self.transport = transport


class LHeader:
    """One header condition with its regex compiled and range parsed."""

    __slots__ = ("name", "kind", "value", "lo", "hi", "regex", "invert")

    def __init__(self, name, kind, value, lo, hi, regex, invert):
        self.name, self.kind, self.value = name, kind, value
        self.lo, self.hi, self.regex, self.invert = lo, hi, regex, invert


class LRoute:
    """A route lowered for matching; `rank` is its place in its router's precedence order.
    Nothing in it depends on where its router sits in the table, so an unchanged router's
    routes serve any table."""

    __slots__ = (
        "name", "rank", "router_name", "protocol", "path_kind", "path", "regex",
        "method", "scheme", "port", "headers", "query", "nodes", "weights", "cum",
        "total", "target_ports", "retry", "per_request_ns", "idle_ns", "key",
        # meshd's RoutePolicy: see `_lower_policy`.
        "fault", "fault_headers", "delay_pm", "delay_fixed_ns", "delay_jitter_ns", "abort_pm", "abort_http",
        "abort_grpc", "mirror_node", "mirror_pm", "mirror_port", "rate_limit",
    )


class LNode:
    """A virtual node lowered: integer policy codes and ns durations."""

    __slots__ = (
        "name", "index", "lb", "max_errors", "interval_ns", "base_ejection_ns",
        "max_ejection_percent", "max_connections", "max_pending", "max_requests",
        "identity", "per_request_ns", "idle_ns", "locality", "overprovisioning",
    )


class LIndex:
    """Routes of one router and protocol, indexed by exact path and by prefix; the ids are
    places in the router's own list of routes (`Lowered.router_routes`)."""

    __slots__ = ("exact", "prefix", "prefix_lengths", "regex", "any")

    def __init__(self):
        self.exact: dict[str, list[int]] = {}
        self.prefix: dict[str, list[int]] = {}
        self.prefix_lengths: tuple[int, ...] = ()
        self.regex: list[int] = []
        self.any: list[int] = []


class Lowered:
    """The validated table: flat lists plus the lookup indexes."""

    __slots__ = (
        "services", "service_router", "service_node", "authority", "authority_port", "ports",
        "routers", "indexes", "routes", "router_routes", "nodes", "node_by_name",
        "default_retry", "default_per_request_ns", "default_idle_ns",
    )


def _fail(path, reason, value=None):
    raise TableError(path, reason, value)


def _int(path, v, lo, hi):
    if type(v) is not int:
        _fail(path, "bad_type", v)
    if not lo <= v <= hi:
        _fail(path, "bad_value", v)
    return v


def _str(path, v, empty_ok=False):
    if type(v) is not str:
        _fail(path, "bad_type", v)
    if not v and not empty_ok:
        _fail(path, "missing", v)
    return v


def _regex(path, pattern):
    # RE2, as Envoy's safe_regex: linear in the text, and a full match of it.
    _str(path, pattern)
    try:
        return Regex(pattern)
    except BadRegex as err:
        raise TableError(path, "bad_regex", pattern) from err


def lower_header(path, h):
    """One HeaderMatch validated (TableError names the field under `path`) and lowered,
    its regex compiled: for `Conditions` and the router's own routes alike."""
    if not isinstance(h, HeaderMatch):
        _fail(path, "bad_type", h)
    name = _str(path + ".name", h.name).lower()
    set_ = [k for k in ("exact", "prefix", "suffix", "regex", "range") if getattr(h, k) is not None]
    if len(set_) > 1:
        _fail(path, "conflict", tuple(set_))
    lo = hi = 0
    rx = None
    value = ""
    kind = C.HM_PRESENT
    if h.exact is not None:
        kind, value = C.HM_EXACT, _str(path + ".exact", h.exact, True)
    elif h.prefix is not None:
        kind, value = C.HM_PREFIX, _str(path + ".prefix", h.prefix, True)
    elif h.suffix is not None:
        kind, value = C.HM_SUFFIX, _str(path + ".suffix", h.suffix, True)
    elif h.regex is not None:
        kind, rx = C.HM_REGEX, _regex(path + ".regex", h.regex)
    elif h.range is not None:
        r = h.range
        if not isinstance(r, tuple) or len(r) != 2:
            _fail(path + ".range", "bad_type", r)
        lo = _int(path + ".range[0]", r[0], -(2**62), 2**62)
        hi = _int(path + ".range[1]", r[1], -(2**62), 2**62)
        if lo >= hi:
            _fail(path + ".range", "bad_value", r)
        kind = C.HM_RANGE
    if type(h.invert) is not bool:
        _fail(path + ".invert", "bad_type", h.invert)
    return LHeader(name, kind, value, lo, hi, rx, h.invert)


def _lower_retry(path, p):
    if not isinstance(p, RetryPolicy):
        _fail(path, "bad_type", p)
    _int(path + ".max_retries", p.max_retries, 0, 1000)
    _int(path + ".per_retry_timeout_ms", p.per_retry_timeout_ms, 1, 2**40)
    codes: set[int] = set()
    transport = 0
    grpc: set[int] = set()
    for i, ev in enumerate(p.http_events):
        if ev not in HTTP_EVENTS:
            _fail(f"{path}.http_events[{i}]", "unknown_event", ev)
        codes |= _CODES_OF_EVENT[ev]
        transport |= _TRANSPORT_OF_EVENT[ev]
    for i, ev in enumerate(p.grpc_events):
        if ev not in GRPC_EVENTS:
            _fail(f"{path}.grpc_events[{i}]", "unknown_event", ev)
        grpc.add(GRPC_EVENTS[ev])
    for i, ev in enumerate(p.tcp_events):
        if ev not in TCP_EVENTS:
            _fail(f"{path}.tcp_events[{i}]", "unknown_event", ev)
        transport |= _TRANSPORT_OF_EVENT[ev]
    for i, code in enumerate(p.http_status_codes):
        codes.add(_int(f"{path}.http_status_codes[{i}]", code, 100, 599))
    return LRetry(p.max_retries, p.per_retry_timeout_ms * NS_PER_MS, frozenset(codes), frozenset(grpc), transport)


def _lower_timeouts(path, t):
    if not isinstance(t, Timeouts):
        _fail(path, "bad_type", t)
    return (
        _int(path + ".per_request_ms", t.per_request_ms, 0, 2**40) * NS_PER_MS,
        _int(path + ".idle_ms", t.idle_ms, 0, 2**40) * NS_PER_MS,
    )


def _lower_match(path, proto, m, r):
    """Fill the match fields of `r`; gRPC service/method become path conditions."""
    r.path_kind, r.path, r.regex = C.PK_ANY, "", None
    r.method = r.scheme = None
    r.headers, r.query = (), ()
    port = None
    if proto in (C.PROTO_HTTP, C.PROTO_HTTP2):
        if not isinstance(m, HttpMatch):
            _fail(path, "bad_type", m)
        given = [k for k in ("prefix", "path_exact", "path_regex") if getattr(m, k) is not None]
        # App Mesh accepts a match on the listener port alone: every path on that port.
        if len(given) > 1 or (not given and m.port is None):
            _fail(path + ".prefix", "missing" if not given else "conflict", tuple(given))
        if m.prefix is not None:
            r.path_kind, r.path = C.PK_PREFIX, _str(path + ".prefix", m.prefix)
            if not m.prefix.startswith("/"):
                _fail(path + ".prefix", "bad_value", m.prefix)
        elif m.path_exact is not None:
            r.path_kind, r.path = C.PK_EXACT, _str(path + ".path_exact", m.path_exact)
        elif m.path_regex is not None:
            r.path_kind, r.regex = C.PK_REGEX, _regex(path + ".path_regex", m.path_regex)
        if m.method is not None and m.method not in HTTP_METHODS:
            _fail(path + ".method", "bad_value", m.method)
        if m.scheme is not None and m.scheme not in ("http", "https"):
            _fail(path + ".scheme", "bad_value", m.scheme)
        r.method, r.scheme, port = m.method, m.scheme, m.port
        r.headers = tuple(lower_header(f"{path}.headers[{i}]", h) for i, h in enumerate(m.headers))
        qs = []
        for i, q in enumerate(m.query):
            if not isinstance(q, QueryMatch):
                _fail(f"{path}.query[{i}]", "bad_type", q)
            _str(f"{path}.query[{i}].name", q.name)
            if q.exact is not None:
                _str(f"{path}.query[{i}].exact", q.exact, True)
            qs.append((q.name, q.exact))
        r.query = tuple(qs)
    elif proto == C.PROTO_GRPC:
        if not isinstance(m, GrpcMatch):
            _fail(path, "bad_type", m)
        # A gRPC call's :path is "/<service>/<method>" (gRPC over HTTP/2 spec), so a
        # service+method match is an exact path and a service match is a prefix.
        if m.service_name is not None:
            svc = _str(path + ".service_name", m.service_name)
            if "/" in svc:
                _fail(path + ".service_name", "bad_value", svc)
            if m.method_name is not None:
                meth = _str(path + ".method_name", m.method_name)
                if "/" in meth:
                    _fail(path + ".method_name", "bad_value", meth)
                r.path_kind, r.path = C.PK_EXACT, f"/{svc}/{meth}"
            else:
                r.path_kind, r.path = C.PK_PREFIX, f"/{svc}/"
        elif m.method_name is not None:
            _fail(path + ".service_name", "missing", None)
        r.headers = tuple(lower_header(f"{path}.metadata[{i}]", h) for i, h in enumerate(m.metadata))
        port = m.port
    else:
        if not isinstance(m, TcpMatch):
            _fail(path, "bad_type", m)
        port = m.port
    r.port = -1 if port is None else _int(path + ".port", port, 1, 65535)
    return port


def lower_rate_limit(path, rl) -> tuple[int, int, int]:
    """A RateLimit validated: (max_tokens, tokens_per_fill, fill_interval_ns)."""
    if not isinstance(rl, RateLimit):
        _fail(path, "bad_type", rl)
    return (_int(path + ".max_tokens", rl.max_tokens, 1, 2**40),
            _int(path + ".tokens_per_fill", rl.tokens_per_fill, 1, 2**40),
            _int(path + ".fill_interval_ms", rl.fill_interval_ms, 1, 2**40) * NS_PER_MS)


def _lower_fault(path, f, r):
    """Fill the fault fields of `r`: a per-million of -1 means that fault is absent, so
    the router draws (and consumes random numbers) only for the faults that exist."""
    r.fault, r.fault_headers = False, ()
    r.delay_pm, r.delay_fixed_ns, r.delay_jitter_ns = -1, 0, 0
    r.abort_pm, r.abort_http, r.abort_grpc = -1, 0, -1
    if f is None:
        return
    if not isinstance(f, Fault):
        _fail(path, "bad_type", f)
    if f.delay is None and f.abort is None:
        _fail(path, "missing", f)
    if not isinstance(f.headers, tuple):
        _fail(path + ".headers", "bad_type", f.headers)
    if r.protocol == C.PROTO_TCP and f.headers:
        _fail(path + ".headers", "bad_value", f.headers)  # a TCP connection has no headers
    r.fault = True
    r.fault_headers = tuple(lower_header(f"{path}.headers[{i}]", h) for i, h in enumerate(f.headers))
    if f.delay is not None:
        d = f.delay
        if not isinstance(d, FaultDelay):
            _fail(path + ".delay", "bad_type", d)
        r.delay_pm = _int(path + ".delay.per_million", d.per_million, 0, C.PER_MILLION)
        r.delay_fixed_ns = _int(path + ".delay.fixed_ms", d.fixed_ms, 0, 2**40) * NS_PER_MS
        r.delay_jitter_ns = _int(path + ".delay.jitter_ms", d.jitter_ms, 0, 2**40) * NS_PER_MS
    if f.abort is not None:
        a = f.abort
        if not isinstance(a, FaultAbort):
            _fail(path + ".abort", "bad_type", a)
        if r.protocol == C.PROTO_TCP:
            _fail(path + ".abort", "bad_value", a)  # no status to answer a TCP connection with
        r.abort_pm = _int(path + ".abort.per_million", a.per_million, 0, C.PER_MILLION)
        if (a.http_status is None) == (a.grpc_status is None):
            _fail(path + ".abort.http_status", "missing" if a.http_status is None else "conflict",
                  (a.http_status, a.grpc_status))
        if a.http_status is not None:
            r.abort_http = _int(path + ".abort.http_status", a.http_status, 200, 599)
        else:
            r.abort_grpc = _int(path + ".abort.grpc_status", a.grpc_status, 1, 16)


def _lower_policy(path, route, r, nodes_by_name):
    """meshd's RoutePolicy fields of a route: fault, mirror and rate limit."""
    _lower_fault(path + ".fault", route.fault, r)
    m = route.mirror
    r.mirror_node, r.mirror_pm, r.mirror_port = -1, 0, -1
    if m is not None:
        if not isinstance(m, Mirror):
            _fail(path + ".mirror", "bad_type", m)
        if r.protocol == C.PROTO_TCP:
            _fail(path + ".mirror", "bad_value", m)  # copies are of requests, which TCP has not
        if m.node not in nodes_by_name:
            _fail(path + ".mirror.node", "unknown_node", m.node)
        r.mirror_node = nodes_by_name[m.node]
        r.mirror_pm = _int(path + ".mirror.per_million", m.per_million, 0, C.PER_MILLION)
        r.mirror_port = -1 if m.port is None else _int(path + ".mirror.port", m.port, 1, 65535)
    r.rate_limit = None if route.rate_limit is None else lower_rate_limit(path + ".rate_limit", route.rate_limit)


def check_locality(path, loc) -> tuple[str, str, str]:
    """A locality (region, zone, sub_zone): a tuple of three str, any of them empty."""
    if type(loc) is not tuple or len(loc) != 3 or not all(type(x) is str for x in loc):
        _fail(path, "bad_type", loc)
    return loc


def locality_priority(own, theirs) -> int:
    """An endpoint's priority from the router's locality `own`: 0 when region, zone and
    sub-zone are the same, 1 when region and zone are, 2 when the region is, 3 otherwise;
    0 when either side has no locality at all (no locality: nothing to prefer)."""
    if not any(own) or not any(theirs):
        return 0
    if own[0] != theirs[0]:
        return 3
    if own[1] != theirs[1]:
        return 2
    return 0 if own[2] == theirs[2] else 1


def _lower_route(path, route, nodes_by_name, default_retry, default_timeouts):
    if not isinstance(route, Route):
        _fail(path, "bad_type", route)
    r = LRoute()
    r.name = _str(path + ".name", route.name)
    if route.protocol not in C.PROTOCOLS:
        _fail(path + ".protocol", "bad_value", route.protocol)
    r.protocol = C.PROTOCOLS[route.protocol]
    port = _lower_match(path + ".match", r.protocol, route.match, r)
    targets = route.targets
    if not isinstance(targets, tuple) or not 1 <= len(targets) <= 10:
        _fail(path + ".targets", "bad_value", targets)  # App Mesh: 1 to 10 targets
    nodes, weights, ports = [], [], []
    for i, t in enumerate(targets):
        tp = f"{path}.targets[{i}]"
        if not isinstance(t, Target):
            _fail(tp, "bad_type", t)
        if t.node not in nodes_by_name:
            _fail(tp + ".node", "unknown_target", t.node)
        nodes.append(nodes_by_name[t.node])
        weights.append(_int(tp + ".weight", t.weight, 0, 100))
        ports.append(-1 if t.port is None else _int(tp + ".port", t.port, 1, 65535))
    if sum(weights) == 0:
        _fail(path + ".targets", "all_zero_weights", tuple(weights))
    cum, acc = [], 0
    for w in weights:
        acc += w
        cum.append(acc)
    r.nodes, r.weights, r.cum, r.total, r.target_ports = tuple(nodes), tuple(weights), tuple(cum), acc, tuple(ports)
    if route.priority is not None:
        _int(path + ".priority", route.priority, 0, 1000)
    if r.protocol == C.PROTO_TCP:
        r.retry = None  # App Mesh TCP routes have no retry policy
    elif route.retry is None:
        r.retry = default_retry
    else:
        r.retry = _lower_retry(path + ".retry", route.retry)
    if route.timeouts is None:
        r.per_request_ns, r.idle_ns = default_timeouts
    else:
        r.per_request_ns, r.idle_ns = _lower_timeouts(path + ".timeouts", route.timeouts)
    _lower_policy(path, route, r, nodes_by_name)
    n_conditions = len(r.headers) + len(r.query) + sum(x is not None for x in (r.method, r.scheme, port))
    path_len = len(r.path) if r.path_kind in (C.PK_PREFIX, C.PK_EXACT) else 0
    # Precedence summary; see `precedence_key` for the rule it encodes.
    r.key = (0 if route.priority is not None else 1, route.priority or 0, r.path_kind, -path_len, -n_conditions, r.name)
    return r


def precedence_key(r: LRoute) -> tuple:
    """The one ordering of routes; the smallest key wins.

    Rule (App Mesh API reference, HttpRoute.priority: "Routes are matched based on the
    specified value, where 0 is the highest priority"; then the issue's specificity
    rule): routes with an explicit priority come first, lowest number first; then exact
    path over regex over prefix over no path condition; then the longer path/prefix;
    then more conditions over fewer (header, metadata and query conditions, as the
    issue states, and also method, scheme and port, which narrow a match the same
    way); then the route name,
    so the order never depends on the order routes were listed.
    """
    return r.key


def _lower_node(path, n, idx):
    if not isinstance(n, VirtualNode):
        _fail(path, "bad_type", n)
    ln = LNode()
    ln.name, ln.index = _str(path + ".name", n.name), idx
    if n.lb not in C.LB_POLICIES:
        _fail(path + ".lb", "bad_value", n.lb)
    ln.lb = C.LB_POLICIES[n.lb]
    od = n.outlier
    if od is None:
        ln.max_errors, ln.interval_ns, ln.base_ejection_ns, ln.max_ejection_percent = 0, 0, 0, 0
    else:
        if not isinstance(od, OutlierDetection):
            _fail(path + ".outlier", "bad_type", od)
        ln.max_errors = _int(path + ".outlier.max_server_errors", od.max_server_errors, 1, 2**31)
        ln.interval_ns = _int(path + ".outlier.interval_ms", od.interval_ms, 1, 2**40) * NS_PER_MS
        ln.base_ejection_ns = _int(path + ".outlier.base_ejection_ms", od.base_ejection_ms, 1, 2**40) * NS_PER_MS
        ln.max_ejection_percent = _int(path + ".outlier.max_ejection_percent", od.max_ejection_percent, 0, 100)
    pool = n.pool
    if not isinstance(pool, ConnectionPool):
        _fail(path + ".pool", "bad_type", pool)
    ln.max_connections = _int(path + ".pool.max_connections", pool.max_connections, 1, 2**31)
    ln.max_pending = _int(path + ".pool.max_pending_requests", pool.max_pending_requests, 1, 2**31)
    ln.max_requests = _int(path + ".pool.max_requests", pool.max_requests, 1, 2**31)
    ln.identity = _str(path + ".identity", n.identity, True)
    ln.per_request_ns, ln.idle_ns = _lower_timeouts(path + ".timeouts", n.timeouts)
    loc = n.locality
    if not isinstance(loc, LocalityLb):
        _fail(path + ".locality", "bad_type", loc)
    if type(loc.enabled) is not bool:
        _fail(path + ".locality.enabled", "bad_type", loc.enabled)
    ln.locality = loc.enabled
    # Envoy's overprovisioning factor: 1.0 (spill at the first loss) to 10.0.
    ln.overprovisioning = _int(path + ".locality.overprovisioning_percent", loc.overprovisioning_percent, 100, 1000)
    return ln


def _unique(path, items, what):
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        name = _str(f"{path}[{i}].name", it.name)
        if name in seen:
            _fail(f"{path}[{i}].name", "duplicate_name", name)
        seen[name] = i
    return seen


class LowerMemo:
    """What `lower` made of one changing table, kept for its next call, so that a change
    costs what it changed rather than what the table holds:
    - a virtual router that is the very same (frozen) object as last time keeps its
      lowered routes and indexes, shared, not copied: nothing in them depends on the
      router's place in the table;
    - a changed router re-validates only its Route objects that are new: the others are
      copied from its last lowering;
    - a node that is the same object at the same index keeps its LNode, and services that
      are equal over the same routers and nodes keep their lookup tables.
    Routes and routers are kept under one lowering context (the node indexes and the
    table's defaults); a new context retires them. Each call keeps only what it saw, so
    the memo never outgrows the table. Not thread-safe: one compiling thread owns it."""

    __slots__ = ("_context", "_default_retry", "_routers", "_next_routers", "_nodes", "_services", "hits")

    def __init__(self):
        self.hits = 0  # routes the last call took from the memo
        self._context = None
        self._default_retry = None
        # router name -> (the VirtualRouter, its LRoutes, its LIndexes)
        self._routers: dict[str, tuple] = {}
        self._next_routers: dict[str, tuple] = {}
        self._nodes: dict[str, tuple] = {}     # node name -> (the VirtualNode, its index, its LNode)
        self._services: tuple | None = None    # (services, routers, nodes, what they lowered to)

    def begin(self, context: tuple, default_retry):
        """Start a call; returns the lowered default retry policy to use: the one the kept
        routes hold when the context is unchanged, so that they still share it."""
        if context != self._context:
            self._context, self._default_retry, self._routers = context, default_retry, {}
        self._next_routers = {}
        self.hits = 0
        return self._default_retry

    def node(self, path, n, idx) -> LNode:
        hit = self._nodes.get(getattr(n, "name", None))
        if hit is not None and hit[0] is n and hit[1] == idx:
            return hit[2]
        return _lower_node(path, n, idx)

    def keep_nodes(self, table_nodes, lnodes) -> None:
        self._nodes = {ln.name: (n, ln.index, ln) for n, ln in zip(table_nodes, lnodes)}

    def lowered_router(self, vr):
        """The LRoutes and LIndexes of virtual router `vr` from the last call when it was
        the very same object, else None."""
        hit = self._routers.get(vr.name)
        if hit is None or hit[0] is not vr:
            return None
        self._next_routers[vr.name] = hit
        self.hits += len(hit[1])
        return hit[1], hit[2]

    def lower_routes(self, path, vr, nodes_by_name, default_retry, default_timeouts) -> list[LRoute]:
        """A changed router's routes: copies of the last lowering of the same Route
        objects under this router's name, the others lowered (and validated) anew."""
        hit = self._routers.get(vr.name)
        seen = {id(rt): j for j, rt in enumerate(hit[0].routes)} if hit is not None else {}
        out = []
        for i, rt in enumerate(vr.routes):
            j = seen.get(id(rt))
            if j is not None and hit[0].routes[j] is rt:
                out.append(_copy_route(hit[1][j]))
                self.hits += 1
            else:
                out.append(_lower_route(f"{path}[{i}]", rt, nodes_by_name, default_retry, default_timeouts))
        return out

    def keep_router(self, vr, routes: list, indexes: list) -> None:
        self._next_routers[vr.name] = (vr, routes, indexes)

    def services(self, services: tuple, router_by_name: dict, node_by_name: dict):
        """What `services` lowered to last time, when they (and the routers and nodes they
        name) are equal; else None."""
        hit = self._services
        if hit is not None and hit[0] == services and hit[1] == router_by_name and hit[2] == node_by_name:
            return hit[3]
        return None

    def keep_services(self, services: tuple, router_by_name: dict, node_by_name: dict, lowered: tuple) -> None:
        self._services = (services, router_by_name, node_by_name, lowered)

    def end(self) -> None:
        self._routers, self._next_routers = self._next_routers, {}


def _copy_route(r: LRoute) -> LRoute:
    """What `_lower_route` sets, copied from an earlier table's LRoute, whose places in
    this table (rank) this lowering sets: the earlier table stays as it was."""
    c = LRoute.__new__(LRoute)
    c.name, c.router_name, c.protocol = r.name, r.router_name, r.protocol
    c.path_kind, c.path, c.regex = r.path_kind, r.path, r.regex
    c.method, c.scheme, c.port, c.headers, c.query = r.method, r.scheme, r.port, r.headers, r.query
    c.nodes, c.weights, c.cum, c.total, c.target_ports = r.nodes, r.weights, r.cum, r.total, r.target_ports
    c.retry, c.per_request_ns, c.idle_ns, c.key = r.retry, r.per_request_ns, r.idle_ns, r.key
    c.fault, c.fault_headers, c.delay_pm = r.fault, r.fault_headers, r.delay_pm
    c.delay_fixed_ns, c.delay_jitter_ns = r.delay_fixed_ns, r.delay_jitter_ns
    c.abort_pm, c.abort_http, c.abort_grpc = r.abort_pm, r.abort_http, r.abort_grpc
    c.mirror_node, c.mirror_pm, c.mirror_port, c.rate_limit = r.mirror_node, r.mirror_pm, r.mirror_port, r.rate_limit
    return c


def lower(table: Table, memo: LowerMemo | None = None) -> Lowered:
    """Validate `table` and build the indexes both routers use; raise TableError. With a
    `memo` (kept by the caller for this table), what its last call lowered and this table
    still holds (the same objects) is taken from it, not validated and lowered again."""
    if not isinstance(table, Table):
        _fail("table", "bad_type", table)
    for fname in ("services", "routers", "nodes"):
        if not isinstance(getattr(table, fname), tuple):
            _fail(fname, "bad_type", getattr(table, fname))
    low = Lowered()
    node_by_name = _unique("nodes", table.nodes, "node")
    lower_node = _lower_node if memo is None else memo.node
    low.nodes = [lower_node(f"nodes[{i}]", n, i) for i, n in enumerate(table.nodes)]
    low.node_by_name = node_by_name
    low.default_retry = None if table.default_retry is None else _lower_retry("default_retry", table.default_retry)
    defaults = _lower_timeouts("default_timeouts", table.default_timeouts)
    low.default_per_request_ns, low.default_idle_ns = defaults
    router_by_name = _unique("routers", table.routers, "router")
    low.routers = [r.name for r in table.routers]
    if memo is not None:
        memo.keep_nodes(table.nodes, low.nodes)
        low.default_retry = memo.begin((tuple(node_by_name.items()), table.default_retry, table.default_timeouts),
                                       low.default_retry)
    low.routes, low.indexes, low.router_routes = [], [], []
    for ri, vr in enumerate(table.routers):
        if not isinstance(vr, VirtualRouter):
            _fail(f"routers[{ri}]", "bad_type", vr)
        if not isinstance(vr.routes, tuple):
            _fail(f"routers[{ri}].routes", "bad_type", vr.routes)
        kept = memo.lowered_router(vr) if memo is not None else None
        if kept is None:
            path = f"routers[{ri}].routes"
            _unique(path, vr.routes, "route")
            if memo is not None:
                lowered = memo.lower_routes(path, vr, node_by_name, low.default_retry, defaults)
            else:
                lowered = [_lower_route(f"{path}[{i}]", rt, node_by_name, low.default_retry, defaults)
                           for i, rt in enumerate(vr.routes)]
            for r in lowered:
                r.router_name = vr.name  # (router, name) names the route across tables
            indexes = _build_indexes(lowered)
            if memo is not None:
                memo.keep_router(vr, lowered, indexes)
        else:
            lowered, indexes = kept
        low.indexes.append(indexes)
        low.router_routes.append(lowered)
        low.routes.extend(lowered)
    kept = memo.services(table.services, router_by_name, node_by_name) if memo is not None else None
    if kept is None:
        kept = _lower_services(table.services, router_by_name, node_by_name)
        if memo is not None:
            memo.keep_services(table.services, router_by_name, node_by_name, kept)
    (low.services, low.service_router, low.service_node, low.authority, low.authority_port, low.ports) = kept
    if memo is not None:
        memo.end()
    return low


def _lower_services(services: tuple, router_by_name: dict, node_by_name: dict) -> tuple:
    """(names, router index per service, node index per service, authority → service,
    authority → port, local port → service)."""
    _unique("services", services, "service")
    names, service_router, service_node = [], [], []
    authority, authority_port, ports = {}, {}, {}
    for si, s in enumerate(services):
        path = f"services[{si}]"
        if not isinstance(s, VirtualService):
            _fail(path, "bad_type", s)
        if (s.router is None) == (s.node is None):
            _fail(path + ".router", "conflict" if s.router else "missing", (s.router, s.node))
        if s.router is not None and s.router not in router_by_name:
            _fail(path + ".router", "unknown_router", s.router)
        if s.node is not None and s.node not in node_by_name:
            _fail(path + ".node", "unknown_node", s.node)
        names.append(s.name)
        service_router.append(router_by_name[s.router] if s.router is not None else -1)
        service_node.append(node_by_name[s.node] if s.node is not None else -1)
        host = s.name.lower()  # DNS names compare case-insensitively (RFC 4343)
        authority[host] = si
        # The port a request names its service by, for routes that match on `port`: the
        # one in the authority, or the service's only port when the authority has none.
        authority_port[host] = s.ports[0] if len(s.ports) == 1 else 0
        for j, p in enumerate(s.ports):
            authority[f"{host}:{_int(f'{path}.ports[{j}]', p, 1, 65535)}"] = si
            authority_port[f"{host}:{p}"] = p
        for j, p in enumerate(s.local_ports):
            _int(f"{path}.local_ports[{j}]", p, 1, 65535)
            if p in ports:
                _fail(f"{path}.local_ports[{j}]", "duplicate_port", p)
            ports[p] = si
    return names, service_router, service_node, authority, authority_port, ports


def _build_indexes(routes):
    """One LIndex per protocol of one router's routes; every bucket lists places in
    `routes` best-first."""
    indexes = [LIndex() for _ in C.PROTOCOLS]
    order = sorted(range(len(routes)), key=lambda i: precedence_key(routes[i]))
    for rank, i in enumerate(order):
        r = routes[i]
        r.rank = rank
        ix = indexes[r.protocol]
        if r.path_kind == C.PK_EXACT:
            ix.exact.setdefault(r.path, []).append(i)
        elif r.path_kind == C.PK_PREFIX:
            ix.prefix.setdefault(r.path, []).append(i)
        elif r.path_kind == C.PK_REGEX:
            ix.regex.append(i)
        else:
            ix.any.append(i)
    for ix in indexes:
        ix.prefix_lengths = tuple(sorted({len(p) for p in ix.prefix}, reverse=True))
    return indexes
