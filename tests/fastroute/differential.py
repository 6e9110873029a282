"""Scenario strategies and the lockstep player of the Cython-vs-reference differential test.

A scenario is a table, endpoint counts, a seed and a script. Requests are built from the
table: pick a route, then a request that meets each of its conditions or misses exactly
one by a near miss (the value one character off, the range bound just outside), and
each routing run ends with a deterministic sweep of every such near miss. Scripts
play failing calls (5xx, gRPC codes, resets, connect failures, timeouts) at advancing
`now_ns`, in storms long enough to eject endpoints and exhaust the retry budget, and
fail endpoints' health checks, enough of them at times to put a node in panic mode.
Routes carry rate limits, faults (some gated by headers) and mirrors; nodes balance by
locality, their endpoints placed at every distance from the router's own locality.
`play` drives both routers with the same script and compares every observable after
every step. Shared by `test_fr_differential.py` and the manual `mutants.py`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import strategies as st

from _fastroute import _core, reference
from _fastroute import constants as C
from _fastroute.errors import FastrouteError
from _fastroute.spec import (
    DEFAULT_RETRY, NO_RETRY, Endpoint, Fault, FaultAbort, FaultDelay, GrpcMatch, HeaderMatch, HttpMatch, LocalityLb,
    Mirror, OutlierDetection, QueryMatch, RateLimit, RetryPolicy, Route, Table, Target, TcpMatch, Timeouts,
    VirtualNode, VirtualRouter, VirtualService,
)

from .helpers import summary

MS = 1_000_000
T0 = 10**12
NODES = ("n0", "n1", "n2")
HNAMES = ("x-a", "x-b", "te")
# Values of every str kind (latin-1, UCS-2, UCS-4): the Cython core reads code units.
HVALUES = ("", "a", "ab", "abc", "v1", "V1", "1", "12", "-3", "é", "ß€", "😀x")
PREFIXES = ("/", "/a", "/a/", "/a/b", "/ab", "/b/", "/é", "/😀")
EXACTS = ("/", "/a", "/a/b", "/ab", "/items/42", "/é/x")
# Patterns with strings they fully match and strings they do not.
PATH_REGEXES = {
    "/a.*": (("/a", "/abc", "/a/b"), ("/b", "/", "/ba")),
    "/items/[0-9]+": (("/items/1", "/items/42"), ("/items/", "/items/x", "/items/1/")),
    "/(x|y)/[^/]*": (("/x/", "/y/q"), ("/x/a/b", "/z/")),
}
HEADER_REGEXES = {
    "a.*": (("a", "abc", "a😀"), ("ba", "", "A")),
    "[0-9]+": (("1", "12", "007"), ("", "1x", "x1")),
    "v1|ab": (("v1", "ab"), ("v1ab", "V1", "abc")),
}
GRPC_SERVICES = ("pkg.S", "pkg.T")
# Router and endpoint localities: the same host, zone or region as the router, another
# region, and none at all (priority 0 whatever the other side is).
ROUTER_LOCALITIES = (("", "", ""), ("r1", "z1", "h1"), ("r1", "z1", "h1"), ("r1", "z2", ""))
ENDPOINT_LOCALITIES = (("r1", "z1", "h1"), ("r1", "z1", "h2"), ("", "", ""), ("r1", "z2", "h3"), ("r2", "z9", "h4"))
METHODS = ("GET", "POST", "PUT")
# Attempt results, failures first: each kind of server error and transport failure.
FAILURES = (
    (C.RESULT_HTTP, 500), (C.RESULT_HTTP, 502), (C.RESULT_HTTP, 503), (C.RESULT_HTTP, 504),
    (C.RESULT_HTTP, 509), (C.RESULT_HTTP, 511), (C.RESULT_HTTP, 409),
    (C.RESULT_GRPC, 14), (C.RESULT_GRPC, 13), (C.RESULT_GRPC, 4), (C.RESULT_GRPC, 1), (C.RESULT_GRPC, 8),
    (C.RESULT_GRPC, 2), (C.RESULT_RESET, 0), (C.RESULT_CONNECT_FAILURE, 0), (C.RESULT_REFUSED_STREAM, 0),
    (C.RESULT_TIMEOUT, 0),
)
# Failures the default policy (or any server-error / gateway-error policy) retries.
STORM_FAILURES = ((C.RESULT_HTTP, 503), (C.RESULT_GRPC, 14), (C.RESULT_CONNECT_FAILURE, 0), (C.RESULT_HTTP, 500),
                  (C.RESULT_RESET, 0), (C.RESULT_TIMEOUT, 0))
SUCCESSES = ((C.RESULT_HTTP, 200), (C.RESULT_HTTP, 404), (C.RESULT_GRPC, 0), (C.RESULT_GRPC, 5),
             (C.RESULT_TCP_DONE, 0))
ODD_RESULTS = ((C.RESULT_HTTP, 700), (C.RESULT_HTTP, -1), (C.RESULT_GRPC, 33), (C.RESULT_GRPC, -1), (9, 0))
results = st.sampled_from(FAILURES * 3 + SUCCESSES + ODD_RESULTS)
# Time steps: same instant, inside an outlier interval, across ejection times and
# across the retry budget's 10 s window.
steps = st.sampled_from([0, 0, 0, 1, 5, 50, 400, 1_000, 2_500, 12_000, 40_000]).map(lambda ms: ms * MS)
small_steps = st.sampled_from([0, 0, 1, 2, 20]).map(lambda ms: ms * MS)


# ---------------------------------------------------------------------------------
# Tables


@st.composite
def header_matches(draw):
    """One header condition of any kind, sometimes inverted, its name in any case."""
    name = pick(draw, HNAMES)
    name = name.upper() if draw(st.integers(0, 5)) == 0 else name
    kind = pick(draw, ["exact", "exact", "exact", "prefix", "suffix", "regex", "range", None])
    kw = {}
    if kind == "range":
        lo = draw(st.integers(-5, 15))
        kw["range"] = (lo, lo + draw(st.integers(1, 10)))
    elif kind == "regex":
        kw["regex"] = pick(draw, sorted(HEADER_REGEXES))
    elif kind:
        kw[kind] = pick(draw, HVALUES)
    return HeaderMatch(name, invert=draw(st.integers(0, 3)) == 0, **kw)


def _tuple(strategy, max_size):
    return st.lists(strategy, max_size=max_size, unique=True).map(tuple)


def pick(draw, seq):
    """One element of a sequence built at draw time (cheaper than a new sampled_from)."""
    return seq[draw(st.integers(0, len(seq) - 1))]


retry_policies = st.one_of(
    st.sampled_from([None, None, NO_RETRY, DEFAULT_RETRY]),
    st.builds(RetryPolicy, st.sampled_from([1, 2, 3, 5, 10]), st.sampled_from([50, 500, 15_000]),
              _tuple(st.sampled_from(["server-error", "gateway-error", "client-error", "stream-error"]), 2),
              _tuple(st.sampled_from(["cancelled", "deadline-exceeded", "internal", "resource-exhausted",
                                      "unavailable"]), 3),
              _tuple(st.just("connection-error"), 1), _tuple(st.sampled_from([503, 429, 599]), 1)),
)
timeouts = st.sampled_from([None, None, Timeouts(1_000, 0), Timeouts(0, 10), Timeouts(300, 5_000), Timeouts()])
# Built once: constructing strategies inside a composite costs more than drawing.
header_tuples = st.integers(0, 2).flatmap(lambda n: st.lists(header_matches(), min_size=n, max_size=n)).map(tuple)
query_tuples = _tuple(st.builds(QueryMatch, st.sampled_from(["x", "y"]), st.sampled_from([None, "1", "", "a b"])), 2)
path_values = {"prefix": st.sampled_from(PREFIXES), "path_exact": st.sampled_from(EXACTS),
               "path_regex": st.sampled_from(sorted(PATH_REGEXES))}
weight_lists = st.lists(st.integers(0, 5), min_size=1, max_size=3).filter(any)
per_millions = st.sampled_from([0, 1, 300_000, 500_000, 999_999, 1_000_000])
# Fill intervals near the scripts' time steps (1, 2, 20 ms...): buckets run dry and
# refill between requests, a part of an interval apart as often as whole ones.
rate_limits = st.one_of(st.none(), st.builds(
    RateLimit, st.sampled_from([1, 2, 3]), st.sampled_from([1, 2, 3]), st.sampled_from([1, 2, 3, 5, 1_000])))
delays = st.one_of(st.none(), st.builds(FaultDelay, per_millions, st.sampled_from([0, 5]), st.sampled_from([0, 3])))
mirrors = st.one_of(st.none(), st.none(), st.builds(Mirror, st.sampled_from(NODES), per_millions,
                                                    st.sampled_from([None, 9000])))
locality_policies = st.builds(LocalityLb, st.sampled_from([True, True, False]), st.sampled_from([100, 140, 200]))


@st.composite
def faults(draw, tcp):
    """None mostly; else a delay and/or an abort, gated by headers at times (TCP: a delay only)."""
    if draw(st.integers(0, 2)):
        return None
    if tcp:
        return Fault(delay=draw(delays.filter(lambda d: d is not None)))
    abort = pick(draw, [None, FaultAbort(draw(per_millions), http_status=pick(draw, [503, 429, 200])),
                        FaultAbort(draw(per_millions), grpc_status=14)])
    delay = draw(delays) if abort is not None else draw(delays.filter(lambda d: d is not None))
    return Fault(delay=delay, abort=abort, headers=draw(header_tuples) if draw(st.booleans()) else ())


@st.composite
def routes(draw, i):
    """Route `r<i>` of any protocol, match kind, targets, retry and timeouts."""
    proto = pick(draw, ["http"] * 3 + ["http2", "grpc", "tcp"])
    port = pick(draw, [None] * 3 + [80, 81])
    if proto in ("http", "http2"):
        # App Mesh's port-only match: no path condition at all.
        kind = pick(draw, ["prefix", "prefix", "path_exact", "path_regex"] + ([None] if port else []))
        path_cond = {kind: draw(path_values[kind])} if kind else {}
        match = HttpMatch(**path_cond, method=pick(draw, [None, None, *METHODS[:2]]),
                          scheme=pick(draw, [None, None, None, "https"]), port=port,
                          headers=draw(header_tuples), query=draw(query_tuples))
    elif proto == "grpc":
        svc = pick(draw, [None, *GRPC_SERVICES])
        meth = pick(draw, [None, "M"]) if svc else None
        match = GrpcMatch(service_name=svc, method_name=meth, port=port, metadata=draw(header_tuples))
    else:
        match = TcpMatch(port=port)
    weights = draw(weight_lists)
    targets = tuple(Target(NODES[k], w, port=pick(draw, [None, None, 9090]))
                    for k, w in enumerate(weights))
    tcp = proto == "tcp"
    return Route(f"r{i}", proto, match, targets, priority=pick(draw, [None, None, None, 0, 3]),
                 retry=draw(retry_policies), timeouts=draw(timeouts), fault=draw(faults(tcp)),
                 mirror=None if tcp else draw(mirrors), rate_limit=draw(rate_limits))


outliers = st.one_of(st.none(), st.builds(
    OutlierDetection, st.integers(1, 4), st.sampled_from([10, 1_000, 10_000]), st.sampled_from([100, 1_000, 30_000]),
    st.sampled_from([0, 10, 20, 34, 50, 67, 100])))


@st.composite
def tables(draw):
    """A valid table: router "r" behind svc.local, node n1 behind node.local directly."""
    routes_ = tuple(draw(routes(i)) for i in range(draw(st.integers(1, 7))))
    if draw(st.integers(0, 3)):  # mostly: a catch-all per protocol, so most requests route
        w = (Target("n0", 1), Target("n1", 1))
        routes_ += (Route("all-http", "http", HttpMatch(prefix="/"), w),
                    Route("all-h2", "http2", HttpMatch(prefix="/"), w),
                    Route("all-grpc", "grpc", GrpcMatch(), w), Route("all-tcp", "tcp", TcpMatch(), w))
    nodes = tuple(VirtualNode(name, lb=pick(draw, ["round_robin", "round_robin", "least_request"]),
                              outlier=draw(outliers), identity=pick(draw, ["", f"spiffe://td/{name}"]),
                              timeouts=pick(draw, [Timeouts(), Timeouts(500, 0)]),
                              locality=draw(locality_policies))
                  for name in NODES)
    return Table(
        services=(VirtualService("svc.local", router="r", ports=(80,), local_ports=(15001,)),
                  VirtualService("node.local", node="n1", local_ports=(15002,))),
        routers=(VirtualRouter("r", routes_),), nodes=nodes,
        default_retry=pick(draw, [DEFAULT_RETRY, DEFAULT_RETRY, None,
                                            RetryPolicy(1, 200, http_events=("gateway-error",))]),
        default_timeouts=pick(draw, [Timeouts(), Timeouts(800, 0)]))


# ---------------------------------------------------------------------------------
# Requests derived from a route


def _near_misses(s):
    """Strings one edit away from `s` (never `s`): catch a comparison that is too loose
    (a prefix, suffix, substring or case-blind test where equality is meant)."""
    return [c for c in (s + "x", "x" + s, s[:-1], s.swapcase(), s.upper(), s.lower()) if c != s] or ["x", " "]


def _header_candidates(h):
    """(values that meet h's test, values that fail it), invert not yet applied."""
    if h.exact is not None:
        return [h.exact], _near_misses(h.exact)
    if h.prefix is not None:
        return ([h.prefix + t for t in ("", "x", "é")],
                [c for c in (*_near_misses(h.prefix), "") if not c.startswith(h.prefix)])
    if h.suffix is not None:
        return ([t + h.suffix for t in ("", "x", "😀")],
                [c for c in (*_near_misses(h.suffix), "") if not c.endswith(h.suffix)])
    if h.regex is not None:
        return HEADER_REGEXES[h.regex]
    if h.range is not None:
        lo, hi = h.range
        hits = [str(lo), str(hi - 1), str((lo + hi) // 2)] + ([f"+{lo}"] if lo >= 0 else [])
        # The bounds just outside come up most: the end is exclusive (Envoy Int64Range).
        return hits, [str(hi), str(hi), str(lo - 1), str(lo - 1), f"{lo}x", "", f" {lo}", "1" * 19, f"--{abs(lo)}"]
    return list(HVALUES), []  # present: any value meets it, only absence fails


def header_value(draw, h, hit):
    """A header value (or None: absent) for which condition `h` is `hit`, invert included."""
    meets, fails = _header_candidates(h)
    want = hit != h.invert
    if not want and (not fails or draw(st.integers(0, 3)) == 0):
        return pick(draw, [None, None, 7])  # absent, or not a header value at all
    v = pick(draw, meets if want else fails)
    if draw(st.integers(0, 4)) == 0:
        try:
            return v.encode("latin-1")  # bytes values decode as latin-1 in both
        except UnicodeEncodeError:
            pass
    return v


def _path_candidates(route):
    """(paths that meet the route's path condition, near misses), without a query."""
    m = route.match
    if isinstance(m, HttpMatch):
        if m.prefix is not None:
            p = m.prefix
            return [p + t for t in ("", "x", "/c", "é")], [c for c in (p[:-1], "/zz" + p) if not c.startswith(p)]
        if m.path_exact is not None:
            e = m.path_exact
            return [e], [c for c in (e + "x", e[:-1], e + "/") if c != e]
        if m.path_regex is not None:
            return PATH_REGEXES[m.path_regex]
    if isinstance(m, GrpcMatch) and m.service_name is not None:
        if m.method_name is not None:
            return [f"/{m.service_name}/{m.method_name}"], [f"/{m.service_name}/N", f"/{m.service_name}x/M"]
        return [f"/{m.service_name}/M", f"/{m.service_name}/"], [f"/{m.service_name}", "/pkg.X/M"]
    return ["/", "/a", "/pkg.S/M", ""], []


def query_string(draw, route, miss):
    """The query pairs meeting the route's query conditions; `miss` indexes one to break."""
    pairs = []
    query = getattr(route.match, "query", ())
    for j, q in enumerate(query):
        exact = "1" if q.exact is None else q.exact
        if j != miss:
            pairs.append(pick(draw, [f"{q.name}={exact}"] + ([q.name] if exact == "" or q.exact is None else [])))
        else:
            bad = pick(draw, [None, f"{q.name}={exact}x", f"{q.name}x={exact}", f"x{q.name}={exact}"]
                       + ([f"{q.name}="] if exact else []))
            if bad is not None:
                pairs.insert(0, bad)  # the first pair of a name is the one that counts
    if draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), "z=9")
    if not pairs:
        return pick(draw, ["", "", "?"])
    return "?" + "&".join(pairs)


@st.composite
def route_requests(draw, table):
    """A request aimed at one route of `table`: all conditions met, or one just missed."""
    route = pick(draw, table.routers[0].routes)
    m = route.match
    proto = C.PROTOCOLS[route.protocol]
    headers_ = getattr(m, "headers", None) or getattr(m, "metadata", ())
    conds = ["path", "port"] + [("header", i) for i in range(len(headers_))]
    if isinstance(m, HttpMatch):
        conds += ["method", "scheme"] + [("query", j) for j in range(len(m.query))]
    # Half the requests meet every condition; most others just miss one header.
    miss = draw(st.sampled_from([None, None, "header", "other"]))
    if miss == "header" and headers_:
        miss = ("header", draw(st.integers(0, len(headers_) - 1)))
    elif miss is not None:
        miss = pick(draw, conds)
    if m.port is None:
        port = pick(draw, [80, 81, 15001])
    else:
        port = m.port if miss != "port" else pick(draw, [p for p in (80, 81, 8080) if p != m.port])
    method = pick(draw, METHODS)
    scheme = pick(draw, ["http", "https"])
    if isinstance(m, HttpMatch):
        if m.method is not None:
            method = m.method if miss != "method" else pick(draw, [x for x in METHODS if x != m.method])
        if m.scheme is not None:
            scheme = m.scheme if miss != "scheme" else "http"
    meets, fails = _path_candidates(route)
    path = pick(draw, fails if miss == "path" and fails else meets)
    if isinstance(m, HttpMatch):
        path += query_string(draw, route, miss[1] if isinstance(miss, tuple) and miss[0] == "query" else -1)
    headers = {}
    for i, h in enumerate(headers_):
        v = header_value(draw, h, miss != ("header", i))
        if v is not None:
            headers[h.name.lower()] = v
    if draw(st.integers(0, 3)) == 0:
        headers[pick(draw, HNAMES)] = pick(draw, HVALUES)  # noise; may clash
    authority = pick(draw, ["svc.local"] * 6 + ["svc.local:80", "SVC.Local", "svc.local:81", ""])
    if authority == "":
        port = 15001  # the router's dedicated egress port
    elif draw(st.integers(0, 3)) == 0:
        port = 0  # no port of its own: the one its authority names
    if draw(st.integers(0, 5)) == 0:
        path = path.encode("utf-8")  # bytes: decoded as latin-1 by both
    return (proto, authority, port, method, scheme, path, headers)


def probe_requests(route):
    """Every candidate value of every condition of `route`, the others met: a
    deterministic sweep of near misses, cheap to play, added to each routing run."""
    m = route.match
    proto = C.PROTOCOLS[route.protocol]
    headers_ = getattr(m, "headers", None) or getattr(m, "metadata", ())
    query = getattr(m, "query", ())

    def met(h):
        meets, fails = _header_candidates(h)
        return (fails or [None])[0] if h.invert else meets[0]

    method = getattr(m, "method", None) or "GET"
    scheme = getattr(m, "scheme", None) or "http"
    port = 80 if m.port is None else m.port
    paths, misses = _path_candidates(route)
    pairs = [f"{q.name}={'1' if q.exact is None else q.exact}" for q in query]
    headers = {h.name.lower(): met(h) for h in headers_}

    def request(path=paths[0], hdrs=headers, qs=pairs):
        qs = [p for p in qs if p is not None]
        full = path + ("?" + "&".join(qs) if qs else "")
        return (proto, "svc.local", port, method, scheme, full, {k: v for k, v in hdrs.items() if v is not None})

    yield request()
    for p in (*paths, *misses):
        yield request(path=p)
    # The fault's own header conditions, each met and missed, the route's conditions met.
    for h in route.fault.headers if route.fault else ():
        meets, fails = _header_candidates(h)
        for v in (*meets, *fails, None):
            yield request(hdrs={**headers, h.name.lower(): v})
    for h in headers_:
        meets, fails = _header_candidates(h)
        for v in (*meets, *fails, None, 7):
            yield request(hdrs={**headers, h.name.lower(): v})
    for j, q in enumerate(query):
        exact = "1" if q.exact is None else q.exact
        for alt in (None, q.name, f"{q.name}=", f"{q.name}={exact}x", f"{q.name}x={exact}",
                    f"{q.name}={exact}x&{q.name}={exact}"):  # the first pair of a name counts
            yield request(qs=[*pairs[:j], alt, *pairs[j + 1:]])


random_requests = st.tuples(
    st.sampled_from([0, 0, 1, 2, 3]),
    st.sampled_from(["svc.local", "SVC.local:80", "svc.local:81", "node.local", "", "x", b"svc.local", b"\xff"]),
    st.sampled_from([80, 81, 15001, 15002, 0]),
    st.sampled_from(["GET", "POST", b"GET"]),
    st.sampled_from(["http", "https"]),
    st.sampled_from(["/", "/a", "/a/b?x=1", "/pkg.S/M", "/é", b"/ab", ""]),
    st.dictionaries(st.sampled_from(HNAMES), st.one_of(st.sampled_from(HVALUES), st.binary(max_size=2)), max_size=3),
)


def requests(table):
    """Mostly route-aimed requests; some random ones and some to the node-provided service."""
    node_service = st.tuples(st.sampled_from([0, 3]), st.sampled_from(["node.local", ""]), st.just(15002),
                             st.just("GET"), st.just("http"), st.just("/"), st.just({}))
    options = [random_requests, node_service]
    if table.routers[0].routes:
        options = [route_requests(table)] * 6 + options
    return st.one_of(*options)


# ---------------------------------------------------------------------------------
# Scripts


@dataclass(frozen=True)
class Scenario:
    """One differential run: a table, live endpoints per node, a seed and the script."""

    table: Table
    endpoints: tuple[int, ...]
    seed: int
    script: tuple
    locality: tuple[str, str, str] = ("", "", "")


@st.composite
def scenarios(draw):
    """A table and a script of decisions, attempt results, failure storms and churn."""
    table = draw(tables())
    reqs = requests(table)
    op = st.one_of(
        st.tuples(st.just("decide"), reqs, steps),
        st.tuples(st.just("result"), st.integers(0, 7), results, steps),
        # Repeated calls, each fed results until it finishes: drives consecutive
        # server errors (outlier detection), retries and, at length, the retry budget.
        st.tuples(st.just("calls"), reqs, st.lists(results, min_size=1, max_size=4).map(tuple), small_steps,
                  st.sampled_from([3, 8, 20, 60, 150])),
        # A storm: one failure, over and over, at most 1 ms apart. Hundreds of
        # retries inside the budget's 10 s window is what it takes to exhaust it.
        st.tuples(st.just("calls"), reqs, st.sampled_from(STORM_FAILURES).map(lambda r: (r,)),
                  st.sampled_from([0, MS]), st.sampled_from([60, 150, 400])),
        # Health checks: bit k of the mask fails endpoint k. Around half failing is
        # where panic mode (fewer than 50% available) switches on and off.
        st.tuples(st.just("set"), st.sampled_from(NODES), st.integers(0, 5),
                  st.one_of(st.just(0), st.integers(0, 31))),
        st.tuples(st.just("add"), st.sampled_from(NODES), st.integers(0, 6), st.booleans()),
        st.tuples(st.just("remove"), st.sampled_from(NODES), st.integers(0, 5)),
    )
    script = tuple(draw(st.lists(op, min_size=4, max_size=25)))
    counts = tuple(pick(draw, [0, 1, 2, 3, 3, 4, 5]) for _ in NODES)
    return Scenario(table, counts, draw(st.integers(0, 2**64 - 1)), script, pick(draw, ROUTER_LOCALITIES))


@st.composite
def routing_scenarios(draw):
    """A table and a run of requests aimed at its routes, a few ms apart, no results:
    many requests per table, so a wrong match shows as a wrong route."""
    table = draw(tables())
    script = tuple(("decide", req, step) for req, step in
                   draw(st.lists(st.tuples(requests(table), small_steps), min_size=3, max_size=15)))
    script += (("probe",),)
    counts = tuple(pick(draw, [1, 2, 3, 3, 4, 5]) for _ in NODES)
    return Scenario(table, counts, draw(st.integers(0, 2**64 - 1)), script, pick(draw, ROUTER_LOCALITIES))


# ---------------------------------------------------------------------------------
# The lockstep player


def _place(node, k):
    """Endpoint k's locality: the nodes start at different places, so each sees a mix."""
    return ENDPOINT_LOCALITIES[(k + NODES.index(node)) % len(ENDPOINT_LOCALITIES)]


def _endpoints(node, n, failing=0):
    """`n` endpoints of `node`; those whose bit is set in `failing` fail their health check."""
    return [Endpoint(f"{node}-{k}", f"10.0.0.{k}", 8080 + k, healthy=not failing >> k & 1, locality=_place(node, k))
            for k in range(n)]


def _retry_view(rd, d):
    ep = rd.endpoint
    return (rd.action, rd.why, rd.backoff_ns, rd.per_try_timeout_ns, None if ep is None else ep.id, summary(d))


def _state(r, now):
    """Every endpoint's balancing and outlier state, and each node's ejected count."""
    return [(n, r.ejected(n, now), [(e.id, e.pool_key, e.healthy, e.active, e.errors, e.first_error_ns,
                                     e.ejected_until_ns, e.times_ejected, e.priority) for e in r.endpoints(n)])
            for n in NODES]


def _guard(fn, *args):
    try:
        return fn(*args)
    except FastrouteError as err:
        return (type(err).__name__, err.args)


class Lockstep:
    """Both routers, fed the same calls; `same` fails at the first differing answer."""

    def __init__(self, sc, impls):
        self.routers = [cls(sc.table, seed=sc.seed, locality=sc.locality) for cls in impls]
        for r in self.routers:
            for name, n in zip(NODES, sc.endpoints):
                r.set_endpoints(name, _endpoints(name, n))
        self.now, self.live, self.where = T0, [], ""

    def same(self, what, views):
        first = views[0]
        for v in views[1:]:
            assert v == first, f"{self.where}: {what} differs\n  cython:    {first!r}\n  reference: {v!r}"
        return first

    def decide(self, req):
        ds = [r.decide(*req, self.now) for r in self.routers]
        self.same("decide", [summary(d) for d in ds])
        return ds

    def result(self, ds, kind, code):
        views = []
        for r, d in zip(self.routers, ds):
            rd = _guard(r.result, d, kind, code, self.now)
            views.append(rd if isinstance(rd, tuple) else _retry_view(rd, d))
        self.same("result", views)
        return ds[0].state == C.ST_DONE

    def check_state(self):
        self.same("endpoint state", [_state(r, self.now) for r in self.routers])


def play(sc, impls=(_core.Router, reference.Router)):
    """Play `sc` on each implementation in lockstep; AssertionError at the first difference."""
    ls = Lockstep(sc, impls)
    for i, op in enumerate(sc.script):
        ls.where = f"op {i} {op[0]}"
        kind = op[0]
        if kind == "decide":
            ls.now += op[2]
            ds = ls.decide(op[1])
            if ds[0].status == C.ROUTED:
                ls.live.append(ds)
        elif kind == "result" and ls.live:
            ls.now += op[3]
            j = op[1] % len(ls.live)
            if ls.result(ls.live[j], *op[2]):
                del ls.live[j]
        elif kind == "calls":
            _, req, outcomes, step, repeat = op
            for k in range(repeat):
                ls.where = f"op {i} calls #{k}"
                ls.now += step
                ds = ls.decide(req)
                if ds[0].status == C.ROUTED:
                    # Feed the outcomes in turn until the call finishes; retry counts
                    # are small, so a dozen results always end it.
                    for kind_, code in itertools.islice(itertools.cycle(outcomes), 12):
                        if ls.result(ds, kind_, code):
                            break
                        ls.now += step
                ls.check_state()
        elif kind == "probe":
            for route in sc.table.routers[0].routes:
                for req in probe_requests(route):
                    ls.where = f"op {i} probe {route.name} {req!r}"
                    ls.decide(req)
        elif kind == "set":
            for r in ls.routers:
                r.set_endpoints(op[1], _endpoints(op[1], op[2], op[3]))
        elif kind == "add":
            for r in ls.routers:
                r.add_endpoint(op[1], Endpoint(f"{op[1]}-{op[2]}", "10.0.1.1", 9000 + op[2], healthy=op[3],
                                               locality=_place(op[1], op[2] + 1)))
        elif kind == "remove":
            ls.same("remove", [r.remove_endpoint(op[1], f"{op[1]}-{op[2]}") for r in ls.routers])
        ls.check_state()
