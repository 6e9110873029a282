"""Metrics through real meshds: what the requests were, counted under bounded label sets."""
from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import h2.config
import h2.connection
import h2.events
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh_harness import Mesh, Origin, shop_config
from meshd.api import kinds as K
from meshd.embedded_etcd import free_port
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.observability, pytest.mark.dataplane, pytest.mark.etcd]


@pytest.fixture
def mesh(etcd, etcd_prefix, tmp_path):
    m = Mesh(etcd, etcd_prefix, tmp_path, {"api-v1": Origin("api-v1")})
    shop_config(m.a.resources, K, pb, targets={"api-v1": 100})
    yield m
    m.close()


def scrape(meshd) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from a meshd's /metrics over HTTP."""
    with urllib.request.urlopen(f"http://{meshd.metrics_address}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples, name: str, **labels) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def h2_requests(address: str, requests: list[tuple[str, str]], batch: int = 50, timeout: float = 60.0) -> dict:
    """Send gRPC-shaped HTTP/2 requests, (authority, path) each, over one connection in
    batches; returns {:status: count}. Bounded by `timeout`."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    body = b"\x00\x00\x00\x00\x02hi"
    try:
        for i in range(0, len(requests), batch):
            open_ids = set()
            for authority, path in requests[i:i + batch]:
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", authority),
                                        (":path", path), ("content-type", "application/grpc"), ("te", "trailers")])
                conn.send_data(sid, body, end_stream=True)
                open_ids.add(sid)
            sock.sendall(conn.data_to_send())
            while open_ids:
                assert time.monotonic() < deadline, "requests did not finish in time"
                data = sock.recv(65536)
                assert data, "connection closed"
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        st = dict(ev.headers)[":status"]
                        statuses[st] = statuses.get(st, 0) + 1
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                        open_ids.discard(ev.stream_id)
                sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    return statuses


def test_requests_are_counted_on_both_hops_with_their_outcome(mesh):
    call = mesh.client()
    mesh.wait_routable(call)
    before_a, before_b = scrape(mesh.a), scrape(mesh.b)
    for i in range(20):
        assert call(b"%d" % i, timeout=5) == b"api-v1:%d" % i
    a, b = scrape(mesh.a), scrape(mesh.b)
    labels = dict(mesh="shop", virtual_service="api.shop.local", route="api", target_node="api-v1",
                  code="200", grpc_status="0", response_class="2xx")
    egress = value(a, "meshd_requests_total", direction="egress", source_node="web", **labels)
    ingress = value(b, "meshd_requests_total", direction="ingress", source_node="web",
                    **{**labels, "route": ""})
    assert egress - value(before_a, "meshd_requests_total", direction="egress", **labels) == 20
    assert ingress - value(before_b, "meshd_requests_total", direction="ingress", source_node="web") == 20
    assert value(a, "meshd_request_duration_seconds_count", direction="egress", route="api") >= 20
    assert value(a, "meshd_request_bytes_total", direction="egress") > 0
    assert value(a, "meshd_response_bytes_total", direction="egress") > 0
    assert value(a, "meshd_active_requests", direction="egress") == 0
    assert value(a, "meshd_config_generation", mesh="shop") >= 1
    assert value(a, "meshd_config_apply_seconds_count") >= 1
    assert value(a, "meshd_info", host="host-a") == 1
    # Pooled mTLS from A to B: one full handshake, connections opened and open.
    assert value(a, "meshd_tls_handshakes_total", kind="full") >= 1
    assert value(a, "meshd_upstream_connections_opened_total") >= 1
    assert value(a, "meshd_downstream_connections_active") >= 1


def test_a_refusal_counts_under_the_fixed_unknown_service(mesh):
    call = mesh.client()
    mesh.wait_routable(call)
    labels = dict(direction="egress", source_node="web", virtual_service="unknown", route="", target_node="",
                  code="200", grpc_status="12", response_class="2xx")
    before = value(scrape(mesh.a), "meshd_requests_total", **labels)
    # gRPC refusals are trailers-only responses: HTTP 200 with grpc-status UNIMPLEMENTED.
    statuses = h2_requests(mesh.egress, [("nobody.shop.local", "/echo.Echo/Say")] * 5)
    assert statuses == {"200": 5}
    assert value(scrape(mesh.a), "meshd_requests_total", **labels) - before == 5


def test_series_do_not_grow_with_paths_or_authorities(mesh):
    call = mesh.client()
    mesh.wait_routable(call)
    rng = random.Random(7)
    warm = [("api.shop.local:9090", f"/echo.Echo/M{i}") for i in range(50)]
    warm += [(f"h{rng.getrandbits(40):x}.example", "/x") for _ in range(50)]
    h2_requests(mesh.egress, warm)
    before = scrape(mesh.a)
    paths = [("api.shop.local:9090", f"/echo.Echo/Method{i}?q={rng.getrandbits(32)}") for i in range(5000)]
    hosts = [(f"h{rng.getrandbits(40):x}.example:{rng.randrange(1, 65535)}", f"/p/{i}") for i in range(5000)]
    mixed = paths + hosts
    rng.shuffle(mixed)
    statuses = h2_requests(mesh.egress, mixed, batch=100, timeout=120)
    assert sum(statuses.values()) == 10_000
    samples = scrape(mesh.a)
    assert set(samples) == set(before), sorted(set(samples) ^ set(before))
    assert value(samples, "meshd_requests_total", direction="egress") >= 10_000
    values = {v for (_, ls) in samples for _, v in ls}
    assert not [v for v in values if "example" in v or v.startswith("/")]


def test_a_real_prometheus_scrapes_both_meshds_and_counts_the_traffic(mesh, tmp_path):
    """Debian's prometheus binary (scripts/setup.sh --test installs it) scrapes both
    meshds every second; its query API must show the calls the test made."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (scripts/setup.sh --test installs it)"
    call = mesh.client()
    mesh.wait_routable(call)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: meshd\n    static_configs:\n"
        f"      - targets: ['{mesh.a.metrics_address}', '{mesh.b.metrics_address}']\n")
    port = free_port()
    prom = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def query(q: str) -> float | None:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                result = json.loads(r.read())["data"]["result"]
        except OSError:
            return None
        return float(result[0]["value"][1]) if result else None
    try:
        base_q = 'sum(meshd_requests_total{direction="%s",virtual_service="api.shop.local",code="200"})'
        deadline = time.monotonic() + 30
        while query("count(up == 1)") != 2:  # both meshds scraped once
            assert time.monotonic() < deadline, "prometheus did not scrape both meshds"
            time.sleep(0.2)
        before = {d: query(base_q % d) or 0.0 for d in ("egress", "ingress")}
        for i in range(40):
            assert call(b"%d" % i, timeout=5) == b"api-v1:%d" % i
        want = {d: before[d] + 40 for d in before}
        got = {}
        while got != want:
            assert time.monotonic() < deadline + 30, (got, want)
            time.sleep(0.3)
            got = {d: query(base_q % d) for d in before}
        # Each side's figure comes from its own meshd: egress from A, ingress from B.
        where = 'sum(meshd_requests_total{direction="%s",virtual_service="api.shop.local",code="200",instance="%s"})'
        assert query(where % ("egress", mesh.a.metrics_address)) == want["egress"]
        assert query(where % ("ingress", mesh.b.metrics_address)) == want["ingress"]
    finally:
        prom.terminate()
        prom.wait(10)


def test_the_same_metrics_are_pushed_over_otlp(etcd, etcd_prefix, tmp_path):
    """A real OTLP metrics receiver (opentelemetry-proto's MetricsService on grpcio) gets
    meshd_requests as a monotonic Sum with the traffic's count and the duration histogram."""
    import threading
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

    from meshd.observe import ObserveConfig

    received = []
    lock = threading.Lock()

    class Receiver(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request, context):  # noqa: N802 - the generated servicer's name
            with lock:
                received.append(request)
            return metrics_service_pb2.ExportMetricsServiceResponse()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Receiver(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    observe = ObserveConfig(metrics="127.0.0.1:0", metrics_otlp_endpoint=f"http://127.0.0.1:{port}",
                            metrics_otlp_interval=0.3)
    m = Mesh(etcd, etcd_prefix, tmp_path, {"api-v1": Origin("api-v1")}, observe=observe)
    try:
        shop_config(m.a.resources, K, pb, targets={"api-v1": 100})
        call = m.client()
        m.wait_routable(call)
        for i in range(7):
            assert call(b"%d" % i, timeout=5) == b"api-v1:%d" % i

        def pushed():
            with lock:
                requests = list(received)
            for req in reversed(requests):  # the newest push from host-a with the calls in it
                for rm in req.resource_metrics:
                    attrs = {a.key: a.value.string_value for a in rm.resource.attributes}
                    if attrs.get("host.name") != "host-a":
                        continue
                    by_name = {mt.name: mt for sm in rm.scope_metrics for mt in sm.metrics}
                    ok = [p for p in by_name["meshd_requests"].sum.data_points
                          if {a.key: a.value.string_value for a in p.attributes}.get("route") == "api"
                          and {a.key: a.value.string_value for a in p.attributes}.get("code") == "200"]
                    if ok and ok[0].as_double >= 7:
                        return by_name
            return None
        deadline = time.monotonic() + 10
        while (by_name := pushed()) is None:
            assert time.monotonic() < deadline, "no push with the calls arrived"
            time.sleep(0.1)
        assert by_name["meshd_requests"].sum.is_monotonic
        hist = [p for p in by_name["meshd_request_duration_seconds"].histogram.data_points if p.count >= 7]
        assert hist and sum(hist[0].bucket_counts) == hist[0].count
        assert len(hist[0].bucket_counts) == len(hist[0].explicit_bounds) + 1
    finally:
        m.close()
        server.stop(0)
