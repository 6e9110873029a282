"""The pieces of interception on their own: protocol sniffing, the port table, the DNS
responder's allocation and answers (real UDP and TCP sockets on loopback), the original
destination of a connection that was not redirected, and the config keys."""
from __future__ import annotations

import re
import socket

import pytest
from dnslib import RCODE, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from meshd.compile import MeshSnapshot
from meshd.proxy.config import ConfigError, RuntimeConfig
from meshd.proxy.dns import DnsResponder, MeshResolver, allocate, domains
from meshd.proxy.intercept import H2_PREFACE, PortTable, original_dst, sniff
from meshd.sidecar import (
    INSTEAD, MeshResource, SidecarError, SidecarSettings, instance_address, instance_id, log_unacted,
)
from meshd.v1 import admin_pb2 as pb
from meshd.api.validate import parse_json

pytestmark = [pytest.mark.sidecar]


@pytest.mark.parametrize("data,protocol", [
    (H2_PREFACE, "http2"), (H2_PREFACE[:3], None), (b"GET / HTTP/1.1\r\n", "http"), (b"GE", None),
    (b"POST http://x/ HTTP/1.1", "http"), (b"GET ht", None), (b"OPTIONS * HTTP/1.1", "http"),
    (b"CONNECT db:5432 HTTP/1.1", "http"), (b"\x16\x03\x01\x02\x00", "tls"), (b"\x00\x00\x00\x08", "tcp"),
    (b"SET key value\r\n", "tcp"), (b"hello world", "tcp"), (b"SSH-2.0-OpenSSH_9.2\r\n", "tcp"),
    (b"*1\r\n$4\r\nPING\r\n", "tcp"),
])
def test_sniff_names_the_protocol_of_the_first_bytes(data, protocol):
    assert sniff(data) == protocol


@given(st.binary(min_size=1, max_size=64))
def test_sniff_never_changes_its_mind_once_it_has_decided(data):
    """More bytes never turn a verdict into another: what the engine later reads agrees."""
    verdict = sniff(data)
    for n in range(1, len(data)):
        early = sniff(data[:n])
        assert early is None or early == verdict


def _snap(egress_filter="ALLOW_ALL") -> MeshSnapshot:
    def data(cls, doc):
        return parse_json(cls, doc)
    snap = MeshSnapshot(name="shop", mesh=data(pb.MeshData, {"spec": {"egressFilter": {"type": egress_filter}}}))
    for name, port, proto in (("db-a", 5432, "tcp"), ("db-b", 5432, "tcp"), ("api", 9080, "grpc"), ("kv", 6379, "tcp")):
        snap.nodes[name] = data(pb.VirtualNodeData, {"spec": {"listeners": [
            {"portMapping": {"port": port, "protocol": proto}}]}})
        snap.services[f"{name}.shop.local"] = data(pb.VirtualServiceData, {"spec": {"provider": {
            "virtualNode": {"virtualNodeName": name}}}})
    return snap


def test_port_table_knows_tcp_and_http_ports_and_prefers_the_callers_backends():
    t = PortTable(_snap(), frozenset({"db-b.shop.local"}))
    assert t.tcp_service(5432) == "db-b.shop.local"  # two on the port: the caller's backend
    assert PortTable(_snap(), frozenset()).tcp_service(5432) == "db-a.shop.local"  # else by name, stably
    assert t.tcp_service(6379) == "kv.shop.local"
    assert t.tcp_service(9080) is None and 9080 in t.http
    assert t.tcp_service(1234) is None and 1234 not in t.http


def test_allocation_is_a_function_of_the_names_and_stays_in_the_reserved_ranges():
    names = [f"svc-{i}.shop.local" for i in range(500)]
    a, b = allocate(names), allocate(list(reversed(names)))
    assert a == b
    v4 = {x for x, _ in a.values()}
    v6 = {y for _, y in a.values()}
    assert len(v4) == len(v6) == 500  # distinct, collisions probed away
    assert all(x.startswith("240.240.") for x in v4) and all(y.startswith("2001:2::") for y in v6)
    assert domains(["a.shop.local", "b.ns.svc.cluster.local", "single"]) == {"shop.local", "ns.svc.cluster.local"}


@pytest.fixture
def upstream():
    """A resolver on loopback that knows example.test."""
    from dnslib import QTYPE, RR, A  # noqa: PLC0415

    class Known:
        def resolve(self, request, handler):
            reply = request.reply()
            if str(request.q.qname) == "example.test.":
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("192.0.2.7"), ttl=5))
            else:
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
    d = DnsResponder(Known(), "127.0.0.1", 0).start()
    yield ("127.0.0.1", d.port)
    d.stop()


@pytest.mark.parametrize("tcp", [False, True])
def test_responder_answers_mesh_names_forwards_others_and_refuses_unknown_mesh_names(upstream, tcp):
    names = ["catalog.shop.local", "pages.shop.local"]
    d = DnsResponder(MeshResolver(lambda: names, lambda: [upstream], timeout=1), "127.0.0.1", 0).start()
    try:
        def ask(name, qtype):
            reply = DNSRecord.parse(DNSRecord.question(name, qtype).send("127.0.0.1", d.port, tcp=tcp, timeout=5))
            return RCODE[reply.header.rcode], [str(r.rdata) for r in reply.rr]
        v4, v6 = allocate(names)["catalog.shop.local"]
        assert ask("catalog.shop.local", "A") == ("NOERROR", [v4])
        assert ask("CATALOG.shop.local.", "AAAA") == ("NOERROR", [v6])
        assert ask("catalog.shop.local", "MX") == ("NOERROR", [])  # the name exists: no data
        assert ask("example.test", "A") == ("NOERROR", ["192.0.2.7"])  # forwarded
        assert ask("nope.shop.local", "A") == ("NXDOMAIN", [])
        assert ask("unknown.test", "A") == ("NXDOMAIN", [])  # the upstream's own answer
    finally:
        d.stop()


def test_upstream_down_gives_nxdomain_for_mesh_looking_names_and_servfail_for_others():
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))  # bound, never answers
    r = MeshResolver(lambda: ["catalog.shop.local"], lambda: [dead.getsockname()], timeout=0.3)
    d = DnsResponder(r, "127.0.0.1", 0).start()
    try:
        for name, rcode in (("nope.shop.local", "NXDOMAIN"), ("example.test", "SERVFAIL")):
            reply = DNSRecord.parse(DNSRecord.question(name, "A").send("127.0.0.1", d.port, timeout=5))
            assert RCODE[reply.header.rcode] == rcode
    finally:
        d.stop()
        dead.close()


def test_a_connection_that_was_not_redirected_has_no_original_destination():
    srv = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    try:
        assert original_dst(conn) is None
    finally:
        for s in (c, conn, srv):
            s.close()


def test_config_keys_for_interception_and_dns():
    cfg = RuntimeConfig.from_dict({"apps": [{"mesh": "m", "virtualNode": "n", "port": 8080,
                                             "interceptEgress": 15001}], "dns": "127.0.0.1:15053"})
    assert cfg.apps[0].intercept_egress == "15001" and cfg.dns == "127.0.0.1:15053"
    with pytest.raises(ConfigError, match=r"apps\[0\]\.interceptEgress"):
        RuntimeConfig.from_dict({"apps": [{"mesh": "m", "virtualNode": "n", "port": 8080, "interceptEgress": "x"}]})
    with pytest.raises(ConfigError, match="dns"):
        RuntimeConfig.from_dict({"dns": 70000})


@pytest.mark.parametrize("value,want", [
    ("arn:aws:appmesh:us-west-2:111122223333:mesh/shop/virtualNode/web",
     MeshResource("shop", "virtualNode", "web", "111122223333")),
    ("mesh/shop/virtualNode/web", MeshResource("shop", "virtualNode", "web")),
    ("mesh/shop@444455556666/virtualNode/web", MeshResource("shop", "virtualNode", "web", "444455556666")),
    ("arn:aws:appmesh:eu-west-1:111122223333:mesh/shop@444455556666/virtualGateway/edge",
     MeshResource("shop", "virtualGateway", "edge", "444455556666")),
])
def test_resource_arn_long_and_short_forms(value, want):
    assert MeshResource.parse(value) == want


@pytest.mark.parametrize("env,says", [
    ({"MESHD_ETCD": "http://e:2379"}, "APPMESH_RESOURCE_ARN is required"),
    ({"APPMESH_RESOURCE_ARN": "mesh/shop/virtualService/x", "MESHD_ETCD": "http://e:2379"},
     "APPMESH_RESOURCE_ARN: expected mesh/<mesh>"),
    ({"APPMESH_RESOURCE_ARN": "arn:aws:s3:::bucket", "MESHD_ETCD": "http://e:2379"}, "not an App Mesh ARN"),
    ({"APPMESH_RESOURCE_ARN": "mesh/shop/virtualNode/web"}, "MESHD_ETCD is required"),
    ({"APPMESH_RESOURCE_ARN": "mesh/shop/virtualNode/web", "MESHD_ETCD": "http://e:2379", "ENVOY_LOG_LEVEL": "loud"},
     "ENVOY_LOG_LEVEL: one of"),
    ({"APPMESH_RESOURCE_ARN": "mesh/shop/virtualNode/web", "MESHD_ETCD": "http://e:2379",
      "ENVOY_ADMIN_ACCESS_PORT": "99999"}, "ENVOY_ADMIN_ACCESS_PORT: a port number"),
])
def test_sidecar_settings_refused_by_name(env, says):
    with pytest.raises(SidecarError, match=re.escape(says)):
        SidecarSettings.from_env(env)


def test_sidecar_settings_follow_envoys_variables():
    s = SidecarSettings.from_env({"APPMESH_VIRTUAL_NODE_NAME": "mesh/shop/virtualNode/web", "ENVOY_LOG_LEVEL": "trace",
                                  "ENVOY_ADMIN_ACCESS_PORT": "9911", "MESHD_ETCD": "http://a:2379,http://b:2379"})
    assert (s.resource.name, s.log_level, s.admin_port, s.ingress_port, s.egress_port, s.etcd) == (
        "web", "debug", 9911, 15000, 15001, ["http://a:2379", "http://b:2379"])
    said = []
    log_unacted({"ENVOY_CONCURRENCY": "2", "ENVOY_SOMETHING_NEW": "x", "APPMESH_RESOURCE_ARN": "y",
                 "ENABLE_ENVOY_XRAY_TRACING": "1", "PATH": "/bin"}, said.append)
    assert said == ["ENVOY_CONCURRENCY is not acted on: " + INSTEAD["ENVOY_CONCURRENCY"],
                    "ENVOY_SOMETHING_NEW is not known to meshd; ignored"]


def test_a_sidecar_is_scoped_unless_told_otherwise():
    """One node per sidecar, thousands of sidecars: each watches its own mesh and compiles
    only what its node's backends reach (issue 17), as App Mesh configures each Envoy for its
    node's backends. MESHD_SCOPED=0 compiles the whole mesh."""
    env = {"APPMESH_RESOURCE_ARN": "mesh/shop/virtualNode/web", "MESHD_ETCD": "http://a:2379"}
    assert SidecarSettings.from_env(env).scoped is True
    assert SidecarSettings.from_env({**env, "MESHD_SCOPED": "0"}).scoped is False
    with pytest.raises(SidecarError, match="MESHD_SCOPED"):
        SidecarSettings.from_env({**env, "MESHD_SCOPED": "maybe"})


def test_instance_address_and_id_from_the_ecs_task_metadata_endpoint():
    """ECS_CONTAINER_METADATA_URI_V4 served by a real HTTP server, in the shape ECS serves."""
    import json  # noqa: PLC0415
    import threading  # noqa: PLC0415
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: PLC0415

    class Meta(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            task = {"TaskARN": "arn:aws:ecs:us-west-2:111122223333:task/default/0f1e2d3c4b5a"}
            doc = task if self.path.endswith("/task") else {
                "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.2.106"]}]}
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Meta)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        env = {"ECS_CONTAINER_METADATA_URI_V4": f"http://127.0.0.1:{srv.server_address[1]}/v4/abc"}
        assert instance_address(env) == "10.0.2.106"
        assert instance_id(env) == "0f1e2d3c4b5a"
        assert instance_address({**env, "POD_IP": "10.1.1.1"}) == "10.1.1.1"
        assert instance_id({"HOSTNAME": "web-7d9f"}) == "web-7d9f"
    finally:
        srv.shutdown()
        srv.server_close()


def test_dogstatsd_lines_and_datagrams():
    from meshd.observe.statsd import line, pack  # noqa: PLC0415

    assert line("meshd.requests", 3.0, "c", ["mesh:shop", "code:200"]) == "meshd.requests:3|c|#mesh:shop,code:200"
    assert line("envoy.appmesh.TargetResponseTime", 1.23456789, "ms", []) == \
        "envoy.appmesh.TargetResponseTime:1.234568|ms"
    lines = [f"m{i}:1|c|#t:{'x' * 100}" for i in range(40)]
    grams = pack(lines)
    assert all(len(g) <= 1432 for g in grams) and b"\n".join(grams).split(b"\n") == [ln.encode() for ln in lines]


def test_statsd_push_sends_growth_with_tags_and_the_extension_over_udp():
    """A real registry and a real UDP socket: counters go out as their growth per flush."""
    from prometheus_client import CollectorRegistry, Counter  # noqa: PLC0415
    from prometheus_client.core import CounterMetricFamily  # noqa: PLC0415

    from meshd.observe.statsd import StatsdPush  # noqa: PLC0415

    reg = CollectorRegistry()
    counts = {"n": 0}

    class Requests:
        def collect(self):
            fam = CounterMetricFamily("meshd_requests", "r", labels=["direction", "mesh", "source_node",
                                      "virtual_service", "route", "target_node", "code", "grpc_status",
                                      "response_class"])
            fam.add_metric(["egress", "shop", "web", "api.shop.local", "r", "api-v1", "200", "0", "2xx"], counts["n"])
            yield fam
    reg.register(Requests())
    Counter("meshd_outlier_ejections", "e", registry=reg)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(5)
    push = StatsdPush(reg, port=sink.getsockname()[1], interval=3600, tags={"appmesh.mesh": "shop"},
                      extension=True, mesh="shop", node="web")
    try:
        counts["n"] = 7
        push.flush()
        got = sink.recv(65536).decode().split("\n")
        assert "meshd.requests:7|c|#code:200,direction:egress,grpc_status:0,mesh:shop,response_class:2xx,route:r," \
               "source_node:web,target_node:api-v1,virtual_service:api.shop.local,appmesh.mesh:shop" in got, got
        assert ("envoy.appmesh.RequestCountPerTarget:7|c|#Mesh:shop,VirtualNode:web,appmesh.mesh:shop,"
                "TargetVirtualService:api.shop.local,TargetVirtualNode:api-v1") in got, got
        counts["n"] = 10
        push.flush()
        got = sink.recv(65536).decode().split("\n")
        assert any(ln.startswith("meshd.requests:3|c|") for ln in got), got  # the growth, not the total
        push.flush()  # nothing grew: no counter line
        with pytest.raises(socket.timeout):
            sink.settimeout(0.3)
            while True:
                assert not any(ln.startswith("meshd.requests:") for ln in sink.recv(65536).decode().split("\n"))
    finally:
        push.sock.close()
        sink.close()


@pytest.mark.parametrize("value,want", [
    ("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
     ("1-5759e988-bd862e3fe1be46a994272793", "53995c3f42cd8ad8", True)),
    ("Root=1-5759e988-bd862e3fe1be46a994272793", ("1-5759e988-bd862e3fe1be46a994272793", "", None)),
    ("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=?;Self=1-abc",
     ("1-5759e988-bd862e3fe1be46a994272793", "", None)),
    ("Root=1-5759E988-BD862E3FE1BE46A994272793;Parent=nothex;Sampled=0",
     ("1-5759e988-bd862e3fe1be46a994272793", "", False)),
    ("Root=2-5759e988-bd862e3fe1be46a994272793", None), ("Parent=53995c3f42cd8ad8", None), ("", None),
])
def test_x_amzn_trace_id_parsing(value, want):
    from meshd.observe.xray import parse_header  # noqa: PLC0415

    assert parse_header(value) == want


def test_xray_daemon_address_and_segment_flags():
    from meshd.observe.xray import XRayTracer, daemon_address  # noqa: PLC0415

    assert daemon_address({}) == ("127.0.0.1", 2000)
    assert daemon_address({"XRAY_DAEMON_PORT": "2100"}) == ("127.0.0.1", 2100)
    assert daemon_address({"AWS_XRAY_DAEMON_ADDRESS": "tcp:10.0.0.9:2000 udp:10.0.0.9:2001"}) == ("10.0.0.9", 2001)
    assert daemon_address({"AWS_XRAY_DAEMON_ADDRESS": "xray.internal:2000"}) == ("xray.internal", 2000)
    t = XRayTracer(segment_name="shop/web", mesh="shop", node="web", address=("127.0.0.1", 9))
    try:
        def doc(status, grpc_status=-1, reason=""):
            return t.document((("1-5759e988-bd862e3fe1be46a994272793", "53995c3f42cd8ad8", "", "egress"), 1.0, 1.5,
                               "GET", "http", "api.shop.local", "/x", status, grpc_status, reason, "r", "api-v1"))
        ok = doc(200)
        assert not any(k in ok for k in ("error", "fault", "throttle", "parent_id"))
        assert ok["http"] == {"request": {"method": "GET", "url": "http://api.shop.local/x"},
                              "response": {"status": 200}}
        assert doc(404)["error"] is True and doc(429)["throttle"] is True and doc(503)["fault"] is True
        assert doc(200, grpc_status=14)["fault"] is True and doc(0, reason="upstream_reset")["fault"] is True
    finally:
        t.close()


def test_nothing_passes_through_before_the_mesh_is_known():
    """An intercepting listener whose mesh has no snapshot yet (or whose mesh was deleted)
    refuses to pass connections through: DROP_ALL or not is unknown, so it fails closed."""
    from meshd.meshview import MeshView  # noqa: PLC0415
    from meshd.observe import Metrics, Observer  # noqa: PLC0415
    from meshd.proxy import LocalApp  # noqa: PLC0415
    from meshd.proxy.intercept import Interceptor  # noqa: PLC0415

    view = MeshView()
    icpt = Interceptor(LocalApp(mesh="shop", virtual_node="web", port=8080), loop=None, view=view, egress=None,
                       observe=Observer(Metrics(version="t", host="h")), h2=None, h1=None, tcp=None)
    assert view.snapshot("shop") is None and icpt.allow_all() is False
