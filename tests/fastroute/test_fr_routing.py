"""Service lookup, route matching and precedence, against both implementations."""
from __future__ import annotations

import pytest

from _fastroute import constants as C
from _fastroute.spec import (
    GrpcMatch, HeaderMatch, QueryMatch, Route, Target, TcpMatch, Timeouts, VirtualNode, VirtualService,
)

from .helpers import http, http_route

pytestmark = pytest.mark.fastroute


def test_lookup_by_authority_with_and_without_port(build):
    r = build([http_route("all")])
    for authority in ("svc.local", "svc.local:80", "SVC.Local", "svc.local:8080"):
        d = http(r, authority=authority, port=12345)
        assert (d.status, d.service, d.route) == (C.ROUTED, "svc.local", "all"), authority


def test_lookup_by_local_port_when_authority_is_empty_or_unknown(build):
    services = (VirtualService("svc.local", router="r", local_ports=(15001,)),)
    r = build([http_route("all")], services=services)
    assert http(r, authority="", port=15001).service == "svc.local"
    assert http(r, authority="other.local", port=15001).service == "svc.local"
    d = http(r, authority="", port=15002)
    assert (d.status, d.reason, d.endpoint) == (C.NO_SERVICE, "no_service", None)


def test_provider_node_routes_without_a_route(build):
    services = (VirtualService("db.local", node="a", local_ports=(5432,)),)
    r = build([http_route("x")], services=services)
    d = r.decide(C.PROTO_TCP, "", 5432, "", "", "", None, 10**9)
    assert (d.status, d.route, d.target, d.endpoint.id) == (C.ROUTED, None, "a", "a-0")
    assert d.per_request_timeout_ns == 15_000 * 10**6  # App Mesh default


def test_no_route_is_a_decision_with_a_reason(build):
    r = build([http_route("api", "/api")])
    d = http(r, "/other")
    assert (d.status, d.reason, d.service, d.route, d.endpoint) == (C.NO_ROUTE, "no_route", "svc.local", None, None)
    # A router with no routes of the request's protocol also answers "no route".
    assert http(r, "/api", protocol=C.PROTO_GRPC).reason == "no_route"


def test_longest_prefix_wins(build):
    r = build([http_route("short", "/a"), http_route("long", "/a/b/"), http_route("root", "/")])
    assert http(r, "/a/b/c").route == "long"
    assert http(r, "/a/x").route == "short"
    assert http(r, "/zzz").route == "root"
    # Prefixes are plain string prefixes of :path, query string included (Envoy).
    assert http(r, "/ab").route == "short"


def test_exact_over_regex_over_prefix(build):
    r = build([
        http_route("prefix", "/items/"),
        http_route("regex", path_regex=r"/items/[0-9]+"),
        http_route("exact", path_exact="/items/42"),
    ])
    assert http(r, "/items/42").route == "exact"
    assert http(r, "/items/42?x=1").route == "exact"  # the query string is not part of the path
    assert http(r, "/items/7").route == "regex"
    assert http(r, "/items/abc").route == "prefix"


def test_explicit_priority_beats_specificity_lowest_first(build):
    r = build([
        http_route("exact", path_exact="/a/b"),
        http_route("p5", "/", priority=5),
        http_route("p1", "/a", priority=1),
    ])
    assert http(r, "/a/b").route == "p1"
    assert http(r, "/zz").route == "p5"


def test_more_conditions_beat_fewer_and_order_of_listing_does_not_matter(build):
    h1 = (HeaderMatch("x-a", exact="1"),)
    h2 = (HeaderMatch("x-a", exact="1"), HeaderMatch("x-b"))
    routes = [http_route("one", "/", headers=h1), http_route("two", "/", headers=h2), http_route("none", "/")]
    for order in (routes, routes[::-1]):
        r = build(order)
        assert http(r, "/", {"x-a": "1", "x-b": "y"}).route == "two"
        assert http(r, "/", {"x-a": "1"}).route == "one"
        assert http(r, "/", {"x-a": "2"}).route == "none"


@pytest.mark.parametrize(("match", "value", "expected"), [
    (dict(exact="v1"), "v1", True), (dict(exact="v1"), "v10", False),
    (dict(prefix="ab"), "abc", True), (dict(prefix="ab"), "xab", False),
    (dict(suffix="bc"), "abc", True), (dict(suffix="bc"), "bcx", False),
    (dict(regex="v[0-9]+"), "v12", True), (dict(regex="v[0-9]+"), "v12x", False),
    (dict(range=(10, 20)), "10", True), (dict(range=(10, 20)), "20", False),
    (dict(range=(-5, 0)), "-3", True), (dict(range=(10, 20)), "1x", False), (dict(range=(10, 20)), "", False),
    (dict(), "anything", True), (dict(), None, False),
])
@pytest.mark.parametrize("invert", [False, True])
def test_header_match_kinds_with_invert(build, match, value, expected, invert):
    r = build([http_route("hdr", "/", headers=(HeaderMatch("X-Ver", invert=invert, **match),)), http_route("fb", "/x")])
    headers = {} if value is None else {"x-ver": value}
    got = http(r, "/", headers)
    assert (got.route == "hdr") == (expected != invert)


def test_a_table_says_whether_routing_reads_headers(build):
    # The data plane builds the request's header dict only for tables that match on it.
    assert build([http_route("a", "/"), http_route("b", "/x", method="POST")]).matches_headers is False
    r = build([http_route("a", "/"), http_route("hdr", "/y", headers=(HeaderMatch("x-a"),))])
    assert r.matches_headers is True
    # Without header conditions, no headers and any headers route alike.
    plain = build([http_route("a", "/"), http_route("b", "/x")])
    none = plain.decide(C.PROTO_HTTP, "svc.local", 80, "GET", "http", "/x", None, 1)
    assert none.route == http(plain, "/x", {"x-a": "1"}).route == "b"


def test_header_values_may_be_bytes_even_non_utf8(build):
    r = build([http_route("hdr", "/", headers=(HeaderMatch("x-b", exact="\xff\xfe"),))])
    assert http(r, "/", {"x-b": b"\xff\xfe"}).route == "hdr"
    assert http(r, "/", {"x-b": 7}).reason == "no_route"  # not a header value: absent


def test_method_scheme_port_and_query(build):
    r = build([
        http_route("post", "/", method="POST"),
        http_route("https", "/", scheme="https"),
        http_route("p8080", "/", port=8080),
        http_route("q", "/", query=(QueryMatch("tab", exact="a b"), QueryMatch("debug"))),
        http_route("fb", "/"),
    ])
    assert http(r, method="POST").route == "post"
    assert http(r, scheme="https").route == "https"
    assert http(r, port=8080).route == "p8080"
    assert http(r, "/?debug&tab=a b").route == "q"
    assert http(r, "/?tab=a b").route == "fb"
    assert http(r, "/?debug=1&tab=a").route == "fb"
    assert http(r, "/?xtab=a b&debug").route == "fb"


def test_grpc_service_method_and_metadata(build):
    g = lambda name, **m: Route(name, "grpc", GrpcMatch(**m), (Target("a", 1),))  # noqa: E731
    r = build([
        g("method", service_name="pkg.Svc", method_name="Get"),
        g("service", service_name="pkg.Svc"),
        g("meta", service_name="pkg.Svc", metadata=(HeaderMatch("x-user", prefix="adm"),)),
        g("any"),
    ])
    call = lambda path, md=None: http(r, path, md, method="POST", protocol=C.PROTO_GRPC).route  # noqa: E731
    assert call("/pkg.Svc/Get") == "method"
    assert call("/pkg.Svc/Put") == "service"
    assert call("/pkg.Svc/Put", {"x-user": "admin"}) == "meta"
    assert call("/other.Svc/Get") == "any"
    assert call("/pkg.SvcX/Get") == "any"


def test_tcp_port_only(build):
    t = lambda name, port=None: Route(name, "tcp", TcpMatch(port=port), (Target("a", 1),))  # noqa: E731
    r = build([t("p9000", 9000), t("any")])
    assert r.decide(C.PROTO_TCP, "svc.local", 9000, "", "", "", None, 1).route == "p9000"
    assert r.decide(C.PROTO_TCP, "svc.local", 9001, "", "", "", None, 1).route == "any"
    assert r.decide(C.PROTO_TCP, "svc.local", 9001, "", "", "", None, 1).retry is None


def test_decision_carries_timeouts_retry_and_pool(build):
    route = Route("t", "http", http_route("x").match, (Target("a", 1),), timeouts=Timeouts(2_000, 60_000))
    r = build([route], nodes=(VirtualNode("a", identity="spiffe://td/a"),))
    d = http(r, now_ns=5 * 10**9)
    assert d.per_request_timeout_ns == 2 * 10**9 and d.idle_timeout_ns == 60 * 10**9
    assert d.deadline_ns == 7 * 10**9
    assert d.per_try_timeout_ns == 2 * 10**9  # min(per-try 15 s default, per-request 2 s)
    assert d.pool_key == ("a-0", "spiffe://td/a")
    assert d.retry.max_retries == 2  # App Mesh's hidden default policy


@pytest.mark.parametrize("args", [
    (C.PROTO_HTTP, None, 80, "GET", "http", "/", {}, 1),
    (C.PROTO_HTTP, "svc.local", "80", "GET", "http", "/", {}, 1),
    (C.PROTO_HTTP, "svc.local", 80, "GET", "http", "/", [("a", "b")], 1),
    (C.PROTO_HTTP, "svc.local", 70000, "GET", "http", "/", {}, 1),
    (C.PROTO_HTTP, "svc.local", 80, "GET", "http", "/", {}, -1),
    (C.PROTO_HTTP, "svc.local", 80, "GET", "http", "/", {}, 2**80),
    (9, "svc.local", 80, "GET", "http", "/", {}, 1),
    (True, "svc.local", 80, "GET", "http", "/", {}, 1),
])
def test_bad_arguments_are_answered_not_raised(build, args):
    d = build([http_route("all")]).decide(*args)
    assert (d.status, d.reason, d.endpoint) == (C.BAD_REQUEST, "bad_request", None)


def test_odd_requests_never_crash(build):
    r = build([http_route("all", "/"), http_route("re", path_regex=".*x", headers=(HeaderMatch("h", regex="a+"),))])
    huge = "a" * 200_000
    assert http(r, "/" + huge, {"h": huge, "x-" + huge: huge}).route == "all"
    assert http(r, b"/\xff\xfe/x", {"h": b"\xc3\x28"}).route == "all"
    assert http(r, "/\udcff\U0001f600x", {"h": "aaa"}).route == "re"
    assert http(r, authority="").reason == "no_service"
    assert http(r, authority=b"svc.local\xff").reason == "no_service"
    assert http(r, authority=":::").reason == "no_service"
    assert http(r, "").reason == "no_route"


def test_conditions_outside_a_table_are_checked_as_the_router_checks_them():
    # meshd's gateway route tables use the router core's condition check through Conditions.
    from _fastroute import Conditions
    from _fastroute.spec import lower_header

    headers = (lower_header("h[0]", HeaderMatch("X-V", regex="v[0-9]+")),
               lower_header("h[1]", HeaderMatch("x-n", invert=True)))
    c = Conditions("GET", 8080, headers, (("lang", "en"), ("debug", None)))
    assert c.holds("GET", 8080, "/p?lang=en&debug", {"x-v": "v12"})
    assert c.holds("GET", 8080, "/p?debug=1&lang=en", {"x-v": b"v1"})
    for method, port, path, hdrs in [("POST", 8080, "/p?lang=en&debug", {"x-v": "v12"}),
                                     ("GET", 8081, "/p?lang=en&debug", {"x-v": "v12"}),
                                     ("GET", 8080, "/p?lang=de&debug", {"x-v": "v12"}),
                                     ("GET", 8080, "/p?lang=en", {"x-v": "v12"}),
                                     ("GET", 8080, "/p?lang=en&debug", {"x-v": "v12x"}),
                                     ("GET", 8080, "/p?lang=en&debug", {"x-v": "v12", "x-n": ""}),
                                     ("GET", 8080, "/p?lang=en&debug", None)]:
        assert not c.holds(method, port, path, hdrs), (method, port, path, hdrs)
    assert Conditions().holds("PUT", 1, "/", None)
    with pytest.raises(TypeError):
        Conditions(query=[("lang", 1)])
    with pytest.raises(TypeError):
        Conditions(method=b"GET")
