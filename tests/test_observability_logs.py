"""App Mesh access logs through real meshds: text and JSON, for gRPC, HTTP/1.1 and TCP."""
from __future__ import annotations

import http.client
import json
import re
import socket
import time

import pytest

from meshd.api import kinds as K
from meshd.api.validate import InvalidSpec, parse_json
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import spec_pb2
from test_mesh_h1_tcp import h1_tcp_mesh  # noqa: F401 - the HTTP/1.1 + TCP mesh fixture
from test_observability import h2_requests, mesh  # noqa: F401 - the gRPC mesh fixture

pytestmark = [pytest.mark.observability, pytest.mark.dataplane, pytest.mark.etcd]

JSON_FORMAT = [
    {"key": "start", "value": "%START_TIME%"}, {"key": "method", "value": "%REQ(:METHOD)%"},
    {"key": "path", "value": "%REQ(:PATH)%"}, {"key": "authority", "value": "%REQ(x-absent?:AUTHORITY)%"},
    {"key": "code", "value": "%RESPONSE_CODE%"}, {"key": "grpc", "value": "%GRPC_STATUS%"},
    {"key": "flags", "value": "%RESPONSE_FLAGS%"}, {"key": "ms", "value": "%DURATION%"},
    {"key": "in", "value": "%BYTES_RECEIVED%"}, {"key": "out", "value": "%BYTES_SENT%"},
    {"key": "upstream", "value": "%UPSTREAM_HOST%"}, {"key": "cluster", "value": "%UPSTREAM_CLUSTER%"},
    {"key": "peer", "value": "%DOWNSTREAM_REMOTE_ADDRESS%"}, {"key": "proto", "value": "%PROTOCOL%"},
    {"key": "ct", "value": "%RESP(content-type):16%"}, {"key": "line", "value": "%REQ(:METHOD)% %REQ(:PATH)%"},
]


def set_log(resources, node: str, file_log: dict) -> None:
    """Give `node` an App Mesh access log through the admin API (an update of its spec)."""
    cur = resources.describe(K.VIRTUAL_NODE, pb.DescribeVirtualNodeRequest(
        mesh_name="shop", virtual_node_name=node)).virtual_node
    req = pb.UpdateVirtualNodeRequest(mesh_name="shop", virtual_node_name=node)
    req.spec.CopyFrom(cur.spec)
    req.spec.logging.access_log.file.CopyFrom(parse_json(spec_pb2.FileAccessLog, file_log))
    resources.update(K.VIRTUAL_NODE, req)


def lines(path, n: int, timeout: float = 10.0) -> list[str]:
    """The first n lines of `path`, waiting (bounded) for the writer thread."""
    deadline = time.monotonic() + timeout
    while True:
        got = path.read_text().splitlines() if path.exists() else []
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def until_logged(path, send, timeout: float = 10.0) -> None:
    """Send requests until a line shows up (the update reached the meshd's watch), let the
    writer thread finish, then empty the log for the test's own requests."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"nothing logged to {path}"
        send()
        time.sleep(0.1)
    size = -1
    while size != path.stat().st_size:  # no line written for 0.3 s: the writer is idle
        size = path.stat().st_size
        time.sleep(0.3)
    path.write_text("")


def test_grpc_json_on_egress_and_the_default_text_on_ingress(mesh, tmp_path):
    call = mesh.client()
    mesh.wait_routable(call)
    egress_log, ingress_log = tmp_path / "web.json", tmp_path / "api.log"
    set_log(mesh.a.resources, "web", {"path": str(egress_log), "format": {"json": JSON_FORMAT}})
    set_log(mesh.a.resources, "api-v1", {"path": str(ingress_log)})  # no format: Envoy's default
    until_logged(egress_log, lambda: call(b"warm", timeout=5))
    until_logged(ingress_log, lambda: call(b"warm", timeout=5))
    egress_log.write_text("")
    assert call(b"hello", timeout=5) == b"api-v1:hello"
    assert h2_requests(mesh.egress, [("nobody.shop.local", "/echo.Echo/Say")]) == {"200": 1}
    ok, refused = [json.loads(x) for x in lines(egress_log, 2)]
    assert ok["method"] == "POST" and ok["path"] == "/echo.Echo/Say" and ok["authority"] == "api.shop.local:9090"
    assert (ok["code"], ok["grpc"], ok["flags"], ok["proto"]) == (200, 0, "-", "HTTP/2")
    assert ok["cluster"] == "api-v1" and ok["upstream"].startswith("127.0.0.1:")
    assert ok["in"] == 10 and ok["out"] == 17  # gRPC frames: 5-byte prefix + "hello" / "api-v1:hello"
    assert isinstance(ok["ms"], int) and ok["ct"] == "application/grpc"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ok["start"])
    assert ok["peer"].startswith("127.0.0.1:") and ok["line"] == "POST /echo.Echo/Say"
    assert (refused["grpc"], refused["flags"], refused["upstream"], refused["cluster"]) == (12, "NR", None, None)
    (text,) = lines(ingress_log, 1)
    m = re.fullmatch(r'\[(\S+)\] "POST /echo.Echo/Say HTTP/2" 200 - 10 17 (\d+) - "-" "(.*)" "-" '
                     r'"api.shop.local:9090" "127.0.0.1:(\d+)"', text)
    assert m, text
    assert int(m.group(4)) == mesh.origins["api-v1"].port  # the ingress delivered to the local app


def test_http1_and_tcp_lines_in_one_text_log(h1_tcp_mesh, tmp_path):  # noqa: F811
    a, b, tcp_local = h1_tcp_mesh
    path = tmp_path / "web.log"
    set_log(a.resources, "web", {"path": str(path), "format": {
        "text": "%PROTOCOL% %REQ(:METHOD)% %REQ(:PATH):6% %RESPONSE_CODE% %RESPONSE_FLAGS% "
                "%BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% 100%%"}})
    host, port = a.runtime.addresses["egress_http:web"].rsplit(":", 1)

    def get(path_="/items?x=1", authority="api.shop.local"):
        c = http.client.HTTPConnection(host, int(port), timeout=5)
        c.request("GET", path_, headers={"Host": authority})
        resp = c.getresponse()
        resp.read()
        c.close()
        return resp.status
    deadline = time.monotonic() + 15
    while get() != 200:  # routable (instances registered) before the log is turned on
        assert time.monotonic() < deadline
        time.sleep(0.1)
    until_logged(path, get)
    assert get() == 200
    assert get("/", "elsewhere.shop.local") == 404
    with socket.create_connection(("127.0.0.1", tcp_local), timeout=5) as s:
        s.sendall(b"ping!")
        assert s.recv(100) == b"ping!"
    got = lines(path, 3)
    assert got[0].startswith("HTTP/1.1 GET /items 200 - 0 ") and got[0].endswith(" web-api 100%"), got
    assert got[1].startswith("HTTP/1.1 GET / 404 NR 0 "), got
    assert got[2] == "- - - 0 - 5 5 db 100%", got


def test_an_unknown_operator_is_refused_at_write_time_naming_the_field(mesh):
    req = parse_json(pb.CreateVirtualNodeRequest, {"meshName": "shop", "virtualNodeName": "bad", "spec": {
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": "bad.shop.local"}},
        "logging": {"accessLog": {"file": {"path": "/dev/stdout", "format": {
            "json": [{"key": "ok", "value": "%DURATION%"}, {"key": "no", "value": "x %UPSTREAM_COLOR%"}]}}}}}})
    with pytest.raises(InvalidSpec) as err:
        mesh.a.resources.create(K.VIRTUAL_NODE, req)
    fields = {v.field: v.description for v in err.value.violations}
    assert fields == {"spec.logging.accessLog.file.format.json[1].value": "unknown operator: %UPSTREAM_COLOR%"}
