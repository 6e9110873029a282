"""meshd/gateway.py: a virtual gateway's routes compiled from App Mesh JSON, then matched.

Each test states the App Mesh behaviour it checks; the routes are built from App Mesh
JSON through the same parser the admin API uses.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import pytest

from meshd.api.validate import parse_json
from meshd.gateway import compile_gateway, request_host
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import spec_pb2

CORPUS = Path(__file__).parent / "corpus" / "valid"
SVC = "shop.shop.local"

# ---------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------


def gateway(listeners=(("http", 8080), ("http2", 8081), ("grpc", 9090)), name="edge") -> pb.VirtualGatewayData:
    spec = {"listeners": [{"portMapping": {"port": port, "protocol": proto}} for proto, port in listeners]}
    data = pb.VirtualGatewayData(mesh_name="shop", virtual_gateway_name=name)
    data.spec.CopyFrom(parse_json(spec_pb2.VirtualGatewaySpec, spec))
    return data


def route_data(spec: dict, gw: str = "edge") -> pb.GatewayRouteData:
    data = pb.GatewayRouteData(mesh_name="shop", virtual_gateway_name=gw)
    data.spec.CopyFrom(parse_json(spec_pb2.GatewayRouteSpec, spec))
    return data


def http(match: dict, service: str = SVC, rewrite: dict | None = None, priority: int | None = None,
         kind: str = "httpRoute", port: int | None = None) -> dict:
    """An App Mesh GatewayRouteSpec for an HTTP (or, with kind, HTTP/2) gateway route."""
    target: dict = {"virtualService": {"virtualServiceName": service}}
    if port is not None:
        target["port"] = port
    action: dict = {"target": target}
    if rewrite is not None:
        action["rewrite"] = rewrite
    spec: dict = {kind: {"match": match, "action": action}}
    if priority is not None:
        spec["priority"] = priority
    return spec


def grpc(match: dict, service: str = SVC, rewrite: dict | None = None, priority: int | None = None) -> dict:
    action: dict = {"target": {"virtualService": {"virtualServiceName": service}}}
    if rewrite is not None:
        action["rewrite"] = rewrite
    spec: dict = {"grpcRoute": {"match": match, "action": action}}
    if priority is not None:
        spec["priority"] = priority
    return spec


def table(**specs: dict):
    """A compiled gateway `edge` from route name=spec keyword arguments; no problems allowed."""
    t = compile_gateway("shop", gateway(), {name: route_data(s) for name, s in specs.items()})
    assert t.problems == ()
    return t


def get(t, path="/", authority="www.example.com", port=8080, method="GET", headers=None, protocol="http"):
    return t.match(protocol, authority, port, method, path, headers or {})


def routed(t, **request) -> str | None:
    d = get(t, **request)
    return None if d is None else d.route


# ---------------------------------------------------------------------------------------
# Matching, one condition kind at a time
# ---------------------------------------------------------------------------------------

# One row per App Mesh match condition: the route's match, then requests and whether the
# route takes each (a request is `get` keywords: path, authority, headers, ...).
MATCH_CASES = {
    "prefix matches the start of the path, case-sensitively": ({"prefix": "/shop/"}, [
        ({"path": "/shop/items"}, True), ({"path": "/shop/"}, True), ({"path": "/shop"}, False),
        ({"path": "/SHOP/items"}, False), ({"path": "/other/shop/"}, False)]),
    "exact path ignores the query string and nothing else": ({"path": {"exact": "/health"}}, [
        ({"path": "/health"}, True), ({"path": "/health?verbose=1"}, True), ({"path": "/health/"}, False),
        ({"path": "/healthz"}, False)]),
    "regex must match the whole path": ({"path": {"regex": "/api/v[0-9]+/.*"}}, [
        ({"path": "/api/v2/orders"}, True), ({"path": "/api/v2/orders?x=1"}, True),
        ({"path": "/x/api/v2/orders"}, False), ({"path": "/api/vX/orders"}, False)]),
    "exact hostname: no case, no port": ({"hostname": {"exact": "WWW.Example.com"}}, [
        ({"authority": "www.example.com"}, True), ({"authority": "WWW.EXAMPLE.COM:8080"}, True),
        ({"authority": "api.example.com"}, False), ({"authority": "www.example.com.evil"}, False)]),
    # Envoy's "*<suffix>" wildcard, which the suffix becomes, never matches the empty string.
    "suffix hostname needs a character before it": ({"hostname": {"suffix": ".example.com"}}, [
        ({"authority": "a.example.com"}, True), ({"authority": "a.b.Example.COM:443"}, True),
        ({"authority": ".example.com"}, False), ({"authority": "example.com"}, False),
        ({"authority": "example.com.evil"}, False)]),
    "suffix hostname in wildcard spelling": ({"hostname": {"suffix": "*.example.com"}}, [
        ({"authority": "a.example.com"}, True), ({"authority": "example.com"}, False)]),
    "headers: exact, range (end exclusive), inverted presence": ({"prefix": "/", "headers": [
        {"name": "X-Env", "match": {"exact": "prod"}},
        {"name": "x-build", "match": {"range": {"start": 10, "end": 20}}},
        {"name": "x-canary", "invert": True},
    ]}, [
        ({"headers": {"x-env": "prod", "x-build": "19"}}, True),
        ({"headers": {"x-env": "prod2", "x-build": "19"}}, False),
        ({"headers": {"x-env": "prod", "x-build": "20"}}, False),
        ({"headers": {"x-env": "prod", "x-build": "19", "x-canary": "1"}}, False),
        ({"headers": {"x-env": "prod"}}, False)]),
    "query parameters: exact value and presence": ({"prefix": "/", "queryParameters": [
        {"name": "lang", "match": {"exact": "en"}}, {"name": "debug"}]}, [
        ({"path": "/p?lang=en&debug"}, True), ({"path": "/p?debug=1&lang=en"}, True),
        ({"path": "/p?lang=de&debug"}, False), ({"path": "/p?lang=en"}, False), ({"path": "/p"}, False)]),
}


@pytest.mark.parametrize(("match", "requests"), MATCH_CASES.values(), ids=MATCH_CASES.keys())
def test_match_condition(match, requests):
    t = table(r=http(match))
    assert [(req, routed(t, **req) == "r") for req, _ in requests] == requests


def test_method_and_port():
    t = table(put=http({"prefix": "/", "method": "PUT", "port": 8080}))
    assert routed(t, method="PUT") == "put"
    assert routed(t, method="GET") is None
    two = compile_gateway("shop", gateway((("http", 8080), ("http", 8090))),
                          {"put": route_data(http({"prefix": "/", "port": 8080}))})
    assert get(two, port=8080).route == "put"
    assert get(two, port=8090) is None


def test_routes_serve_only_their_own_protocol():
    t = table(h1=http({"prefix": "/"}), h2=http({"prefix": "/"}, kind="http2Route"),
              rpc=grpc({"serviceName": "shop.v1.Cart"}))
    assert routed(t, protocol="http") == "h1"
    assert routed(t, protocol="http2", port=8081) == "h2"
    assert routed(t, protocol="grpc", port=9090, path="/shop.v1.Cart/Add") == "rpc"
    with pytest.raises(ValueError):
        get(t, protocol="tcp")


def test_grpc_routes_by_service_name_hostname_and_metadata():
    t = table(
        cart=grpc({"serviceName": "shop.v1.Cart", "metadata": [{"name": "x-tenant", "match": {"prefix": "ac"}}]}),
        other=grpc({"hostname": {"exact": "rpc.example.com"}}),
    )
    call = dict(protocol="grpc", port=9090, method="POST", authority="rpc.example.com")
    assert routed(t, path="/shop.v1.Cart/Add", headers={"x-tenant": "acme"}, **call) == "cart"
    # Not the service's prefix: "/shop.v1.CartX/Add" names another service.
    assert routed(t, path="/shop.v1.CartX/Add", headers={"x-tenant": "acme"}, **call) == "other"
    assert routed(t, path="/shop.v1.Cart/Add", headers={"x-tenant": "bob"}, **call) == "other"
    assert routed(t, path="/shop.v1.Cart/Add", headers={"x-tenant": "bob"},
                  **{**call, "authority": "x.example.com"}) is None


def test_no_route_matches():
    t = table(shop=http({"prefix": "/shop/"}))
    assert get(t, path="/cart") is None
    assert compile_gateway("shop", gateway(), {}).match("http", "h", 8080, "GET", "/", {}) is None


# ---------------------------------------------------------------------------------------
# Precedence
# ---------------------------------------------------------------------------------------


def test_explicit_priority_wins_lowest_number_first_over_specificity():
    t = table(
        catch_all=http({"prefix": "/"}, priority=1),
        exact=http({"path": {"exact": "/shop/cart"}}, priority=5),
        shop=http({"prefix": "/shop/"}, priority=3),
    )
    assert t.order == ("catch_all", "shop", "exact")
    assert routed(t, path="/shop/cart") == "catch_all"


def test_priority_zero_is_the_highest():
    t = table(zero=http({"prefix": "/"}, priority=0), one=http({"prefix": "/"}, priority=1))
    assert routed(t, path="/x") == "zero"


def test_prioritized_routes_precede_unprioritized_ones():
    t = table(specific=http({"path": {"exact": "/a"}}), loose=http({"prefix": "/"}, priority=1000))
    assert routed(t, path="/a") == "loose"


def test_unprioritized_the_longest_prefix_wins():
    # App Mesh user guide: with prefixes /chapter and /, "/chapter/" goes to /chapter.
    t = table(root=http({"prefix": "/"}), chapter=http({"prefix": "/chapter"}))
    assert routed(t, path="/chapter/") == "chapter"
    assert routed(t, path="/page") == "root"


def test_unprioritized_exact_over_regex_over_prefix_over_hostname_only():
    t = table(
        host_only=http({"hostname": {"exact": "www.example.com"}}),
        prefix=http({"prefix": "/a"}),
        regex=http({"path": {"regex": "/a.*"}}),
        exact=http({"path": {"exact": "/a/b"}}),
    )
    assert t.order == ("exact", "regex", "prefix", "host_only")
    assert routed(t, path="/a/b") == "exact"
    assert routed(t, path="/a/c") == "regex"
    assert routed(t, path="/ab?") == "regex"  # the regex sees the path without "?"
    assert routed(t, path="/b") == "host_only"


def test_unprioritized_ties_go_to_the_more_specific_hostname_then_more_conditions():
    t = table(
        plain=http({"prefix": "/"}),
        suffix=http({"prefix": "/", "hostname": {"suffix": ".example.com"}}),
        longer_suffix=http({"prefix": "/", "hostname": {"suffix": ".www.example.com"}}),
        exact_host=http({"prefix": "/", "hostname": {"exact": "api.example.com"}}),
        with_header=http({"prefix": "/", "headers": [{"name": "x-beta"}]}),
    )
    assert t.order == ("exact_host", "longer_suffix", "suffix", "with_header", "plain")
    assert routed(t, authority="api.example.com") == "exact_host"
    assert routed(t, authority="a.www.example.com") == "longer_suffix"
    assert routed(t, authority="b.example.com") == "suffix"
    assert routed(t, authority="other.net", headers={"x-beta": "1"}) == "with_header"
    assert routed(t, authority="other.net") == "plain"


def test_a_better_route_that_fails_its_conditions_falls_through_to_the_next():
    t = table(
        beta=http({"prefix": "/shop/", "headers": [{"name": "x-beta", "match": {"exact": "1"}}]}, service="beta.local"),
        shop=http({"prefix": "/shop/"}, service="shop.local"),
        root=http({"prefix": "/"}, service="root.local"),
    )
    assert get(t, path="/shop/x", headers={"x-beta": "1"}).virtual_service == "beta.local"
    assert get(t, path="/shop/x").virtual_service == "shop.local"
    assert get(t, path="/cart").virtual_service == "root.local"


def test_order_does_not_depend_on_listing_order():
    specs = {"b": http({"prefix": "/"}), "a": http({"prefix": "/"}), "c": http({"prefix": "/x"})}
    forward = compile_gateway("shop", gateway(), {k: route_data(v) for k, v in specs.items()})
    backward = compile_gateway("shop", gateway(), {k: route_data(v) for k, v in reversed(specs.items())})
    assert forward.order == backward.order == ("c", "a", "b")


# ---------------------------------------------------------------------------------------
# Rewrites
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "request_path", "upstream"), [
    ("/shop/", "/shop/items", "/items"),
    ("/shop/", "/shop/", "/"),
    ("/shop/", "/shop/items?page=2", "/items?page=2"),
    # The user guide's examples for prefix /chapter: the slash is not doubled.
    ("/chapter", "/chapter/page", "/page"),
    ("/chapter", "/chapter1", "/1"),
    ("/chapter", "/chapter", "/"),
    ("/", "/chapter/page", "/chapter/page"),
])
def test_default_prefix_rewrite_replaces_the_matched_prefix_with_slash(prefix, request_path, upstream):
    t = table(r=http({"prefix": prefix}))
    assert get(t, path=request_path).path == upstream
    enabled = table(r=http({"prefix": prefix}, rewrite={"prefix": {"defaultPrefix": "ENABLED"}}))
    assert get(enabled, path=request_path).path == upstream


def test_default_prefix_disabled_keeps_the_path():
    t = table(r=http({"prefix": "/red/"}, rewrite={"prefix": {"defaultPrefix": "DISABLED"}}))
    assert get(t, path="/red/tell?x=1").path == "/red/tell?x=1"


def test_explicit_prefix_value_replaces_the_matched_prefix():
    # The App Mesh walkthrough: prefix /maroon/ rewritten to /red/.
    t = table(r=http({"prefix": "/maroon/"}, rewrite={"prefix": {"value": "/red/"}}))
    assert get(t, path="/maroon/tell?fishes=nemo").path == "/red/tell?fishes=nemo"


def test_exact_path_rewrite_keeps_the_query_string():
    t = table(r=http({"path": {"exact": "/api/health"}}, rewrite={"path": {"exact": "/ping"}}))
    assert get(t, path="/api/health").path == "/ping"
    assert get(t, path="/api/health?deep=1").path == "/ping?deep=1"


def test_exact_and_regex_paths_and_hostname_only_routes_keep_the_path_by_default():
    t = table(
        exact=http({"path": {"exact": "/e"}}),
        regex=http({"path": {"regex": "/r/.*"}}),
        host=http({"hostname": {"exact": "h.example.com"}}),
    )
    assert get(t, path="/e").path == "/e"
    assert get(t, path="/r/x").path == "/r/x"
    assert get(t, path="/any/thing", authority="h.example.com").path == "/any/thing"


def test_default_target_hostname_rewrites_the_authority_to_the_virtual_service():
    t = table(r=http({"prefix": "/"}, service="web.shop.local", port=8080))
    d = get(t, authority="www.example.com:8080")
    assert (d.authority, d.virtual_service, d.port) == ("web.shop.local", "web.shop.local", 8080)
    enabled = table(r=http({"prefix": "/"}, rewrite={"hostname": {"defaultTargetHostname": "ENABLED"}}))
    assert get(enabled, authority="www.example.com").authority == SVC


def test_default_target_hostname_disabled_keeps_the_authority_as_received():
    t = table(r=http({"prefix": "/"}, rewrite={"hostname": {"defaultTargetHostname": "DISABLED"}}))
    assert get(t, authority="WWW.Example.com:8080").authority == "WWW.Example.com:8080"


def test_hostname_and_prefix_rewrites_combine():
    t = table(r=http({"prefix": "/shop/"}, rewrite={"hostname": {"defaultTargetHostname": "DISABLED"},
                                                    "prefix": {"value": "/v2/"}}))
    d = get(t, path="/shop/items", authority="www.example.com")
    assert (d.authority, d.path) == ("www.example.com", "/v2/items")


def test_grpc_hostname_rewrite_and_untouched_path():
    t = table(on=grpc({"serviceName": "a.A"}, service="a.local"),
              off=grpc({"serviceName": "b.B"}, rewrite={"hostname": {"defaultTargetHostname": "DISABLED"}}))
    call = dict(protocol="grpc", port=9090, method="POST", authority="rpc.example.com")
    on = get(t, path="/a.A/Get", **call)
    assert (on.authority, on.path, on.priority) == ("a.local", "/a.A/Get", None)
    assert get(t, path="/b.B/Get", **call).authority == "rpc.example.com"


def test_decision_carries_priority_and_target_port():
    t = table(r=http({"prefix": "/"}, priority=7, port=8443))
    d = get(t)
    assert (d.route, d.priority, d.port) == ("r", 7, 8443)
    assert get(table(r=http({"prefix": "/"}))).port is None


# ---------------------------------------------------------------------------------------
# Problems: a bad route is left out and reported, the others still route
# ---------------------------------------------------------------------------------------


def compile_with(bad_spec: dict, listeners=(("http", 8080), ("http2", 8081), ("grpc", 9090))):
    routes = {"bad": route_data(bad_spec), "good": route_data(http({"prefix": "/"}))}
    t = compile_gateway("shop", gateway(listeners), routes)
    assert t.order == ("good",)
    assert get(t, path="/x").route == "good"
    [problem] = t.problems
    assert problem.resource == "gatewayRoutes/shop/edge/bad"
    return problem


def test_bad_path_regex_is_reported_with_its_field():
    p = compile_with(http({"path": {"regex": "(unclosed"}}))
    assert p.field == "spec.httpRoute.match.path.regex"
    assert "regex" in p.reason


def test_regexes_re2_cannot_run_are_reported_with_their_field():
    # RE2, Envoy's regex engine, has no backreferences or lookaround.
    p = compile_with(http({"path": {"regex": r"/(a)\1"}}))
    assert p.field == "spec.httpRoute.match.path.regex" and "regex" in p.reason
    p = compile_with(http({"prefix": "/", "headers": [{"name": "a", "match": {"regex": "(?=x)x"}}]}))
    assert p.field == "spec.httpRoute.match.headers[0].match.regex"


@pytest.mark.hardening
@pytest.mark.timeout(30)
def test_a_backtracking_path_regex_is_refused_in_linear_time():
    # Python's backtracking `re` took 0.115 s for this pattern on a 23-character path,
    # doubling with each character; RE2 is linear in the path.
    t = table(evil=http({"path": {"regex": "/(a+)+$"}}), all=http({"prefix": "/"}))
    miss = "/" + "a" * (10 * 1024 - 2) + "!"
    assert routed(t, path=miss) == "all"
    assert routed(t, path=miss[:-1]) == "evil"
    best = float("inf")
    for _ in range(5):  # the best of several: the run least disturbed by the shared machine
        t0 = time.perf_counter()
        get(t, path=miss)
        best = min(best, time.perf_counter() - t0)
    assert best < 1e-3


def test_bad_header_regex_is_reported_with_its_field():
    p = compile_with(http({"prefix": "/", "headers": [{"name": "a"}, {"name": "b", "match": {"regex": "*x"}}]},
                          kind="http2Route"))
    assert p.field == "spec.http2Route.match.headers[1].match.regex"


def test_bad_metadata_regex_is_reported_with_its_field():
    p = compile_with(grpc({"serviceName": "a.A", "metadata": [{"name": "m", "match": {"regex": "[z-a]"}}]}))
    assert p.field == "spec.grpcRoute.match.metadata[0].match.regex"


def test_port_without_a_listener_is_reported():
    assert compile_with(http({"prefix": "/", "port": 9999})).field == "spec.httpRoute.match.port"
    p = compile_with(http({"prefix": "/", "port": 9090}))  # the grpc listener's port
    assert (p.field, "grpc" in p.reason) == ("spec.httpRoute.match.port", True)


def test_protocol_no_listener_speaks_is_reported():
    p = compile_with(grpc({"serviceName": "a.A"}), listeners=(("http", 8080),))
    assert p.field == "spec.grpcRoute"


def test_rewrites_that_need_another_match_kind_are_reported():
    p = compile_with(http({"path": {"exact": "/a"}}, rewrite={"prefix": {"value": "/b/"}}))
    assert p.field == "spec.httpRoute.action.rewrite.prefix"
    p = compile_with(http({"prefix": "/a"}, rewrite={"path": {"exact": "/b"}}))
    assert p.field == "spec.httpRoute.action.rewrite.path"


def test_route_of_another_gateway_is_reported():
    routes = {"stray": route_data(http({"prefix": "/"}), gw="other")}
    t = compile_gateway("shop", gateway(), routes)
    assert t.order == ()
    assert [(p.resource, p.field) for p in t.problems] == [("gatewayRoutes/shop/edge/stray", "virtualGatewayName")]


def test_request_host():
    assert request_host("Www.Example.com:8080") == "www.example.com"
    assert request_host("www.example.com") == "www.example.com"
    assert request_host("[::1]:8080") == "[::1]"
    assert request_host("[::1]") == "[::1]"


# ---------------------------------------------------------------------------------------
# The valid corpus
# ---------------------------------------------------------------------------------------


def corpus_gateways() -> dict[str, tuple[pb.VirtualGatewayData, dict[str, pb.GatewayRouteData]]]:
    out = {}
    for f in sorted(CORPUS.glob("50-vgw-*.json")):
        doc = json.loads(f.read_text())
        data = pb.VirtualGatewayData(mesh_name=doc["meshName"], virtual_gateway_name=doc["virtualGatewayName"])
        data.spec.CopyFrom(parse_json(spec_pb2.VirtualGatewaySpec, doc["spec"]))
        out[data.virtual_gateway_name] = (data, {})
    routes = defaultdict(dict)
    for f in sorted(CORPUS.glob("60-gr-*.json")):
        doc = json.loads(f.read_text())
        data = pb.GatewayRouteData(mesh_name=doc["meshName"], virtual_gateway_name=doc["virtualGatewayName"],
                                   gateway_route_name=doc["gatewayRouteName"])
        data.spec.CopyFrom(parse_json(spec_pb2.GatewayRouteSpec, doc["spec"]))
        routes[data.virtual_gateway_name][data.gateway_route_name] = data
    for gw, rs in routes.items():
        out[gw][1].update(rs)
    return out


def test_corpus_gateway_routes_compile_without_problems():
    gateways = corpus_gateways()
    assert set(gateways) == {"ingress", "partner-edge"}
    n_routes = 0
    for data, routes in gateways.values():
        t = compile_gateway(data.mesh_name, data, routes)
        assert t.problems == ()
        assert sorted(t.order) == sorted(routes)
        n_routes += len(routes)
    assert n_routes == len(list(CORPUS.glob("60-gr-*.json")))


def test_corpus_ingress_decisions():
    data, routes = corpus_gateways()["ingress"]
    t = compile_gateway("shop", data, routes)
    web = t.match("http", "www.shop.example:8443", 8443, "GET", "/cart?id=1", {})
    assert web == ("web", "web.shop.local", 8080, "web.shop.local", "/cart?id=1", 100)
    catalog = t.match("http", "eu.shop.example", 8443, "GET", "/catalog/items?lang=en",
                      {"accept": "application/json"})
    assert (catalog.route, catalog.path, catalog.authority) == ("catalog", "/items?lang=en", "catalog.shop.local")
    # x-internal is matched inverted: present, the catalog route does not apply.
    assert t.match("http", "eu.shop.example", 8443, "GET", "/catalog/items?lang=en",
                   {"accept": "application/json", "x-internal": "1"}) is None
    health = t.match("http2", "api.shop.example", 8444, "GET", "/api/health", {"x-probe": "lb"})
    assert (health.route, health.path, health.authority) == ("api-health", "/ping", "api.shop.example")
    call = t.match("grpc", "grpc.shop.example", 9443, "POST", "/shop.orders.v1.Orders/Get",
                   {"x-tenant": "acme", "x-build": "1500", "x-zone": "eu-1a", "x-trace": "0" * 32})
    assert (call.route, call.authority, call.port) == ("api-grpc", "api.shop.local", 9090)
    partner, routes = corpus_gateways()["partner-edge"]
    edge = compile_gateway("shop", partner, routes)
    assert edge.match("http", "acme.partners.shop.example", 8080, "GET", "/x", {}).route == "catalog"
    assert edge.match("http", "partners.shop.example", 8080, "GET", "/x", {}) is None
