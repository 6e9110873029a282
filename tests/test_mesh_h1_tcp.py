"""HTTP/1.1 and TCP through two meshds over mTLS: keep-alive and chunked bodies, a WebSocket
echo, and a byte-exact TCP echo with half-close."""
from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import socketserver
import ssl
import threading
import time
from http.server import ThreadingHTTPServer

import pytest

from mesh_harness import start_meshd
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.embedded_etcd import free_port
from meshd.dataplane.h1 import counters as h1_counters
from meshd.dataplane.tcp import counters as tcp_counters
from meshd.proxy import BackendPort, LocalApp
from meshd.security import ClusterKey, spiffe
from meshd.v1 import admin_pb2 as pb
from tests.dataplane.test_dp_h1 import WS_GUID, Handler, ws_frame, ws_read

pytestmark = [pytest.mark.dataplane, pytest.mark.etcd]


class Echo(Handler):
    """The origin behind `web-api`; /ws is the data-plane tests' RFC 6455 echo."""

    flaky_calls = 0
    hold_closed: list = []  # seconds each /hold waited before its connection closed

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/ws":
            self._websocket()
            return
        if self.path == "/slow":
            time.sleep(0.6)
        if self.path == "/hold":  # never answers: waits until its caller's connection closes
            self.connection.settimeout(20)
            t0 = time.monotonic()
            try:
                self.connection.recv(1)
            except OSError:
                pass
            Echo.hold_closed.append(time.monotonic() - t0)
            return
        if self.path == "/flaky":
            Echo.flaky_calls += 1
            if Echo.flaky_calls % 2:  # every other call fails with 503
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = f"web-api saw {self.path} host={self.headers['Host']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        if self.headers.get("Transfer-Encoding") == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                chunk = self.rfile.read(size + 2)[:-2]
                if not size:
                    break
                data += chunk
        else:
            data = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(data), 1000):
            part = data[i:i + 1000]
            self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")


class TcpStreamEcho(socketserver.BaseRequestHandler):
    """Echoes each chunk as it arrives, reversed in blocks, until the client closes."""

    def handle(self):
        while True:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            self.request.sendall(chunk)


class TcpEcho(socketserver.BaseRequestHandler):
    def handle(self):
        data = b""
        while True:
            chunk = self.request.recv(65536)
            if not chunk:
                break
            data += chunk
        # Half-close: the client finished sending; answer everything, then "bye".
        self.request.sendall(data[::-1] + b"|bye")
        self.request.shutdown(socket.SHUT_WR)


def _mk(resources, title, kind, doc):
    resources.create(kind, parse_json(getattr(pb, f"Create{title}Request"), doc))


@pytest.fixture(params=[TcpStreamEcho])
def h1_tcp_mesh(request, etcd, etcd_prefix, tmp_path):
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    http_origin = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    http_origin.connections = 0
    threading.Thread(target=http_origin.serve_forever, daemon=True).start()
    tcp_origin = socketserver.ThreadingTCPServer(("127.0.0.1", 0), request.param)
    tcp_origin.daemon_threads = True
    threading.Thread(target=tcp_origin.serve_forever, daemon=True).start()
    tcp_local = free_port()
    web = LocalApp(mesh="shop", virtual_node="web", port=free_port(), egress_http="127.0.0.1:0",
                   backends=[BackendPort(tcp_local, "db.shop.local", "tcp")])
    a = start_meshd(etcd, etcd_prefix, tmp_path, "host-a", [web], key)
    b = start_meshd(etcd, etcd_prefix, tmp_path, "host-b", [
        LocalApp(mesh="shop", virtual_node="web-api", port=http_origin.server_address[1], protocol="http"),
        LocalApp(mesh="shop", virtual_node="db", port=tcp_origin.server_address[1], protocol="tcp")], key)
    r = a.resources
    _mk(r, "Mesh", K.MESH, {"meshName": "shop", "spec": {"egressFilter": {"type": "DROP_ALL"}}})
    for node, proto in (("web", "http"), ("web-api", "http"), ("db", "tcp")):
        spec = {"listeners": [{"portMapping": {"port": 8080 if proto == "http" else 5432, "protocol": proto}}],
                "serviceDiscovery": {"dns": {"hostname": f"{node}.shop.local"}}}
        if node == "web":
            spec["backends"] = [{"virtualService": {"virtualServiceName": s}} for s in ("api.shop.local", "db.shop.local")]
        _mk(r, "VirtualNode", K.VIRTUAL_NODE, {"meshName": "shop", "virtualNodeName": node, "spec": spec})
    _mk(r, "VirtualRouter", K.VIRTUAL_ROUTER, {"meshName": "shop", "virtualRouterName": "api",
                                                "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}})
    _mk(r, "Route", K.ROUTE, {"meshName": "shop", "virtualRouterName": "api", "routeName": "all", "spec": {
        "httpRoute": {"match": {"prefix": "/"}, "action": {"weightedTargets": [{"virtualNode": "web-api", "weight": 1}]},
                      "retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"unit": "s", "value": 2},
                                      "httpRetryEvents": ["server-error"]}}}})
    _mk(r, "VirtualService", K.VIRTUAL_SERVICE, {"meshName": "shop", "virtualServiceName": "api.shop.local",
                                                  "spec": {"provider": {"virtualRouter": {"virtualRouterName": "api"}}}})
    _mk(r, "VirtualRouter", K.VIRTUAL_ROUTER, {"meshName": "shop", "virtualRouterName": "db",
                                                "spec": {"listeners": [{"portMapping": {"port": 5432, "protocol": "tcp"}}]}})
    _mk(r, "Route", K.ROUTE, {"meshName": "shop", "virtualRouterName": "db", "routeName": "db", "spec": {
        "tcpRoute": {"action": {"weightedTargets": [{"virtualNode": "db", "weight": 1}]}}}})
    _mk(r, "VirtualService", K.VIRTUAL_SERVICE, {"meshName": "shop", "virtualServiceName": "db.shop.local",
                                                  "spec": {"provider": {"virtualRouter": {"virtualRouterName": "db"}}}})
    yield a, b, tcp_local
    a.stop()
    b.stop()
    http_origin.shutdown()
    tcp_origin.shutdown()


def _until(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (OSError, http.client.HTTPException, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_http1_keep_alive_and_chunked_bodies_through_the_mesh(h1_tcp_mesh):
    a, _, _ = h1_tcp_mesh
    host, port = a.runtime.addresses["egress_http:web"].rsplit(":", 1)

    def get():
        c = http.client.HTTPConnection(host, int(port), timeout=5)
        c.request("GET", "/items?x=1", headers={"Host": "api.shop.local"})
        resp = c.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body, resp.getheaders())
        return c, body
    conn, body = _until(get)
    assert body.startswith(b"web-api saw /items?x=1")
    payload = bytes(range(256)) * 400  # 100 KiB, sent chunked, answered chunked
    conn.putrequest("POST", "/upload", skip_host=True)
    conn.putheader("Host", "api.shop.local")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for i in range(0, len(payload), 7000):
        part = payload[i:i + 7000]
        conn.send(b"%x\r\n" % len(part) + part + b"\r\n")
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()  # same client connection: keep-alive through the mesh
    got = resp.read()
    assert resp.status == 200 and got == payload, (resp.status, resp.getheaders(), got[:200])
    # A service the node did not declare is refused (DROP_ALL), with the reason.
    conn.request("GET", "/", headers={"Host": "other.shop.local"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 404 and resp.getheader("x-meshd-reason") == "no_service"
    # Retries for HTTP/1.1 too: a target that answers 503 every other call is fully hidden.
    before = Echo.flaky_calls
    for _ in range(10):
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/flaky", headers={"Host": "api.shop.local"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        conn.close()
    assert Echo.flaky_calls - before >= 15  # the failed attempts happened and were retried


def test_tcp_echo_is_byte_exact_through_the_mesh(h1_tcp_mesh):
    _, _, tcp_local = h1_tcp_mesh
    payload = bytes(range(256)) * 4096  # 1 MiB

    def roundtrip():
        s = socket.create_connection(("127.0.0.1", tcp_local), timeout=10)
        got = b""
        for i in range(0, len(payload), 65536):
            s.sendall(payload[i:i + 65536])
        while len(got) < len(payload):
            chunk = s.recv(65536)
            assert chunk, f"closed after {len(got)} bytes"
            got += chunk
        s.close()
        return got
    assert _until(roundtrip) == payload


@pytest.mark.parametrize("h1_tcp_mesh", [TcpEcho], indirect=True)
def test_tcp_echo_with_half_close_is_byte_exact_through_the_mesh(h1_tcp_mesh):
    _, _, tcp_local = h1_tcp_mesh
    payload = bytes(range(256)) * 4096  # 1 MiB

    def roundtrip():
        s = socket.create_connection(("127.0.0.1", tcp_local), timeout=10)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)  # half-close: we are done sending, still reading
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        s.close()
        assert got, "connection closed without data"
        return got
    got = _until(roundtrip)
    assert got == payload[::-1] + b"|bye"


def test_tcp_ingress_drops_bad_clients_and_keeps_serving(h1_tcp_mesh):
    """Plaintext, garbage, and a mesh client that ends without close_notify (a truncation,
    RFC 8446 §6.1) are each dropped at host B's TCP ingress; the mesh path keeps working."""
    a, b, tcp_local = h1_tcp_mesh
    ingress = next(v for k, v in b.runtime.addresses.items() if k.startswith("ingress_tcp:db:"))
    host, port = ingress.rsplit(":", 1)
    echo = b"x" * 1000

    def through_mesh():
        with socket.create_connection(("127.0.0.1", tcp_local), timeout=10) as s:
            s.sendall(echo)
            got = b""
            while len(got) < len(echo):
                chunk = s.recv(65536)
                assert chunk, f"closed after {len(got)} bytes"
                got += chunk
            return got
    assert _until(through_mesh) == echo
    c0 = tcp_counters()
    for junk in (b"GET / HTTP/1.1\r\nHost: db.shop.local\r\n\r\n", b"\x16\x03\x01\x00\x08notahello" * 4):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(junk)
            s.settimeout(5)
            got = s.recv(100)       # at most a TLS alert record, then EOF
            assert got == b"" or (got[:1] == b"\x15" and s.recv(100) == b""), got
        assert through_mesh() == echo
    # A caller with a valid workload certificate that stops with a bare FIN.
    ctx = a.runtime.certs.contexts("shop", "web").client_tcp
    name = spiffe.workload_dns_name(a.runtime.certs.trust_domain, "shop", "db")
    with ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=name) as t:
        t.sendall(b"partial")
        assert t.recv(100) == b"partial"
        socket.socket.shutdown(t, socket.SHUT_WR)       # FIN, no close_notify
        t.settimeout(5)
        try:
            assert t.recv(100) == b""
        except (ssl.SSLError, ConnectionResetError):
            pass                                        # dropped: either way not answered
    assert through_mesh() == echo
    c1 = tcp_counters()
    assert c1["tls_handshake_failures"] - c0["tls_handshake_failures"] == 2
    assert c1["tls_truncated"] - c0["tls_truncated"] == 1


def test_tcp_ingress_checks_the_callers_identity_under_drop_all(h1_tcp_mesh):
    """A TCP connection names no service, so under DROP_ALL host B's ingress admits a caller
    only if it declares a backend whose traffic reaches `db`: `web` does, `web-api` not."""
    a, b, _ = h1_tcp_mesh
    ingress = next(v for k, v in b.runtime.addresses.items() if k.startswith("ingress_tcp:db:"))
    host, port = ingress.rsplit(":", 1)
    name = spiffe.workload_dns_name(a.runtime.certs.trust_domain, "shop", "db")

    def call_as(node):
        ctx = a.runtime.certs.contexts("shop", node).client_tcp
        with ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=name) as t:
            t.settimeout(5)
            t.sendall(b"hello")
            try:
                return t.recv(100)
            except (ssl.SSLError, ConnectionResetError):
                return b""

    def admitted():
        # Until host B's view has the route and service, no backend of `web` reaches `db`.
        assert call_as("web") == b"hello"
    _until(admitted)
    assert call_as("web-api") == b""


def test_websocket_echo_through_the_mesh(h1_tcp_mesh):
    """app → HTTP/1.1 egress → mTLS → HTTP/1.1 ingress → a WebSocket echo server (RFC 6455):
    the Upgrade crosses both meshds, then the tunnel carries frames both ways and the close."""
    a, _, _ = h1_tcp_mesh
    host, port = a.runtime.addresses["egress_http:web"].rsplit(":", 1)

    def handshake():
        key = base64.b64encode(os.urandom(16))
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: api.shop.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        f = s.makefile("rb")
        status = f.readline()
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        if not status.startswith(b"HTTP/1.1 101"):
            s.close()
            raise AssertionError((status, headers))
        # RFC 6455 §4.2.2: the accept value proves the server, not a proxy, read our key.
        assert headers["sec-websocket-accept"] == base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        assert headers["upgrade"].lower() == "websocket"
        return s, f
    before = h1_counters()["upgrades"]
    s, f = _until(handshake)
    assert h1_counters()["upgrades"] - before == 2         # a tunnel at each meshd (one process)
    with s, f:
        text = "héllo through the mesh".encode()
        s.sendall(ws_frame(1, text))
        assert ws_read(f) == (1, text)
        blob = os.urandom(1 << 20)
        s.sendall(ws_frame(2, blob))
        op, got = ws_read(f)
        assert op == 2 and len(got) == len(blob) and got == blob
        s.sendall(ws_frame(8, b"\x03\xe8done"))          # close, status 1000 (RFC 6455 §7.4.1)
        assert ws_read(f) == (8, b"\x03\xe8done")
        s.settimeout(10)
        assert f.read() == b""                             # the server's close came through


    def settled():
        # The tunnel's request was reported when it ended, so its in-flight slot is free again.
        assert a.runtime.in_flight().get("shop/web-api") == 0
    _until(settled, 5)


@pytest.mark.beyond
def test_tcp_listener_rate_limit_counts_connections(h1_tcp_mesh):
    """A NodePolicy token bucket on a TCP listener counts connections at the serving meshd's
    ingress (Envoy's network local rate limit): with 3 tokens and no refill within the test,
    exactly 3 of 5 new connections reach the app and the other 2 are closed unanswered."""
    a, b, tcp_local = h1_tcp_mesh

    def echo(data: bytes) -> bytes:
        s = socket.create_connection(("127.0.0.1", tcp_local), timeout=5)
        try:
            s.sendall(data)
            got = b""
            while len(got) < len(data):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got
        except OSError:
            return b""
        finally:
            s.close()
    assert _until(lambda: _assert_echo(echo(b"warm"), b"warm"))
    _mk(a.resources, "NodePolicy", K.NODE_POLICY, {"meshName": "shop", "nodePolicyName": "db", "spec": {
        "virtualNodeName": "db", "listenerRateLimits": [{"port": 5432, "rateLimit": {
            "maxTokens": 3, "tokensPerFill": 1, "fillInterval": {"unit": "s", "value": 86400}}}]}})

    def limited():
        live = b.runtime.view.live("shop")
        assert live is not None and ("db", 5432) in live.compiled.listener_limits
        return True
    assert _until(limited)
    answers = [echo(b"call %d" % i) for i in range(5)]
    assert answers == [b"call 0", b"call 1", b"call 2", b"", b""], answers


def _assert_echo(got: bytes, want: bytes) -> bool:
    assert got == want, got
    return True
