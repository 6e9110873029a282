"""App Mesh routes that match on `port` alone (no prefix, no path): a router with two
listeners sends what arrives on each listener port where that port's route says, every
path. The route documents are App Mesh's own (`aws appmesh create-route --cli-input-json`),
sent over the admin gRPC API; the traffic goes through two real meshds over mTLS."""
from __future__ import annotations

import http.client
import time

import grpc
import pytest

from mesh_harness import Origin, start_meshd
from meshd.api.validate import parse_json
from meshd.embedded_etcd import free_port
from meshd.proxy import LocalApp
from meshd.security import ClusterKey
from meshd.v1 import admin_pb2 as pb
from tests.test_gateway_traffic import h1_origin

pytestmark = [pytest.mark.migration, pytest.mark.dataplane, pytest.mark.etcd]

# The two App Mesh CLI documents of the migration audit that meshd refused: a route per
# listener port of a two-listener router, matching on the port alone.
HTTP_ROUTE_8080 = {
    "meshName": "shop", "virtualRouterName": "api", "routeName": "port-8080",
    "spec": {"httpRoute": {"match": {"port": 8080},
                           "action": {"weightedTargets": [{"virtualNode": "api-a", "weight": 1, "port": 8080}]}}},
}
GRPC_ROUTE_9090 = {
    "meshName": "shop", "virtualRouterName": "rpc", "routeName": "port-9090",
    "spec": {"grpcRoute": {"match": {"port": 9090},
                           "action": {"weightedTargets": [{"virtualNode": "rpc-a", "weight": 1}]}}},
}


def _create(stub, kind: str, doc: dict):
    return getattr(stub, f"Create{kind}")(parse_json(getattr(pb, f"Create{kind}Request"), doc), timeout=10)


def _node(name, port, protocol, backends=()):
    return {"meshName": "shop", "virtualNodeName": name, "spec": {
        "listeners": [{"portMapping": {"port": port, "protocol": protocol}}],
        "serviceDiscovery": {"dns": {"hostname": f"{name}.shop.local"}},
        "backends": [{"virtualService": {"virtualServiceName": b}} for b in backends]}}


@pytest.fixture
def port_mesh(etcd, etcd_prefix, admin, tmp_path):
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    http_a, http_b = h1_origin("api-a"), h1_origin("api-b")
    rpc_a, rpc_b = Origin("rpc-a"), Origin("rpc-b")
    web = LocalApp(mesh="shop", virtual_node="web", port=free_port(), egress="127.0.0.1:0",
                   egress_http="127.0.0.1:0")
    a = start_meshd(etcd, etcd_prefix, tmp_path, "host-a", [web], key)
    b = start_meshd(etcd, etcd_prefix, tmp_path, "host-b", [
        LocalApp(mesh="shop", virtual_node="api-a", port=http_a.server_address[1], protocol="http"),
        LocalApp(mesh="shop", virtual_node="api-b", port=http_b.server_address[1], protocol="http"),
        LocalApp(mesh="shop", virtual_node="rpc-a", port=rpc_a.port),
        LocalApp(mesh="shop", virtual_node="rpc-b", port=rpc_b.port)], key)
    s = admin.stub
    _create(s, "Mesh", {"meshName": "shop", "spec": {"egressFilter": {"type": "DROP_ALL"}}})
    _create(s, "VirtualNode", _node("web", 8080, "http", ("api.shop.local", "rpc.shop.local")))
    for n in ("api-a", "api-b"):
        _create(s, "VirtualNode", _node(n, 8080, "http"))
    for n in ("rpc-a", "rpc-b"):
        _create(s, "VirtualNode", _node(n, 9090, "grpc"))
    _create(s, "VirtualRouter", {"meshName": "shop", "virtualRouterName": "api", "spec": {"listeners": [
        {"portMapping": {"port": 8080, "protocol": "http"}}, {"portMapping": {"port": 8081, "protocol": "http"}}]}})
    _create(s, "VirtualRouter", {"meshName": "shop", "virtualRouterName": "rpc", "spec": {"listeners": [
        {"portMapping": {"port": 9090, "protocol": "grpc"}}, {"portMapping": {"port": 9091, "protocol": "grpc"}}]}})
    for router in ("api", "rpc"):
        _create(s, "VirtualService", {"meshName": "shop", "virtualServiceName": f"{router}.shop.local",
                                      "spec": {"provider": {"virtualRouter": {"virtualRouterName": router}}}})
    yield a, admin
    a.stop()
    b.stop()
    for o in (http_a, http_b):
        o.shutdown()
    rpc_a.stop()
    rpc_b.stop()


def _get(a, host: str, path: str) -> tuple[int, str]:
    h, p = a.runtime.addresses["egress_http:web"].rsplit(":", 1)
    c = http.client.HTTPConnection(h, int(p), timeout=5)
    try:
        c.request("GET", path, headers={"Host": host})
        resp = c.getresponse()
        return resp.status, resp.read().decode()
    finally:
        c.close()


def _until(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (OSError, http.client.HTTPException, AssertionError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_http_route_on_port_alone_routes_only_what_arrives_on_that_port(port_mesh):
    a, admin = port_mesh
    created = _create(admin.stub, "Route", HTTP_ROUTE_8080)
    assert created.route.spec.http_route.match.port == 8080
    assert not created.route.spec.http_route.match.HasField("prefix")
    _create(admin.stub, "Route", {
        "meshName": "shop", "virtualRouterName": "api", "routeName": "port-8081",
        "spec": {"httpRoute": {"match": {"port": 8081},
                               "action": {"weightedTargets": [{"virtualNode": "api-b", "weight": 1}]}}}})

    def routed():
        assert _get(a, "api.shop.local:8080", "/") == (200, "api-a / api.shop.local:8080")
        assert _get(a, "api.shop.local:8081", "/") == (200, "api-b / api.shop.local:8081")
    _until(routed)
    for path in ("/", "/orders/17?x=1", "/a/very/deep/path"):  # no path condition: every path
        assert _get(a, "api.shop.local:8080", path) == (200, f"api-a {path} api.shop.local:8080")
        assert _get(a, "api.shop.local:8081", path) == (200, f"api-b {path} api.shop.local:8081")
    # No port of its own on a two-listener router: neither listener's route takes it.
    status, body = _get(a, "api.shop.local", "/")
    assert status == 404 and "api-" not in body, (status, body)


def test_grpc_route_on_port_alone(port_mesh):
    a, admin = port_mesh
    created = _create(admin.stub, "Route", GRPC_ROUTE_9090)
    assert created.route.spec.grpc_route.match.port == 9090
    _create(admin.stub, "Route", {
        "meshName": "shop", "virtualRouterName": "rpc", "routeName": "port-9091",
        "spec": {"grpcRoute": {"match": {"port": 9091},
                               "action": {"weightedTargets": [{"virtualNode": "rpc-b", "weight": 1}]}}}})
    egress = a.runtime.addresses["egress:web"]

    def call(authority):
        with grpc.insecure_channel(egress, options=[("grpc.default_authority", authority),
                                                    ("grpc.enable_retries", 0)]) as ch:
            return ch.unary_unary("/echo.Echo/Say")(b"x", timeout=5)
    _until(lambda: call("rpc.shop.local:9091"))
    assert call("rpc.shop.local:9090") == b"rpc-a:x"
    assert call("rpc.shop.local:9091") == b"rpc-b:x"


def test_a_route_with_no_path_and_no_port_is_still_refused(port_mesh):
    _, admin = port_mesh
    with pytest.raises(grpc.RpcError) as err:
        _create(admin.stub, "Route", {
            "meshName": "shop", "virtualRouterName": "api", "routeName": "nothing",
            "spec": {"httpRoute": {"match": {"method": "GET"},
                                   "action": {"weightedTargets": [{"virtualNode": "api-a", "weight": 1}]}}}})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.httpRoute.match.prefix" in err.value.details()
