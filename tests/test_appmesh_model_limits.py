"""meshd's spec validation against App Mesh's own API model (botocore's `appmesh`,
2019-01-25): list, string and integer limits, enums, 64-bit `long`s and the places where
meshd is stricter on purpose, driven through the admin API on a real etcd."""
from __future__ import annotations

import copy
import re

import botocore.loaders
import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from builders import create, gateway_spec, node_spec, shop
from meshd.api import validate as V
from meshd.api.validate import InvalidSpec, parse_json, validate_spec
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import spec_pb2

pytestmark = [pytest.mark.etcd]

MODEL = botocore.loaders.Loader().load_service_model("appmesh", "service-2")
SHAPES = MODEL["shapes"]
SPEC_ROOTS = ("MeshSpec", "VirtualNodeSpec", "VirtualServiceSpec", "VirtualRouterSpec", "RouteSpec",
              "VirtualGatewaySpec", "GatewayRouteSpec")
STRICTER = "meshd is stricter than App Mesh here"
ROUTE = {"meshName": "shop", "virtualRouterName": "api-router"}
GATEWAY_ROUTE = {"meshName": "shop", "virtualGatewayName": "ingress"}


def model_members():
    """(model structure, member, member's shape, proto message, proto field) for every member
    reachable from the spec shapes, walking the model and meshd.v1 side by side."""
    seen, out = set(), []

    def walk(shape_name, desc):
        if (shape_name, desc.full_name) in seen:
            return
        seen.add((shape_name, desc.full_name))
        fields = {f.json_name: f for f in desc.fields}
        for member, ref in SHAPES[shape_name]["members"].items():
            field = fields[member]
            out.append((shape_name, member, ref["shape"], desc, field))
            shape = SHAPES[ref["shape"]]
            item = shape["member"]["shape"] if shape["type"] == "list" else ref["shape"]
            if SHAPES[item]["type"] == "structure":
                walk(item, field.message_type)

    for root in SPEC_ROOTS:
        walk(root, spec_pb2.DESCRIPTOR.message_types_by_name[root])
    return out


@pytest.fixture
def stub(admin):
    """builders.shop's mesh, with a virtual gateway `ingress` for gateway routes."""
    shop(admin.stub)
    create(admin.stub, "VirtualGateway", meshName="shop", virtualGatewayName="ingress", spec=gateway_spec())
    return admin.stub


def route(match: dict, kind: str = "httpRoute", **more) -> dict:
    return {kind: {"match": match, "action": {"weightedTargets": [{"virtualNode": "api-v1", "weight": 1}]}, **more}}


def gateway_route(match: dict, kind: str = "httpRoute") -> dict:
    return {kind: {"match": match, "action": {"target": {"virtualService": {"virtualServiceName": "web.shop.local"}}}}}


def refused(s, title: str, **doc) -> dict[str, str]:
    """{field: description} of a create the admin API refuses as INVALID_ARGUMENT."""
    with pytest.raises(grpc.RpcError) as info:
        create(s, title, **doc)
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    out = {}
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            out |= {v.field: v.description for v in br.field_violations}
    return out


def absent(s, title: str, **ids) -> bool:
    req = getattr(pb, f"Describe{title}Request")(**{re.sub("([A-Z])", r"_\1", k).lower(): v for k, v in ids.items()})
    with pytest.raises(grpc.RpcError) as info:
        getattr(s, f"Describe{title}")(req)
    return info.value.code() == grpc.StatusCode.NOT_FOUND


# -- 1. match lists given empty ------------------------------------------------------------
EMPTY_LIST_CASES = [
    # (kind, spec, field): each list is min 1 in App Mesh's model.
    ("Route", route({"prefix": "/", "headers": []}), "spec.httpRoute.match.headers"),  # HttpRouteHeaders
    ("Route", route({"prefix": "/", "queryParameters": []}, kind="http2Route"),
     "spec.http2Route.match.queryParameters"),  # HttpQueryParameters
    ("Route", route({"serviceName": "p.S", "metadata": []}, kind="grpcRoute"),
     "spec.grpcRoute.match.metadata"),  # GrpcRouteMetadataList
    ("GatewayRoute", gateway_route({"prefix": "/", "headers": []}), "spec.httpRoute.match.headers"),
    ("GatewayRoute", gateway_route({"prefix": "/", "queryParameters": []}), "spec.httpRoute.match.queryParameters"),
    ("GatewayRoute", gateway_route({"serviceName": "p.S", "metadata": []}, kind="grpcRoute"),
     "spec.grpcRoute.match.metadata"),  # GrpcGatewayRouteMetadataList
]


@pytest.mark.parametrize("title,spec,field", EMPTY_LIST_CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_empty_match_lists_are_refused_as_app_mesh_does(stub, title, spec, field):
    ids = ROUTE | {"routeName": "x"} if title == "Route" else GATEWAY_ROUTE | {"gatewayRouteName": "x"}
    # The model's shape for this list says min 1.
    kind = "route" if title == "Route" else "gatewayRoute"
    with pytest.raises(InvalidSpec) as info:
        validate_spec(kind, spec)
    assert [v.field for v in info.value.violations] == [field]
    assert "at least 1 item" in info.value.violations[0].description
    # A client that writes App Mesh JSON is refused before anything is sent or stored. Over
    # the protobuf wire an empty list is the same as no list, which App Mesh accepts.
    with pytest.raises(InvalidSpec):
        create(stub, title, **ids, spec=spec)
    assert absent(stub, title, **ids)
    without = copy.deepcopy(spec)
    del without[next(iter(spec))]["match"][field.rsplit(".", 1)[1]]
    create(stub, title, **ids, spec=without)


# -- 2. retry events -----------------------------------------------------------------------
def _retry(**policy) -> dict:
    return {"maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 100}, **policy}


def test_retry_events_are_exactly_app_mesh_s(stub):
    n = iter(range(100))
    # Every event App Mesh documents is accepted, on each list that takes it.
    for event in ("server-error", "gateway-error", "client-error", "stream-error"):
        create(stub, "Route", **ROUTE, routeName=f"h{next(n)}",
               spec=route({"prefix": "/"}, retryPolicy=_retry(httpRetryEvents=[event])))
        create(stub, "Route", **ROUTE, routeName=f"g{next(n)}",
               spec=route({"serviceName": "p.S"}, kind="grpcRoute", retryPolicy=_retry(httpRetryEvents=[event])))
    for event in ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"):
        create(stub, "Route", **ROUTE, routeName=f"g{next(n)}",
               spec=route({"serviceName": "p.S"}, kind="grpcRoute", retryPolicy=_retry(grpcRetryEvents=[event])))
    create(stub, "Route", **ROUTE, routeName=f"t{next(n)}",
           spec=route({"prefix": "/"}, kind="http2Route", retryPolicy=_retry(tcpRetryEvents=["connection-error"])))
    # The lists' own limits (HttpRetryPolicyEvents 1-25, GrpcRetryPolicyEvents 1-5,
    # TcpRetryPolicyEvents 1-1): an empty list is refused even beside a non-empty one.
    for policy, field in [
        (_retry(httpRetryEvents=[], tcpRetryEvents=["connection-error"]), "httpRetryEvents"),
        (_retry(httpRetryEvents=["server-error"], tcpRetryEvents=[]), "tcpRetryEvents"),
    ]:
        with pytest.raises(InvalidSpec) as info:
            validate_spec("route", route({"prefix": "/"}, retryPolicy=policy))
        assert [v.field for v in info.value.violations] == [f"spec.httpRoute.retryPolicy.{field}"]
    with pytest.raises(InvalidSpec) as info:
        validate_spec("route", route({"serviceName": "p.S"}, kind="grpcRoute",
                                     retryPolicy=_retry(grpcRetryEvents=[], httpRetryEvents=["server-error"])))
    assert [v.field for v in info.value.violations] == ["spec.grpcRoute.retryPolicy.grpcRetryEvents"]
    assert refused(stub, "Route", **ROUTE, routeName="x", spec=route(
        {"prefix": "/"}, retryPolicy=_retry(httpRetryEvents=["server-error"] * 26))).keys() == {
        "spec.httpRoute.retryPolicy.httpRetryEvents"}
    assert refused(stub, "Route", **ROUTE, routeName="x", spec=route(
        {"prefix": "/"}, retryPolicy=_retry(tcpRetryEvents=["connection-error"] * 2))).keys() == {
        "spec.httpRoute.retryPolicy.tcpRetryEvents"}
    # The model leaves an HTTP event a free 1-25 character string; meshd takes only the
    # documented ones and says why.
    found = refused(stub, "Route", **ROUTE, routeName="x", spec=route(
        {"prefix": "/"}, retryPolicy=_retry(httpRetryEvents=["5xx"])))
    assert STRICTER in found["spec.httpRoute.retryPolicy.httpRetryEvents[0]"]
    found = refused(stub, "Route", **ROUTE, routeName="x", spec=route(
        {"prefix": "/"}, retryPolicy=_retry(httpRetryEvents=["x" * 26])))
    assert "length" in found["spec.httpRoute.retryPolicy.httpRetryEvents[0]"]
    assert absent(stub, "Route", **ROUTE, routeName="x")


# -- 3. 64-bit longs -----------------------------------------------------------------------
def test_every_long_in_the_model_is_64_bit_and_every_integer_32_bit():
    want = {"long": FieldDescriptor.TYPE_INT64, "integer": FieldDescriptor.TYPE_INT32}
    checked = set()
    for shape_name, member, sub, desc, field in model_members():
        shape = SHAPES[sub]
        typ = SHAPES[shape["member"]["shape"]]["type"] if shape["type"] == "list" else shape["type"]
        if typ in want:
            assert field.type == want[typ], f"{shape_name}.{member} is {typ}, proto type {field.type}"
            checked.add((desc.name, member, typ))
    assert ("Duration", "value", "long") in checked and ("MatchRange", "start", "long") in checked


BIG = 2**40  # 1.1e12 ms, about 35 years: a valid DurationValue (long, min 0)


def test_64_bit_values_round_trip_through_the_api(stub):
    spec = route({"prefix": "/", "headers": [{"name": "x-id", "match": {"range": {"start": -BIG, "end": 2**62}}}]},
                 retryPolicy=_retry(maxRetries=2**33, perRetryTimeout={"unit": "ms", "value": BIG},
                                    httpRetryEvents=["server-error"]),
                 timeout={"perRequest": {"unit": "ms", "value": BIG}, "idle": {"unit": "s", "value": 2**35}})
    created = create(stub, "Route", **ROUTE, routeName="big", spec=spec).route
    got = stub.DescribeRoute(pb.DescribeRouteRequest(mesh_name="shop", virtual_router_name="api-router",
                                                     route_name="big")).route
    assert got.spec == created.spec == parse_json(spec_pb2.RouteSpec, spec)
    http = got.spec.http_route
    assert http.timeout.per_request.value == BIG and http.timeout.idle.value == 2**35
    assert http.retry_policy.max_retries == 2**33 and http.retry_policy.per_retry_timeout.value == BIG
    assert (http.match.headers[0].match.range.start, http.match.headers[0].match.range.end) == (-BIG, 2**62)
    # App Mesh writes longs as JSON numbers, and so does to_json.
    assert V.to_json(got.spec) == spec
    node = node_spec() | {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}, "outlierDetection": {
        "maxServerErrors": 2**40, "maxEjectionPercent": 50, "interval": {"unit": "ms", "value": BIG},
        "baseEjectionDuration": {"unit": "s", "value": 2**33}}}]}
    got = create(stub, "VirtualNode", meshName="shop", virtualNodeName="big", spec=node).virtual_node
    assert got.spec.listeners[0].outlier_detection.max_server_errors == 2**40
    # Still bounded: negative durations, and values past 64 bits, are refused.
    assert "spec.httpRoute.timeout.perRequest.value" in refused(stub, "Route", **ROUTE, routeName="neg", spec=route(
        {"prefix": "/"}, timeout={"perRequest": {"unit": "ms", "value": -1}}))
    with pytest.raises(InvalidSpec) as info:
        validate_spec("route", route({"prefix": "/"}, timeout={"perRequest": {"unit": "ms", "value": 2**63}}))
    assert "out of range" in info.value.violations[0].description


# -- 4. every other limit of the model -----------------------------------------------------
def _model_bound(shape: dict):
    lo, hi = shape.get("min"), shape.get("max")
    return None if lo is None and hi is None else (lo or 0, hi)


def _rule_differs(component: str, rule: V.Rule) -> bool:
    return component in (getattr(rule, "stricter", None) or {})


def test_rules_match_the_model_or_say_why_not():
    """Each min/max/enum/required of the model is meshd's rule too; where meshd's rule is
    another, the rule names that part as stricter, with its reason."""
    problems = []
    for shape_name, member, sub, desc, field in model_members():
        rule = V.RULES.get(desc.name, {}).get(member, V.Rule())
        shape = SHAPES[sub]
        where = f"{shape_name}.{member}"
        required = member in SHAPES[shape_name].get("required", ())
        if required and not rule.required:
            problems.append(f"{where}: required in the model")
        if rule.required and (not required or (shape["type"] == "list" and not shape.get("min"))):
            # Not required, or required but may be empty: on the wire an empty list is absent.
            if not _rule_differs("required", rule):
                problems.append(f"{where}: required only in meshd")
        if shape["type"] == "list":
            bound = _model_bound(shape)
            if bound != rule.count and not _rule_differs("count", rule):
                problems.append(f"{where}: list {bound}, meshd {rule.count}")
            shape, rule = SHAPES[shape["member"]["shape"]], rule.each or V.Rule()
            where += "[]"
        if shape["type"] in ("integer", "long"):
            lo, hi = shape.get("min"), shape.get("max")
            expected = None if lo is None and hi is None else (lo, hi)
            if rule.between != expected and not _rule_differs("between", rule):
                problems.append(f"{where}: between {expected}, meshd {rule.between}")
        elif shape["type"] == "string":
            length = None if "min" not in shape and "max" not in shape else (shape.get("min", 0), shape.get("max"))
            if rule.length != length and not _rule_differs("length", rule):
                problems.append(f"{where}: length {length}, meshd {rule.length}")
            choices = shape.get("enum")
            if choices and sub in ("VirtualGatewayPortProtocol",):
                # PortMapping and HealthCheckPolicy serve gateways too; _gateway_listener
                # refuses tcp there.
                assert set(V.GATEWAY_PROTOCOLS) == set(choices)
            elif set(rule.choices or ()) != set(choices or ()) and not _rule_differs("choices", rule):
                problems.append(f"{where}: enum {choices}, meshd {rule.choices}")
            if rule.pattern is not None and "pattern" not in shape and not _rule_differs("pattern", rule):
                problems.append(f"{where}: meshd's pattern {rule.pattern[1]!r} is not the model's")
    assert problems == []


def test_cloud_map_attribute_patterns_are_the_models():
    shapes = {"key": SHAPES["AwsCloudMapInstanceAttributeKey"], "value": SHAPES["AwsCloudMapInstanceAttributeValue"]}
    samples = ["a", "ab", "a b", "a ", "a  ", " a", "a\tb", "a\nb", "é", "~!", "", " "]
    for member, shape in shapes.items():
        model = re.compile(shape["pattern"])
        rule = V.RULES["AwsCloudMapInstanceAttribute"][member]
        for s in samples:
            ours = not list(V._scalar_violations(rule, s, member))
            theirs = shape["min"] <= len(s) <= shape["max"] and bool(model.search(s))
            assert ours == theirs, (member, s)


def test_stricter_rules_say_so_and_model_values_pass(stub):
    # App Mesh's model takes an attribute value with trailing spaces; meshd did not.
    node = node_spec() | {"serviceDiscovery": {"awsCloudMap": {
        "namespaceName": "shop.local", "serviceName": "web", "attributes": [{"key": "stage", "value": "blue "}]}}}
    created = create(stub, "VirtualNode", meshName="shop", virtualNodeName="cm", spec=node).virtual_node
    assert created.spec.service_discovery.aws_cloud_map.attributes[0].value == "blue "
    # Where meshd refuses more than the model does, the description says so and why.
    cases = [
        ("Route", ROUTE | {"routeName": "x"}, route({"prefix": "shop"}), "spec.httpRoute.match.prefix"),
        ("Route", ROUTE | {"routeName": "x"},
         route({"prefix": "/", "headers": [{"name": "h", "match": {"range": {"start": 5, "end": 5}}}]}),
         "spec.httpRoute.match.headers[0].match.range.end"),
        ("Route", ROUTE | {"routeName": "x"}, route({"prefix": "/"}, timeout={"idle": {"value": 5}}),
         "spec.httpRoute.timeout.idle.unit"),
        ("VirtualNode", {"meshName": "shop", "virtualNodeName": "x"},
         node_spec(backends=["svc/evil"]), "spec.backends[0].virtualService.virtualServiceName"),
        ("VirtualNode", {"meshName": "shop", "virtualNodeName": "x"},
         node_spec() | {"listeners": [{"portMapping": {"port": p, "protocol": "http"}} for p in range(1, 52)]},
         "spec.listeners"),
        ("GatewayRoute", GATEWAY_ROUTE | {"gatewayRouteName": "x"},
         {"httpRoute": {"match": {"path": {"exact": "/a"}}, "action": {
             "target": {"virtualService": {"virtualServiceName": "web.shop.local"}}, "rewrite": {"path": {}}}}},
         "spec.httpRoute.action.rewrite.path.exact"),
    ]
    for title, ids, spec, field in cases:
        found = refused(stub, title, **ids, spec=spec)
        assert field in found, (field, found)
        assert STRICTER in found[field], (field, found[field])
        assert absent(stub, title, **ids)
    # Model limits keep App Mesh's wording, with no such note.
    found = refused(stub, "Route", **ROUTE, routeName="x", spec=route({"prefix": "/", "headers": [
        {"name": "h" * 51}]}))
    assert STRICTER not in found["spec.httpRoute.match.headers[0].name"]
