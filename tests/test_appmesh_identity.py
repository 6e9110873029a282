"""App Mesh's identity and request limits at the admin API, through a real gRPC server on a
real etcd: ARNs in AWS form from the cluster's partition, region and account (recorded once
in etcd and adopted by every later meshd), meshOwner, the limits where App Mesh's model is
stricter than meshd was, TooManyTags, and the optional quotas that answer LimitExceeded."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import botocore.loaders
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import registry
from builders import create, gateway_route_spec, gateway_spec, node_spec, route_spec, router_spec, update
from meshd.api import errors as E
from meshd.api import kinds as K
from meshd.api import resources as R
from meshd.api.resources import (ApiConfig, AwsIdentity, ClusterIdentity, Resources, establish_aws_identity,
                                 parse_quota)
from meshd.api.server import AdminServer
from meshd.app import Meshd, MeshdConfig
from meshd.embedded_etcd import free_port
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import admin_pb2_grpc

pytestmark = pytest.mark.etcd

DEFAULT_ACCOUNT = "000000000000"
PREFIX = f"arn:aws:appmesh:us-east-1:{DEFAULT_ACCOUNT}:"


# -- helpers ------------------------------------------------------------------------------
class Api:
    """A Resources with the given ApiConfig behind a real admin gRPC server, and its stub."""

    def __init__(self, store, config: ApiConfig, identity: ClusterIdentity | None = None):
        self.resources = Resources(store, config, identity=identity)
        self.server = AdminServer(self.resources, "127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = admin_pb2_grpc.MeshAdminStub(self.channel)

    def close(self):
        self.channel.close()
        self.server.stop(grace=1)


@pytest.fixture
def make_api(store):
    made = []

    def make(**config) -> Api:
        api = Api(store, ApiConfig(**config))
        made.append(api)
        return api
    yield make
    for api in made:
        api.close()


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return info.value


def _details(err: grpc.RpcError, cls):
    out = []
    for d in rpc_status.from_call(err).details:
        if d.Is(cls.DESCRIPTOR):
            msg = cls()
            d.Unpack(msg)
            out.append(msg)
    return out


def reason(err: grpc.RpcError) -> str:
    return _details(err, error_details_pb2.ErrorInfo)[0].reason


def fields(err: grpc.RpcError) -> list[str]:
    return [v.field for br in _details(err, error_details_pb2.BadRequest) for v in br.field_violations]


def _every_kind(stub, mesh: str = "m") -> None:
    create(stub, "Mesh", meshName=mesh, spec={})
    create(stub, "VirtualNode", meshName=mesh, virtualNodeName="n", spec=node_spec())
    create(stub, "VirtualService", meshName=mesh, virtualServiceName="svc.m.local",
           spec={"provider": {"virtualNode": {"virtualNodeName": "n"}}})
    create(stub, "VirtualRouter", meshName=mesh, virtualRouterName="r", spec=router_spec())
    create(stub, "Route", meshName=mesh, virtualRouterName="r", routeName="rt", spec=route_spec({"n": 1}))
    create(stub, "VirtualGateway", meshName=mesh, virtualGatewayName="g", spec=gateway_spec())
    create(stub, "GatewayRoute", meshName=mesh, virtualGatewayName="g", gatewayRouteName="gr",
           spec=gateway_route_spec("svc.m.local"))


# (kind, ids, ARN resource part): App Mesh's segments, singular kind names throughout.
ARN_CASES = [
    (K.MESH, ("m",), "mesh/m"),
    (K.VIRTUAL_NODE, ("m", "n"), "mesh/m/virtualNode/n"),
    (K.VIRTUAL_SERVICE, ("m", "svc.m.local"), "mesh/m/virtualService/svc.m.local"),
    (K.VIRTUAL_ROUTER, ("m", "r"), "mesh/m/virtualRouter/r"),
    (K.ROUTE, ("m", "r", "rt"), "mesh/m/virtualRouter/r/route/rt"),
    (K.VIRTUAL_GATEWAY, ("m", "g"), "mesh/m/virtualGateway/g"),
    (K.GATEWAY_ROUTE, ("m", "g", "gr"), "mesh/m/virtualGateway/g/gatewayRoute/gr"),
]


def _ids_request(verb: str, kind: K.Kind, ids) -> object:
    """Describe/Create/... request naming `ids`; for "List", `ids` are the parent ids."""
    title = kind.plural_title if verb == "List" else kind.title
    return getattr(pb, f"{verb}{title}Request")(**dict(zip(kind.id_fields, ids)))


def _data(resp, kind: K.Kind):
    return getattr(resp, kind.field)


# -- ARNs ---------------------------------------------------------------------------------
def test_arn_of_every_kind_in_every_response_and_watch_event(admin):
    s = admin.stub
    _every_kind(s)
    snapshot = next(iter(s.Watch(pb.WatchRequest(mesh_name="m"), timeout=10)))
    watched = {e.path: getattr(e.resource, e.resource.WhichOneof("kind")) for e in snapshot.events}
    for kind, ids, resource in ARN_CASES:
        arn = PREFIX + resource
        described = _data(getattr(s, f"Describe{kind.title}")(_ids_request("Describe", kind, ids)), kind)
        assert described.metadata.arn == arn
        assert (described.metadata.mesh_owner, described.metadata.resource_owner) == (DEFAULT_ACCOUNT,) * 2
        listed = getattr(s, f"List{kind.plural_title}")(_ids_request("List", kind, ids[:-1]))
        ref = getattr(listed, kind.list_field)[0]
        assert (ref.arn, ref.mesh_owner, ref.resource_owner) == (arn, DEFAULT_ACCOUNT, DEFAULT_ACCOUNT)
        assert watched[kind.path(ids)].metadata.arn == arn
        # The ARN names the resource for tagging, for every kind.
        s.TagResource(pb.TagResourceRequest(resource_arn=arn, tags=[pb.TagRef(key="kind", value=kind.name)]))
        tags = s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=arn)).tags
        assert [(t.key, t.value) for t in tags] == [("kind", kind.name)]
    updated = update(s, "VirtualNode", meshName="m", virtualNodeName="n", spec=node_spec(9090)).virtual_node
    assert updated.metadata.arn == PREFIX + "mesh/m/virtualNode/n"
    # Delete answers with the ARN too (a route first: nothing refers to it).
    gone = s.DeleteRoute(pb.DeleteRouteRequest(mesh_name="m", virtual_router_name="r", route_name="rt")).route
    assert gone.metadata.arn == PREFIX + "mesh/m/virtualRouter/r/route/rt"
    created = create(s, "Mesh", meshName="other", spec={}).mesh
    assert created.metadata.arn == PREFIX + "mesh/other"
    assert created.metadata.mesh_owner == created.metadata.resource_owner == DEFAULT_ACCOUNT


def test_configured_partition_region_and_account_are_in_arns_and_owners(make_api):
    api = make_api(aws=AwsIdentity(partition="aws-cn", region="cn-north-1", account="123456789012"))
    s = api.stub
    mesh = create(s, "Mesh", meshName="m", spec={}).mesh
    assert mesh.metadata.arn == "arn:aws-cn:appmesh:cn-north-1:123456789012:mesh/m"
    node = create(s, "VirtualNode", meshName="m", virtualNodeName="n", spec=node_spec()).virtual_node
    assert node.metadata.arn == "arn:aws-cn:appmesh:cn-north-1:123456789012:mesh/m/virtualNode/n"
    assert node.metadata.mesh_owner == node.metadata.resource_owner == "123456789012"
    # The cluster's own account is accepted as meshOwner.
    described = s.DescribeVirtualNode(pb.DescribeVirtualNodeRequest(
        mesh_name="m", virtual_node_name="n", mesh_owner="123456789012")).virtual_node
    assert described.metadata.arn == node.metadata.arn
    ref = s.ListVirtualNodes(pb.ListVirtualNodesRequest(mesh_name="m", mesh_owner="123456789012")).virtual_nodes[0]
    assert (ref.arn, ref.mesh_owner, ref.resource_owner) == (node.metadata.arn, "123456789012", "123456789012")


def test_tagging_refuses_arns_of_another_account_or_region(make_api):
    api = make_api(aws=AwsIdentity(region="eu-west-1", account="111122223333"))
    s = api.stub
    create(s, "Mesh", meshName="m", spec={})
    own = "arn:aws:appmesh:eu-west-1:111122223333:mesh/m"
    s.TagResource(pb.TagResourceRequest(resource_arn=own, tags=[pb.TagRef(key="k", value="v")]))
    err = rpc_error(s.TagResource, pb.TagResourceRequest(
        resource_arn="arn:aws:appmesh:eu-west-1:999999999999:mesh/m", tags=[pb.TagRef(key="k", value="v")]))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and reason(err) == "FORBIDDEN"
    assert "999999999999" in err.details() and "111122223333" in err.details()
    err = rpc_error(s.ListTagsForResource, pb.ListTagsForResourceRequest(
        resource_arn="arn:aws:appmesh:us-east-1:111122223333:mesh/m"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fields(err) == ["resourceArn"]
    assert "us-east-1" in err.details() and "eu-west-1" in err.details()
    err = rpc_error(s.UntagResource, pb.UntagResourceRequest(
        resource_arn="arn:aws-cn:appmesh:eu-west-1:111122223333:mesh/m", tag_keys=["k"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "aws-cn" in err.details()
    err = rpc_error(s.UntagResource, pb.UntagResourceRequest(
        resource_arn="arn:aws:ecs:eu-west-1:111122223333:mesh/m", tag_keys=["k"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing changed by the refused calls.
    assert [(t.key, t.value) for t in s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=own)).tags] \
        == [("k", "v")]


def test_data_written_with_meshd_arns_reads_back_in_aws_form(make_api, store):
    """Resources written by an older meshd carry arn:meshd:appmesh:<cluster>:meshd:... and the
    owner "meshd" in their stored metadata; every read answers with this cluster's AWS form."""
    for kind, ids, data in (
            (K.MESH, ("old",), pb.MeshData(mesh_name="old", status={"status": "ACTIVE"})),
            (K.VIRTUAL_NODE, ("old", "n"),
             pb.VirtualNodeData(mesh_name="old", virtual_node_name="n", status={"status": "ACTIVE"}))):
        data.metadata.arn = "arn:meshd:appmesh:local:meshd:" + "/".join(
            ["mesh", ids[0]] + (["virtualNode", ids[1]] if len(ids) > 1 else []))
        data.metadata.mesh_owner = data.metadata.resource_owner = "meshd"
        data.metadata.version = 1
        store.put(kind.path(ids), data.SerializeToString())
    api = make_api(aws=AwsIdentity(account="123456789012"))
    s = api.stub
    arn = "arn:aws:appmesh:us-east-1:123456789012:mesh/old/virtualNode/n"
    node = s.DescribeVirtualNode(pb.DescribeVirtualNodeRequest(mesh_name="old", virtual_node_name="n")).virtual_node
    assert (node.metadata.arn, node.metadata.mesh_owner, node.metadata.resource_owner) == (
        arn, "123456789012", "123456789012")
    ref = s.ListVirtualNodes(pb.ListVirtualNodesRequest(mesh_name="old")).virtual_nodes[0]
    assert (ref.arn, ref.mesh_owner) == (arn, "123456789012")
    mesh_ref = s.ListMeshes(pb.ListMeshesRequest()).meshes[0]
    assert mesh_ref.arn == "arn:aws:appmesh:us-east-1:123456789012:mesh/old"
    events = next(iter(s.Watch(pb.WatchRequest(mesh_name="old"), timeout=10))).events
    assert {e.path: (e.resource.mesh.metadata.arn or e.resource.virtual_node.metadata.arn) for e in events} == {
        "meshes/old": "arn:aws:appmesh:us-east-1:123456789012:mesh/old", "virtualNodes/old/n": arn}
    # The old ARN form still names the resource for tagging; the new one sees the same tags.
    s.TagResource(pb.TagResourceRequest(resource_arn="arn:meshd:appmesh:local:meshd:mesh/old/virtualNode/n",
                                        tags=[pb.TagRef(key="k", value="v")]))
    assert [t.key for t in s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=arn)).tags] == ["k"]
    updated = update(s, "VirtualNode", meshName="old", virtualNodeName="n", spec=node_spec()).virtual_node
    assert updated.metadata.arn == arn and updated.metadata.version == 2
    gone = s.DeleteVirtualNode(pb.DeleteVirtualNodeRequest(mesh_name="old", virtual_node_name="n")).virtual_node
    assert gone.metadata.arn == arn


# -- the cluster identity -----------------------------------------------------------------
def test_first_identity_is_recorded_and_adopted_and_a_mismatch_is_refused(store):
    first = establish_aws_identity(store, region="eu-west-1", account="111122223333")
    assert first == AwsIdentity(partition="aws", region="eu-west-1", account="111122223333")
    assert json.loads(store.get(R.AWS_IDENTITY_PATH).value) == {
        "partition": "aws", "region": "eu-west-1", "account": "111122223333"}
    # Later meshds adopt it: with nothing given, or with values that agree.
    assert establish_aws_identity(store) == first
    assert establish_aws_identity(store, account="111122223333", partition="aws") == first
    with pytest.raises(E.AwsIdentityMismatch) as info:
        establish_aws_identity(store, region="us-east-1")
    assert (info.value.field, info.value.recorded, info.value.requested) == ("region", "eu-west-1", "us-east-1")
    assert "eu-west-1" in str(info.value) and "us-east-1" in str(info.value)
    with pytest.raises(ValueError, match="12 digits"):
        establish_aws_identity(store, account="12345")


def test_concurrent_first_meshds_agree_on_one_identity(store):
    """Two meshds starting together on an empty cluster with different accounts: exactly one
    records its identity; the other is refused (create-if-absent in etcd, not last-writer-wins)."""
    outcomes = {}
    barrier = threading.Barrier(2)

    def start(account):
        barrier.wait()
        try:
            outcomes[account] = establish_aws_identity(store, account=account)
        except E.AwsIdentityMismatch as err:
            outcomes[account] = err
    threads = [threading.Thread(target=start, args=(a,)) for a in ("111111111111", "222222222222")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    won = [a for a, o in outcomes.items() if isinstance(o, AwsIdentity)]
    lost = [o for o in outcomes.values() if isinstance(o, E.AwsIdentityMismatch)]
    assert len(won) == 1 and len(lost) == 1
    assert json.loads(store.get(R.AWS_IDENTITY_PATH).value)["account"] == won[0]


def test_a_meshd_started_while_etcd_is_away_reads_the_identity_once_it_answers(own_etcd):
    """A meshd serves while etcd is away (every request UNAVAILABLE); once etcd answers it
    adopts the recorded identity, or, when its settings contradict it, refuses requests."""
    store = registry.Store([own_etcd.url], prefix="/identity-test/", timeout=1.0)
    apis = []
    try:
        establish_aws_identity(store, region="eu-west-1", account="111122223333")
        own_etcd.pause()
        adopting, conflicting = ClusterIdentity(store), ClusterIdentity(store, account="999999999999")
        with pytest.raises(registry.Unavailable):
            adopting.get()
        apis = [Api(store, ApiConfig(), identity=adopting), Api(store, ApiConfig(), identity=conflicting)]
        err = rpc_error(apis[0].stub.CreateMesh, pb.CreateMeshRequest(mesh_name="m"), timeout=10)
        assert err.code() == grpc.StatusCode.UNAVAILABLE and "etcd is unavailable" in err.details()
        own_etcd.resume()
        mesh = apis[0].stub.CreateMesh(pb.CreateMeshRequest(mesh_name="m"), timeout=30).mesh
        assert mesh.metadata.arn == "arn:aws:appmesh:eu-west-1:111122223333:mesh/m"
        assert apis[0].resources.aws == AwsIdentity(region="eu-west-1", account="111122223333")
        err = rpc_error(apis[1].stub.DescribeMesh, pb.DescribeMeshRequest(mesh_name="m"), timeout=10)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and reason(err) == "AWS_IDENTITY_MISMATCH"
        assert "111122223333" in err.details() and "999999999999" in err.details()
    finally:
        for api in apis:
            api.close()
        store.close()


def _meshd(etcd, prefix, tmp_path, name, **aws) -> Meshd:
    cfg = MeshdConfig(admin=f"127.0.0.1:{free_port()}", insecure_local=True, etcd=[etcd.url], etcd_prefix=prefix,
                      state_dir=str(tmp_path / name), host_name=name, cluster_key=str(tmp_path / "no.key"),
                      lease_ttl=5, **aws)
    return Meshd(cfg)


def test_meshds_on_one_cluster_share_its_identity_or_refuse_to_start(etcd, etcd_prefix, tmp_path):
    first = _meshd(etcd, etcd_prefix, tmp_path, "h1", aws_region="eu-west-1", aws_account="111122223333")
    second = _meshd(etcd, etcd_prefix, tmp_path, "h2")
    third = _meshd(etcd, etcd_prefix, tmp_path, "h3", aws_account="999999999999")
    try:
        first.start()
        second.start()
        assert second.resources.aws == AwsIdentity("aws", "eu-west-1", "111122223333")
        mesh = second.resources.create(K.MESH, pb.CreateMeshRequest(mesh_name="m")).mesh
        assert mesh.metadata.arn == "arn:aws:appmesh:eu-west-1:111122223333:mesh/m"
        with pytest.raises(E.AwsIdentityMismatch, match="111122223333.*999999999999|999999999999.*111122223333"):
            third.start()
        assert third.admin is None, "a meshd with another identity must not serve"
    finally:
        for d in (third, second, first):
            d.stop()


def test_meshd_run_flags_environment_and_refusal(etcd, etcd_prefix, tmp_path):
    """`meshd run` takes the identity from --aws-* flags or MESHD_AWS_* and quotas from
    --quota; a later `meshd run` naming another account exits with both values."""
    def run(name, *args, **env):
        port = free_port()
        out = open(tmp_path / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshd.cli.meshd_main", "run", "--insecure-local", "--admin", f"127.0.0.1:{port}",
             "--etcd", etcd.url, "--etcd-prefix", etcd_prefix, "--state-dir", str(tmp_path / name),
             "--cluster-key", str(tmp_path / "no.key"), "--host-name", name, "--metrics", "off", *args],
            stdout=out, stderr=out, env={**os.environ, **env})
        out.close()
        return proc, port

    proc, port = run("h1", "--aws-account", "111122223333", "--quota", "meshes=1", MESHD_AWS_REGION="eu-west-1")
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = admin_pb2_grpc.MeshAdminStub(channel)
        mesh = stub.CreateMesh(pb.CreateMeshRequest(mesh_name="a"), timeout=10).mesh
        assert mesh.metadata.arn == "arn:aws:appmesh:eu-west-1:111122223333:mesh/a"
        err = rpc_error(stub.CreateMesh, pb.CreateMeshRequest(mesh_name="b"), timeout=10)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and reason(err) == "LIMIT_EXCEEDED"
        channel.close()
        refused, _ = run("h2", "--aws-account", "999999999999")
        assert refused.wait(60) == 1
        log = (tmp_path / "h2.log").read_text()
        assert "111122223333" in log and "999999999999" in log
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    bad = subprocess.run([sys.executable, "-m", "meshd.cli.meshd_main", "run", "--quota", "virtualNodes=3"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "virtualNodesPerMesh" in bad.stderr


# -- meshOwner ----------------------------------------------------------------------------
@pytest.mark.parametrize("owner", ["1234", "1234567890123", "12345678901a", "abcdefghijkl"])
def test_mesh_owner_must_be_twelve_digits(admin, owner):
    s = admin.stub
    _every_kind(s)
    for call, req in (
            (s.DescribeMesh, pb.DescribeMeshRequest(mesh_name="m", mesh_owner=owner)),
            (s.DescribeVirtualNode, pb.DescribeVirtualNodeRequest(mesh_name="m", virtual_node_name="n",
                                                                  mesh_owner=owner)),
            (s.ListRoutes, pb.ListRoutesRequest(mesh_name="m", virtual_router_name="r", mesh_owner=owner)),
            (s.UpdateVirtualRouter, pb.UpdateVirtualRouterRequest(mesh_name="m", virtual_router_name="r",
                                                                  spec=pb.UpdateVirtualRouterRequest().spec,
                                                                  mesh_owner=owner)),
            (s.DeleteVirtualGateway, pb.DeleteVirtualGatewayRequest(mesh_name="m", virtual_gateway_name="g",
                                                                    mesh_owner=owner))):
        err = rpc_error(call, req)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fields(err) == ["meshOwner"], req
    err = rpc_error(create, s, "VirtualNode", meshName="m", virtualNodeName="n2", spec=node_spec(), meshOwner=owner)
    assert fields(err) == ["meshOwner"]
    assert [r.virtual_node_name for r in s.ListVirtualNodes(pb.ListVirtualNodesRequest(mesh_name="m")).virtual_nodes] \
        == ["n"]


def test_another_accounts_mesh_is_forbidden(admin):
    s = admin.stub
    _every_kind(s)
    foreign = "111111111111"
    calls = [
        (s.DescribeMesh, pb.DescribeMeshRequest(mesh_name="m", mesh_owner=foreign)),
        (s.DescribeRoute, pb.DescribeRouteRequest(mesh_name="m", virtual_router_name="r", route_name="rt",
                                                  mesh_owner=foreign)),
        (s.ListVirtualServices, pb.ListVirtualServicesRequest(mesh_name="m", mesh_owner=foreign)),
        (s.DeleteGatewayRoute, pb.DeleteGatewayRouteRequest(mesh_name="m", virtual_gateway_name="g",
                                                            gateway_route_name="gr", mesh_owner=foreign)),
    ]
    for call, req in calls:
        err = rpc_error(call, req)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, req
        assert reason(err) == "FORBIDDEN" and foreign in err.details()
    err = rpc_error(create, s, "VirtualNode", meshName="m", virtualNodeName="n2", spec=node_spec(), meshOwner=foreign)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and reason(err) == "FORBIDDEN"
    err = rpc_error(update, s, "VirtualNode", meshName="m", virtualNodeName="n", spec=node_spec(9999),
                    meshOwner=foreign)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # Nothing was written or deleted; the cluster's own account is accepted.
    node = s.DescribeVirtualNode(pb.DescribeVirtualNodeRequest(mesh_name="m", virtual_node_name="n",
                                                               mesh_owner=DEFAULT_ACCOUNT)).virtual_node
    assert node.metadata.version == 1
    s.DescribeGatewayRoute(pb.DescribeGatewayRouteRequest(mesh_name="m", virtual_gateway_name="g",
                                                          gateway_route_name="gr"))
    assert len(s.ListVirtualNodes(pb.ListVirtualNodesRequest(mesh_name="m")).virtual_nodes) == 1


# -- limits where App Mesh's model is stricter --------------------------------------------
def _model() -> dict:
    return botocore.loaders.Loader().load_service_model("appmesh", "service-2")


def test_limits_agree_with_the_app_mesh_model():
    """meshd's constants are the model's: the List limits, tags per resource and per
    request, untag keys, the account id, and which inputs require a spec."""
    shapes, ops = _model()["shapes"], _model()["operations"]

    def member(op, name):
        return shapes[shapes[ops[op]["input"]["shape"]]["members"][name]["shape"]]
    for kind in K.APPMESH_KINDS:
        assert member(f"List{kind.plural_title}", "limit")["max"] == R.MAX_LIMIT
        for verb in ("Create", "Update"):
            required = "spec" in shapes[ops[f"{verb}{kind.title}"]["input"]["shape"]].get("required", [])
            assert kind.spec_required == required, (verb, kind.title)
    assert member("ListTagsForResource", "limit")["max"] == R.MAX_TAGS_LIMIT
    assert member("TagResource", "tags")["max"] == R.MAX_TAGS
    assert member("UntagResource", "tagKeys")["max"] == R.MAX_TAGS
    assert member("DescribeVirtualNode", "meshOwner")["min"] == member("DescribeVirtualNode", "meshOwner")["max"] == 12
    assert shapes["TagRef"]["required"] == ["key", "value"]


def test_list_limits_and_the_tags_limit(admin):
    s = admin.stub
    _every_kind(s)
    for kind, ids, _ in ARN_CASES:
        list_call = getattr(s, f"List{kind.plural_title}")
        for bad in (101, -1):
            req = _ids_request("List", kind, ids[:-1])
            req.limit = bad
            err = rpc_error(list_call, req)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fields(err) == ["limit"]
        req = _ids_request("List", kind, ids[:-1])
        req.limit = 100
        assert len(getattr(list_call(req), kind.list_field)) == 1
    arn = s.DescribeMesh(pb.DescribeMeshRequest(mesh_name="m")).mesh.metadata.arn
    s.TagResource(pb.TagResourceRequest(resource_arn=arn,
                                        tags=[pb.TagRef(key=f"k{i:02d}", value="") for i in range(50)]))
    for bad in (51, 100, -1):
        err = rpc_error(s.ListTagsForResource, pb.ListTagsForResourceRequest(resource_arn=arn, limit=bad))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fields(err) == ["limit"]
        assert "between 1 and 50" in err.details()
    assert len(s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=arn, limit=50)).tags) == 50
    page = s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=arn))  # 0: the default
    assert len(page.tags) == 50 and not page.next_token


def test_untag_takes_at_most_fifty_keys(admin):
    s = admin.stub
    arn = create(s, "Mesh", meshName="m", spec={}, tags=[{"key": "a", "value": "1"}]).mesh.metadata.arn
    err = rpc_error(s.UntagResource, pb.UntagResourceRequest(resource_arn=arn, tag_keys=[f"k{i}" for i in range(50)]
                                                             + ["a"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fields(err) == ["tagKeys"]
    assert [t.key for t in s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=arn)).tags] == ["a"]
    err = rpc_error(s.UntagResource, pb.UntagResourceRequest(resource_arn=arn, tag_keys=["", "a"]))
    assert fields(err) == ["tagKeys[0]"]
    s.UntagResource(pb.UntagResourceRequest(resource_arn=arn, tag_keys=[f"k{i}" for i in range(49)] + ["a"]))
    assert not s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=arn)).tags


# Every kind but the mesh: App Mesh's Create and Update inputs require `spec` (see
# test_limits_agree_with_the_app_mesh_model).
SPEC_CASES = [(kind, ids) for kind, ids, _ in ARN_CASES if kind is not K.MESH]


def test_spec_is_required_where_app_mesh_requires_it(admin):
    s = admin.stub
    _every_kind(s)
    for kind, ids in SPEC_CASES:
        fresh = ids[:-1] + ("new",)
        err = rpc_error(getattr(s, f"Create{kind.title}"), _ids_request("Create", kind, fresh))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fields(err) == ["spec"], kind.title
        err = rpc_error(getattr(s, f"Update{kind.title}"), _ids_request("Update", kind, ids))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fields(err) == ["spec"], kind.title
        described = getattr(s, f"Describe{kind.title}")(_ids_request("Describe", kind, ids))
        assert _data(described, kind).metadata.version == 1
    # A mesh's spec is optional; an empty spec given is a spec.
    s.CreateMesh(pb.CreateMeshRequest(mesh_name="bare"))
    s.UpdateMesh(pb.UpdateMeshRequest(mesh_name="bare"))
    s.CreateVirtualRouter(pb.CreateVirtualRouterRequest(mesh_name="bare", virtual_router_name="r",
                                                        spec=pb.CreateVirtualRouterRequest().spec))
    create(s, "VirtualRouter", meshName="bare", virtualRouterName="r2", spec={})


def test_tag_value_is_required(admin):
    s = admin.stub
    err = rpc_error(s.CreateMesh, pb.CreateMeshRequest(mesh_name="m", tags=[pb.TagRef(key="k")]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fields(err) == ["tags[0].value"]
    err = rpc_error(create, s, "Mesh", meshName="m", tags=[{"key": "a", "value": "1"}, {"key": "k"}])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not s.ListMeshes(pb.ListMeshesRequest()).meshes
    # An empty value is a value (App Mesh's TagValue is 0-256 characters).
    arn = s.CreateMesh(pb.CreateMeshRequest(mesh_name="m", tags=[pb.TagRef(key="k", value="")])).mesh.metadata.arn
    err = rpc_error(s.TagResource, pb.TagResourceRequest(resource_arn=arn, tags=[pb.TagRef(key="x")]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fields(err) == ["tags[0].value"]
    tags = s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=arn)).tags
    assert [(t.key, t.HasField("value"), t.value) for t in tags] == [("k", True, "")]


def test_more_than_fifty_tags_is_too_many_tags(admin):
    s = admin.stub
    tags = [pb.TagRef(key=f"k{i:02d}", value="v") for i in range(51)]
    err = rpc_error(s.CreateMesh, pb.CreateMeshRequest(mesh_name="m", tags=tags))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and reason(err) == "TOO_MANY_TAGS"
    assert not s.ListMeshes(pb.ListMeshesRequest()).meshes
    arn = s.CreateMesh(pb.CreateMeshRequest(mesh_name="m", tags=tags[:30])).mesh.metadata.arn
    # 30 stored + 21 new is 51 after the merge: refused whole, none applied.
    err = rpc_error(s.TagResource, pb.TagResourceRequest(resource_arn=arn, tags=tags[30:]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and reason(err) == "TOO_MANY_TAGS"
    assert "51" in err.details() and "50" in err.details()
    assert len(s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=arn)).tags) == 30
    # Overwriting stored keys does not count them twice: 30 + 20 new is exactly 50.
    s.TagResource(pb.TagResourceRequest(resource_arn=arn, tags=[pb.TagRef(key=t.key, value="w") for t in tags[:50]]))
    assert len(s.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=arn, limit=50)).tags) == 50
    err = rpc_error(s.TagResource, pb.TagResourceRequest(resource_arn=arn, tags=[pb.TagRef(key="one-more", value="")]))
    assert reason(err) == "TOO_MANY_TAGS"


# -- quotas -------------------------------------------------------------------------------
def test_quotas_refuse_creates_beyond_them_with_limit_exceeded(make_api):
    s = make_api(quotas={"meshes": 2, "virtualNodesPerMesh": 2, "routesPerVirtualRouter": 1,
                         "gatewayRoutesPerVirtualGateway": 1}).stub
    create(s, "Mesh", meshName="a", spec={})
    create(s, "Mesh", meshName="b", spec={})
    err = rpc_error(create, s, "Mesh", meshName="c", spec={})
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and reason(err) == "LIMIT_EXCEEDED"
    assert "meshes" in err.details() and "2" in err.details()
    # Per mesh: two nodes in each of a and b; a third in either is refused.
    for mesh in ("a", "b"):
        for n in ("n1", "n2"):
            create(s, "VirtualNode", meshName=mesh, virtualNodeName=n, spec=node_spec())
    err = rpc_error(create, s, "VirtualNode", meshName="a", virtualNodeName="n3", spec=node_spec())
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "virtualNodesPerMesh" in err.details()
    # At the quota, a create of an existing name is still ALREADY_EXISTS, and a retried
    # create (same client token) still answers what it answered.
    err = rpc_error(create, s, "VirtualNode", meshName="a", virtualNodeName="n1", spec=node_spec())
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    s.DeleteVirtualNode(pb.DeleteVirtualNodeRequest(mesh_name="b", virtual_node_name="n2"))
    first = create(s, "VirtualNode", meshName="b", virtualNodeName="n3", spec=node_spec(), clientToken="t1")
    assert create(s, "VirtualNode", meshName="b", virtualNodeName="n3", spec=node_spec(), clientToken="t1") == first
    # Per router: one route each.
    for r in ("r1", "r2"):
        create(s, "VirtualRouter", meshName="a", virtualRouterName=r, spec=router_spec())
        create(s, "Route", meshName="a", virtualRouterName=r, routeName="x", spec=route_spec({"n1": 1}))
    err = rpc_error(create, s, "Route", meshName="a", virtualRouterName="r1", routeName="y",
                    spec=route_spec({"n1": 1}))
    assert reason(err) == "LIMIT_EXCEEDED" and "routesPerVirtualRouter" in err.details()
    # Kinds without a quota are unlimited.
    for i in range(3):
        create(s, "VirtualGateway", meshName="a", virtualGatewayName=f"g{i}", spec=gateway_spec())


def test_quota_names_and_values_are_checked():
    assert parse_quota("virtualNodesPerMesh=500") == ("virtualNodesPerMesh", 500)
    assert set(R.QUOTAS) == {"meshes", "virtualNodesPerMesh", "virtualServicesPerMesh", "virtualRoutersPerMesh",
                             "routesPerVirtualRouter", "virtualGatewaysPerMesh", "gatewayRoutesPerVirtualGateway"}
    for bad in ("virtualNodes=3", "meshes", "meshes=-1", "meshes=many"):
        with pytest.raises(ValueError):
            parse_quota(bad)
    with pytest.raises(ValueError, match="meshes"):
        ApiConfig(quotas={"mesh": 1})
