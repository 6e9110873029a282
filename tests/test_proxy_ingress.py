"""The ingress admits what the caller may reach and what routes to this node, and meshd's own
headers never cross an edge (issue 12, item 6)."""
from __future__ import annotations

import grpc
import pytest

from mesh_harness import Origin
from test_mesh_traffic import _intruder_channel
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.hardening, pytest.mark.dataplane, pytest.mark.etcd]


class HeaderOrigin(Origin):
    """Answers with the request metadata names it received, comma-separated."""

    def _say(self, request, context):
        return ",".join(sorted(k for k, _ in context.invocation_metadata())).encode()


def test_a_caller_cannot_name_a_backend_of_its_own_to_reach_a_node_it_has_no_route_to(mesh_factory):
    # web's only backend, api.shop.local, routes to api-v1; secret.shop.local (api-v2) is not
    # web's. The mesh is DROP_ALL.
    m = mesh_factory({"api-v1": Origin("api-v1"), "api-v2": Origin("api-v2")}, targets={"api-v1": 1},
                     extra_nodes=("api-v2",))
    m.a.resources.create(K.VIRTUAL_SERVICE, parse_json(pb.CreateVirtualServiceRequest, {
        "meshName": "shop", "virtualServiceName": "secret.shop.local",
        "spec": {"provider": {"virtualNode": {"virtualNodeName": "api-v2"}}}}))
    call = m.client()
    m.wait_routable(call)
    ch = _intruder_channel(m, "web", name="api-v2.shop.mesh.meshd.local")
    say = ch.unary_unary("/echo.Echo/Say")
    for service in ("api.shop.local", "secret.shop.local", ""):
        with pytest.raises(grpc.RpcError) as err:
            say(b"x", timeout=5, metadata=(("x-meshd-instance", "shop/api-v2/api-v2"), ("x-meshd-service", service)))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, service
        assert dict(err.value.trailing_metadata())["x-meshd-reason"] == "not_a_backend"
    # The same caller reaches api-v1, whether it names the service or not.
    for service in ("api.shop.local", ""):
        assert say(b"y", timeout=5, metadata=(("x-meshd-instance", "shop/api-v1/api-v1"),
                                              ("x-meshd-service", service))) == b"api-v1:y"
    ch.close()


def test_meshd_headers_never_reach_an_app(mesh_factory):
    m = mesh_factory({"api-v1": HeaderOrigin("api-v1")}, targets={"api-v1": 1})
    call = m.client()
    m.wait_routable(call)
    seen = call(b"x", timeout=5, metadata=(("x-meshd-instance", "shop/api-v1/other"), ("x-meshd-debug", "1"),
                                            ("x-meshd-service", "secret.shop.local"), ("x-app", "kept"))).decode()
    names = seen.split(",")
    assert "x-app" in names
    assert not [n for n in names if n.startswith("x-meshd-")], names


def test_a_half_sent_tls_handshake_is_cut_after_the_handshake_timeout(etcd, etcd_prefix, tmp_path):
    """A client that sends part of a ClientHello and stops held an ingress connection for
    60 s (asyncio's default); `handshakeTimeoutSeconds` bounds it (found by fuzzing)."""
    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415

    from mesh_harness import start_meshd  # noqa: PLC0415
    from meshd.embedded_etcd import free_port  # noqa: PLC0415
    from meshd.proxy import LocalApp  # noqa: PLC0415
    from meshd.security import ClusterKey  # noqa: PLC0415

    ClusterKey.generate(tmp_path / "cluster.key")
    app = LocalApp(mesh="shop", virtual_node="api-v1", port=free_port())
    meshd = start_meshd(etcd, etcd_prefix, tmp_path, "host-h", [app], tmp_path / "cluster.key",
                        handshake_timeout_seconds=1.0)
    try:
        for name in ("ingress", "ingress_http"):
            host, port = meshd.runtime.addresses[name].rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first bytes
                t0 = time.monotonic()
                assert s.recv(100) == b""
                took = time.monotonic() - t0
            assert 0.5 < took < 5, (name, took)
    finally:
        meshd.stop()
