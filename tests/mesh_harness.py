"""Builders for data-plane tests: real meshds (in this process) sharing the test etcd, real
gRPC origins registered as instances, and gRPC clients calling through the egress."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc

from builders import create, update
from meshd.app import Meshd, MeshdConfig
from meshd.embedded_etcd import free_port
from meshd.proxy import LocalApp, RuntimeConfig
from meshd.security import ClusterKey

SAY = "/echo.Echo/Say"


class Origin:
    """A grpcio server answering /echo.Echo/Say with `<name>:<request>`, whose failures and
    delays the test sets; it counts the calls it saw."""

    def __init__(self, name: str, port: int = 0):
        self.name = name
        self.calls = 0
        self.fail_every = 0  # fail call n when n % fail_every == 0
        self.fail_code = grpc.StatusCode.UNAVAILABLE
        self.fail_metadata: tuple = ()  # trailing metadata of the failed calls
        self.delay_first = 0.0  # seconds to stall the first `delay_calls` calls
        self.delay_calls = 0
        self.lock = threading.Lock()
        big = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        self.server = grpc.server(futures.ThreadPoolExecutor(16), options=big)
        handler = grpc.method_handlers_generic_handler("echo.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(self._say),
            "Bidi": grpc.stream_stream_rpc_method_handler(lambda it, ctx: (m for m in it)),
            "Collect": grpc.stream_unary_rpc_method_handler(lambda it, ctx: b"".join(it)),
            "Spread": grpc.unary_stream_rpc_method_handler(
                lambda req, ctx: (req[i:i + 1000] for i in range(0, len(req), 1000)))})
        self.server.add_generic_rpc_handlers((handler,))
        from grpc_health.v1 import health, health_pb2_grpc  # noqa: PLC0415
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), self.server)  # SERVING
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def _say(self, request: bytes, context) -> bytes:
        with self.lock:
            self.calls += 1
            n = self.calls
        if self.delay_calls and n <= self.delay_calls:
            time.sleep(self.delay_first)
        if self.fail_every and n % self.fail_every == 0:
            if self.fail_metadata:
                context.set_trailing_metadata(self.fail_metadata)
            context.abort(self.fail_code, f"{self.name} failed call {n}")
        return self.name.encode() + b":" + request

    def stop(self):
        self.server.stop(0)


class ProcessOrigin:
    """An Origin in a process of its own, so that a test can SIGKILL it: the kernel then
    closes its sockets mid-call, as when an instance crashes or is OOM-killed. (An
    in-process grpcio server cannot die that way; `server.stop(0)` still answers every
    call in flight, with CANCELLED.)"""

    def __init__(self, name: str):
        self.name = name
        code = ("import sys, mesh_harness; o = mesh_harness.Origin(sys.argv[1]); "
                "print(o.port, flush=True); sys.stdin.read()")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path])}
        self.proc = subprocess.Popen([sys.executable, "-c", code, name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True)
        line = self.proc.stdout.readline()  # the origin prints its port once it serves
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"origin {name} did not start: {line!r}, exit {self.proc.poll()}")
        self.port = int(line)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.proc.stdin.close()
        self.proc.stdout.close()


def start_meshd(etcd, prefix, tmp_path, name, apps, key_path, observe=None, **runtime) -> Meshd:
    cfg = MeshdConfig(admin=f"127.0.0.1:{free_port()}", etcd=[etcd.url], etcd_prefix=prefix,
                      state_dir=str(tmp_path / name), host_name=name, cluster_key=str(key_path), lease_ttl=5,
                      runtime=RuntimeConfig(apps=apps, ingress="127.0.0.1:0", drain_seconds=1.0, **runtime))
    if observe is not None:  # meshd.observe.ObserveConfig
        cfg.observe = observe
    return Meshd(cfg).start()


class Mesh:
    """Two meshd hosts: host A runs the calling app `web`; host B runs the given origins."""

    def __init__(self, etcd, prefix, tmp_path, origins: dict[str, Origin], nodes: dict[str, str] | None = None,
                 **runtime):
        self.key = tmp_path / "cluster.key"
        if not self.key.exists():
            ClusterKey.generate(self.key)
        self.origins = origins
        web = LocalApp(mesh="shop", virtual_node="web", port=free_port(), egress="127.0.0.1:0")
        nodes = nodes or {k: k for k in origins}
        self.a = start_meshd(etcd, prefix, tmp_path, "host-a", [web], self.key, **runtime)
        self.b = start_meshd(etcd, prefix, tmp_path, "host-b",
                             [LocalApp(mesh="shop", virtual_node=nodes[k], port=o.port, instance_id=k)
                              for k, o in origins.items()], self.key, **runtime)
        self.egress = self.a.runtime.addresses["egress:web"]
        self.channels = []

    def client(self, authority: str = "api.shop.local:9090", method: str = SAY, kind: str = "unary_unary"):
        ch = grpc.insecure_channel(self.egress, options=[("grpc.default_authority", authority),
                                                         ("grpc.enable_retries", 0),
                                                         ("grpc.max_receive_message_length", 64 << 20),
                                                         ("grpc.max_send_message_length", 64 << 20)])
        self.channels.append(ch)
        return getattr(ch, kind)(method)

    def wait_routable(self, call, timeout: float = 10.0, answered_by: tuple[str, ...] = ()) -> None:
        """Until a call succeeds and, when `answered_by` names origins, each of them has
        answered one: a node whose instance is not registered yet has no endpoint, and a
        load started before would see no_endpoint for its share of the weights."""
        deadline = time.monotonic() + timeout
        waiting = set(answered_by)
        while True:
            try:
                answer = call(b"ping", timeout=5)
                if waiting:
                    waiting.discard(answer.split(b":", 1)[0].decode(errors="replace"))
                if not waiting:
                    return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer from {sorted(waiting)} within {timeout} s")
            time.sleep(0.05)

    def close(self):
        for ch in self.channels:
            ch.close()
        self.a.stop()
        self.b.stop()
        for o in self.origins.values():
            o.stop()


def shop_config(resources, K, pb, *, targets: dict[str, int], retry: dict | None = None,
                drop_all: bool = True, backends=("api.shop.local",), timeout: dict | None = None,
                node_listener: dict | None = None, extra_nodes=()) -> None:
    """The mesh the data-plane tests route through: web → api.shop.local → api-router."""
    from meshd.api.validate import parse_json  # noqa: PLC0415

    def mk(kind, title, doc):
        resources.create(kind, parse_json(getattr(pb, f"Create{title}Request"), doc))
    mk(K.MESH, "Mesh", {"meshName": "shop", "spec": {"egressFilter": {"type": "DROP_ALL" if drop_all else "ALLOW_ALL"}}})
    listener = {"portMapping": {"port": 9090, "protocol": "grpc"}, **(node_listener or {})}
    mk(K.VIRTUAL_NODE, "VirtualNode", {"meshName": "shop", "virtualNodeName": "web", "spec": {
        "listeners": [{"portMapping": {"port": 8080, "protocol": "grpc"}}],
        "serviceDiscovery": {"dns": {"hostname": "web.shop.local"}},
        "backends": [{"virtualService": {"virtualServiceName": b}} for b in backends]}})
    for n in [*targets, *extra_nodes]:
        mk(K.VIRTUAL_NODE, "VirtualNode", {"meshName": "shop", "virtualNodeName": n, "spec": {
            "listeners": [listener], "serviceDiscovery": {"dns": {"hostname": f"{n}.shop.local"}}}})
    mk(K.VIRTUAL_ROUTER, "VirtualRouter", {"meshName": "shop", "virtualRouterName": "api-router",
                                           "spec": {"listeners": [{"portMapping": {"port": 9090, "protocol": "grpc"}}]}})
    mk(K.ROUTE, "Route", {"meshName": "shop", "virtualRouterName": "api-router", "routeName": "api",
                          "spec": route_spec(targets, retry, timeout)})
    mk(K.VIRTUAL_SERVICE, "VirtualService", {"meshName": "shop", "virtualServiceName": "api.shop.local",
                                             "spec": {"provider": {"virtualRouter": {"virtualRouterName": "api-router"}}}})


def route_spec(targets: dict[str, int], retry: dict | None = None, timeout: dict | None = None) -> dict:
    grpc_route = {"match": {"serviceName": "echo.Echo"},
                  "action": {"weightedTargets": [{"virtualNode": n, "weight": w} for n, w in targets.items()]}}
    if retry is not None:
        grpc_route["retryPolicy"] = retry
    if timeout is not None:
        grpc_route["timeout"] = timeout
    return {"grpcRoute": grpc_route}


__all__ = ["Mesh", "Origin", "create", "route_spec", "shop_config", "start_meshd", "update"]
