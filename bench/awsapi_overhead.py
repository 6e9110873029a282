"""What App Mesh's REST API costs beside gRPC: meshd's CPU per DescribeRoute, called through
the REST front end (TLS, SigV4, boto3) and through MeshAdmin (TLS, bearer token, grpcio),
on the same meshd process in the same run.

    python -m bench.awsapi_overhead [--calls 1000] [--runs 4]

One `meshd run` (a cluster key, its host certificate, --admin-token and --aws-api) on a
private etcd; the client is this process, calling sequentially on one kept-alive connection
per protocol, alternating blocks of `calls` calls. The gated figure is the meshd process's
CPU (its CPU-time clock, all threads) per REST call over all REST blocks ÷ per gRPC call over
all gRPC blocks. etcd's own CPU is the same for both and not counted.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import grpc
from botocore.config import Config

from bench.dataplane.compare import cpu_seconds, free_port
from bench.mesh_compare import wait_port

REPO = Path(__file__).resolve().parents[1]
GATE = 1.5  # issue 14: DescribeRoute over REST costs at most 1.5x the gRPC call's server CPU
MESH, ROUTER, ROUTE = "bench", "api", "canary"


def _start(tmp: Path):
    from meshd.embedded_etcd import EmbeddedEtcd
    from meshd.security import ClusterKey, KeyRef, Roles, Tokens
    from meshd.security.accesskeys import AccessKeys
    import registry

    etcd = EmbeddedEtcd(tmp / "etcd", client_port=free_port(), peer_port=free_port(), supervise=False).start()
    ClusterKey.generate(tmp / "cluster.key")
    token_port, aws_port, admin_port = free_port(), free_port(), free_port()
    log = open(tmp / "meshd.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshd.cli.meshd_main", "run", "--etcd", etcd.url, "--state-dir", str(tmp / "state"),
         "--cluster-key", str(tmp / "cluster.key"), "--admin", f"127.0.0.1:{admin_port}",
         "--admin-token", f"127.0.0.1:{token_port}", "--aws-api", f"127.0.0.1:{aws_port}", "--aws-api-rate", "0",
         "--metrics", "off", "--host-name", "bench", "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        wait_port(aws_port, timeout=30)
    except RuntimeError:
        proc.kill()
        etcd.stop()
        raise RuntimeError("meshd did not start: " + (tmp / "meshd.log").read_text()[-2000:]) from None
    store = registry.Store([etcd.url])
    Roles(store).grant("bench", "admin", "*")
    token = Tokens(store).create_api_token("bench").token
    key = AccessKeys(store, KeyRef(str(tmp / "cluster.key"))).create("bench")
    store.close()
    return etcd, proc, token, key, token_port, aws_port


def _clients(tmp: Path, token: str, key, token_port: int, aws_port: int):
    from meshd.v1 import admin_pb2, admin_pb2_grpc

    bundle = tmp / "state" / "identity" / "bundle.pem"
    creds = grpc.composite_channel_credentials(grpc.ssl_channel_credentials(bundle.read_bytes()),
                                               grpc.access_token_call_credentials(token))
    channel = grpc.secure_channel(f"127.0.0.1:{token_port}", creds)
    stub = admin_pb2_grpc.MeshAdminStub(channel)
    rest = boto3.client("appmesh", endpoint_url=f"https://127.0.0.1:{aws_port}", region_name="us-east-1",
                        verify=str(bundle), aws_access_key_id=key.access_key_id,
                        aws_secret_access_key=key.secret_access_key,
                        config=Config(retries={"max_attempts": 1}))
    rest.create_mesh(meshName=MESH)
    for node in ("v1", "v2"):
        rest.create_virtual_node(meshName=MESH, virtualNodeName=node, spec={
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": f"{node}.bench.local"}}})
    rest.create_virtual_router(meshName=MESH, virtualRouterName=ROUTER,
                               spec={"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]})
    rest.create_route(meshName=MESH, virtualRouterName=ROUTER, routeName=ROUTE, spec={"httpRoute": {
        "match": {"prefix": "/"},
        "action": {"weightedTargets": [{"virtualNode": "v1", "weight": 90}, {"virtualNode": "v2", "weight": 10}]},
        "retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 500},
                        "httpRetryEvents": ["server-error"]}}})
    req = admin_pb2.DescribeRouteRequest(mesh_name=MESH, virtual_router_name=ROUTER, route_name=ROUTE)

    def via_grpc():
        return stub.DescribeRoute(req, timeout=10).route.spec.http_route.action.weighted_targets[0].weight

    def via_rest():
        return rest.describe_route(meshName=MESH, virtualRouterName=ROUTER,
                                   routeName=ROUTE)["route"]["spec"]["httpRoute"]["action"]["weightedTargets"][0]["weight"]
    return channel, {"grpc": via_grpc, "rest": via_rest}


def measure(calls: int = 1000, runs: int = 4) -> dict:
    with tempfile.TemporaryDirectory(prefix="awsapi-bench-") as d:
        tmp = Path(d)
        etcd, proc, token, key, token_port, aws_port = _start(tmp)
        try:
            channel, calls_by = _clients(tmp, token, key, token_port, aws_port)
            for fn in calls_by.values():  # warm both paths: connections, caches, first-call imports
                for _ in range(50):
                    assert fn() == 90
            cpu = {"grpc": 0.0, "rest": 0.0}
            wall = {"grpc": 0.0, "rest": 0.0}
            for i in range(runs):
                order = ("grpc", "rest") if i % 2 == 0 else ("rest", "grpc")
                for mode in order:
                    fn = calls_by[mode]
                    c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                    for _ in range(calls):
                        fn()
                    cpu[mode] += cpu_seconds(proc.pid) - c0
                    wall[mode] += time.perf_counter() - t0
            channel.close()
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            etcd.stop()
    n = calls * runs
    us = {m: cpu[m] / n * 1e6 for m in cpu}
    return {"ratio": us["rest"] / us["grpc"], "server_cpu_us": {m: round(v, 1) for m, v in us.items()},
            "wall_us": {m: round(wall[m] / n * 1e6, 1) for m in wall}, "calls": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=4)
    args = ap.parse_args()
    r = measure(args.calls, args.runs)
    print(json.dumps(r, indent=2))
    print(f"DescribeRoute, meshd CPU per call: REST {r['server_cpu_us']['rest']} us, "
          f"gRPC {r['server_cpu_us']['grpc']} us, ratio {r['ratio']:.3f} (gate {GATE})")
    return 0 if r["ratio"] <= GATE else 1


if __name__ == "__main__":
    sys.exit(main())
