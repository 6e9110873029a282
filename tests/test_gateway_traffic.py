"""North-south traffic through a virtual gateway listener: an external client → the gateway on
meshd A → a gateway route → a virtual service → a virtual router route → an instance behind
meshd B over mTLS, on HTTP/1.1, HTTP/2 and gRPC listeners."""
from __future__ import annotations

import http.client
import os
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from mesh_harness import start_meshd
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.embedded_etcd import free_port
from meshd.proxy import GatewayConfig
from meshd.proxy import INSTANCE_HEADER, SERVICE_HEADER, LocalApp
from meshd.security import ClusterKey, spiffe
from meshd.v1 import admin_pb2 as pb
from tests.tcp_listener import Listener

pytestmark = [pytest.mark.dataplane, pytest.mark.etcd]


class H1Origin(BaseHTTPRequestHandler):
    """Answers `<name> <path> <Host>`; the server's `name` says which origin answered."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        body = f"{self.server.name} {self.path} {self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def h1_origin(name: str) -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H1Origin)
    srv.name = name
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class H2Origin(Listener):
    """An HTTP/2 origin (cleartext, on the h2 library) answering every request with
    `<name> <:path> <:authority>`: as a body, or as one gRPC message to a gRPC call."""

    def __init__(self, name: str):
        self.name = name
        self.calls = 0
        self.fail_every = 0  # answer gRPC call n with UNAVAILABLE when n % fail_every == 0
        super().__init__()

    def accepted(self, conn):
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        c.initiate_connection()
        conn.sendall(c.data_to_send())
        heads = {}
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for ev in c.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        heads[ev.stream_id] = dict(ev.headers)
                    elif isinstance(ev, h2.events.DataReceived):
                        c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        self._answer(c, ev.stream_id, heads.pop(ev.stream_id))
                conn.sendall(c.data_to_send())

    def _answer(self, c, stream_id, head):
        body = f"{self.name} {head[':path']} {head[':authority']}".encode()
        self.calls += 1
        if head.get("content-type", "").startswith("application/grpc") and self.fail_every \
                and self.calls % self.fail_every == 0:
            c.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc"),
                                       ("grpc-status", "14"), ("grpc-message", "flaky")], end_stream=True)
        elif head.get("content-type", "").startswith("application/grpc"):
            c.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
            c.send_data(stream_id, b"\x00" + struct.pack(">I", len(body)) + body)
            c.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)
        else:
            c.send_headers(stream_id, [(":status", "200"), ("content-length", str(len(body)))])
            c.send_data(stream_id, body, end_stream=True)

    def stop(self):
        self.close()


def h2_get(port: int, path: str, authority: str) -> tuple[int, dict, bytes]:
    """One HTTP/2 GET with prior knowledge (h2c): (status, headers, body)."""
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        c.initiate_connection()
        c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)],
                       end_stream=True)
        s.sendall(c.data_to_send())
        headers, body = {}, b""
        while True:
            data = s.recv(65536)
            if not data:
                raise ConnectionError("closed before the response ended")
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    headers = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    return int(headers[":status"]), headers, body
            s.sendall(c.data_to_send())


def h1_get(port: int, path: str, host: str) -> tuple[int, dict, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _until(fn, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (OSError, http.client.HTTPException, AssertionError, ConnectionError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _mk(resources, title, doc):
    kind = {"Mesh": K.MESH, "VirtualNode": K.VIRTUAL_NODE, "VirtualRouter": K.VIRTUAL_ROUTER, "Route": K.ROUTE,
            "VirtualService": K.VIRTUAL_SERVICE, "VirtualGateway": K.VIRTUAL_GATEWAY,
            "GatewayRoute": K.GATEWAY_ROUTE}[title]
    resources.create(kind, parse_json(getattr(pb, f"Create{title}Request"), {"meshName": "shop", **doc}))


def _service(r, name: str, protocol: str, targets: dict[str, int], match: dict, **route) -> None:
    """A virtual service behind a router with one route to weighted targets (and `route`'s
    other fields, e.g. retryPolicy)."""
    router = name.split(".")[0] + "-router"
    _mk(r, "VirtualRouter", {"virtualRouterName": router,
                             "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": protocol}}]}})
    kind = {"http": "httpRoute", "http2": "http2Route", "grpc": "grpcRoute"}[protocol]
    _mk(r, "Route", {"virtualRouterName": router, "routeName": "all", "spec": {kind: {
        "match": match, "action": {"weightedTargets": [{"virtualNode": n, "weight": w} for n, w in targets.items()]},
        **route}}})
    _mk(r, "VirtualService", {"virtualServiceName": name,
                              "spec": {"provider": {"virtualRouter": {"virtualRouterName": router}}}})


def _gateway_route(r, name: str, kind: str, match: dict, service: str, rewrite: dict | None = None) -> None:
    action = {"target": {"virtualService": {"virtualServiceName": service}}}
    if rewrite is not None:
        action["rewrite"] = rewrite
    _mk(r, "GatewayRoute", {"virtualGatewayName": "edge", "gatewayRouteName": name,
                            "spec": {kind: {"match": match, "action": action}}})


class Edge:
    """Host A runs virtual gateway `edge` (listeners http, http2, grpc); host B runs the origins."""

    def __init__(self, etcd, prefix, tmp_path):
        key = tmp_path / "cluster.key"
        ClusterKey.generate(key)
        self.h1 = {n: h1_origin(n) for n in ("red-v1", "red-v2", "secret")}
        self.h2 = {n: H2Origin(n) for n in ("blue", "echo")}
        self.ports = {"http": free_port(), "http2": free_port(), "grpc": free_port()}
        apps = [LocalApp(mesh="shop", virtual_node=n, port=o.server_address[1], protocol="http", instance_id=n)
                for n, o in self.h1.items()]
        apps += [LocalApp(mesh="shop", virtual_node=n, port=o.port, instance_id=n) for n, o in self.h2.items()]
        self.b = start_meshd(etcd, prefix, tmp_path, "host-b", apps, key)
        self.a = start_meshd(etcd, prefix, tmp_path, "host-a", [], key,
                             gateways=[GatewayConfig(mesh="shop", virtual_gateway="edge", address="127.0.0.1")])
        r = self.a.resources
        _mk(r, "Mesh", {"spec": {"egressFilter": {"type": "DROP_ALL"}}})
        for n in self.h1:
            self._node(n, "http")
        for n in self.h2:
            self._node(n, "http2" if n == "blue" else "grpc")
        _service(r, "red.shop.local", "http", {"red-v1": 3, "red-v2": 1}, {"prefix": "/"})
        _service(r, "secret.shop.local", "http", {"secret": 1}, {"prefix": "/"})
        _service(r, "blue.shop.local", "http2", {"blue": 1}, {"prefix": "/"})
        _service(r, "echo.shop.local", "grpc", {"echo": 1}, {"serviceName": "echo.Echo"}, retryPolicy={
            "maxRetries": 2, "perRetryTimeout": {"unit": "s", "value": 2}, "grpcRetryEvents": ["unavailable"]})
        _mk(r, "VirtualGateway", {"virtualGatewayName": "edge", "spec": {"listeners": [
            {"portMapping": {"port": p, "protocol": proto}} for proto, p in self.ports.items()]}})
        # App Mesh's defaults: the matched prefix becomes "/" and the host the service's name.
        _gateway_route(r, "red", "httpRoute", {"prefix": "/red"}, "red.shop.local")
        # An explicit prefix value ([WT]: "/maroon/" rewritten to "/red/").
        _gateway_route(r, "maroon", "httpRoute", {"prefix": "/maroon/"}, "red.shop.local",
                       {"prefix": {"value": "/red/"}})
        # A hostname match that keeps the client's host and path.
        _gateway_route(r, "keep", "httpRoute", {"prefix": "/", "hostname": {"exact": "www.example.com"}},
                       "red.shop.local", {"hostname": {"defaultTargetHostname": "DISABLED"},
                                          "prefix": {"defaultPrefix": "DISABLED"}})
        _gateway_route(r, "blue", "http2Route", {"prefix": "/blue"}, "blue.shop.local")
        _gateway_route(r, "echo", "grpcRoute", {"serviceName": "echo.Echo"}, "echo.shop.local")
        self.channels = []
        self._wait_for_instances()

    def _wait_for_instances(self, timeout: float = 20.0) -> None:
        """Until host A's view has an instance of every origin's node: before that, a weighted
        pick may land on a node whose instance A has not seen yet (no_endpoint)."""
        nodes = [*self.h1, *self.h2]
        deadline = time.monotonic() + timeout
        while True:
            snap = self.a.runtime.view.snapshot("shop")
            if snap is not None and all(snap.instances.get(n) for n in nodes):
                return
            assert time.monotonic() < deadline, f"instances not seen by host A: {snap and snap.instances}"
            time.sleep(0.1)

    def _node(self, name: str, protocol: str) -> None:
        _mk(self.a.resources, "VirtualNode", {"virtualNodeName": name, "spec": {
            "listeners": [{"portMapping": {"port": 8080, "protocol": protocol}}],
            "serviceDiscovery": {"dns": {"hostname": f"{name}.shop.local"}}}})

    def grpc_call(self, method: str, authority: str = "api.example.com"):
        ch = grpc.insecure_channel(f"127.0.0.1:{self.ports['grpc']}",
                                   options=[("grpc.default_authority", authority), ("grpc.enable_retries", 0)])
        self.channels.append(ch)
        return ch.unary_unary(method)

    def close(self):
        for ch in self.channels:
            ch.close()
        self.a.stop()
        self.b.stop()
        for o in self.h1.values():
            o.shutdown()
        for o in self.h2.values():
            o.stop()


@pytest.fixture
def edge(etcd, etcd_prefix, tmp_path):
    e = Edge(etcd, etcd_prefix, tmp_path)
    yield e
    e.close()


def _routed(status_headers_body):
    status, headers, body = status_headers_body
    assert status == 200, (status, headers, body)
    return body.decode()


def test_http1_listener_rewrites_and_weighted_router(edge):
    port = edge.ports["http"]
    # Default prefix rewrite and default hostname rewrite: the origin sees /tell, and the
    # virtual service's name as Host.
    who, path, host = _until(lambda: _routed(h1_get(port, "/red/tell", "shop.example.com"))).split(" ")
    assert who in ("red-v1", "red-v2") and path == "/tell" and host == "red.shop.local"
    # "/red" alone is rewritten to "/", the query string travels on.
    assert _routed(h1_get(port, "/red?x=1", "shop.example.com")).split(" ")[1:] == ["/?x=1", "red.shop.local"]
    # An explicit prefix value.
    assert _routed(h1_get(port, "/maroon/tell", "shop.example.com")).split(" ")[1:] == ["/red/tell", "red.shop.local"]
    # Hostname match with both rewrites disabled: the client's host and path arrive as sent.
    assert _routed(h1_get(port, "/keep/x", "www.example.com:8080")).split(" ")[1:] == ["/keep/x",
                                                                                      "www.example.com:8080"]
    # No gateway route matches: 404 with the reason (another host, a path no prefix covers).
    status, headers, _ = h1_get(port, "/elsewhere", "shop.example.com")
    assert status == 404 and headers["x-meshd-reason"] == "no_gateway_route"
    # The virtual router behind the service splits 3:1.
    seen = Counter(_routed(h1_get(port, "/red/n", "shop.example.com")).split(" ")[0] for _ in range(200))
    assert set(seen) == {"red-v1", "red-v2"} and 0.6 <= seen["red-v1"] / 200 <= 0.88, seen


def test_http2_and_grpc_listeners(edge):
    port = edge.ports["http2"]
    body = _until(lambda: _routed(h2_get(port, "/blue/sky?q=1", "shop.example.com")))
    assert body == "blue /sky?q=1 blue.shop.local"
    status, headers, _ = h2_get(port, "/red/tell", "shop.example.com")  # an http route: not on this listener
    assert status == 404 and headers["x-meshd-reason"] == "no_gateway_route"
    say = edge.grpc_call("/echo.Echo/Say")
    # gRPC routes have no path rewrite; the hostname is rewritten to the service's name.
    assert _until(lambda: say(b"hi", timeout=5)) == b"echo /echo.Echo/Say echo.shop.local"
    with pytest.raises(grpc.RpcError) as err:
        edge.grpc_call("/other.Service/Call")(b"hi", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert dict(err.value.trailing_metadata())["x-meshd-reason"] == "no_gateway_route"
    # The virtual router's retry policy applies behind the gateway: an origin failing every
    # second call with UNAVAILABLE is hidden (one caller at a time, so a failed attempt's
    # retry is the origin's next call).
    origin = edge.h2["echo"]
    origin.fail_every, before = 2, origin.calls
    assert all(say(b"%d" % i, timeout=10).startswith(b"echo ") for i in range(20))
    assert origin.calls - before >= 29  # the failed attempts happened and were retried
    origin.fail_every, before = 1, origin.calls
    with pytest.raises(grpc.RpcError) as err:
        say(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and origin.calls - before == 3  # maxRetries + 1


def _ingress_as_gateway(edge, node: str, service: str) -> tuple[int, str]:
    """Call host B's HTTP/1.1 ingress directly with the gateway's certificate, naming
    `node`'s instance and `service` as the gateway's egress would."""
    tls = edge.a.runtime.certs.contexts("shop", "edge", spiffe.GATEWAY)
    ctx = tls.client_http
    host, port = edge.b.runtime.addresses["ingress_http"].rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    # The ingress picks its certificate by SNI, the target node's DNS name.
    c.sock = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10),
                             server_hostname=spiffe.workload_dns_name("meshd.local", "shop", node))
    try:
        c.request("GET", "/x", headers={"Host": service, INSTANCE_HEADER: f"shop/{node}/{node}",
                                        SERVICE_HEADER: service})
        r = c.getresponse()
        r.read()
        return r.status, r.getheader("x-meshd-reason", "")
    finally:
        c.close()


def test_drop_all_lets_the_gateway_reach_its_targets_only(edge):
    _until(lambda: _routed(h1_get(edge.ports["http"], "/red/x", "shop.example.com")))
    tls = edge.a.runtime.certs.contexts("shop", "edge", spiffe.GATEWAY)
    assert tls.identity == "spiffe://meshd.local/mesh/shop/virtualGateway/edge"
    # The gateway's identity, at the ingress, for a service its routes target: delivered.
    assert _ingress_as_gateway(edge, "red-v1", "red.shop.local") == (200, "")
    # For a service none of its routes target: refused under DROP_ALL.
    assert _ingress_as_gateway(edge, "secret", "secret.shop.local") == (403, "not_a_backend")
    # An outside client cannot steer the hop by sending meshd's own headers: they are replaced.
    c = http.client.HTTPConnection("127.0.0.1", edge.ports["http"], timeout=10)
    c.request("GET", "/red/x", headers={"Host": "shop.example.com", INSTANCE_HEADER: "shop/secret/secret",
                                        SERVICE_HEADER: "secret.shop.local"})
    r = c.getresponse()
    assert r.status == 200 and r.read().decode().split(" ")[0] in ("red-v1", "red-v2")
    c.close()


def test_garbage_on_gateway_listeners_leaves_them_serving(edge):
    _until(lambda: _routed(h1_get(edge.ports["http"], "/red/x", "shop.example.com")))
    for port in edge.ports.values():
        for junk in (os.urandom(4096), b"\x16\x03\x01\x02\x00" + os.urandom(512), b"GET / HTTP/1.1\r\n" * 3000):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                try:
                    s.sendall(junk)
                    s.settimeout(2)
                    s.recv(1024)
                except OSError:
                    pass  # reset or timed out: the listener dropped the connection
    assert _routed(h1_get(edge.ports["http"], "/red/x", "shop.example.com")).split(" ")[1] == "/x"
    assert _routed(h2_get(edge.ports["http2"], "/blue/x", "a.example")) == "blue /x blue.shop.local"
    assert edge.grpc_call("/echo.Echo/Say")(b"x", timeout=5).startswith(b"echo ")


def test_listeners_follow_the_gateway_spec(edge):
    r = edge.a.resources
    _until(lambda: _routed(h1_get(edge.ports["http"], "/red/x", "shop.example.com")))
    # Drop the gateway's HTTP/2 listener (its route is left out, with no listener to serve
    # it): the port closes; add a second HTTP/1.1 listener: it opens and routes.
    extra = free_port()

    def listeners(extra_protocol):
        ports = {"http": edge.ports["http"], "grpc": edge.ports["grpc"]}
        out = [{"portMapping": {"port": p, "protocol": proto}} for proto, p in ports.items()]
        return out + [{"portMapping": {"port": extra, "protocol": extra_protocol}}]
    r.update(K.VIRTUAL_GATEWAY, parse_json(pb.UpdateVirtualGatewayRequest, {
        "meshName": "shop", "virtualGatewayName": "edge", "spec": {"listeners": listeners("http")}}))
    assert _until(lambda: _routed(h1_get(extra, "/red/x", "shop.example.com"))).split(" ")[1] == "/x"

    def closed():
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", edge.ports["http2"]), timeout=1).close()
    _until(closed)
    assert f"gateway:edge:{edge.ports['http2']}" not in edge.a.runtime.addresses
    # The extra port changes protocol: reopened on the HTTP/2 engine, the http2 route serves it.
    r.update(K.VIRTUAL_GATEWAY, parse_json(pb.UpdateVirtualGatewayRequest, {
        "meshName": "shop", "virtualGatewayName": "edge", "spec": {"listeners": listeners("http2")}}))
    assert _until(lambda: _routed(h2_get(extra, "/blue/x", "a.example"))) == "blue /x blue.shop.local"


def test_listener_tls_strict_with_file_certificates(edge, tmp_path):
    """A listener's App Mesh `tls`: the file certificate is presented, the file trust
    requires a client certificate, and subjectAlternativeNames must name the client."""
    from test_mesh_traffic import _user_pki  # noqa: PLC0415 - the operator PKI builder
    f = _user_pki(tmp_path)
    tls_port = free_port()
    listeners = [{"portMapping": {"port": p, "protocol": proto}} for proto, p in edge.ports.items()]
    listeners.append({"portMapping": {"port": tls_port, "protocol": "http"}, "tls": {
        "mode": "STRICT", "certificate": {"file": {"certificateChain": f["api-v1.crt"], "privateKey": f["api-v1.key"]}},
        "validation": {"trust": {"file": {"certificateChain": f["ca"]}},
                       "subjectAlternativeNames": {"match": {"exact": ["web.example.com"]}}}}})
    edge.a.resources.update(K.VIRTUAL_GATEWAY, parse_json(pb.UpdateVirtualGatewayRequest, {
        "meshName": "shop", "virtualGatewayName": "edge", "spec": {"listeners": listeners}}))

    def tls_get(client: str | None):
        ctx = ssl.create_default_context(cafile=f["ca"])
        if client:
            ctx.load_cert_chain(f[f"{client}.crt"], f[f"{client}.key"])
        c = http.client.HTTPConnection("127.0.0.1", tls_port, timeout=10)
        c.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=10),
                                 server_hostname="api-v1.example.com")
        try:
            c.request("GET", "/red/x", headers={"Host": "shop.example.com"})
            r = c.getresponse()
            return r.status, r.getheader("x-meshd-reason", ""), r.read()
        finally:
            c.close()
    status, _, body = _until(lambda: tls_get("web"))
    assert status == 200 and body.decode().split(" ")[1:] == ["/x", "red.shop.local"]
    # A client certificate from the trust whose name the listener does not list.
    assert tls_get("api-v1")[:2] == (403, "identity_refused")
    # No client certificate, or no TLS at all: no request gets through.
    with pytest.raises((ssl.SSLError, OSError, http.client.HTTPException)):
        tls_get(None)
    with pytest.raises((OSError, http.client.HTTPException)):
        h1_get(tls_port, "/red/x", "shop.example.com")
    assert _routed(h1_get(edge.ports["http"], "/red/x", "shop.example.com")).split(" ")[1] == "/x"


def test_gateway_access_log(edge, tmp_path):
    """The virtual gateway's own App Mesh access log (VirtualGatewayLogging), written by the
    meshd that runs its listeners: one line per request, in the gateway's format."""
    path = tmp_path / "edge.log"
    edge.a.resources.update(K.VIRTUAL_GATEWAY, parse_json(pb.UpdateVirtualGatewayRequest, {
        "meshName": "shop", "virtualGatewayName": "edge", "spec": {
            "listeners": [{"portMapping": {"port": p, "protocol": proto}} for proto, p in edge.ports.items()],
            "logging": {"accessLog": {"file": {"path": str(path), "format": {
                "text": "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %UPSTREAM_CLUSTER%\n"}}}}}}))

    def logged():
        _routed(h1_get(edge.ports["http"], "/red/logged", "shop.example.com"))
        lines = path.read_text().splitlines() if path.exists() else []
        assert any(line.startswith("GET /red/logged 200 ") for line in lines), lines
        return lines
    lines = _until(logged)
    status, _, _ = h1_get(edge.ports["http"], "/nowhere", "shop.example.com")
    assert status == 404

    def refused_logged():
        assert "GET /nowhere 404" in path.read_text()
    _until(refused_logged)
    assert all(line.split(" ")[0] == "GET" for line in lines)
