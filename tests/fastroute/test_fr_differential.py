"""Hypothesis: the Cython core and the reference make identical decisions, seeded alike."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fastroute import _core, reference
from _fastroute import constants as C
from _fastroute.errors import FastrouteError
from _fastroute.spec import (
    Endpoint, GrpcMatch, HeaderMatch, HttpMatch, OutlierDetection, QueryMatch, RetryPolicy, Route, Table,
    Target, TcpMatch, Timeouts, VirtualNode, VirtualRouter, VirtualService,
)

from .helpers import summary

pytestmark = pytest.mark.fastroute

NODES = ("n0", "n1", "n2")
SEGMENTS = ("", "/", "/a", "/a/", "/a/b", "/ab", "/b", "/é", "/a?x=1", "/pkg.S/M")
HNAMES = ("x-a", "x-b", "te")
HVALUES = ("", "1", "12", "-3", "abc", "ab", "v1", "é", "1x")

words = st.sampled_from(SEGMENTS)
paths = st.lists(words, max_size=3).map(lambda ws: "".join(ws) or "/")


@st.composite
def header_match(draw):
    name = draw(st.sampled_from(HNAMES))
    kind = draw(st.sampled_from(["exact", "prefix", "suffix", "regex", "range", None]))
    kw = {}
    if kind == "range":
        lo = draw(st.integers(-5, 15))
        kw["range"] = (lo, lo + draw(st.integers(1, 10)))
    elif kind == "regex":
        kw["regex"] = draw(st.sampled_from(["a.*", "[0-9]+", "v1|ab"]))
    elif kind:
        kw[kind] = draw(st.sampled_from(HVALUES))
    return HeaderMatch(name, invert=draw(st.booleans()), **kw)


@st.composite
def route(draw, i):
    proto = draw(st.sampled_from(["http"] * 4 + ["http2", "grpc", "tcp"]))
    port = draw(st.sampled_from([None] * 4 + [80, 81]))
    if proto in ("http", "http2"):
        kind = draw(st.sampled_from(["prefix", "prefix", "path_exact", "path_regex"]))
        value = draw(st.sampled_from(["/", "/a", "/a/b", "/ab", "/b/"])) if kind != "path_regex" else "/a.*"
        query = draw(st.lists(st.builds(QueryMatch, st.sampled_from(["x", "y"]),
                                        st.sampled_from([None, "1", ""])), max_size=1))
        query = query if draw(st.integers(0, 3)) == 0 else []
        match = HttpMatch(**{kind: value}, method=draw(st.sampled_from([None] * 3 + ["GET", "POST"])),
                          scheme=draw(st.sampled_from([None] * 4 + ["https"])), port=port,
                          headers=tuple(draw(st.lists(header_match(), max_size=2))), query=tuple(query))
    elif proto == "grpc":
        svc = draw(st.sampled_from([None, "pkg.S", "pkg.T"]))
        meth = draw(st.sampled_from([None, "M"])) if svc else None
        match = GrpcMatch(service_name=svc, method_name=meth, port=port,
                          metadata=tuple(draw(st.lists(header_match(), max_size=1))))
    else:
        match = TcpMatch(port=port)
    weights = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3).filter(any))
    targets = tuple(Target(NODES[k], w) for k, w in enumerate(weights))
    retry = draw(st.sampled_from([None, RetryPolicy(2, 500, http_events=("server-error",),
                                                    grpc_events=("unavailable",), tcp_events=("connection-error",))]))
    return Route(f"r{i}", proto, match, targets, priority=draw(st.sampled_from([None, None, 0, 3])), retry=retry,
                 timeouts=draw(st.sampled_from([None, Timeouts(1_000, 0), Timeouts(0, 10)])))


@st.composite
def tables(draw):
    n = draw(st.integers(0, 8))
    routes = tuple(draw(route(i)) for i in range(n))
    if draw(st.integers(0, 4)):  # mostly: a catch-all per protocol, so most requests route
        w = (Target("n0", 1), Target("n1", 1))
        routes += (Route("all-http", "http", HttpMatch(prefix="/"), w), Route("all-h2", "http2", HttpMatch(prefix="/"), w),
                   Route("all-grpc", "grpc", GrpcMatch(), w), Route("all-tcp", "tcp", TcpMatch(), w))
    od = OutlierDetection(2, 1_000, 5_000, draw(st.sampled_from([0, 34, 50, 100])))
    nodes = tuple(VirtualNode(name, lb=draw(st.sampled_from(["round_robin", "least_request"])),
                              outlier=draw(st.sampled_from([None, od])), identity=f"id-{name}") for name in NODES)
    return Table(
        services=(VirtualService("svc.local", router="r", ports=(80,), local_ports=(15001,)),
                  VirtualService("node.local", node="n1", local_ports=(15002,))),
        routers=(VirtualRouter("r", routes),), nodes=nodes)


requests = st.tuples(
    st.sampled_from([0] * 4 + [1, 2, 3]),
    st.sampled_from(["svc.local"] * 6 + ["SVC.local:80", "svc.local:81", "node.local", "", "x", b"svc.local", b"\xff"]),
    st.sampled_from([80, 81, 15001, 15002, 0]),
    st.sampled_from(["GET"] * 3 + ["POST", b"GET"]),
    st.sampled_from(["http"] * 3 + ["https"]),
    st.one_of(paths, paths.map(str.encode)),
    st.dictionaries(st.sampled_from(HNAMES), st.one_of(st.sampled_from(HVALUES), st.binary(max_size=3)),
                    min_size=1, max_size=3),
)
results = st.tuples(st.sampled_from([0, 0, 0, 1, 1, 2, 3, 4, 5, 6]),
                    st.sampled_from([0, 200, 404, 409, 500, 500, 503, 503, 504, 1, 4, 13, 14, 14]))
ops = st.lists(st.one_of(
    st.tuples(st.just("decide"), requests, st.integers(0, 3_000)),
    st.tuples(st.just("result"), results, st.integers(0, 3_000)),
    st.tuples(st.just("result"), results, st.integers(0, 3)),
    st.tuples(st.just("churn"), st.sampled_from(NODES), st.integers(0, 4)),
), max_size=60)


def _run(cls, table, seed, script):
    """Play `script` on a fresh router of `cls`; return everything it answered."""
    r = cls(table, seed=seed)
    for name in NODES:
        r.set_endpoints(name, [Endpoint(f"{name}-{k}", "10.0.0.1", 80) for k in range(3)])
    out, live, now = [], [], 10**12
    for op in script:
        if op[0] == "decide":
            now += op[2] * 1_000_000
            d = r.decide(*op[1], now)
            if d.status == C.ROUTED:
                live.append(d)
            out.append(summary(d))
        elif op[0] == "result" and live:
            now += op[2] * 1_000_000
            d = live[-1]
            try:
                rd = r.result(d, op[1][0], op[1][1], now)
                out.append((rd.action, rd.why, rd.backoff_ns, rd.per_try_timeout_ns, rd.endpoint.id, summary(d)))
            except FastrouteError as err:
                out.append((type(err).__name__, err.args))
            if d.state == C.ST_DONE:
                live.pop()
        elif op[0] == "churn":
            r.set_endpoints(op[1], [Endpoint(f"{op[1]}-{k}", "10.0.0.1", 80) for k in range(op[2])])
    out.append([(e.id, e.active, e.ejected_until_ns, e.times_ejected) for n in NODES for e in r.endpoints(n)])
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.integers(0, 2**64 - 1), ops)
def test_identical_decisions(table, seed, script):
    assert _run(_core.Router, table, seed, script) == _run(reference.Router, table, seed, script)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3), st.one_of(st.text(max_size=40), st.binary(max_size=40), st.none(), st.integers()),
       st.one_of(st.integers(-2, 70_000), st.text(max_size=3)), st.one_of(st.text(max_size=8), st.binary(max_size=8)),
       st.text(max_size=6), st.one_of(st.text(max_size=300), st.binary(max_size=300)),
       st.one_of(st.none(), st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=50), st.binary(max_size=50),
                                                                          st.integers()), max_size=6)))
def test_fuzz_random_requests_never_crash_and_agree(protocol, authority, port, method, scheme, path, headers):
    """Random values of every shape: each gets a decision, the same from both."""
    from bench.tables import make_router

    got = []
    for cls in (_core.Router, reference.Router):
        r = make_router(cls, 30, seed=3)
        got.append(summary(r.decide(protocol, authority, port, method, scheme, path, headers, 10**12)))
    assert got[0] == got[1]
    assert got[0][0] in (C.ROUTED, C.NO_SERVICE, C.NO_ROUTE, C.NO_ENDPOINT, C.BAD_REQUEST)
