"""Helpers for the issue-16 data-plane tests: policies written through the real admin API
(`Resources`, as meshctl's gRPC calls reach it), a bounded load of gRPC calls through a
meshd's egress, and readings of a meshd's Prometheus registry."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import h2.config
import h2.connection
import h2.events

from mesh_harness import start_meshd
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.embedded_etcd import free_port
from meshd.proxy import LocalApp
from meshd.security import ClusterKey
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import spec_pb2

ROUTE = {"virtualRouterName": "api-router", "routeName": "api"}
REASON = "x-meshd-reason"


class HttpOrigin:
    """An HTTP/1.1 origin answering every request 200 with `<name> saw <path>` (a path
    starting /forge: 503 with the x-meshd-reason a meshd gives a connect failure); it keeps
    the bodies it received, by path."""

    def __init__(self, name: str):
        self.name = name
        self.bodies: dict[str, bytes] = {}
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                origin.bodies[self.path] = self.rfile.read(n) if n else b""
                body = f"{origin.name} saw {self.path}".encode()
                forged = self.path.startswith("/forge")
                self.send_response(503 if forged else 200)
                if forged:  # an app answering with a header only a meshd may set
                    self.send_header("X-Meshd-Reason", "upstream_connect_failure")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Http1Mesh:
    """Two in-process meshds for HTTP/1.1: host A's app web calls api.shop.local through its
    HTTP/1.1 egress (router api-router, route api: prefix / to api-v1); host B serves api-v1
    (HttpOrigin `api`) and, with mirror=True, the node api-mirror (HttpOrigin `shadow`)."""

    def __init__(self, etcd, prefix, tmp_path, *, mirror: bool = False):
        key = tmp_path / "cluster.key"
        ClusterKey.generate(key)
        self.api, self.shadow = HttpOrigin("api"), HttpOrigin("shadow") if mirror else None
        web = LocalApp(mesh="shop", virtual_node="web", port=free_port(), egress_http="127.0.0.1:0")
        served = [LocalApp(mesh="shop", virtual_node="api-v1", port=self.api.port, protocol="http", instance_id="api")]
        if mirror:
            served.append(LocalApp(mesh="shop", virtual_node="api-mirror", port=self.shadow.port, protocol="http",
                                   instance_id="shadow"))
        self.a = start_meshd(etcd, prefix, tmp_path, "host-a", [web], key)
        self.b = start_meshd(etcd, prefix, tmp_path, "host-b", served, key)
        self._mesh(("api-v1", "api-mirror") if mirror else ("api-v1",))
        self.egress = self.a.runtime.addresses["egress_http:web"]
        wait_until("the route serves", lambda: self.post("/ping")[0] == 200)

    def _mesh(self, nodes) -> None:
        def mk(kind, doc):
            self.a.resources.create(kind, parse_json(getattr(pb, f"Create{kind.title}Request"), doc))
        listener = [{"portMapping": {"port": 8080, "protocol": "http"}}]
        mk(K.MESH, {"meshName": "shop", "spec": {"egressFilter": {"type": "DROP_ALL"}}})
        for node in ("web", *nodes):
            spec = {"listeners": listener, "serviceDiscovery": {"dns": {"hostname": f"{node}.shop.local"}}}
            if node == "web":
                spec["backends"] = [{"virtualService": {"virtualServiceName": "api.shop.local"}}]
            mk(K.VIRTUAL_NODE, {"meshName": "shop", "virtualNodeName": node, "spec": spec})
        mk(K.VIRTUAL_ROUTER, {"meshName": "shop", "virtualRouterName": "api-router", "spec": {"listeners": listener}})
        mk(K.ROUTE, {"meshName": "shop", "virtualRouterName": "api-router", "routeName": "api", "spec": {"httpRoute": {
            "match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "api-v1", "weight": 1}]}}}})
        mk(K.VIRTUAL_SERVICE, {"meshName": "shop", "virtualServiceName": "api.shop.local",
                               "spec": {"provider": {"virtualRouter": {"virtualRouterName": "api-router"}}}})

    def post(self, path: str, body: bytes = b"", headers=()) -> tuple[int, dict[str, str], bytes]:
        """One POST to api.shop.local through web's egress: (status, headers, body)."""
        host, port = self.egress.rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            c.request("POST", path, body=body, headers={"Host": "api.shop.local", **dict(headers)})
            resp = c.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            c.close()

    def close(self) -> None:
        self.a.stop()
        self.b.stop()
        for origin in (self.api, self.shadow):
            if origin is not None:
                origin.stop()


def put_policy(resources, title: str, name: str, spec: dict, mesh: str = "shop", *, create: bool = True) -> None:
    """Create (or with create=False, replace) the RoutePolicy or NodePolicy `name` of `mesh`."""
    kind = K.BY_TITLE[title]
    doc = {"meshName": mesh, f"{kind.name}Name": name, "spec": spec}
    verb = "Create" if create else "Update"
    getattr(resources, verb.lower())(kind, parse_json(getattr(pb, f"{verb}{title}Request"), doc))


def wait_until(what: str, predicate, timeout: float = 10.0) -> None:
    """Poll `predicate` every 50 ms until it holds; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def wait_policy(meshd, mesh: str, router: str, route: str, field_name: str, present: bool = True,
                timeout: float = 10.0) -> None:
    """Until `meshd`'s live table has (or no longer has) the route's policy field."""
    def holds():
        live = meshd.runtime.view.live(mesh)
        routes = [r for vr in live.compiled.table.routers if vr.name == router
                  for r in vr.routes if r.name == route] if live is not None else []
        return any((getattr(r, field_name) is not None) == present for r in routes)
    wait_until(f"{mesh}/{router}/{route}: {field_name} {'in' if present else 'out of'} the table", holds, timeout)


def access_log(resources, node: str, path, mesh: str = "shop") -> None:
    """Give `node` an App Mesh JSON access log at `path` (its response flags and reason),
    through the admin API: an update of the node's spec."""
    kind = K.VIRTUAL_NODE
    cur = resources.describe(kind, pb.DescribeVirtualNodeRequest(mesh_name=mesh, virtual_node_name=node))
    req = pb.UpdateVirtualNodeRequest(mesh_name=mesh, virtual_node_name=node)
    req.spec.CopyFrom(cur.virtual_node.spec)
    req.spec.logging.access_log.file.CopyFrom(parse_json(spec_pb2.FileAccessLog, {"path": str(path), "format": {
        "json": [{"key": "flags", "value": "%RESPONSE_FLAGS%"}, {"key": "code", "value": "%GRPC_STATUS%"}]}}))
    resources.update(kind, req)


def fresh_log(path, send, timeout: float = 10.0) -> None:
    """Call `send` until the log at `path` has a line (the node's logging reached the
    meshd), let its writer go idle, then empty it for what the test sends next."""
    wait_until(f"a line in {path}", lambda: (send(), path.exists() and path.read_text())[1], timeout)
    size = -1
    while size != path.stat().st_size:  # nothing written for 0.3 s: the writer is idle
        size = path.stat().st_size
        time.sleep(0.3)
    path.write_text("")


def log_entries(path, n: int, timeout: float = 10.0) -> list[dict]:
    """The JSON lines of an access log once it holds `n` (bounded wait for its writer)."""
    deadline = time.monotonic() + timeout
    while True:
        got = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


@dataclass
class Outcome:
    """One call: its gRPC code, the x-meshd-reason it carried, its latency in seconds."""

    code: grpc.StatusCode
    reason: str
    seconds: float
    sent_at: float


@dataclass
class Load:
    """The outcomes of a bounded run of calls."""

    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0
    last_sent: float = 0.0

    def count(self, code: grpc.StatusCode, reason: str | None = None) -> int:
        return sum(1 for o in self.outcomes if o.code == code and (reason is None or o.reason == reason))

    def latencies(self, ok_only: bool = True) -> list[float]:
        return sorted(o.seconds for o in self.outcomes if not ok_only or o.code == grpc.StatusCode.OK)


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) of sorted `values`, nearest rank."""
    if not values:
        raise ValueError("no values")
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values)) - 1))]


def _reason(err_or_call) -> str:
    for md in (err_or_call.initial_metadata() or (), err_or_call.trailing_metadata() or ()):
        for k, v in md:
            if k == REASON:
                return v
    return ""


def run_load(call, n: int, *, rate: float = 0.0, concurrency: int = 32, metadata=(), timeout: float = 10.0,
             budget: float = 120.0) -> Load:
    """`n` unary calls of `call`, at most `concurrency` in flight, paced at `rate` per second
    when given (else as fast as they complete); stops sending after `budget` seconds."""
    load = Load(started=time.monotonic())
    lock = threading.Lock()
    slots = threading.Semaphore(concurrency)

    def done(fut, t0):
        seconds = time.monotonic() - t0
        try:
            fut.result()
            code, reason = grpc.StatusCode.OK, _reason(fut)
        except grpc.RpcError as err:
            code, reason = err.code(), _reason(err)
        except futures.CancelledError:
            code, reason = grpc.StatusCode.CANCELLED, ""
        with lock:
            load.outcomes.append(Outcome(code, reason, seconds, t0))
        slots.release()

    sent = []
    for i in range(n):
        if rate:
            due = load.started + i / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        if time.monotonic() - load.started > budget or not slots.acquire(timeout=timeout + 5):
            break
        t0 = time.monotonic()
        fut = call.future(b"x", timeout=timeout, metadata=metadata)
        fut.add_done_callback(lambda f, t0=t0: done(f, t0))
        sent.append(fut)
        load.last_sent = t0
    deadline = time.monotonic() + timeout + 5
    while time.monotonic() < deadline:
        with lock:
            if len(load.outcomes) == len(sent):
                break
        time.sleep(0.01)
    with lock:
        assert len(load.outcomes) == len(sent), f"{len(sent) - len(load.outcomes)} calls never ended"
    return load


def h2_get(address: str, authority: str, path: str, timeout: float = 10.0) -> dict[str, str]:
    """One plain HTTP/2 GET (not gRPC) on its own connection: the response's headers."""
    host, port = address.rsplit(":", 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="latin-1"))
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)],
                          end_stream=True)
        sock.sendall(conn.data_to_send())
        headers: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    headers = dict(ev.headers)
                if isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == sid:
                    return headers
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    raise AssertionError(f"no complete answer to GET {path} within {timeout}s (headers {headers})")


def sample(meshd, name: str, **labels) -> float:
    """A sample of `meshd`'s Prometheus registry summed over the label values not given."""
    total = 0.0
    for family in meshd.observer.metrics.registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


__all__ = ["Http1Mesh", "HttpOrigin", "Load", "Outcome", "REASON", "ROUTE", "access_log", "fresh_log", "h2_get",
           "log_entries", "percentile", "put_policy", "run_load", "sample", "wait_policy", "wait_until"]
