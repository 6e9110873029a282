"""meshd/compile.py: App Mesh resources (protobuf) → `_fastroute` tables, on the corpus and
on focused cases; decisions come from the compiled Cython router."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import _fastroute as fr
from _fastroute import constants as C
from meshd.api.validate import parse_json
from meshd.cli.meshctl import kind_of_document
from meshd.compile import MeshSnapshot, RouteCache, compile_mesh, compile_route, duration_ms, spiffe_id
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import spec_pb2

CORPUS = Path(__file__).parent / "corpus" / "valid"


def snapshot_from_corpus(mesh: str) -> MeshSnapshot:
    snap = MeshSnapshot(mesh)
    for f in sorted(CORPUS.glob("*.json")):
        doc = json.loads(f.read_text())
        if doc["meshName"] != mesh:
            continue
        kind = kind_of_document(doc)
        data = kind.data_cls()
        for fld in kind.id_fields:
            setattr(data, fld, doc[_camel(fld)])
        data.spec.CopyFrom(parse_json(kind.spec_cls, doc["spec"]))
        if kind.name == "virtualNode":
            snap.nodes[data.virtual_node_name] = data
        elif kind.name == "virtualService":
            snap.services[data.virtual_service_name] = data
        elif kind.name == "virtualRouter":
            snap.routers[data.virtual_router_name] = data
        elif kind.name == "route":
            snap.routes[(data.virtual_router_name, data.route_name)] = data
    return snap


def _camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def test_whole_corpus_compiles_without_problems():
    for mesh in ("shop", "ledger"):
        compiled = compile_mesh(snapshot_from_corpus(mesh))
        assert compiled.problems == ()
        router = fr.Router(compiled.table, seed=7)  # the compiled core accepts it
        assert router is not None
        snap = snapshot_from_corpus(mesh)
        with_provider = {n for n, d in snap.services.items() if d.spec.HasField("provider")}
        assert {s.name for s in compiled.table.services} == with_provider


def _route(doc: dict):
    return compile_route("r", "x", parse_json(spec_pb2.RouteSpec, doc))


def test_http_route_fields_are_carried():
    r = _route({"priority": 7, "httpRoute": {
        "match": {"prefix": "/api", "method": "POST", "scheme": "https", "port": 8080,
                  "headers": [{"name": "X-User", "invert": True, "match": {"range": {"start": 1, "end": 5}}},
                              {"name": "x-canary", "match": {"regex": "^on$"}}],
                  "queryParameters": [{"name": "v", "match": {"exact": "2"}}]},
        "action": {"weightedTargets": [{"virtualNode": "a", "weight": 3, "port": 8080}, {"virtualNode": "b", "weight": 0}]},
        "retryPolicy": {"maxRetries": 4, "perRetryTimeout": {"unit": "s", "value": 2},
                        "httpRetryEvents": ["gateway-error"], "tcpRetryEvents": ["connection-error"]},
        "timeout": {"perRequest": {"unit": "ms", "value": 1500}}}})
    assert r.protocol == "http" and r.priority == 7
    assert r.match.prefix == "/api" and r.match.method == "POST" and r.match.scheme == "https" and r.match.port == 8080
    assert r.match.headers[0] == fr.HeaderMatch(name="x-user", range=(1, 5), invert=True)
    assert r.match.headers[1] == fr.HeaderMatch(name="x-canary", regex="^on$")
    assert r.match.query == (fr.QueryMatch(name="v", exact="2"),)
    assert r.targets == (fr.Target("a", 3, 8080), fr.Target("b", 0, None))
    assert r.retry == fr.RetryPolicy(max_retries=4, per_retry_timeout_ms=2000, http_events=("gateway-error",),
                                     tcp_events=("connection-error",))
    assert r.timeouts == fr.Timeouts(per_request_ms=1500, idle_ms=300_000)


def test_grpc_and_tcp_routes_and_defaults():
    g = _route({"grpcRoute": {"match": {"serviceName": "shop.Api", "methodName": "Get",
                                        "metadata": [{"name": "tenant", "match": {"exact": "a"}}]},
                              "action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}})
    assert g.protocol == "grpc" and g.retry is None and g.timeouts is None  # table defaults apply
    assert g.match == fr.GrpcMatch(service_name="shop.Api", method_name="Get",
                                   metadata=(fr.HeaderMatch(name="tenant", exact="a"),))
    t = _route({"tcpRoute": {"action": {"weightedTargets": [{"virtualNode": "db", "weight": 1}]},
                             "timeout": {"idle": {"unit": "s", "value": 60}}}})
    assert t.protocol == "tcp" and t.retry == fr.NO_RETRY and t.timeouts.idle_ms == 60_000


def test_durations():
    assert duration_ms(spec_pb2.Duration(unit="s", value=3), 1) == 3000
    assert duration_ms(spec_pb2.Duration(unit="ms", value=250), 1) == 250
    assert duration_ms(spec_pb2.Duration(), 42) == 42
    assert duration_ms(None, 42) == 42


def _node(name, **listener):
    data = pb.VirtualNodeData(mesh_name="m", virtual_node_name=name)
    data.spec.CopyFrom(parse_json(spec_pb2.VirtualNodeSpec, {"listeners": [
        {"portMapping": {"port": 8080, "protocol": "http"}, **listener}]}))
    return data


def _instance(node, i, port, health="HEALTHY"):
    return pb.Instance(mesh_name="m", virtual_node_name=node, instance_id=i, address="127.0.0.1", port=port,
                       health=health)


def test_compiled_mesh_routes_with_weights_and_skips_unhealthy_instances():
    snap = MeshSnapshot("m")
    snap.nodes = {"v1": _node("v1", outlierDetection={"maxServerErrors": 3, "interval": {"unit": "s", "value": 5},
                                                      "baseEjectionDuration": {"unit": "s", "value": 10},
                                                      "maxEjectionPercent": 50},
                              connectionPool={"http": {"maxConnections": 7, "maxPendingRequests": 9}}),
                  "v2": _node("v2")}
    snap.routers = {"r": pb.VirtualRouterData(mesh_name="m", virtual_router_name="r",
                                              spec=parse_json(spec_pb2.VirtualRouterSpec,
                                                              {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}))}
    snap.routes = {("r", "canary"): pb.RouteData(mesh_name="m", virtual_router_name="r", route_name="canary",
                                                 spec=parse_json(spec_pb2.RouteSpec, {"httpRoute": {
                                                     "match": {"prefix": "/"},
                                                     "action": {"weightedTargets": [{"virtualNode": "v1", "weight": 90},
                                                                                    {"virtualNode": "v2", "weight": 10}]}}}))}
    snap.services = {"api.m.local": pb.VirtualServiceData(
        mesh_name="m", virtual_service_name="api.m.local",
        spec=parse_json(spec_pb2.VirtualServiceSpec, {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}))}
    snap.instances = {"v1": {"a": _instance("v1", "a", 9001), "b": _instance("v1", "b", 9002, "UNHEALTHY")},
                      "v2": {"c": _instance("v2", "c", 9003)}}
    compiled = compile_mesh(snap, trust_domain="example.org")
    assert compiled.problems == ()
    # The unhealthy one stays, marked, for the router's panic threshold; with half of v1
    # healthy the router passes it over (the picks below).
    assert [(e.id, e.healthy) for e in compiled.endpoints["v1"]] == [("a", True), ("b", False)]
    v1 = next(n for n in compiled.table.nodes if n.name == "v1")
    assert v1.identity == spiffe_id("example.org", "m", "v1") == "spiffe://example.org/mesh/m/virtualNode/v1"
    assert v1.outlier == fr.OutlierDetection(3, 5000, 10_000, 50)
    assert v1.pool == fr.ConnectionPool(max_connections=7, max_pending_requests=9)
    router = fr.Router(compiled.table, seed=11)
    for node, eps in compiled.endpoints.items():
        router.set_endpoints(node, list(eps))
    picks = Counter()
    for i in range(2000):
        d = router.decide(C.PROTO_HTTP, "api.m.local:8080", 8080, "GET", "http", "/x", {}, 1_000_000 + i)
        assert d.status == C.ROUTED
        picks[(d.target, d.endpoint.port)] += 1
        router.result(d, C.RESULT_HTTP, 200, 1_000_000 + i)
    assert set(picks) == {("v1", 9001), ("v2", 9003)}
    assert 0.07 < picks[("v2", 9003)] / 2000 < 0.13


def test_a_bad_route_is_left_out_and_reported_not_fatal():
    snap = MeshSnapshot("m")
    snap.nodes = {"v1": _node("v1")}
    snap.routers = {"r": pb.VirtualRouterData(mesh_name="m", virtual_router_name="r")}
    good = parse_json(spec_pb2.RouteSpec, {"httpRoute": {"match": {"prefix": "/"},
                                                         "action": {"weightedTargets": [{"virtualNode": "v1", "weight": 1}]}}})
    bad = parse_json(spec_pb2.RouteSpec, {"httpRoute": {"match": {"prefix": "/", "headers": [{"name": "x", "match": {"regex": "("}}]},
                                                        "action": {"weightedTargets": [{"virtualNode": "v1", "weight": 1}]}}})
    zero = parse_json(spec_pb2.RouteSpec, {"httpRoute": {"match": {"prefix": "/z"},
                                                         "action": {"weightedTargets": [{"virtualNode": "v1", "weight": 0}]}}})
    snap.routes = {("r", "good"): pb.RouteData(route_name="good", spec=good),
                   ("r", "bad"): pb.RouteData(route_name="bad", spec=bad),
                   ("r", "zero"): pb.RouteData(route_name="zero", spec=zero)}
    compiled = compile_mesh(snap)
    assert [r.name for r in compiled.table.routers[0].routes] == ["good"]
    problems = {p.resource: p for p in compiled.problems}
    assert problems["routes/m/r/bad"].field == "spec.httpRoute.match.headers[0].match.regex"
    assert "routes/m/r/zero" in problems


def _http_route(name, prefix, node="v1"):
    return pb.RouteData(route_name=name, spec=parse_json(spec_pb2.RouteSpec, {"httpRoute": {
        "match": {"prefix": prefix}, "action": {"weightedTargets": [{"virtualNode": node, "weight": 1}]}}}))


def test_a_route_cache_recompiles_only_replaced_routes_and_forgets_deleted_ones():
    """A snapshot replaces a changed route's message and keeps the others: compiling again
    with the mesh's RouteCache reuses the unchanged routes' compiled objects, compiles the
    replaced one, reports a cached error again, and drops deleted routes from the cache."""
    snap = MeshSnapshot("m")
    snap.nodes = {"v1": _node("v1")}
    snap.routers = {"r": pb.VirtualRouterData(mesh_name="m", virtual_router_name="r", spec=parse_json(
        spec_pb2.VirtualRouterSpec, {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}))}
    snap.services = {"api.m.local": pb.VirtualServiceData(mesh_name="m", virtual_service_name="api.m.local", spec=parse_json(
        spec_pb2.VirtualServiceSpec, {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}))}
    snap.routes = {("r", "a"): _http_route("a", "/a"), ("r", "b"): _http_route("b", "/b"),
                   ("r", "bad"): _http_route("bad", "/bad", node="nowhere")}
    cache = RouteCache()
    first = compile_mesh(snap, cache=cache)
    by_name = {r.name: r for r in first.table.routers[0].routes}
    assert set(by_name) == {"a", "b"} and [p.resource for p in first.problems] == ["routes/m/r/bad"]

    snap.routes[("r", "b")] = _http_route("b", "/b2")      # replaced, as a watch event does
    del snap.routes[("r", "a")]
    snap.routes[("r", "c")] = _http_route("c", "/c")
    second = compile_mesh(snap, cache=cache)
    again = {r.name: r for r in second.table.routers[0].routes}
    assert again["b"].match.prefix == "/b2" and again["c"].match.prefix == "/c"
    assert [p.resource for p in second.problems] == ["routes/m/r/bad"]   # the cached error, reported again
    snap.routes[("r", "a")] = _http_route("a", "/a")
    third = compile_mesh(snap, cache=cache)
    assert {r.name: r for r in third.table.routers[0].routes}["a"] is not by_name["a"], \
        "a deleted route's entry is gone: re-created, it is compiled anew"
    assert {r.name: r for r in third.table.routers[0].routes}["c"] is again["c"], "unchanged: reused"
    # The compile's own lowered table builds a router that routes like one built from the table.
    from _fastroute import reference
    for table, impl in ((third.lowered, fr.Router), (third.table, fr.Router), (third.lowered, reference.Router)):
        router = impl(table)
        router.set_endpoints("v1", [fr.Endpoint(id="i", address="127.0.0.1", port=1)])
        d = router.decide(C.PROTO_HTTP, "api.m.local:8080", 8080, "GET", "http", "/c/x", None, 1)
        assert d.status == C.ROUTED and d.route == "c", d


def test_values_app_mesh_accepts_beyond_the_routers_range_are_clamped_not_dropped():
    """App Mesh's `long`s reach 2**63; the router holds durations up to 2**40 ms (35 years) and
    at most 1000 retries. A route with a longer timeout or more retries is a valid App Mesh
    route and must be served (clamped to what is the same in practice), never left out."""
    snap = MeshSnapshot("m")
    snap.nodes = {"v1": _node("v1", timeout={"http": {"perRequest": {"unit": "s", "value": 2**45},
                                                       "idle": {"unit": "ms", "value": 2**62}}},
                              outlierDetection={"maxServerErrors": 2**40, "interval": {"unit": "s", "value": 2**41},
                                                "baseEjectionDuration": {"unit": "s", "value": 30},
                                                "maxEjectionPercent": 10})}
    snap.routers = {"r": pb.VirtualRouterData(mesh_name="m", virtual_router_name="r")}
    spec = parse_json(spec_pb2.RouteSpec, {"httpRoute": {
        "match": {"prefix": "/", "headers": [{"name": "x-n", "match": {"range": {"start": 0, "end": 2**63 - 1}}}]},
        "action": {"weightedTargets": [{"virtualNode": "v1", "weight": 1}]},
        "retryPolicy": {"maxRetries": 5000, "perRetryTimeout": {"unit": "s", "value": 2**50},
                        "httpRetryEvents": ["server-error"]},
        "timeout": {"perRequest": {"unit": "ms", "value": 2**60}, "idle": {"unit": "s", "value": 2**40}}}})
    snap.routes = {("r", "long"): pb.RouteData(route_name="long", spec=spec)}
    compiled = compile_mesh(snap)
    assert compiled.problems == ()
    (route,) = compiled.table.routers[0].routes
    assert route.retry.max_retries == 1000 and route.retry.per_retry_timeout_ms == 2**40
    assert route.timeouts.per_request_ms == route.timeouts.idle_ms == 2**40
    assert route.match.headers[0].range == (0, 2**62)
    v1 = compiled.table.nodes[0]
    assert v1.outlier.max_server_errors == 2**31 and v1.outlier.interval_ms == 2**40
    fr.Router(compiled.table, seed=1)  # and the router takes the table
