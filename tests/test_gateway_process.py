"""`meshd run --config` with a `gateways:` entry, as a real process: the gateway listener
opens when the virtual gateway is applied, and routes through the mesh over mTLS to an
app the same meshd serves."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer

import grpc
import pytest

from builders import create
from meshd.embedded_etcd import free_port
from meshd.security import ClusterKey
from meshd.v1 import admin_pb2_grpc
from test_gateway_traffic import H1Origin, h1_get

pytestmark = [pytest.mark.dataplane, pytest.mark.etcd]


def test_meshd_run_opens_the_configured_gateway_and_routes_through_it(etcd, etcd_prefix, tmp_path):
    origin = ThreadingHTTPServer(("127.0.0.1", 0), H1Origin)
    origin.name = "red-v1"
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    gw_port, admin_port = free_port(), free_port()
    ClusterKey.generate(tmp_path / "cluster.key")
    (tmp_path / "meshd.yaml").write_text(
        "ingress: 127.0.0.1:0\n"
        f"apps:\n  - {{mesh: shop, virtualNode: red-v1, port: {origin.server_address[1]}, protocol: http}}\n"
        "gateways:\n  - {mesh: shop, virtualGateway: edge, address: 127.0.0.1}\n")
    with open(tmp_path / "meshd.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshd.cli.meshd_main", "run", "--insecure-local", "--admin",
             f"127.0.0.1:{admin_port}", "--etcd", etcd.url, "--etcd-prefix", etcd_prefix,
             "--state-dir", str(tmp_path / "state"), "--cluster-key", str(tmp_path / "cluster.key"),
             "--host-name", "gw-host", "--config", str(tmp_path / "meshd.yaml")],
            stdout=subprocess.DEVNULL, stderr=log)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{admin_port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = admin_pb2_grpc.MeshAdminStub(channel)
        create(stub, "Mesh", meshName="shop", spec={"egressFilter": {"type": "DROP_ALL"}})
        create(stub, "VirtualNode", meshName="shop", virtualNodeName="red-v1", spec={
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": "red.shop.local"}}})
        create(stub, "VirtualService", meshName="shop", virtualServiceName="red.shop.local",
               spec={"provider": {"virtualNode": {"virtualNodeName": "red-v1"}}})
        create(stub, "VirtualGateway", meshName="shop", virtualGatewayName="edge",
               spec={"listeners": [{"portMapping": {"port": gw_port, "protocol": "http"}}]})
        create(stub, "GatewayRoute", meshName="shop", virtualGatewayName="edge", gatewayRouteName="red",
               spec={"httpRoute": {"match": {"prefix": "/red"},
                                   "action": {"target": {"virtualService": {"virtualServiceName": "red.shop.local"}}}}})
        channel.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, body = h1_get(gw_port, "/red/tell", "shop.example.com")
                if status == 200:
                    break
            except OSError:
                status, body = None, b""
            assert time.monotonic() < deadline, (status, body, (tmp_path / "meshd.log").read_text()[-3000:])
            time.sleep(0.2)
        assert body == b"red-v1 /tell red.shop.local"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        origin.shutdown()
