"""App Mesh `serviceDiscovery.awsCloudMap` at run time: several virtual nodes naming one
Cloud Map service (namespace shop.local, service api) and told apart by their `attributes`
filter, as Cloud Map's DiscoverInstances filters by query parameters. Instances are
registered over the admin gRPC API, as a task registers in Cloud Map; the calls go through
a real meshd's egress to real gRPC origins."""
from __future__ import annotations

import http.client
import time
from collections import Counter

import grpc
import pytest

from mesh_harness import SAY, Origin, start_meshd
from meshd.api.validate import parse_json
from meshd.embedded_etcd import free_port
from meshd.proxy import LocalApp
from meshd.security import ClusterKey
from meshd.v1 import admin_pb2 as pb
from tests.test_gateway_traffic import h1_origin

pytestmark = [pytest.mark.migration, pytest.mark.dataplane, pytest.mark.etcd]

SERVICES = ("api.shop.local", "all.shop.local", "v1.shop.local", "v2.shop.local", "legacy.shop.local",
            "page.shop.local")
# The origins, by the node each is registered under, its instance id and its attributes.
# o-v2 is registered under api-v1 with version v2 (Cloud Map knows no nodes, only the
# service): it belongs to api-v2, whose instance id i-1 is also api-v1's.
REGISTERED = {
    "o-v1": ("api-v1", "i-1", {"version": "v1"}),
    "o-v2": ("api-v1", "i-2", {"version": "v2"}),
    "o-v2b": ("api-v2", "i-1", {"version": "v2", "zone": "b"}),
    "o-legacy": ("legacy", "i-9", {"version": "v1"}),
}


def _create(stub, kind: str, doc: dict):
    return getattr(stub, f"Create{kind}")(parse_json(getattr(pb, f"Create{kind}Request"), doc), timeout=10)


def _cloud_map_node(name: str, attributes: dict[str, str], service: str = "api", protocol: str = "grpc") -> dict:
    cloud_map = {"namespaceName": "shop.local", "serviceName": service}
    if attributes:
        cloud_map["attributes"] = [{"key": k, "value": v} for k, v in attributes.items()]
    return {"meshName": "shop", "virtualNodeName": name, "spec": {
        "listeners": [{"portMapping": {"port": 9090, "protocol": protocol}}],
        "serviceDiscovery": {"awsCloudMap": cloud_map}}}


def _register(stub, port: int, node: str, iid: str, attributes: dict[str, str]) -> None:
    stub.RegisterInstance(pb.RegisterInstanceRequest(
        mesh_name="shop", virtual_node_name=node, instance_id=iid, address="127.0.0.1", port=port,
        attributes=attributes, ttl_seconds=60), timeout=10)


class CloudMapMesh:
    def __init__(self, a, stub, origins):
        self.a, self.stub, self.origins = a, stub, origins
        self.channels = {}

    def call(self, service: str, body: bytes = b"x") -> str:
        ch = self.channels.get(service)
        if ch is None:
            ch = self.channels[service] = grpc.insecure_channel(
                self.a.runtime.addresses["egress:web"],
                options=[("grpc.default_authority", f"{service}:9090"), ("grpc.enable_retries", 0)])
        return ch.unary_unary(SAY)(body, timeout=5).split(b":", 1)[0].decode()

    def answers(self, service: str, n: int) -> Counter:
        return Counter(self.call(service) for _ in range(n))

    def until(self, service: str, n: int, expect: set[str], timeout: float = 10.0) -> Counter:
        """n calls answered by exactly the origins `expect`, once the mesh has caught up."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self.answers(service, n)
                if set(got) == expect:
                    return got
            except grpc.RpcError as err:
                got = err
            if time.monotonic() > deadline:
                raise AssertionError(f"{service}: {got!r}, expected answers from {sorted(expect)}")
            time.sleep(0.1)

    def close(self):
        for ch in self.channels.values():
            ch.close()


@pytest.fixture
def cloud_map_mesh(etcd, etcd_prefix, admin, tmp_path):
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    origins = {name: Origin(name) for name in (*REGISTERED, "o-hosted")}
    web = LocalApp(mesh="shop", virtual_node="web", port=free_port(), egress="127.0.0.1:0",
                   egress_http="127.0.0.1:0")
    a = start_meshd(etcd, etcd_prefix, tmp_path, "host-a", [web], key)
    # An app of api-v1 run by a meshd on host B: registered by it, with no attributes of its
    # own, and reached over mTLS through host B's ingress.
    b = start_meshd(etcd, etcd_prefix, tmp_path, "host-b", [
        LocalApp(mesh="shop", virtual_node="api-v1", port=origins["o-hosted"].port, instance_id="hosted")], key)
    s = admin.stub
    _create(s, "Mesh", {"meshName": "shop", "spec": {"egressFilter": {"type": "DROP_ALL"}}})
    _create(s, "VirtualNode", {"meshName": "shop", "virtualNodeName": "web", "spec": {
        "listeners": [{"portMapping": {"port": 8080, "protocol": "grpc"}}],
        "serviceDiscovery": {"dns": {"hostname": "web.shop.local"}},
        "backends": [{"virtualService": {"virtualServiceName": name}} for name in SERVICES]}})
    _create(s, "VirtualNode", _cloud_map_node("api-v1", {"version": "v1"}))
    _create(s, "VirtualNode", _cloud_map_node("api-v2", {"version": "v2"}))
    _create(s, "VirtualNode", _cloud_map_node("api-all", {}))
    _create(s, "VirtualNode", _cloud_map_node("page-v1", {"version": "v1"}, "page", "http"))
    _create(s, "VirtualNode", _cloud_map_node("page-all", {}, "page", "http"))
    _create(s, "VirtualNode", {"meshName": "shop", "virtualNodeName": "legacy", "spec": {
        "listeners": [{"portMapping": {"port": 9090, "protocol": "grpc"}}],
        "serviceDiscovery": {"dns": {"hostname": "legacy.shop.local"}}}})
    _create(s, "VirtualRouter", {"meshName": "shop", "virtualRouterName": "api-router",
                                 "spec": {"listeners": [{"portMapping": {"port": 9090, "protocol": "grpc"}}]}})
    _create(s, "Route", {"meshName": "shop", "virtualRouterName": "api-router", "routeName": "split", "spec": {
        "grpcRoute": {"match": {"serviceName": "echo.Echo"}, "action": {"weightedTargets": [
            {"virtualNode": "api-v1", "weight": 50}, {"virtualNode": "api-v2", "weight": 50}]}}}})
    providers = {"api.shop.local": {"virtualRouter": {"virtualRouterName": "api-router"}},
                 "all.shop.local": {"virtualNode": {"virtualNodeName": "api-all"}},
                 "v1.shop.local": {"virtualNode": {"virtualNodeName": "api-v1"}},
                 "v2.shop.local": {"virtualNode": {"virtualNodeName": "api-v2"}},
                 "legacy.shop.local": {"virtualNode": {"virtualNodeName": "legacy"}},
                 "page.shop.local": {"virtualNode": {"virtualNodeName": "page-all"}}}
    for name, provider in providers.items():
        _create(s, "VirtualService", {"meshName": "shop", "virtualServiceName": name, "spec": {"provider": provider}})
    for name, (node, iid, attributes) in REGISTERED.items():
        _register(s, origins[name].port, node, iid, attributes)
    page = h1_origin("page")
    _register(s, page.server_address[1], "page-v1", "p-1", {"version": "v1"})
    m = CloudMapMesh(a, s, origins)
    yield m
    m.close()
    a.stop()
    b.stop()
    page.shutdown()
    for o in origins.values():
        o.stop()


def test_nodes_sharing_a_cloud_map_service_get_only_the_instances_their_attributes_select(cloud_map_mesh):
    m = cloud_map_mesh
    # api-v1's own meshd-hosted instance has no version: declared by its node, it stays.
    m.until("v1.shop.local", 20, {"o-v1", "o-hosted"})
    m.until("v2.shop.local", 40, {"o-v2", "o-v2b"})
    # The route's 50/50 split: each half goes to its version's origins, and only there.
    got = m.answers("api.shop.local", 400)
    assert set(got) == {"o-v1", "o-hosted", "o-v2", "o-v2b"}, got
    assert 150 <= got["o-v1"] + got["o-hosted"] <= 250, got
    assert 150 <= got["o-v2"] + got["o-v2b"] <= 250, got


def test_a_node_without_a_filter_gets_every_instance_of_the_service(cloud_map_mesh):
    m = cloud_map_mesh
    # i-1 is registered under api-v1 and under api-v2: both are reached. o-legacy has the
    # attributes but its node names no Cloud Map service, so it is not among them; nor is
    # api-v1's app on host B, whose ingress proves api-v1's identity, not api-all's...
    got = m.until("all.shop.local", 60, {"o-v1", "o-v2", "o-v2b"})
    assert min(got.values()) >= 10, got
    # ... and its own node still has it (nodes without Cloud Map discovery are unaffected).
    assert m.answers("legacy.shop.local", 5) == Counter({"o-legacy": 5})
    ids = sorted(e.id for e in m.a.runtime.view.live("shop").router.endpoints("api-all"))
    assert ids == ["api-v2/i-1", "i-1", "i-2"], ids


def test_an_instance_re_registered_with_other_attributes_moves_without_a_rebuild(cloud_map_mesh):
    m = cloud_map_mesh
    m.until("v2.shop.local", 40, {"o-v2", "o-v2b"})
    generation = m.a.runtime.view.live("shop").generation
    _register(m.stub, m.origins["o-v2"].port, "api-v1", "i-2", {"version": "v1"})
    m.until("v1.shop.local", 40, {"o-v1", "o-v2", "o-hosted"}, timeout=3)
    m.until("v2.shop.local", 20, {"o-v2b"}, timeout=3)
    assert m.until("all.shop.local", 60, {"o-v1", "o-v2", "o-v2b"})
    # Deregistered: it leaves every node of the service.
    m.stub.DeregisterInstance(pb.DeregisterInstanceRequest(mesh_name="shop", virtual_node_name="api-v1",
                                                           instance_id="i-2"), timeout=10)
    m.until("v1.shop.local", 20, {"o-v1", "o-hosted"}, timeout=3)
    m.until("all.shop.local", 40, {"o-v1", "o-v2b"}, timeout=3)
    assert m.a.runtime.view.live("shop").generation == generation  # endpoints pushed, no recompile


def test_a_filter_changed_on_the_node_takes_effect(cloud_map_mesh):
    m = cloud_map_mesh
    m.until("v2.shop.local", 40, {"o-v2", "o-v2b"})
    doc = _cloud_map_node("api-v2", {"version": "v2", "zone": "b"})
    m.stub.UpdateVirtualNode(parse_json(pb.UpdateVirtualNodeRequest, doc), timeout=10)
    m.until("v2.shop.local", 20, {"o-v2b"})


def test_http1_callers_reach_an_instance_registered_under_another_node_of_the_service(cloud_map_mesh):
    """The HTTP/1.1 egress looks the instance behind an endpoint up among its node's
    instances: page-all's include the one registered under page-v1."""
    host, port = cloud_map_mesh.a.runtime.addresses["egress_http:web"].rsplit(":", 1)

    def get():
        c = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            c.request("GET", "/menu", headers={"Host": "page.shop.local:9090"})
            resp = c.getresponse()
            return resp.status, resp.read().decode()
        finally:
            c.close()
    deadline = time.monotonic() + 10
    while (got := get()) != (200, "page /menu page.shop.local:9090") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert got == (200, "page /menu page.shop.local:9090")


def test_ip_preference_only_keeps_instances_of_that_address_family(cloud_map_mesh):
    m = cloud_map_mesh
    m.until("all.shop.local", 60, {"o-v1", "o-v2", "o-v2b"})

    def prefer(preference: str) -> None:
        doc = _cloud_map_node("api-all", {})
        doc["spec"]["serviceDiscovery"]["awsCloudMap"]["ipPreference"] = preference
        m.stub.UpdateVirtualNode(parse_json(pb.UpdateVirtualNodeRequest, doc), timeout=10)
    prefer("IPv6_ONLY")
    assert _refused(m, "all.shop.local"), "every instance is at 127.0.0.1: none is left"
    prefer("IPv4_ONLY")
    m.until("all.shop.local", 60, {"o-v1", "o-v2", "o-v2b"})


def _refused(m: CloudMapMesh, service: str, timeout: float = 10.0) -> bool:
    """A call to `service` is refused (UNAVAILABLE: no endpoint) before `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            m.call(service)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                return True
        time.sleep(0.1)
    return False
