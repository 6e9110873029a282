"""The quickstart's sample services and traffic: gRPC origins for api-v1/api-v2, and a client
that calls `api.shop.local` through meshd's egress and reports who answered.

    python deploy/quickstart/demo.py serve 9091=api-v1 9092=api-v2 --web 8080   # services (until killed)
    python deploy/quickstart/demo.py traffic --egress 127.0.0.1:15001 --seconds 5

The services speak plain gRPC (no generated code: a generic handler for /shop.Api/Get) and
answer grpc.health.v1, which meshd's health checks call; `web` answers its HTTP /healthz.
The client knows nothing of the mesh: it only sets the authority, as any gRPC app would.
"""
from __future__ import annotations

import argparse
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2_grpc

METHOD = "/shop.Api/Get"


def serve_web(port: int) -> None:
    """The `web` app: HTTP/1.1, reached through the virtual gateway; /healthz for meshd's check."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Web(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            body = b"" if self.path == "/healthz" else f"web got {self.path} host={self.headers['Host']}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", port), Web)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"web serving HTTP on 127.0.0.1:{port}", flush=True)


def serve(specs: list[str], web_port: int = 0) -> int:
    if web_port:
        serve_web(web_port)
    servers = []
    for spec in specs:
        port, name = spec.split("=", 1)

        def get(request: bytes, context, name=name) -> bytes:
            return f"{name} answered {request.decode(errors='replace')}".encode()
        server = grpc.server(futures.ThreadPoolExecutor(8))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "shop.Api", {"Get": grpc.unary_unary_rpc_method_handler(get)}),))
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)  # SERVING
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        servers.append(server)
        print(f"{name} serving gRPC on 127.0.0.1:{port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for s in servers:
        s.stop(1)
    return 0


def traffic(egress: str, authority: str, seconds: float, workers: int) -> int:
    channel = grpc.insecure_channel(egress, options=[("grpc.default_authority", authority)])
    call = channel.unary_unary(METHOD)
    answers, errors, latencies = Counter(), Counter(), []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(i: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            t0 = time.perf_counter()
            try:
                who = call(f"request {i}.{n}".encode(), timeout=5).split(b" ", 1)[0].decode()
                with lock:
                    answers[who] += 1
                    latencies.append(time.perf_counter() - t0)
            except grpc.RpcError as err:
                reason = dict(err.trailing_metadata() or ()).get("x-meshd-reason", "")
                with lock:
                    errors[f"{err.code().name} {reason}".strip()] += 1
                time.sleep(0.05)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    channel.close()
    total = sum(answers.values())
    print(f"{total} calls in {seconds:.0f} s through {egress} (authority {authority}):")
    for who, n in sorted(answers.items()):
        print(f"  {who:8s} {n:6d}  {100 * n / max(total, 1):5.1f}%")
    if latencies:
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"  latency p50 {statistics.median(latencies) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms (app -> egress -> mTLS -> ingress -> service)")
    for what, n in errors.items():
        print(f"  errors: {n} x {what}")
    return 0 if total and not errors else 1


def get(url: str) -> int:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            print(r.status, r.read().decode().strip())
            return 0
    except urllib.error.HTTPError as err:
        print(err.code, err.headers.get("x-meshd-reason", ""), err.read().decode().strip())
        return 1


def appmesh(endpoint: str, key_id: str, secret: str, region: str) -> int:
    """App Mesh's own API, as any AWS SDK calls it (botocore: SigV4-signed REST-JSON)."""
    import botocore.session

    client = botocore.session.get_session().create_client(
        "appmesh", endpoint_url=endpoint, region_name=region, aws_access_key_id=key_id,
        aws_secret_access_key=secret)
    for ref in client.list_routes(meshName="shop", virtualRouterName="api-router")["routes"]:
        route = client.describe_route(meshName="shop", virtualRouterName="api-router",
                                      routeName=ref["routeName"])["route"]
        targets = route["spec"].get("grpcRoute", route["spec"].get("httpRoute", {}))["action"]["weightedTargets"]
        print(f"{route['metadata']['arn']}  version {route['metadata']['version']}: "
              + ", ".join(f"{t['virtualNode']} {t['weight']}" for t in targets))
    try:
        client.describe_virtual_node(meshName="shop", virtualNodeName="no-such-node")
    except client.exceptions.NotFoundException as err:
        print(f"NotFoundException, as from App Mesh: {err.response['Error']['Message']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("specs", nargs="+", help="PORT=NAME")
    s.add_argument("--web", type=int, default=0, help="also serve web's HTTP /healthz on this port")
    t = sub.add_parser("traffic")
    t.add_argument("--egress", default="127.0.0.1:15001")
    t.add_argument("--authority", default="api.shop.local:9090")
    t.add_argument("--seconds", type=float, default=5.0)
    t.add_argument("--workers", type=int, default=4)
    g = sub.add_parser("get", help="one HTTP GET, printing the status and body")
    g.add_argument("url")
    a = sub.add_parser("appmesh", help="list and describe the routes through App Mesh's API on meshd")
    a.add_argument("--endpoint", default="http://127.0.0.1:7443")
    a.add_argument("--key-id", required=True)
    a.add_argument("--secret", required=True)
    a.add_argument("--region", default="us-east-1")
    args = p.parse_args(argv)
    if args.cmd == "appmesh":
        return appmesh(args.endpoint, args.key_id, args.secret, args.region)
    if args.cmd == "serve":
        return serve(args.specs, args.web)
    if args.cmd == "get":
        return get(args.url)
    return traffic(args.egress, args.authority, args.seconds, args.workers)


if __name__ == "__main__":
    sys.exit(main())
