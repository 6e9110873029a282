"""The admin API of the meshd.v1 kinds beyond App Mesh (RoutePolicy, NodePolicy, Rollout)
against a real etcd, through a real gRPC server and client, and through meshctl as a user
runs it: CRUD with versions, client tokens and pages, Watch, references both ways, one
policy per route or node, one unfinished rollout per route, a server-owned rollout status,
validation with field paths, RBAC and audit, instance localities."""
from __future__ import annotations

import subprocess
import sys
import threading

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from builders import create, node_spec, route_spec, shop, update
from meshd.api import kinds as K
from meshd.api.resources import ApiConfig
from meshd.api.validate import InvalidSpec, validate_spec
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import spec_pb2

pytestmark = [pytest.mark.beyond, pytest.mark.etcd]

ROUTE = {"virtualRouterName": "api-router", "routeName": "api"}


def route_policy(**extra) -> dict:
    return {"route": ROUTE, "rateLimit": {"maxTokens": 100, "tokensPerFill": 10,
                                          "fillInterval": {"unit": "ms", "value": 100}}} | extra


def node_policy(node: str = "api-v1", **extra) -> dict:
    return {"virtualNodeName": node, "locality": {"enabled": True, "overprovisioningFactor": 140}} | extra


def rollout(stable: str = "api-v1", canary: str = "api-v2", **extra) -> dict:
    return {"route": ROUTE, "stable": {"virtualNode": stable}, "canary": {"virtualNode": canary},
            "steps": [{"weight": w, "minDuration": {"unit": "s", "value": 30}} for w in (5, 25, 50, 100)],
            "analysis": {"minSuccessRate": 99.0, "maxLatencyP99Ratio": 1.5}} | extra


def refused(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return info.value


def details(err: grpc.RpcError) -> tuple[str, dict, list[str]]:
    """(ErrorInfo reason, its metadata, the BadRequest violations as 'field: description')."""
    reason, meta, violations = "", {}, []
    for d in rpc_status.from_call(err).details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            reason, meta = info.reason, dict(info.metadata)
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            violations += [f"{v.field}: {v.description}" for v in br.field_violations]
    return reason, meta, violations


def fields(err: grpc.RpcError) -> list[str]:
    return [v.split(":", 1)[0] for v in details(err)[2]]


def describe(stub, title: str, **ids):
    kind = K.BY_TITLE[title]
    req = getattr(pb, f"Describe{title}Request")(**ids)
    return getattr(getattr(stub, f"Describe{title}")(req, timeout=10), kind.field)


def delete(stub, title: str, expected_version=None, **ids):
    req = getattr(pb, f"Delete{title}Request")(**ids)
    if expected_version is not None:
        req.expected_version = expected_version
    return getattr(stub, f"Delete{title}")(req, timeout=10)


@pytest.fixture
def shop_api(admin):
    shop(admin.stub)
    return admin


# -- CRUD, versions, tokens, pages ---------------------------------------------------------
CASES = [
    ("RoutePolicy", "routePolicyName", route_policy(), route_policy(mirror={"virtualNode": "web", "percentage": 5})),
    ("NodePolicy", "nodePolicyName", node_policy(), node_policy(listenerRateLimits=[
        {"port": 8080, "rateLimit": {"maxTokens": 5, "tokensPerFill": 5, "fillInterval": {"unit": "s", "value": 1}}}])),
    ("Rollout", "rolloutName", rollout(), rollout(paused=True)),
]


@pytest.mark.parametrize("title,name_key,spec,new_spec", CASES, ids=[c[0] for c in CASES])
def test_crud_versions_arn_and_tags(shop_api, title, name_key, spec, new_spec):
    s = shop_api.stub
    kind = K.BY_TITLE[title]
    made = getattr(create(s, title, meshName="shop", **{name_key: "p1"}, spec=spec,
                          tags=[{"key": "team", "value": "payments"}]), kind.field)
    assert made.metadata.version == 1 and made.status.status == "ACTIVE"
    assert made.metadata.arn == f"arn:aws:appmesh:us-east-1:000000000000:mesh/shop/{kind.name}/p1"
    got = describe(s, title, mesh_name="shop", **{kind.name_field: "p1"})
    assert got.spec == made.spec and got.metadata.uid == made.metadata.uid
    # Tags by ARN, as for every kind.
    tags = s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=made.metadata.arn), timeout=10).tags
    assert [(t.key, t.value) for t in tags] == [("team", "payments")]
    # Update with the right expected version; a stale one is ABORTED, naming both versions.
    upd = getattr(update(s, title, expected_version=1, meshName="shop", **{name_key: "p1"}, spec=new_spec),
                  kind.field)
    assert upd.metadata.version == 2 and upd.spec != made.spec
    err = refused(update, s, title, expected_version=1, meshName="shop", **{name_key: "p1"}, spec=spec)
    assert err.code() == grpc.StatusCode.ABORTED
    assert details(err)[:2] == ("VERSION_CONFLICT", {"expected": "1", "actual": "2"})
    # Delete with a stale version is refused too; with the current one it goes, tags with it.
    err = refused(delete, s, title, expected_version=1, mesh_name="shop", **{kind.name_field: "p1"})
    assert err.code() == grpc.StatusCode.ABORTED
    gone = getattr(delete(s, title, expected_version=2, mesh_name="shop", **{kind.name_field: "p1"}), kind.field)
    assert gone.status.status == "DELETED"
    assert refused(describe, s, title, mesh_name="shop", **{kind.name_field: "p1"}).code() == grpc.StatusCode.NOT_FOUND
    assert shop_api.store.get(f"tags/{kind.path(('shop', 'p1'))}") is None


def test_client_token_replays_and_refuses_another_body(shop_api):
    s = shop_api.stub
    first = create(s, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy(), clientToken="t-1")
    again = create(s, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy(), clientToken="t-1")
    assert again == first
    other = route_policy(fault={"abort": {"percentage": 10, "httpStatus": 503}})
    err = refused(create, s, "RoutePolicy", meshName="shop", routePolicyName="p", spec=other, clientToken="t-1")
    assert details(err)[0] == "IDEMPOTENT_PARAMETER_MISMATCH"
    # Without the token, the second create of the name is ALREADY_EXISTS, as for App Mesh's kinds.
    err = refused(create, s, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy())
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and details(err)[0] == "ALREADY_EXISTS"


def test_list_pages(shop_api):
    s = shop_api.stub
    # One node policy per node: make nodes for them to name.
    for i in range(5):
        create(s, "VirtualNode", meshName="shop", virtualNodeName=f"n{i}", spec=node_spec())
        create(s, "NodePolicy", meshName="shop", nodePolicyName=f"np{i}", spec=node_policy(f"n{i}"))
    names, token, pages = [], "", 0
    while True:
        resp = s.ListNodePolicys(pb.ListNodePolicysRequest(mesh_name="shop", limit=2, next_token=token), timeout=10)
        names += [r.node_policy_name for r in resp.node_policys]
        assert all(r.version == 1 and r.arn.endswith(f"nodePolicy/{r.node_policy_name}") for r in resp.node_policys)
        pages += 1
        token = resp.next_token
        if not token:
            break
    assert names == [f"np{i}" for i in range(5)] and pages == 3
    err = refused(s.ListNodePolicys, pb.ListNodePolicysRequest(mesh_name="nowhere"), timeout=10)
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_watch_streams_policy_events(shop_api):
    s = shop_api.stub
    stream = s.Watch(pb.WatchRequest(mesh_name="shop"), timeout=30)
    seen = []
    first = next(stream)
    assert first.reset and {e.kind for e in first.events} >= {"route", "virtualNode"}
    create(s, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy())
    create(s, "Rollout", meshName="shop", rolloutName="ro", spec=rollout())
    delete(s, "RoutePolicy", mesh_name="shop", route_policy_name="p")
    for resp in stream:
        seen += [(e.kind, e.type, e.path) for e in resp.events]
        if len(seen) >= 3:
            break
    stream.cancel()
    put, delete_ = pb.ResourceEvent.PUT, pb.ResourceEvent.DELETE
    assert seen == [("routePolicy", put, "routePolicies/shop/p"), ("rollout", put, "rollouts/shop/ro"),
                    ("routePolicy", delete_, "routePolicies/shop/p")]
    # Claims and references are internal: no event carries them.
    snap = next(s.Watch(pb.WatchRequest(mesh_name="shop"), timeout=30))
    assert [e.resource.rollout.status.phase for e in snap.events if e.kind == "rollout"] == ["PROGRESSING"]


# -- references ----------------------------------------------------------------------------
def test_references_must_exist_and_hold_their_targets(shop_api):
    s = shop_api.stub
    err = refused(create, s, "RoutePolicy", meshName="shop", routePolicyName="p",
                  spec=route_policy(route={"virtualRouterName": "api-router", "routeName": "nope"}))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert details(err)[1] == {"resource": "routes/shop/api-router/nope", "role": "reference"}
    err = refused(create, s, "RoutePolicy", meshName="shop", routePolicyName="p",
                  spec=route_policy(mirror={"virtualNode": "ghost", "percentage": 1}))
    assert details(err)[1]["resource"] == "virtualNodes/shop/ghost"
    err = refused(create, s, "NodePolicy", meshName="shop", nodePolicyName="np", spec=node_policy("ghost"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = refused(create, s, "Rollout", meshName="shop", rolloutName="ro", spec=rollout(canary="ghost"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # ghost is not a target of the route
    create(s, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy(
        mirror={"virtualNode": "web", "percentage": 1}))
    create(s, "NodePolicy", meshName="shop", nodePolicyName="np", spec=node_policy("api-v1"))
    # A named route or node cannot go while a policy names it; the error names the policy.
    err = refused(s.DeleteRoute, pb.DeleteRouteRequest(mesh_name="shop", virtual_router_name="api-router",
                                                       route_name="api"), timeout=10)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(err)[0] == "RESOURCE_IN_USE" and "routePolicy p in mesh shop" in err.details()
    err = refused(s.DeleteVirtualNode, pb.DeleteVirtualNodeRequest(mesh_name="shop", virtual_node_name="web"),
                  timeout=10)
    assert "routePolicy p" in err.details()
    # Not the mesh either, while its policies exist (App Mesh: a mesh goes when it is empty).
    err = refused(s.DeleteMesh, pb.DeleteMeshRequest(mesh_name="shop"), timeout=10)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Moving the mirror elsewhere releases web; deleting the policy releases the route.
    update(s, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy())
    s.DeleteVirtualService(pb.DeleteVirtualServiceRequest(mesh_name="shop", virtual_service_name="web.shop.local"),
                           timeout=10)
    s.DeleteVirtualNode(pb.DeleteVirtualNodeRequest(mesh_name="shop", virtual_node_name="web"), timeout=10)
    delete(s, "RoutePolicy", mesh_name="shop", route_policy_name="p")
    s.DeleteRoute(pb.DeleteRouteRequest(mesh_name="shop", virtual_router_name="api-router", route_name="api"),
                  timeout=10)
    err = refused(s.DeleteVirtualNode, pb.DeleteVirtualNodeRequest(mesh_name="shop", virtual_node_name="api-v1"),
                  timeout=10)
    assert "nodePolicy np" in err.details()


def test_rollout_targets_must_be_the_routes_weighted_targets(shop_api):
    s = shop_api.stub
    create(s, "VirtualNode", meshName="shop", virtualNodeName="api-v3", spec=node_spec())
    err = refused(create, s, "Rollout", meshName="shop", rolloutName="ro", spec=rollout(canary="api-v3"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err)[2] == ["spec.canary.virtualNode: api-v3 is not a weighted target of route api of "
                               "virtualRouter api-router in mesh shop (its targets: api-v1, api-v2)"]
    err = refused(create, s, "Rollout", meshName="shop", rolloutName="ro",
                  spec=rollout() | {"stable": {"virtualNode": "api-v1", "port": 9999}})
    assert fields(err) == ["spec.stable.virtualNode"]
    create(s, "Rollout", meshName="shop", rolloutName="ro", spec=rollout())
    err = refused(update, s, "Rollout", meshName="shop", rolloutName="ro", spec=rollout(stable="api-v3"))
    assert fields(err) == ["spec.stable.virtualNode"]
    # The route, stable and canary nodes are all held.
    for node in ("api-v1", "api-v2"):
        err = refused(s.DeleteVirtualNode, pb.DeleteVirtualNodeRequest(mesh_name="shop", virtual_node_name=node),
                      timeout=10)
        assert "rollout ro in mesh shop" in err.details()


def test_ports_named_must_be_the_nodes_listeners(shop_api):
    s = shop_api.stub
    limit = {"maxTokens": 5, "tokensPerFill": 5, "fillInterval": {"unit": "s", "value": 1}}
    err = refused(create, s, "NodePolicy", meshName="shop", nodePolicyName="np", spec=node_policy(
        "web", listenerRateLimits=[{"port": 8080, "rateLimit": limit}, {"port": 9999, "rateLimit": limit}]))
    assert details(err)[2] == ["spec.listenerRateLimits[1].port: virtualNode web has no listener on port 9999 "
                               "(its listeners: 8080)"]
    err = refused(create, s, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy(
        mirror={"virtualNode": "web", "percentage": 5, "port": 9999}))
    assert fields(err) == ["spec.mirror.port"]
    create(s, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy(
        mirror={"virtualNode": "web", "percentage": 5, "port": 8080}))


# -- one per target ------------------------------------------------------------------------
def test_one_policy_per_route_and_per_node(shop_api):
    s = shop_api.stub
    create(s, "RoutePolicy", meshName="shop", routePolicyName="first", spec=route_policy())
    err = refused(create, s, "RoutePolicy", meshName="shop", routePolicyName="second", spec=route_policy())
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    reason, meta, _ = details(err)
    assert reason == "ALREADY_CLAIMED"
    assert meta == {"resource": "routes/shop/api-router/api", "holder": "routePolicies/shop/first",
                    "kind": "routePolicy"}
    assert "already has routePolicy first in mesh shop" in err.details()
    # A policy of another route may be moved onto it neither.
    create(s, "Route", meshName="shop", virtualRouterName="api-router", routeName="other",
           spec=route_spec({"api-v1": 1}, prefix="/other"))
    other = route_policy(route={"virtualRouterName": "api-router", "routeName": "other"})
    create(s, "RoutePolicy", meshName="shop", routePolicyName="second", spec=other)
    err = refused(update, s, "RoutePolicy", meshName="shop", routePolicyName="second", spec=route_policy())
    assert details(err)[0] == "ALREADY_CLAIMED"
    # Updating a policy in place keeps its own claim; deleting it frees the route.
    update(s, "RoutePolicy", meshName="shop", routePolicyName="first", spec=route_policy(
        fault={"delay": {"percentage": 1, "fixedDelay": {"unit": "ms", "value": 5}}}))
    delete(s, "RoutePolicy", mesh_name="shop", route_policy_name="first")
    update(s, "RoutePolicy", meshName="shop", routePolicyName="second", spec=route_policy())
    create(s, "NodePolicy", meshName="shop", nodePolicyName="a", spec=node_policy("web"))
    err = refused(create, s, "NodePolicy", meshName="shop", nodePolicyName="b", spec=node_policy("web"))
    assert details(err)[1]["holder"] == "nodePolicies/shop/a"


def test_racing_creates_of_one_route_leave_one_policy(shop_api):
    """The claim is checked inside the write's transaction: of creates racing for one route,
    exactly one wins."""
    s = shop_api.stub
    results = []

    def attempt(i):
        try:
            create(s, "RoutePolicy", meshName="shop", routePolicyName=f"p{i}", spec=route_policy())
            results.append("ok")
        except grpc.RpcError as err:
            results.append(details(err)[0])
    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["ALREADY_CLAIMED"] * 5 + ["ok"]
    assert len(s.ListRoutePolicys(pb.ListRoutePolicysRequest(mesh_name="shop"), timeout=10).route_policys) == 1


# -- the rollout status is the server's ----------------------------------------------------
def test_rollout_status_is_kept_by_update_and_written_by_update_status(shop_api):
    s, resources = shop_api.stub, shop_api.resources
    made = create(s, "Rollout", meshName="shop", rolloutName="ro", spec=rollout()).rollout
    assert (made.status.status, made.status.phase, made.status.step, made.status.canary_weight) == (
        "ACTIVE", "PROGRESSING", -1, 0)
    # The controller moves it on; a user's Update changes the spec only.
    status = spec_pb2.RolloutStatus(status="ACTIVE", phase="PROGRESSING", step=1, canary_weight=25,
                                    controller="h1", message="step 1")
    status.history.add(step=0, weight=5, result="PASSED", canary_requests=120, canary_success_rate=100.0)
    written = resources.update_status(K.ROLLOUT, ("shop", "ro"), status, expected_version=1)
    assert written.metadata.version == 2 and written.status == status
    upd = update(s, "Rollout", expected_version=2, meshName="shop", rolloutName="ro", spec=rollout(paused=True)).rollout
    assert upd.metadata.version == 3 and upd.status == status and upd.spec.paused
    # A status write based on a stale version is refused, and changes nothing.
    with pytest.raises(Exception) as info:
        resources.update_status(K.ROLLOUT, ("shop", "ro"), spec_pb2.RolloutStatus(phase="ABORTED"),
                                expected_version=2)
    assert type(info.value).__name__ == "VersionConflict" and (info.value.expected, info.value.actual) == (2, 3)
    assert describe(s, "Rollout", mesh_name="shop", rollout_name="ro").status == status


def test_one_unfinished_rollout_per_route(shop_api):
    """A second rollout of a route waits for the first to finish: two controllers writing
    one route's weights would undo each other's steps. A finished one stays, as history,
    and still holds its route and nodes as references."""
    s, resources = shop_api.stub, shop_api.resources
    create(s, "Rollout", meshName="shop", rolloutName="one", spec=rollout())
    err = refused(create, s, "Rollout", meshName="shop", rolloutName="two", spec=rollout())
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(err)[1]["holder"] == "rollouts/shop/one"
    done = spec_pb2.RolloutStatus(status="ACTIVE", phase="PROMOTED", step=3, canary_weight=100)
    resources.update_status(K.ROLLOUT, ("shop", "one"), done)
    two = create(s, "Rollout", meshName="shop", rolloutName="two", spec=rollout(stable="api-v2", canary="api-v1"))
    assert two.rollout.status.phase == "PROGRESSING"
    # A finished rollout coming back to life would need the route again: refused while two runs.
    with pytest.raises(Exception) as info:
        resources.update_status(K.ROLLOUT, ("shop", "one"), spec_pb2.RolloutStatus(phase="PROGRESSING"))
    assert type(info.value).__name__ == "Claimed"
    err = refused(s.DeleteRoute, pb.DeleteRouteRequest(mesh_name="shop", virtual_router_name="api-router",
                                                       route_name="api"), timeout=10)
    assert "rollout one in mesh shop" in err.details() and "rollout two in mesh shop" in err.details()


# -- instance locality ---------------------------------------------------------------------
@pytest.fixture
def located(admin):
    """The admin server of a meshd that runs in eu-west-1a on host h1, with the shop mesh."""
    admin.resources.config = ApiConfig(locality=("eu-west-1", "eu-west-1a", "h1"))
    shop(admin.stub)
    return admin


def test_instance_locality_given_or_the_meshds_own(located):
    s = located.stub
    own = s.RegisterInstance(pb.RegisterInstanceRequest(
        mesh_name="shop", virtual_node_name="web", instance_id="a", address="10.0.0.1", port=80), timeout=10)
    assert own.instance.locality == pb.Locality(region="eu-west-1", zone="eu-west-1a", sub_zone="h1")
    given = pb.Locality(region="eu-west-1", zone="eu-west-1b")
    s.RegisterInstance(pb.RegisterInstanceRequest(
        mesh_name="shop", virtual_node_name="web", instance_id="b", address="10.0.0.2", port=80,
        locality=given), timeout=10)
    listed = s.ListInstances(pb.ListInstancesRequest(mesh_name="shop"), timeout=10).instances
    assert {i.instance_id: i.locality for i in listed} == {"a": own.instance.locality, "b": given}
    err = refused(s.RegisterInstance, pb.RegisterInstanceRequest(
        mesh_name="shop", virtual_node_name="web", instance_id="c", address="10.0.0.3", port=80,
        locality=pb.Locality(zone="z/1")), timeout=10)
    assert fields(err) == ["locality.zone", "locality.region"]
    with pytest.raises(ValueError):
        ApiConfig(locality=("", "zone-only", ""))


# -- validation ----------------------------------------------------------------------------
def _violations(stub, title: str, spec: dict) -> dict[str, str]:
    kind = K.BY_TITLE[title]
    err = refused(create, stub, title, meshName="shop", **{_camel(kind.name_field): "bad"}, spec=spec)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and details(err)[0] == "INVALID_SPEC"
    return dict(v.split(": ", 1) for v in details(err)[2])


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def test_route_policy_validation_names_each_field(shop_api):
    s = shop_api.stub
    got = _violations(s, "RoutePolicy", {
        "route": {"virtualRouterName": "api-router"},
        "fault": {"delay": {"percentage": 10.00001, "fixedDelay": {"unit": "s", "value": 3000},
                            "jitter": {"unit": "s", "value": 601}},
                  "abort": {"percentage": 101, "httpStatus": 600}},
        "mirror": {"maxInFlight": 0, "maxBodyBytes": 16 * 1024 * 1024 + 1},
        "rateLimit": {"maxTokens": 0, "fillInterval": {"unit": "s", "value": 86401}},
    })
    assert got == {
        "spec.route.routeName": "required",
        "spec.fault.delay.percentage": "at most 4 decimal places, got 10.00001",
        "spec.fault.delay.fixedDelay": "fixedDelay plus jitter must be at most 1 hour, got 3601000 ms",
        "spec.fault.abort.percentage": "must be between 0 and 100, got 101.0",
        "spec.fault.abort.httpStatus": "must be between 200 and 599, got 600",
        "spec.mirror.virtualNode": "required",
        "spec.mirror.percentage": "required",
        "spec.mirror.maxInFlight": "must be between 1 and 10000, got 0",
        "spec.mirror.maxBodyBytes": "must be between 0 and 16777216, got 16777217",
        "spec.rateLimit.maxTokens": "must be at least 1, got 0",
        "spec.rateLimit.tokensPerFill": "required",
        "spec.rateLimit.fillInterval": "must be between 1 ms and 86400000 ms, got 86401 s",
    }
    got = _violations(s, "RoutePolicy", {"route": ROUTE, "fault": {"match": [{"name": "x-test"}]}})
    assert got == {"spec.fault": "at least one of delay, abort is required"}
    got = _violations(s, "RoutePolicy", {"route": ROUTE, "fault": {"abort": {"percentage": 5}}})
    assert got == {"spec.fault.abort": "exactly one of httpStatus, grpcStatus is required"}
    got = _violations(s, "RoutePolicy", {"route": ROUTE, "fault": {"abort": {"percentage": 5, "grpcStatus": 17}}})
    assert got == {"spec.fault.abort.grpcStatus": "must be between 1 and 16, got 17"}
    assert _violations(s, "RoutePolicy", {"fault": {"abort": {"percentage": 5, "grpcStatus": 14}}}) == {
        "spec.route": "required"}
    # Both statuses at once is refused by the document's shape, with the field named.
    with pytest.raises(InvalidSpec) as info:
        validate_spec("routePolicy", {"route": ROUTE, "fault": {"abort": {
            "percentage": 5, "httpStatus": 503, "grpcStatus": 14}}})
    assert [v.field for v in info.value.violations] == ["spec.fault.abort.grpcStatus"]
    # 4 decimals are fine: 0.0001% is one request in a million.
    create(s, "RoutePolicy", meshName="shop", routePolicyName="ok", spec=route_policy(
        fault={"abort": {"percentage": 0.0001, "grpcStatus": 14}, "match": [{"name": "x-chaos"}]}))


def test_node_policy_and_rollout_validation_names_each_field(shop_api):
    s = shop_api.stub
    limit = {"maxTokens": 1, "tokensPerFill": 1, "fillInterval": {"unit": "ms", "value": 0}}
    got = _violations(s, "NodePolicy", {
        "listenerRateLimits": [{"port": 8080, "rateLimit": limit}, {"port": 8080}],
        "locality": {"overprovisioningFactor": 99},
    })
    assert got == {
        "spec.virtualNodeName": "required",
        "spec.listenerRateLimits[0].rateLimit.fillInterval": "must be between 1 ms and 86400000 ms, got 0 ms",
        "spec.listenerRateLimits[1].rateLimit": "required",
        "spec.listenerRateLimits[1].port": "duplicate port 8080",
        "spec.locality.overprovisioningFactor": "must be between 100 and 1000, got 99",
    }
    got = _violations(s, "Rollout", {
        "route": ROUTE, "stable": {"virtualNode": "api-v1"}, "canary": {"virtualNode": "api-v1"},
        "steps": [{"weight": 10}, {"weight": 10}, {"weight": 101, "minDuration": {"unit": "s", "value": -1}}],
        "analysis": {"interval": {"unit": "ms", "value": 10}, "minSuccessRate": 100.5, "maxLatencyP99Ratio": 0.5,
                     "prometheus": {"address": "prometheus:9090", "query": ""}},
    })
    assert got == {
        "spec.steps[2].weight": "must be between 0 and 100, got 101",
        "spec.steps[2].minDuration.value": "must be at least 0, got -1",
        "spec.analysis.interval": "must be between 1000 ms and 3600000 ms, got 10 ms",
        "spec.analysis.minSuccessRate": "must be between 0 and 100, got 100.5",
        "spec.analysis.maxLatencyP99Ratio": "must be at least 1, got 0.5",
        "spec.analysis.prometheus.query": "length must be between 1 and 4096, got 0",
        "spec.analysis.prometheus.address": "must be an http:// or https:// URL such as http://prometheus:9090, "
                                            "got 'prometheus:9090'",
        "spec.analysis.prometheus": "at least one of min, max is required: the query's value is compared with them",
        "spec.steps[1].weight": "weights must strictly increase; 10 follows 10",
        "spec.canary": "must be another target than stable",
    }
    got = _violations(s, "Rollout", {"steps": [{"weight": w} for w in range(21)]})
    assert got == {"spec.route": "required", "spec.stable": "required", "spec.canary": "required",
                   "spec.steps": "at most 20 items, got 21"}
    assert _violations(s, "Rollout", rollout(steps=[]))["spec.steps"] == "required"
    # The last step may stay below 100: a rollout whose steps all pass is promoted anyway.
    made = create(s, "Rollout", meshName="shop", rolloutName="short", spec=rollout(
        steps=[{"weight": 10}, {"weight": 50}], analysis={"prometheus": {
            "address": "https://prom.example:9090", "query": "sum(rate(x[1m]))", "max": 0.5}}))
    assert [st.weight for st in made.rollout.spec.steps] == [10, 50]


# -- meshctl -------------------------------------------------------------------------------
def meshctl(admin, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", admin.address, *args],
                          capture_output=True, text=True, timeout=120)


POLICIES_YAML = """
kind: Rollout
meshName: shop
rolloutName: api-canary
spec:
  route: {virtualRouterName: api-router, routeName: api}
  stable: {virtualNode: api-v1}
  canary: {virtualNode: api-v2}
  steps: [{weight: 10}, {weight: 50}, {weight: 100}]
---
kind: RoutePolicy
meshName: shop
routePolicyName: api-chaos
spec:
  route: {virtualRouterName: api-router, routeName: api}
  fault:
    abort: {percentage: 10, httpStatus: 503}
---
kind: NodePolicy
meshName: shop
nodePolicyName: web-limits
spec:
  virtualNodeName: web
  listenerRateLimits:
    - port: 8080
      rateLimit: {maxTokens: 100, tokensPerFill: 100, fillInterval: {unit: s, value: 1}}
"""


def test_meshctl_apply_get_diff_describe_delete(shop_api, tmp_path):
    s = shop_api.stub
    f = tmp_path / "policies.yaml"
    f.write_text(POLICIES_YAML)
    # Document order does not matter, and the route and nodes they name already exist.
    out = meshctl(shop_api, "apply", "-f", str(f))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["routePolicy/shop/api-chaos created", "nodePolicy/shop/web-limits created",
                                       "rollout/shop/api-canary created"]
    chaos = describe(s, "RoutePolicy", mesh_name="shop", route_policy_name="api-chaos")
    assert chaos.spec.fault.abort.http_status == 503
    for plural, name in (("routepolicies", "api-chaos"), ("np", "web-limits"), ("rollouts", "api-canary")):
        table = meshctl(shop_api, "get", plural, "--mesh", "shop")
        assert table.returncode == 0, table.stderr
        assert table.stdout.splitlines()[0].split() == ["NAME", "MESH", "VERSION", "AGE", "UPDATED"]
        assert table.stdout.splitlines()[1].split()[:3] == [name, "shop", "1"]
    shown = yaml.safe_load(meshctl(shop_api, "describe", "rollout", "api-canary", "--mesh", "shop").stdout)
    assert shown["status"] == {"status": "ACTIVE", "phase": "PROGRESSING", "step": -1}
    assert [st["weight"] for st in shown["spec"]["steps"]] == [10, 50, 100]
    # Unchanged, then a change shown by diff and applied as an update of the spec only.
    again = meshctl(shop_api, "diff", "-f", str(f), "--exit-code")
    assert again.returncode == 0 and again.stdout.count(" unchanged") == 3
    f.write_text(POLICIES_YAML.replace("percentage: 10,", "percentage: 20,"))
    diff = meshctl(shop_api, "diff", "-f", str(f), "--exit-code")
    assert diff.returncode == 1 and "~ routePolicy/shop/api-chaos (would be updated from version 1)" in diff.stdout
    assert "-    percentage: 10.0" in diff.stdout and "+    percentage: 20.0" in diff.stdout
    out = meshctl(shop_api, "apply", "-f", str(f))
    assert "routePolicy/shop/api-chaos updated (version 2)" in out.stdout
    # A document whose kind and name key disagree is refused before anything is sent.
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Rollout\nmeshName: shop\nroutePolicyName: x\nspec: {}\n")
    out = meshctl(shop_api, "apply", "-f", str(bad))
    assert out.returncode == 1 and "a Rollout document needs rolloutName" in out.stderr
    # Invalid specs come back with their field paths.
    bad.write_text("kind: RoutePolicy\nmeshName: shop\nroutePolicyName: x\nspec: {route: {virtualRouterName: r}}\n")
    out = meshctl(shop_api, "apply", "-f", str(bad))
    assert out.returncode == 1 and "spec.route.routeName: required" in out.stderr
    # The route cannot go while the policy and the rollout name it; delete them first.
    out = meshctl(shop_api, "delete", "route", "api", "--mesh", "shop", "--router", "api-router")
    assert out.returncode == 1 and "RESOURCE_IN_USE" in out.stderr and "routePolicy api-chaos" in out.stderr
    for kind, name in (("rp", "api-chaos"), ("rollout", "api-canary"), ("nodepolicy", "web-limits")):
        out = meshctl(shop_api, "delete", kind, name, "--mesh", "shop")
        assert out.returncode == 0, out.stderr
    assert meshctl(shop_api, "delete", "route", "api", "--mesh", "shop", "--router", "api-router").returncode == 0


def test_export_carries_policies_in_cli_form_only(shop_api):
    s = shop_api.stub
    create(s, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy())
    create(s, "Rollout", meshName="shop", rolloutName="ro", spec=rollout())
    cli = list(yaml.safe_load_all(meshctl(shop_api, "export", "--mesh", "shop").stdout))
    ours = [d for d in cli if "kind" in d]
    assert [(d["kind"], d.get("routePolicyName") or d.get("rolloutName")) for d in ours] == [
        ("RoutePolicy", "p"), ("Rollout", "ro")]
    assert ours[0]["spec"] == route_policy() and "status" not in ours[1]
    # CloudFormation and the App Mesh controller have no such kinds: left out, not choked on.
    for form in ("cloudformation", "k8s"):
        out = meshctl(shop_api, "export", "--mesh", "shop", "-o", form)
        assert out.returncode == 0, out.stderr
        assert "RoutePolicy" not in out.stdout and "Rollout" not in out.stdout and "api-router" in out.stdout


def test_meshctl_lists_instance_localities(located):
    out = meshctl(located, "instance", "register", "--mesh", "shop", "--node", "web", "--id", "a",
                  "--address", "10.0.0.1", "--port", "80")
    assert out.returncode == 0, out.stderr
    table = meshctl(located, "get", "instances", "--mesh", "shop").stdout.splitlines()
    assert table[0].split() == ["ID", "NODE", "ADDRESS", "HOST", "LOCALITY", "HEALTH"]
    assert table[1].split() == ["a", "web", "10.0.0.1:80", "test-host", "eu-west-1/eu-west-1a/h1", "UNKNOWN"]


# -- RBAC and audit ------------------------------------------------------------------------
@pytest.fixture
def secured(etcd, etcd_prefix, tmp_path):
    """A real meshd with a cluster key and a token listener; `api(subject)` is a stub holding
    an API token of that subject."""
    from meshd.app import Meshd, MeshdConfig  # noqa: PLC0415
    from meshd.embedded_etcd import free_port  # noqa: PLC0415
    from meshd.security import ClusterKey, Roles, Tokens  # noqa: PLC0415
    from meshd.v1 import admin_pb2_grpc  # noqa: PLC0415
    from meshd.v1 import security_pb2_grpc  # noqa: PLC0415

    ClusterKey.generate(tmp_path / "cluster.key")
    daemon = Meshd(MeshdConfig(admin=f"127.0.0.1:{free_port()}", admin_token=f"127.0.0.1:{free_port()}",
                               etcd=[etcd.url], etcd_prefix=etcd_prefix, state_dir=str(tmp_path / "h1"),
                               host_name="h1", cluster_key=str(tmp_path / "cluster.key"), lease_ttl=5)).start()
    bundle = (tmp_path / "h1" / "identity" / "bundle.pem").read_bytes()
    roles, tokens, channels = Roles(daemon.store), Tokens(daemon.store), []

    def api(subject: str):
        creds = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(bundle),
            grpc.access_token_call_credentials(tokens.create_api_token(subject).token))
        channels.append(grpc.secure_channel(daemon.admin.addresses["token"], creds))
        return admin_pb2_grpc.MeshAdminStub(channels[-1]), security_pb2_grpc.MeshSecurityStub(channels[-1])
    yield roles, api
    for c in channels:
        c.close()
    daemon.stop()


def test_rbac_and_audit_cover_policies(secured):
    from meshd.v1 import security_pb2 as sec  # noqa: PLC0415

    roles, api = secured
    roles.grant("root", "admin", "*")
    roles.grant("vera", "viewer", "shop")
    roles.grant("eddie", "editor", "other")
    root, root_sec = api("root")
    shop(root)
    create(root, "Mesh", meshName="other")
    create(root, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy())
    vera, _ = api("vera")
    eddie, _ = api("eddie")
    # A viewer reads and cannot write; an editor of another mesh can do neither here.
    assert describe(vera, "RoutePolicy", mesh_name="shop", route_policy_name="p").spec == describe(
        root, "RoutePolicy", mesh_name="shop", route_policy_name="p").spec
    assert len(vera.ListRoutePolicys(pb.ListRoutePolicysRequest(mesh_name="shop"), timeout=10).route_policys) == 1
    for stub, who in ((vera, "vera"), (eddie, "eddie")):
        err = refused(update, stub, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy())
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        err = refused(create, stub, "Rollout", meshName="shop", rolloutName="ro", spec=rollout())
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        err = refused(delete, stub, "RoutePolicy", mesh_name="shop", route_policy_name="p")
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = refused(describe, eddie, "RoutePolicy", mesh_name="shop", route_policy_name="p")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # Every write is audited, refused ones too; reads are not.
    entries = root_sec.ListAuditEntries(sec.ListAuditEntriesRequest(resource_prefix="", limit=100),
                                        timeout=10).entries
    mine = [(e.who, e.action, e.resource, e.result) for e in reversed(entries)
            if e.resource.startswith(("routePolicies/", "rollouts/"))]
    assert mine == [("root", "CreateRoutePolicy", "routePolicies/shop/p", "OK")] + [
        entry for who in ("vera", "eddie") for entry in (
            (who, "UpdateRoutePolicy", "routePolicies/shop/p", "PERMISSION_DENIED"),
            (who, "CreateRollout", "rollouts/shop/ro", "PERMISSION_DENIED"),
            (who, "DeleteRoutePolicy", "routePolicies/shop/p", "PERMISSION_DENIED"))]


# -- App Mesh's REST API -------------------------------------------------------------------
def test_app_mesh_rest_api_neither_offers_nor_chokes_on_policies(etcd, tmp_path):
    """boto3's appmesh client sees App Mesh's resources only: a mesh holding policies lists
    and describes as before, a route a policy names is in use (ResourceInUseException naming
    the policy), and the tag operations refuse a policy's ARN."""
    from tests.awsapi.harness import start_aws_mesh, stop_aws_mesh  # noqa: PLC0415

    m = start_aws_mesh(etcd, tmp_path)
    try:
        shop(m.grpc_admin)
        made = create(m.grpc_admin, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy())
        c = m.client()
        assert len(c.list_virtual_nodes(meshName="shop")["virtualNodes"]) == 3
        assert c.describe_route(meshName="shop", virtualRouterName="api-router", routeName="api")["route"]
        with pytest.raises(c.exceptions.ResourceInUseException, match="routePolicy p in mesh shop"):
            c.delete_route(meshName="shop", virtualRouterName="api-router", routeName="api")
        arn = made.route_policy.metadata.arn
        for call, kwargs in ((c.list_tags_for_resource, {}), (c.tag_resource, {"tags": [{"key": "k", "value": "v"}]}),
                             (c.untag_resource, {"tagKeys": ["k"]})):
            with pytest.raises(c.exceptions.BadRequestException, match="App Mesh has no routePolicy resources"):
                call(resourceArn=arn, **kwargs)
        # Over meshd's own API the same ARN is tagged as any other.
        m.grpc_admin.TagResource(pb.TagResourceRequest(resource_arn=arn, tags=[pb.TagRef(key="k", value="v")]),
                                 timeout=10)
    finally:
        stop_aws_mesh(m)


# -- backup and restore --------------------------------------------------------------------
def test_backup_keeps_running_rollouts_and_instance_localities(shop_api, tmp_path):
    s = shop_api.stub
    create(s, "Route", meshName="shop", virtualRouterName="api-router", routeName="old",
           spec=route_spec({"api-v1": 1, "api-v2": 1}, prefix="/old"))
    create(s, "Rollout", meshName="shop", rolloutName="running", spec=rollout())
    create(s, "Rollout", meshName="shop", rolloutName="done", spec=rollout(
        route={"virtualRouterName": "api-router", "routeName": "old"}))
    shop_api.resources.update_status(K.ROLLOUT, ("shop", "done"), spec_pb2.RolloutStatus(
        status="ACTIVE", phase="PROMOTED", step=3, canary_weight=100))
    create(s, "RoutePolicy", meshName="shop", routePolicyName="p", spec=route_policy())
    zone = pb.Locality(region="eu-west-1", zone="eu-west-1c", sub_zone="rack-7")
    s.RegisterInstance(pb.RegisterInstanceRequest(mesh_name="shop", virtual_node_name="web", instance_id="w1",
                                                  address="10.0.0.9", port=80, locality=zone), timeout=10)
    f = tmp_path / "backup.yaml"
    out = meshctl(shop_api, "backup", "-f", str(f), "--mesh", "shop")
    assert out.returncode == 0, out.stderr
    saved = yaml.safe_load(f.read_text())
    names = [d.get("rolloutName") or d.get("routePolicyName") for d in saved["resources"]
             if "rolloutName" in d or "routePolicyName" in d]
    # A finished rollout is history: restored, it would start over and move its route back.
    assert names == ["p", "running"]
    s.DeregisterInstance(pb.DeregisterInstanceRequest(mesh_name="shop", virtual_node_name="web", instance_id="w1"),
                         timeout=10)
    out = meshctl(shop_api, "restore", "-f", str(f), "--instances")
    assert out.returncode == 0, out.stderr
    assert "rollout/shop/running unchanged" in out.stdout and "routePolicy/shop/p unchanged" in out.stdout
    listed = s.ListInstances(pb.ListInstancesRequest(mesh_name="shop"), timeout=10).instances
    assert [(i.instance_id, i.locality) for i in listed] == [("w1", zone)]
