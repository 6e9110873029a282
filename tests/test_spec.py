"""The App Mesh spec surface: the corpus parses, validates and round-trips; invalid
documents are rejected naming their field; App Mesh's limits hold at their boundaries."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from meshd.api import validate as V
from meshd.api.validate import FieldViolation, InvalidSpec, parse_json, validate_name, validate_spec
from meshd.v1 import admin_pb2, spec_pb2

CORPUS = Path(__file__).parent / "corpus"
VALID = sorted((CORPUS / "valid").glob("*.json"))
INVALID_CASES = yaml.safe_load((CORPUS / "invalid" / "cases.yaml").read_text())

# App Mesh CLI input names its resource by these keys; the most specific comes first
# (a route document also has virtualRouterName).
NAME_KEYS = [
    ("routeName", "route", "Route"),
    ("gatewayRouteName", "gatewayRoute", "GatewayRoute"),
    ("virtualNodeName", "virtualNode", "VirtualNode"),
    ("virtualServiceName", "virtualService", "VirtualService"),
    ("virtualRouterName", "virtualRouter", "VirtualRouter"),
    ("virtualGatewayName", "virtualGateway", "VirtualGateway"),
]


def kind_of(doc: dict) -> tuple[str, str]:
    """(kind, Title) of an App Mesh CLI-input document."""
    for key, kind, title in NAME_KEYS:
        if key in doc:
            return kind, title
    return "mesh", "Mesh"


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def violations(kind: str, spec: dict) -> list[FieldViolation]:
    """Every violation of a spec given as App Mesh JSON; [] when it is valid."""
    try:
        validate_spec(kind, parse_json(V.SPEC_TYPES[kind], spec, root="spec"))
    except InvalidSpec as err:
        return err.violations
    return []


def fields(kind: str, spec: dict) -> set[str]:
    return {v.field for v in violations(kind, spec)}


# ---------------------------------------------------------------------------------------
# The valid corpus
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_document_parses_validates_and_round_trips(path):
    doc = load(path)
    kind, _ = kind_of(doc)
    spec = parse_json(V.SPEC_TYPES[kind], doc["spec"], root="spec")
    assert isinstance(spec, V.SPEC_TYPES[kind])
    validate_spec(kind, spec)
    # App Mesh's camelCase comes back exactly, including 0 and false values, and `long`s as
    # numbers (protobuf's own JSON mapping writes int64 as strings).
    assert V.to_json(spec) == doc["spec"]
    # And through the wire format, as the registry stores it.
    again = type(spec).FromString(spec.SerializeToString())
    assert V.to_json(again) == doc["spec"]


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_document_is_a_create_request(path):
    """The whole document, not only its spec, is the admin API's Create...Request."""
    doc = load(path)
    _, title = kind_of(doc)
    request = parse_json(getattr(admin_pb2, f"Create{title}Request"), doc)
    assert V.to_json(request)["spec"] == doc["spec"]


def test_corpus_references_resolve_in_file_order():
    """Applying the corpus in sorted order never refers to something not yet created, and
    every route target port is a listener port of its node."""
    made: set[tuple] = set()
    node_ports: dict[tuple, set[int]] = {}

    def need(*ref):
        assert ref in made, f"{path.name} refers to {ref} before it exists"

    for path in VALID:
        doc = load(path)
        kind, _ = kind_of(doc)
        mesh, spec = doc["meshName"], doc["spec"]
        if kind != "mesh":
            need("mesh", mesh)
        if kind == "virtualNode":
            node_ports[mesh, doc["virtualNodeName"]] = {
                l["portMapping"]["port"] for l in spec.get("listeners", [])}
        elif kind == "route":
            need("virtualRouter", mesh, doc["virtualRouterName"])
            (route,) = (v for k, v in spec.items() if k.endswith("Route"))
            for target in route["action"]["weightedTargets"]:
                need("virtualNode", mesh, target["virtualNode"])
                if "port" in target:
                    assert target["port"] in node_ports[mesh, target["virtualNode"]], path.name
        elif kind == "virtualService":
            for provider_kind, provider in spec.get("provider", {}).items():
                need(provider_kind, mesh, provider[f"{provider_kind}Name"])
        elif kind == "gatewayRoute":
            need("virtualGateway", mesh, doc["virtualGatewayName"])
            (route,) = (v for k, v in spec.items() if k.endswith("Route"))
            need("virtualService", mesh, route["action"]["target"]["virtualService"]["virtualServiceName"])
        key = next((k for k, _, _ in NAME_KEYS if k in doc), None)
        made.add((kind, mesh, doc[key]) if key else ("mesh", mesh))
    assert len({m for k, m, *_ in made if k == "mesh"}) <= 3


# Fields that meshd parses but rejects ("use file or the mesh CA"): they are covered by the
# invalid corpus instead, and must be.
REJECTED_SOURCES = {  # ACM sources are served from `meshctl certificate import` / `trust import`
    ("ListenerTlsCertificate", "sds"),
    ("ClientTlsCertificate", "sds"),
    ("TlsValidationContextTrust", "sds"),
    ("ListenerTlsValidationContextTrust", "sds"),
    ("ListenerTlsSdsCertificate", "secret_name"),
    ("TlsValidationContextSdsTrust", "secret_name"),
}


def _reachable_fields(desc, out):
    for field in desc.fields:
        if (desc.name, field.name) in out:
            continue
        out.add((desc.name, field.name))
        if field.message_type is not None:
            _reachable_fields(field.message_type, out)
    return out


def _set_fields(msg, out):
    for field, value in msg.ListFields():
        out.add((msg.DESCRIPTOR.name, field.name))
        if field.message_type is not None:
            for item in (value if field.is_repeated else [value]):
                _set_fields(item, out)
    return out


def _corpus_fields(docs):
    """The (message, field) pairs set by the docs' specs; docs that do not parse add none."""
    seen = set()
    for doc in docs:
        kind, _ = kind_of(doc)
        try:
            _set_fields(json_format.ParseDict(doc["spec"], V.SPEC_TYPES[kind]()), seen)
        except json_format.ParseError:
            pass
    return seen


def test_corpus_sets_every_spec_field():
    reachable = set()
    for spec_type in V.SPEC_TYPES.values():
        _reachable_fields(spec_type.DESCRIPTOR, reachable)
    assert ("Duration", "unit") in reachable and len(reachable) > 200  # the walk works
    valid = _corpus_fields(load(p) for p in VALID)
    missing = sorted(reachable - valid - REJECTED_SOURCES)
    assert not missing, f"no valid corpus document sets {missing}"
    invalid = _corpus_fields(load(CORPUS / "invalid" / name) for name in INVALID_CASES)
    assert REJECTED_SOURCES <= invalid


# ---------------------------------------------------------------------------------------
# The invalid corpus
# ---------------------------------------------------------------------------------------


def test_invalid_cases_list_every_file():
    on_disk = {p.name for p in (CORPUS / "invalid").glob("*.json")}
    assert on_disk == set(INVALID_CASES)


@pytest.mark.parametrize("name", sorted(INVALID_CASES))
def test_invalid_document_is_rejected_naming_its_field(name):
    case = INVALID_CASES[name]
    doc = load(CORPUS / "invalid" / name)
    assert kind_of(doc)[0] == case["kind"]
    found = violations(case["kind"], doc["spec"])
    assert found, f"{name} was accepted"
    assert case["field"] in {v.field for v in found}, found


# ---------------------------------------------------------------------------------------
# Limits, at their boundaries. Builders make a valid spec; each test varies one member.
# ---------------------------------------------------------------------------------------


def node(**listener) -> dict:
    return {
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}, **listener}],
        "serviceDiscovery": {"dns": {"hostname": "web.shop.local"}},
    }


def http_route(targets=None, **match) -> dict:
    return {"httpRoute": {
        "match": match or {"prefix": "/"},
        "action": {"weightedTargets": targets or [{"virtualNode": "web-v1", "weight": 100}]},
    }}


def grpc_route(**match) -> dict:
    return {"grpcRoute": {"match": match,
                          "action": {"weightedTargets": [{"virtualNode": "api-v1", "weight": 1}]}}}


def health(**overrides) -> dict:
    check = {"protocol": "http", "healthyThreshold": 2, "unhealthyThreshold": 2,
             "intervalMillis": 5000, "timeoutMillis": 2000}
    return node(healthCheck={**check, **overrides})


def outlier(**overrides) -> dict:
    detection = {"maxServerErrors": 1, "maxEjectionPercent": 10,
                 "interval": {"unit": "s", "value": 1}, "baseEjectionDuration": {"unit": "s", "value": 1}}
    return node(outlierDetection={**detection, **overrides})


def test_builders_are_valid():
    assert violations("virtualNode", node()) == []
    assert violations("route", http_route()) == []
    assert violations("route", grpc_route(serviceName="a.B", methodName="Get")) == []
    assert violations("virtualNode", health()) == []
    assert violations("virtualNode", outlier()) == []


BOUNDARIES = [
    # (kind, spec builder, field, lowest ok, highest ok or None)
    ("route", lambda w: http_route([{"virtualNode": "a", "weight": w}]),
     "spec.httpRoute.action.weightedTargets[0].weight", 0, 100),
    ("route", lambda p: {"priority": p, **http_route()}, "spec.priority", 0, 1000),
    ("route", lambda p: http_route([{"virtualNode": "a", "weight": 1, "port": p}]),
     "spec.httpRoute.action.weightedTargets[0].port", 1, 65535),
    ("route", lambda p: http_route(prefix="/", port=p), "spec.httpRoute.match.port", 1, 65535),
    ("virtualNode", lambda p: {"listeners": [{"portMapping": {"port": p, "protocol": "tcp"}}],
                               "serviceDiscovery": {"dns": {"hostname": "h"}}},
     "spec.listeners[0].portMapping.port", 1, 65535),
    ("virtualNode", lambda v: health(intervalMillis=v), "spec.listeners[0].healthCheck.intervalMillis", 5000, 300000),
    ("virtualNode", lambda v: health(timeoutMillis=v), "spec.listeners[0].healthCheck.timeoutMillis", 2000, 60000),
    ("virtualNode", lambda v: health(healthyThreshold=v), "spec.listeners[0].healthCheck.healthyThreshold", 2, 10),
    ("virtualNode", lambda v: health(unhealthyThreshold=v), "spec.listeners[0].healthCheck.unhealthyThreshold", 2, 10),
    ("virtualNode", lambda v: outlier(maxEjectionPercent=v),
     "spec.listeners[0].outlierDetection.maxEjectionPercent", 0, 100),
    ("virtualNode", lambda v: outlier(maxServerErrors=v), "spec.listeners[0].outlierDetection.maxServerErrors", 1, None),
    ("virtualNode", lambda v: outlier(interval={"unit": "ms", "value": v}),
     "spec.listeners[0].outlierDetection.interval.value", 0, None),
    ("virtualNode", lambda v: node(connectionPool={"http": {"maxConnections": v}}),
     "spec.listeners[0].connectionPool.http.maxConnections", 1, None),
    ("gatewayRoute", lambda p: {"priority": p, "grpcRoute": {
        "match": {}, "action": {"target": {"virtualService": {"virtualServiceName": "s"}}}}}, "spec.priority", 0, 1000),
]


@pytest.mark.parametrize("kind,build,field,lo,hi", BOUNDARIES, ids=[b[2] for b in BOUNDARIES])
def test_range_boundaries(kind, build, field, lo, hi):
    assert field not in fields(kind, build(lo))
    assert field in fields(kind, build(lo - 1))
    if hi is not None:
        assert field not in fields(kind, build(hi))
        assert field in fields(kind, build(hi + 1))


@pytest.mark.parametrize("count,ok", [(1, True), (10, True), (11, False)])
def test_at_most_ten_weighted_targets_headers_and_metadata(count, ok):
    targets = [{"virtualNode": f"n{i}", "weight": 1} for i in range(count)]
    headers = [{"name": f"x-{i}"} for i in range(count)]
    assert ("spec.httpRoute.action.weightedTargets" not in fields("route", http_route(targets))) == ok
    assert ("spec.httpRoute.match.headers" not in fields("route", http_route(prefix="/", headers=headers))) == ok
    assert ("spec.grpcRoute.match.metadata" not in fields("route", grpc_route(metadata=headers))) == ok
    assert ("spec.httpRoute.match.queryParameters" not in fields(
        "route", http_route(prefix="/", queryParameters=headers))) == ok


weights = st.lists(st.integers(-5, 110), min_size=0, max_size=12)


@settings(max_examples=150, deadline=None)
@given(weights)
def test_weighted_targets_rule_matches_app_mesh(ws):
    """1-10 targets, each weight 0-100, total at most 100 (App Mesh WeightedTarget)."""
    spec = {"tcpRoute": {"action": {"weightedTargets": [{"virtualNode": f"n{i}", "weight": w}
                                                        for i, w in enumerate(ws)]}}}
    expected = 1 <= len(ws) <= 10 and all(0 <= w <= 100 for w in ws) and sum(ws) <= 100
    assert (violations("route", spec) == []) == expected


def test_methodName_requires_serviceName():
    assert "spec.grpcRoute.match.methodName" in fields("route", grpc_route(methodName="Get"))
    assert fields("route", grpc_route(serviceName="shop.Orders", methodName="Get")) == set()
    assert fields("route", grpc_route(serviceName="shop.Orders")) == set()


def test_retry_policy_needs_an_event_and_known_values():
    def with_retry(**events):
        spec = http_route()
        spec["httpRoute"]["retryPolicy"] = {"maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 100}, **events}
        return spec

    assert "spec.httpRoute.retryPolicy" in fields("route", with_retry())
    for event in V.HTTP_RETRY_EVENTS:
        assert fields("route", with_retry(httpRetryEvents=[event])) == set()
    assert fields("route", with_retry(tcpRetryEvents=["connection-error"])) == set()
    assert "spec.httpRoute.retryPolicy.httpRetryEvents[0]" in fields("route", with_retry(httpRetryEvents=["5xx"]))


@pytest.mark.parametrize("unit,value,ok", [("ms", 0, True), ("s", 15, True), ("m", 1, False), ("ms", -1, False)])
def test_duration_units_and_sign(unit, value, ok):
    spec = node(timeout={"http": {"perRequest": {"unit": unit, "value": value}}})
    assert (violations("virtualNode", spec) == []) == ok


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLED", "strict", "MUTUAL"])
def test_tls_modes(mode):
    cert = {"file": {"certificateChain": "/c.pem", "privateKey": "/k.pem"}}
    found = fields("virtualNode", node(tls={"mode": mode, "certificate": cert}))
    assert ("spec.listeners[0].tls.mode" in found) == (mode not in ("STRICT", "PERMISSIVE", "DISABLED"))


def test_acm_sources_are_accepted_and_sds_refused_with_advice():
    acm = node(tls={"mode": "STRICT", "certificate": {"acm": {"certificateArn": "arn:aws:acm:x"}}})
    assert violations("virtualNode", acm) == []
    spec = node(tls={"mode": "STRICT", "certificate": {"sds": {"secretName": "s"}}})
    (found,) = violations("virtualNode", spec)
    assert found.field == "spec.listeners[0].tls.certificate.sds"
    assert "mesh CA" in found.description and "file" in found.description


def test_listener_members_follow_its_protocol():
    assert fields("virtualNode", node(timeout={"http": {}})) == set()
    assert "spec.listeners[0].timeout.tcp" in fields("virtualNode", node(timeout={"tcp": {}}))
    assert "spec.listeners[0].connectionPool.grpc" in fields(
        "virtualNode", node(connectionPool={"grpc": {"maxRequests": 1}}))


def test_gateway_listeners_have_no_tcp():
    spec = {"listeners": [{"portMapping": {"port": 8080, "protocol": "tcp"}}]}
    assert fields("virtualGateway", spec) == {"spec.listeners[0].portMapping.protocol"}
    spec["listeners"][0]["portMapping"]["protocol"] = "grpc"
    assert fields("virtualGateway", spec) == set()


def test_gateway_rewrites_need_their_match():
    def gateway_route(match, rewrite):
        return {"httpRoute": {"match": match, "action": {
            "target": {"virtualService": {"virtualServiceName": "s"}}, "rewrite": rewrite}}}

    prefix = {"prefix": {"value": "/new/"}}
    path = {"path": {"exact": "/new"}}
    assert fields("gatewayRoute", gateway_route({"prefix": "/old/"}, prefix)) == set()
    assert fields("gatewayRoute", gateway_route({"path": {"exact": "/old"}}, path)) == set()
    assert "spec.httpRoute.action.rewrite.prefix" in fields("gatewayRoute", gateway_route({"path": {"exact": "/o"}}, prefix))
    assert "spec.httpRoute.action.rewrite.path" in fields("gatewayRoute", gateway_route({"prefix": "/o/"}, path))


def test_every_violation_is_reported_at_once():
    spec = {"priority": 2000, **http_route([{"virtualNode": "bad name", "weight": 500}])}
    assert fields("route", spec) >= {
        "spec.priority",
        "spec.httpRoute.action.weightedTargets[0].virtualNode",
        "spec.httpRoute.action.weightedTargets[0].weight",
        "spec.httpRoute.action.weightedTargets",
    }


def test_empty_union_is_reported_at_its_path():
    assert fields("virtualService", {"provider": {}}) == {"spec.provider"}
    assert fields("route", {}) == {"spec"}


# ---------------------------------------------------------------------------------------
# Names, parsing, and the API's edges
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,ok", [
    ("web-v1", True), ("api.shop.local", True), ("a", True), ("_x", True), ("n" * 255, True),
    ("", False), ("n" * 256, False), ("has space", False), ("a/b", False), ("-lead", False), (".", False),
])
def test_validate_name(name, ok):
    if ok:
        validate_name("virtualNodeName", name)
    else:
        with pytest.raises(InvalidSpec) as err:
            validate_name("virtualNodeName", name)
        assert [v.field for v in err.value.violations] == ["virtualNodeName"]


@pytest.mark.parametrize("doc,field,words", [
    ({"listeners": [{"portMaping": {}}]}, "spec.listeners[0].portMaping", "unknown field"),
    ({"listeners": [{"portMapping": {"port": "80"}}]}, "spec.listeners[0].portMapping.port", "integer"),
    ({"listeners": [{"portMapping": {"port": 2**31}}]}, "spec.listeners[0].portMapping.port", "out of range"),
    ({"listeners": [{"portMapping": {"port": True}}]}, "spec.listeners[0].portMapping.port", "integer"),
    ({"listeners": {}}, "spec.listeners", "list"),
    ({"listeners": [7]}, "spec.listeners[0]", "object"),
    ({"backendDefaults": {"clientPolicy": {"tls": {"enforce": "yes"}}}},
     "spec.backendDefaults.clientPolicy.tls.enforce", "boolean"),
    ({"serviceDiscovery": {"dns": {}, "awsCloudMap": {}}}, "spec.serviceDiscovery.awsCloudMap", "only one"),
])
def test_parse_json_names_the_field(doc, field, words):
    with pytest.raises(InvalidSpec) as err:
        parse_json(spec_pb2.VirtualNodeSpec, doc, root="spec")
    (found,) = err.value.violations
    assert found.field == field and words in found.description


def test_parse_json_accepts_proto_field_names_and_null():
    spec = parse_json(spec_pb2.MeshSpec, {"egress_filter": {"type": "DROP_ALL"}, "serviceDiscovery": None})
    assert spec.egress_filter.type == "DROP_ALL" and not spec.HasField("service_discovery")


def test_parse_json_checks_admin_requests_too():
    """64-bit integers may be JSON strings, and maps are objects (admin.proto uses both)."""
    request = parse_json(admin_pb2.UpdateMeshRequest, {"meshName": "shop", "expectedVersion": "3"})
    assert request.expected_version == 3
    with pytest.raises(InvalidSpec) as err:
        parse_json(admin_pb2.UpdateMeshRequest, {"meshName": "shop", "expectedVersion": "three"})
    assert [v.field for v in err.value.violations] == ["expectedVersion"]


def test_validate_spec_takes_json_and_refuses_wrong_types():
    validate_spec("mesh", {"egressFilter": {"type": "ALLOW_ALL"}})
    with pytest.raises(ValueError):
        validate_spec("cluster", spec_pb2.MeshSpec())
    with pytest.raises(TypeError):
        validate_spec("route", spec_pb2.MeshSpec())


def test_invalid_spec_carries_data():
    err = InvalidSpec([FieldViolation("spec.priority", "must be between 0 and 1000, got 1001")])
    assert err.violations[0].field == "spec.priority"
    assert "spec.priority" in str(err)
    with pytest.raises(dataclasses.FrozenInstanceError):
        err.violations[0].field = "x"


def test_rule_table_names_real_fields():
    """A typo in RULES or CHECKS would silently disable a limit."""
    messages = {d.name: d for d in spec_pb2.DESCRIPTOR.message_types_by_name.values()}
    for name, rules in V.RULES.items():
        assert name in messages, name
        json_names = {f.json_name for f in messages[name].fields}
        assert set(rules) <= json_names, (name, set(rules) - json_names)
    assert set(V.CHECKS) <= set(messages)


def test_status_messages_hold_a_status_string():
    for kind in ("Mesh", "VirtualNode", "VirtualService", "VirtualRouter", "Route", "VirtualGateway", "GatewayRoute"):
        status = getattr(spec_pb2, f"{kind}Status")(status="ACTIVE")
        assert json_format.MessageToDict(status) == {"status": "ACTIVE"}


def test_app_mesh_json_names():
    """protoc's camelCase equals App Mesh's member names where they are easy to get wrong."""
    samples = {
        "OutlierDetection": {"maxServerErrors", "baseEjectionDuration", "maxEjectionPercent", "interval"},
        "GrpcRetryPolicy": {"perRetryTimeout", "httpRetryEvents", "tcpRetryEvents", "grpcRetryEvents", "maxRetries"},
        "ServiceDiscovery": {"awsCloudMap", "dns"},
        "RouteSpec": {"httpRoute", "http2Route", "grpcRoute", "tcpRoute", "priority"},
        "HttpGatewayRoutePrefixRewrite": {"defaultPrefix", "value"},
        "GatewayRouteHostnameRewrite": {"defaultTargetHostname"},
        "ClientPolicyTls": {"enforce", "ports", "certificate", "validation"},
        "TlsValidationContext": {"trust", "subjectAlternativeNames"},
    }
    for name, expected in samples.items():
        desc = spec_pb2.DESCRIPTOR.message_types_by_name[name]
        assert {f.json_name for f in desc.fields} == expected
