"""The admin API against a real etcd: CRUD of every kind, integrity rules, concurrency,
idempotency and pagination, through a real gRPC server and client."""
from __future__ import annotations

import threading

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from builders import create, gateway_route_spec, gateway_spec, node_spec, route_spec, router_spec, shop, update
from meshd.v1 import admin_pb2 as pb

pytestmark = pytest.mark.etcd


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return info.value


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo in status details")


def field_violations(err: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(err)
    out = []
    for d in status.details:
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            out += [v.field for v in br.field_violations]
    return out


# -- CRUD of every kind -------------------------------------------------------------------
KIND_CASES = [
    # (title, ids, spec, updated spec)
    ("Mesh", {"meshName": "m"}, {}, {"egressFilter": {"type": "DROP_ALL"}}),
    ("VirtualNode", {"meshName": "m", "virtualNodeName": "n"}, node_spec(8080), node_spec(9090)),
    ("VirtualRouter", {"meshName": "m", "virtualRouterName": "r"}, router_spec(8080), router_spec(8081)),
    ("Route", {"meshName": "m", "virtualRouterName": "r", "routeName": "rt"},
     route_spec({"n": 1}), route_spec({"n": 1}, prefix="/v2")),
    ("VirtualService", {"meshName": "m", "virtualServiceName": "svc.m.local"},
     {"provider": {"virtualNode": {"virtualNodeName": "n"}}},
     {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}),
    ("VirtualGateway", {"meshName": "m", "virtualGatewayName": "g"}, gateway_spec(9080), gateway_spec(9443)),
    ("GatewayRoute", {"meshName": "m", "virtualGatewayName": "g", "gatewayRouteName": "gr"},
     gateway_route_spec("svc.m.local"), gateway_route_spec("svc.m.local", prefix="/shop")),
]


def _snake(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)


def test_crud_every_kind(admin):
    s = admin.stub
    # Create all kinds in dependency order, check the returned data and metadata.
    for title, ids, spec, _ in KIND_CASES:
        resp = create(s, title, **ids, spec=spec)
        data = getattr(resp, _snake(title[0].lower() + title[1:]))
        assert data.metadata.version == 1
        assert data.status.status == "ACTIVE"
        assert data.metadata.uid and data.metadata.arn.startswith("arn:aws:appmesh:us-east-1:000000000000:mesh/m")
        assert data.metadata.created_at.seconds > 0
        for k, v in ids.items():
            assert getattr(data, _snake(k)) == v
    # Describe, update (version +1), list each kind.
    for title, ids, _, new_spec in KIND_CASES:
        field = _snake(title[0].lower() + title[1:])
        req_ids = {_snake(k): v for k, v in ids.items()}
        described = getattr(getattr(s, f"Describe{title}")(getattr(pb, f"Describe{title}Request")(**req_ids)), field)
        updated = getattr(update(s, title, **ids, spec=new_spec), field)
        assert updated.metadata.version == described.metadata.version + 1
        assert updated.metadata.uid == described.metadata.uid
        assert updated.spec != described.spec
        again = getattr(getattr(s, f"Describe{title}")(getattr(pb, f"Describe{title}Request")(**req_ids)), field)
        assert again.spec == updated.spec and again.metadata.version == 2
        plural = "Meshes" if title == "Mesh" else title + "s"
        parent_ids = {k: v for k, v in req_ids.items() if k != list(req_ids)[-1]}
        listed = getattr(s, f"List{plural}")(getattr(pb, f"List{plural}Request")(**parent_ids))
        refs = getattr(listed, "meshes" if title == "Mesh" else field + "s")
        assert [r.version for r in refs] == [2]
    # Delete in reverse dependency order; each is gone afterwards.
    for title, ids, _, _ in reversed(KIND_CASES):
        req_ids = {_snake(k): v for k, v in ids.items()}
        gone = getattr(s, f"Delete{title}")(getattr(pb, f"Delete{title}Request")(**req_ids))
        assert getattr(gone, _snake(title[0].lower() + title[1:])).status.status == "DELETED"
        err = rpc_error(getattr(s, f"Describe{title}"), getattr(pb, f"Describe{title}Request")(**req_ids))
        assert err.code() == grpc.StatusCode.NOT_FOUND


# -- referential integrity ----------------------------------------------------------------
def test_write_under_missing_mesh_is_not_found(admin):
    err = rpc_error(create, admin.stub, "VirtualNode", meshName="ghost", virtualNodeName="n", spec=node_spec())
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "mesh ghost" in err.details()
    assert error_info(err).metadata["resource"] == "meshes/ghost"


def test_route_needs_router_and_target_nodes(admin):
    s = admin.stub
    create(s, "Mesh", meshName="m", spec={})
    create(s, "VirtualNode", meshName="m", virtualNodeName="a", spec=node_spec())
    err = rpc_error(create, s, "Route", meshName="m", virtualRouterName="nope", routeName="r",
                    spec=route_spec({"a": 1}))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "virtualRouter nope" in err.details()
    create(s, "VirtualRouter", meshName="m", virtualRouterName="vr", spec=router_spec())
    err = rpc_error(create, s, "Route", meshName="m", virtualRouterName="vr", routeName="r",
                    spec=route_spec({"a": 1, "missing-node": 1}))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "virtualNode missing-node" in err.details()
    # An update that points at a missing node is refused the same way and changes nothing.
    create(s, "Route", meshName="m", virtualRouterName="vr", routeName="r", spec=route_spec({"a": 1}))
    err = rpc_error(update, s, "Route", meshName="m", virtualRouterName="vr", routeName="r",
                    spec=route_spec({"ghost": 1}))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    cur = s.DescribeRoute(pb.DescribeRouteRequest(mesh_name="m", virtual_router_name="vr", route_name="r")).route
    assert cur.metadata.version == 1 and cur.spec.http_route.action.weighted_targets[0].virtual_node == "a"


def test_service_provider_must_exist(admin):
    s = admin.stub
    create(s, "Mesh", meshName="m", spec={})
    for provider in ({"virtualNode": {"virtualNodeName": "x"}}, {"virtualRouter": {"virtualRouterName": "y"}}):
        err = rpc_error(create, s, "VirtualService", meshName="m", virtualServiceName="s.local",
                        spec={"provider": provider})
        assert err.code() == grpc.StatusCode.NOT_FOUND


def test_gateway_route_needs_gateway_and_service(admin):
    s = admin.stub
    create(s, "Mesh", meshName="m", spec={})
    err = rpc_error(create, s, "GatewayRoute", meshName="m", virtualGatewayName="g", gatewayRouteName="gr",
                    spec=gateway_route_spec("s.local"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "virtualGateway g" in err.details()
    create(s, "VirtualGateway", meshName="m", virtualGatewayName="g", spec=gateway_spec())
    err = rpc_error(create, s, "GatewayRoute", meshName="m", virtualGatewayName="g", gatewayRouteName="gr",
                    spec=gateway_route_spec("s.local"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "virtualService s.local" in err.details()


@pytest.mark.parametrize("title,ids,referrers", [
    ("VirtualNode", {"mesh_name": "shop", "virtual_node_name": "api-v1"}, ["routes/shop/api-router/api"]),
    ("VirtualNode", {"mesh_name": "shop", "virtual_node_name": "web"}, ["virtualServices/shop/web.shop.local"]),
    ("VirtualRouter", {"mesh_name": "shop", "virtual_router_name": "api-router"}, None),
    ("Mesh", {"mesh_name": "shop"}, None),
])
def test_delete_in_use_is_failed_precondition(admin, title, ids, referrers):
    shop(admin.stub)
    err = rpc_error(getattr(admin.stub, f"Delete{title}"), getattr(pb, f"Delete{title}Request")(**ids))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(err)
    assert info.reason == "RESOURCE_IN_USE"
    if referrers:
        assert info.metadata["referrers"].split(",") == referrers
    assert "still in use by" in err.details()
    # Nothing was deleted.
    getattr(admin.stub, f"Describe{title}")(getattr(pb, f"Describe{title}Request")(**ids))


def test_delete_unblocks_once_referrers_are_gone(admin):
    s = admin.stub
    shop(s)
    s.DeleteVirtualService(pb.DeleteVirtualServiceRequest(mesh_name="shop", virtual_service_name="api.shop.local"))
    # The router still has its route.
    err = rpc_error(s.DeleteVirtualRouter,
                    pb.DeleteVirtualRouterRequest(mesh_name="shop", virtual_router_name="api-router"))
    assert "route api of virtualRouter api-router" in err.details()
    # Moving the route off api-v2 releases api-v2 at once.
    update(s, "Route", meshName="shop", virtualRouterName="api-router", routeName="api", spec=route_spec({"api-v1": 1}))
    s.DeleteVirtualNode(pb.DeleteVirtualNodeRequest(mesh_name="shop", virtual_node_name="api-v2"))
    s.DeleteRoute(pb.DeleteRouteRequest(mesh_name="shop", virtual_router_name="api-router", route_name="api"))
    s.DeleteVirtualRouter(pb.DeleteVirtualRouterRequest(mesh_name="shop", virtual_router_name="api-router"))
    s.DeleteVirtualNode(pb.DeleteVirtualNodeRequest(mesh_name="shop", virtual_node_name="api-v1"))


def test_node_with_instances_cannot_be_deleted(admin):
    s = admin.stub
    shop(s)
    s.RegisterInstance(pb.RegisterInstanceRequest(mesh_name="shop", virtual_node_name="api-v2",
                                                  instance_id="i-1", address="127.0.0.1", port=9000))
    update(s, "Route", meshName="shop", virtualRouterName="api-router", routeName="api", spec=route_spec({"api-v1": 1}))
    err = rpc_error(s.DeleteVirtualNode, pb.DeleteVirtualNodeRequest(mesh_name="shop", virtual_node_name="api-v2"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "instance i-1" in err.details()


# -- concurrency and idempotency ----------------------------------------------------------
def test_stale_version_is_aborted_and_changes_nothing(admin):
    s = admin.stub
    shop(s)
    ids = dict(meshName="shop", virtualRouterName="api-router", routeName="api")
    update(s, "Route", **ids, spec=route_spec({"api-v1": 50, "api-v2": 50}), expected_version=1)
    err = rpc_error(update, s, "Route", **ids, spec=route_spec({"api-v1": 1}), expected_version=1)
    assert err.code() == grpc.StatusCode.ABORTED
    assert error_info(err).metadata["actual"] == "2"
    cur = s.DescribeRoute(pb.DescribeRouteRequest(mesh_name="shop", virtual_router_name="api-router",
                                                  route_name="api")).route
    assert cur.metadata.version == 2
    assert [t.weight for t in cur.spec.http_route.action.weighted_targets] == [50, 50]
    err = rpc_error(s.DeleteRoute, pb.DeleteRouteRequest(mesh_name="shop", virtual_router_name="api-router",
                                                         route_name="api", expected_version=1))
    assert err.code() == grpc.StatusCode.ABORTED


def test_twenty_concurrent_writers_lose_no_update(admin):
    """20 writers each do 5 read-modify-write increments of the route's priority with
    expected versions, retrying on ABORTED: the final count is exactly 100."""
    s = admin.stub
    shop(s)
    ids = pb.DescribeRouteRequest(mesh_name="shop", virtual_router_name="api-router", route_name="api")
    aborted = []
    errors = []

    def writer():
        try:
            for _ in range(5):
                while True:
                    cur = s.DescribeRoute(ids, timeout=10).route
                    spec = type(cur.spec)()
                    spec.CopyFrom(cur.spec)
                    spec.priority = cur.spec.priority + 1
                    try:
                        s.UpdateRoute(pb.UpdateRouteRequest(mesh_name="shop", virtual_router_name="api-router",
                                                            route_name="api", spec=spec,
                                                            expected_version=cur.metadata.version), timeout=10)
                        break
                    except grpc.RpcError as err:
                        if err.code() != grpc.StatusCode.ABORTED:
                            raise
                        aborted.append(1)
        except Exception as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=writer) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    final = s.DescribeRoute(ids).route
    assert final.spec.priority == 100
    assert final.metadata.version == 101
    assert aborted, "20 racing writers should have produced version conflicts"


def test_client_token_makes_create_and_update_idempotent(admin):
    s = admin.stub
    create(s, "Mesh", meshName="m", spec={})
    first = create(s, "VirtualNode", meshName="m", virtualNodeName="n", spec=node_spec(), clientToken="tok-1")
    again = create(s, "VirtualNode", meshName="m", virtualNodeName="n", spec=node_spec(), clientToken="tok-1")
    assert again == first  # same token, same body: the same result, not ALREADY_EXISTS
    err = rpc_error(create, s, "VirtualNode", meshName="m", virtualNodeName="n", spec=node_spec(9999),
                    clientToken="tok-1")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err).reason == "IDEMPOTENT_PARAMETER_MISMATCH"
    err = rpc_error(create, s, "VirtualNode", meshName="m", virtualNodeName="n", spec=node_spec())
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    u1 = update(s, "VirtualNode", meshName="m", virtualNodeName="n", spec=node_spec(7000), clientToken="u-1")
    u2 = update(s, "VirtualNode", meshName="m", virtualNodeName="n", spec=node_spec(7000), clientToken="u-1")
    assert u1 == u2 and u2.virtual_node.metadata.version == 2


def test_concurrent_retries_with_one_token_create_once(admin):
    s = admin.stub
    create(s, "Mesh", meshName="m", spec={})
    results, errors = [], []

    def attempt():
        try:
            results.append(create(s, "VirtualNode", meshName="m", virtualNodeName="n", spec=node_spec(),
                                  clientToken="retry-storm"))
        except grpc.RpcError as err:
            errors.append(err)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len({r.virtual_node.metadata.uid for r in results}) == 1


# -- pagination ---------------------------------------------------------------------------
def test_pagination_over_260_resources_with_concurrent_writes(admin):
    s = admin.stub
    create(s, "Mesh", meshName="big", spec={})
    names = [f"n-{i:03d}" for i in range(260)]
    for n in names:
        create(s, "VirtualNode", meshName="big", virtualNodeName=n, spec=node_spec())
    seen, token, pages = [], "", 0
    while True:
        resp = s.ListVirtualNodes(pb.ListVirtualNodesRequest(mesh_name="big", limit=37, next_token=token))
        assert len(resp.virtual_nodes) <= 37
        seen += [r.virtual_node_name for r in resp.virtual_nodes]
        pages += 1
        if pages == 2:
            # Concurrent writes between pages: a new name sorting before the cursor and one
            # after it; a deletion of one not yet listed.
            create(s, "VirtualNode", meshName="big", virtualNodeName="a-early", spec=node_spec())
            create(s, "VirtualNode", meshName="big", virtualNodeName="z-late", spec=node_spec())
            s.DeleteVirtualNode(pb.DeleteVirtualNodeRequest(mesh_name="big", virtual_node_name="n-200"))
        token = resp.next_token
        if not token:
            break
    assert pages == 8
    expected = [n for n in names if n != "n-200"] + ["z-late"]
    assert seen == expected  # every surviving item exactly once, in order
    err = rpc_error(s.ListVirtualNodes, pb.ListVirtualNodesRequest(mesh_name="big", limit=101))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err) == ["limit"]
    err = rpc_error(s.ListVirtualNodes, pb.ListVirtualNodesRequest(mesh_name="big", next_token="garbage!"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err) == ["nextToken"]


def test_list_under_missing_mesh_is_not_found(admin):
    err = rpc_error(admin.stub.ListVirtualNodes, pb.ListVirtualNodesRequest(mesh_name="ghost"))
    assert err.code() == grpc.StatusCode.NOT_FOUND


# -- tags ---------------------------------------------------------------------------------
def test_tags(admin):
    s = admin.stub
    arn = create(s, "Mesh", meshName="m", spec={}, tags=[{"key": "team", "value": "a"}]).mesh.metadata.arn
    s.TagResource(pb.TagResourceRequest(resource_arn=arn, tags=[pb.TagRef(key="env", value="prod")]))
    tags = s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=arn)).tags
    assert {(t.key, t.value) for t in tags} == {("team", "a"), ("env", "prod")}
    s.UntagResource(pb.UntagResourceRequest(resource_arn=arn, tag_keys=["team"]))
    tags = s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=arn)).tags
    assert [(t.key, t.value) for t in tags] == [("env", "prod")]
    err = rpc_error(s.TagResource, pb.TagResourceRequest(resource_arn="arn:meshd:appmesh:local:meshd:mesh/nope",
                                                         tags=[pb.TagRef(key="k")]))
    assert err.code() == grpc.StatusCode.NOT_FOUND


# -- instances ----------------------------------------------------------------------------
def test_instances_register_list_deregister_and_lease(admin):
    s = admin.stub
    shop(s)
    inst = s.RegisterInstance(pb.RegisterInstanceRequest(
        mesh_name="shop", virtual_node_name="api-v1", instance_id="i-1", address="127.0.0.1", port=9001,
        attributes={"zone": "a"})).instance
    assert inst.host == "test-host" and inst.lease_id == admin.lease.current()
    s.RegisterInstance(pb.RegisterInstanceRequest(mesh_name="shop", virtual_node_name="api-v2", instance_id="i-2",
                                                  address="127.0.0.1", port=9002, ttl_seconds=2))
    listed = s.ListInstances(pb.ListInstancesRequest(mesh_name="shop")).instances
    assert [(i.virtual_node_name, i.instance_id) for i in listed] == [("api-v1", "i-1"), ("api-v2", "i-2")]
    only = s.ListInstances(pb.ListInstancesRequest(mesh_name="shop", virtual_node_name="api-v1")).instances
    assert [i.instance_id for i in only] == ["i-1"]
    err = rpc_error(s.RegisterInstance, pb.RegisterInstanceRequest(
        mesh_name="shop", virtual_node_name="ghost", instance_id="i-3", address="127.0.0.1", port=1))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(s.RegisterInstance, pb.RegisterInstanceRequest(
        mesh_name="shop", virtual_node_name="api-v1", instance_id="bad id", address="not an address!", port=0))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(err)) == {"instanceId", "address", "port"}
    s.DeregisterInstance(pb.DeregisterInstanceRequest(mesh_name="shop", virtual_node_name="api-v1", instance_id="i-1"))
    # The TTL instance, not renewed, expires with its lease.
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not s.ListInstances(pb.ListInstancesRequest(mesh_name="shop")).instances:
            break
        time.sleep(0.25)
    assert not s.ListInstances(pb.ListInstancesRequest(mesh_name="shop")).instances


# -- validation at the API ----------------------------------------------------------------
def test_invalid_spec_is_invalid_argument_with_field_paths(admin):
    s = admin.stub
    create(s, "Mesh", meshName="m", spec={})
    create(s, "VirtualNode", meshName="m", virtualNodeName="a", spec=node_spec())
    create(s, "VirtualRouter", meshName="m", virtualRouterName="r", spec=router_spec())
    err = rpc_error(create, s, "Route", meshName="m", virtualRouterName="r", routeName="x",
                    spec=route_spec({"a": 101}, priority=1001))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = field_violations(err)
    assert "spec.httpRoute.action.weightedTargets[0].weight" in fields
    assert "spec.priority" in fields
    err = rpc_error(s.CreateMesh, pb.CreateMeshRequest(mesh_name="bad/name"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err) == ["meshName"]


def _refused_fields(stub, title: str, **doc) -> list[str]:
    """The field violations of a create the admin API must refuse as INVALID_ARGUMENT."""
    err = rpc_error(create, stub, title, **doc)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (doc, err.details())
    return field_violations(err)


def _gateway_route(match: dict, rewrite: dict | None = None, kind: str = "httpRoute") -> dict:
    action = {"target": {"virtualService": {"virtualServiceName": "svc.m.local"}}}
    if rewrite is not None:
        action["rewrite"] = rewrite
    return {kind: {"match": match, "action": action}}


def _route(match: dict, kind: str = "httpRoute") -> dict:
    return {kind: {"match": match, "action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}


def _route_parents(s):
    """Mesh m with node a, router r, gateway g and service svc.m.local: what a route "x"
    and a gateway route "x" need to be created."""
    create(s, "Mesh", meshName="m", spec={})
    create(s, "VirtualNode", meshName="m", virtualNodeName="a", spec=node_spec())
    create(s, "VirtualRouter", meshName="m", virtualRouterName="r", spec=router_spec())
    create(s, "VirtualGateway", meshName="m", virtualGatewayName="g", spec=gateway_spec())
    create(s, "VirtualService", meshName="m", virtualServiceName="svc.m.local",
           spec={"provider": {"virtualNode": {"virtualNodeName": "a"}}})
    return s


@pytest.mark.hardening
def test_regexes_re2_cannot_run_are_refused_naming_the_field(admin):
    # Routes match with RE2, as App Mesh's Envoy does; RE2 has no backreferences or
    # lookaround, so a pattern using them would never match and is refused at the API.
    s = _route_parents(admin.stub)
    route = {"meshName": "m", "virtualRouterName": "r", "routeName": "x"}
    gateway_route = {"meshName": "m", "virtualGatewayName": "g", "gatewayRouteName": "x"}
    assert _refused_fields(s, "Route", **route, spec=_route({"path": {"regex": r"/(a+)\1"}})) == [
        "spec.httpRoute.match.path.regex"]
    assert _refused_fields(s, "Route", **route, spec=_route(
        {"prefix": "/", "headers": [{"name": "h", "match": {"regex": "(?=a)a"}}]}, kind="http2Route")) == [
        "spec.http2Route.match.headers[0].match.regex"]
    assert _refused_fields(s, "Route", **route, spec=_route(
        {"serviceName": "p.S", "metadata": [{"name": "m", "match": {"regex": "(?<!x)y"}}]}, kind="grpcRoute")) == [
        "spec.grpcRoute.match.metadata[0].match.regex"]
    assert _refused_fields(s, "GatewayRoute", **gateway_route, spec=_gateway_route({"path": {"regex": r"/(.)\1"}})) == [
        "spec.httpRoute.match.path.regex"]
    # The same patterns without backtracking features are accepted.
    create(s, "Route", **route, spec=_route({"path": {"regex": "/(a+)+"}}))
    create(s, "GatewayRoute", **gateway_route, spec=_gateway_route({"path": {"regex": "/(.)+"}}))


# Each string field the data plane matches a request against or writes into one, a value
# with a CR, LF or NUL in it, and the field path the refusal must name. A CR/LF in a path
# rewrite or health-check path would otherwise split the HTTP/1.1 request line it is
# written into; in a match value it could never match a well-formed request.
_CRLF = "\r\nX-Injected: 1"
CONTROL_CHARACTER_CASES = [
    ("Route", _route({"prefix": "/a" + _CRLF}), "spec.httpRoute.match.prefix"),
    ("Route", _route({"path": {"exact": "/a\n"}}), "spec.httpRoute.match.path.exact"),
    ("Route", _route({"prefix": "/", "headers": [{"name": "h", "match": {"exact": "v" + _CRLF}}]}),
     "spec.httpRoute.match.headers[0].match.exact"),
    ("Route", _route({"prefix": "/", "headers": [{"name": "h", "match": {"prefix": "v\x00"}}]}, kind="http2Route"),
     "spec.http2Route.match.headers[0].match.prefix"),
    ("Route", _route({"prefix": "/", "headers": [{"name": "h", "match": {"suffix": "\rv"}}]}),
     "spec.httpRoute.match.headers[0].match.suffix"),
    ("Route", _route({"prefix": "/", "queryParameters": [{"name": "q", "match": {"exact": "a\nb"}}]}),
     "spec.httpRoute.match.queryParameters[0].match.exact"),
    ("Route", _route({"serviceName": "p.S\n"}, kind="grpcRoute"), "spec.grpcRoute.match.serviceName"),
    ("Route", _route({"serviceName": "p.S", "methodName": "M\r"}, kind="grpcRoute"),
     "spec.grpcRoute.match.methodName"),
    ("Route", _route({"serviceName": "p.S", "metadata": [{"name": "m", "match": {"exact": "\x00"}}]}, kind="grpcRoute"),
     "spec.grpcRoute.match.metadata[0].match.exact"),
    ("GatewayRoute", _gateway_route({"prefix": "/a\r"}), "spec.httpRoute.match.prefix"),
    ("GatewayRoute", _gateway_route({"path": {"exact": "/a\x00"}}), "spec.httpRoute.match.path.exact"),
    ("GatewayRoute", _gateway_route({"hostname": {"exact": "a.example.com\n"}}), "spec.httpRoute.match.hostname.exact"),
    ("GatewayRoute", _gateway_route({"hostname": {"suffix": ".example.com\r\n"}}, kind="http2Route"),
     "spec.http2Route.match.hostname.suffix"),
    ("GatewayRoute", _gateway_route({"prefix": "/", "headers": [{"name": "h", "match": {"exact": "v\n"}}]}),
     "spec.httpRoute.match.headers[0].match.exact"),
    ("GatewayRoute", _gateway_route({"prefix": "/", "queryParameters": [{"name": "q", "match": {"exact": "\r"}}]}),
     "spec.httpRoute.match.queryParameters[0].match.exact"),
    ("GatewayRoute", _gateway_route({"prefix": "/a"}, rewrite={"prefix": {"value": "/b" + _CRLF}}),
     "spec.httpRoute.action.rewrite.prefix.value"),
    ("GatewayRoute", _gateway_route({"path": {"exact": "/a"}}, rewrite={"path": {"exact": "/b\n"}}),
     "spec.httpRoute.action.rewrite.path.exact"),
    ("GatewayRoute", _gateway_route({"serviceName": "p.S\r\n"}, kind="grpcRoute"), "spec.grpcRoute.match.serviceName"),
]


@pytest.mark.hardening
def test_cr_lf_and_nul_are_refused_in_paths_match_values_and_rewrites(admin):
    s = _route_parents(admin.stub)
    ids = {"Route": {"meshName": "m", "virtualRouterName": "r", "routeName": "x"},
           "GatewayRoute": {"meshName": "m", "virtualGatewayName": "g", "gatewayRouteName": "x"}}
    got = [(title, spec, _refused_fields(s, title, **ids[title], spec=spec)) for title, spec, _ in
           CONTROL_CHARACTER_CASES]
    assert got == [(title, spec, [field]) for title, spec, field in CONTROL_CHARACTER_CASES]
    # The health-check path is written into an HTTP/1.1 request line too.
    check = {"protocol": "http", "path": "/health" + _CRLF, "healthyThreshold": 2, "unhealthyThreshold": 2,
             "intervalMillis": 5000, "timeoutMillis": 2000}
    spec = node_spec()
    spec["listeners"][0]["healthCheck"] = check
    assert _refused_fields(s, "VirtualNode", meshName="m", virtualNodeName="b", spec=spec) == [
        "spec.listeners[0].healthCheck.path"]
    # Nothing was written, and the same specs without the characters are accepted.
    assert not s.ListRoutes(pb.ListRoutesRequest(mesh_name="m", virtual_router_name="r")).routes
    create(s, "GatewayRoute", **ids["GatewayRoute"],
           spec=_gateway_route({"prefix": "/a"}, rewrite={"prefix": {"value": "/b"}}))
