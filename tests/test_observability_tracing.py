"""Traces through real meshds, exported over OTLP gRPC to a real receiver run by the test."""
from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from mesh_harness import Mesh, Origin, shop_config
from meshd.api import kinds as K
from meshd.embedded_etcd import free_port
from meshd.observe import ObserveConfig
from meshd.v1 import admin_pb2 as pb
from test_observability import scrape, value

pytestmark = [pytest.mark.observability, pytest.mark.dataplane, pytest.mark.etcd]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: opentelemetry-proto's TraceService on a grpcio server."""

    def __init__(self):
        self.spans: list[tuple[str, trace_pb2.Span]] = []  # (host.name, span)
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):  # noqa: N802 - the generated servicer's name
        with self.lock:
            for rs in request.resource_spans:
                host = next((a.value.string_value for a in rs.resource.attributes if a.key == "host.name"), "")
                for ss in rs.scope_spans:
                    self.spans.extend((host, s) for s in ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait(self, pred, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = [x for x in self.spans if pred(*x)]
            if got:
                return got
            time.sleep(0.05)
        return []


def attrs(span) -> dict:
    return {a.key: (a.value.string_value or a.value.int_value) for a in span.attributes}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.stop(0)


def make_mesh(etcd, etcd_prefix, tmp_path, observe):
    m = Mesh(etcd, etcd_prefix, tmp_path, {"api-v1": Origin("api-v1")}, observe=observe)
    shop_config(m.a.resources, K, pb, targets={"api-v1": 100})
    return m


def test_a_call_across_two_meshds_is_one_trace_under_the_apps_span(etcd, etcd_prefix, tmp_path, receiver,
                                                                  monkeypatch):
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    # The standard variable turns tracing on (no meshd-specific setting).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    m = make_mesh(etcd, etcd_prefix, tmp_path, ObserveConfig(metrics="127.0.0.1:0"))
    try:
        call = m.client()
        m.wait_routable(call)
        app_trace, app_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        traceparent = f"00-{app_trace}-{app_span}-01"
        assert call(b"traced", timeout=5, metadata=[("traceparent", traceparent),
                                                   ("tracestate", "app=1")]) == b"api-v1:traced"
        tid = bytes.fromhex(app_trace)
        client = receiver.wait(lambda h, s: s.trace_id == tid and s.kind == trace_pb2.Span.SPAN_KIND_CLIENT)
        server = receiver.wait(lambda h, s: s.trace_id == tid and s.kind == trace_pb2.Span.SPAN_KIND_SERVER)
        assert len(client) == 1 and len(server) == 1, receiver.spans
        (host_c, c), (host_s, s) = client[0], server[0]
        assert (host_c, host_s) == ("host-a", "host-b")
        # The app's span is the parent of meshd A's client span, which is the parent of B's server span.
        assert c.parent_span_id == bytes.fromhex(app_span)
        assert s.parent_span_id == c.span_id
        assert c.trace_state == "app=1"
        a = attrs(c)
        assert a["meshd.mesh"] == "shop" and a["meshd.route"] == "api" and a["meshd.target_node"] == "api-v1"
        assert a["meshd.upstream_instance"] == "api-v1" and a["meshd.retries"] == 0
        assert a["rpc.grpc.status_code"] == 0 and c.name == "echo.Echo/Say"
        assert attrs(s)["meshd.source_node"] == "web" and s.start_time_unix_nano >= c.start_time_unix_nano
        assert s.end_time_unix_nano <= c.end_time_unix_nano + 5_000_000  # clocks of one host

        # Without a caller's context meshd starts the trace: both hops still share it.
        before = {sp.trace_id for _, sp in receiver.spans}
        assert call(b"fresh", timeout=5) == b"api-v1:fresh"
        fresh = receiver.wait(lambda h, sp: sp.trace_id not in before and sp.kind == trace_pb2.Span.SPAN_KIND_SERVER)
        assert fresh
        root = receiver.wait(lambda h, sp: sp.span_id == fresh[0][1].parent_span_id)
        assert root and root[0][1].parent_span_id == b"" and root[0][1].trace_id == fresh[0][1].trace_id
        # B3 from the caller is honoured when there is no traceparent.
        b3_trace = "80f198ee56343ba864fe8b2a57d3eff7"
        assert call(b"b3", timeout=5, metadata=[("b3", f"{b3_trace}-e457b5a2e4d86bd1-1")]) == b"api-v1:b3"
        b3 = receiver.wait(lambda h, sp: sp.trace_id == bytes.fromhex(b3_trace)
                           and sp.kind == trace_pb2.Span.SPAN_KIND_CLIENT)
        assert b3 and b3[0][1].parent_span_id == bytes.fromhex("e457b5a2e4d86bd1")
    finally:
        m.close()


def test_a_dead_collector_costs_requests_nothing_and_drops_are_counted(etcd, etcd_prefix, tmp_path):
    dead = free_port()  # nothing listens there
    m = make_mesh(etcd, etcd_prefix, tmp_path, ObserveConfig(metrics="127.0.0.1:0", span_queue=16,
                                                             tracing_endpoint=f"http://127.0.0.1:{dead}"))
    try:
        call = m.client()
        m.wait_routable(call)
        took = []
        for i in range(300):
            t0 = time.perf_counter()
            assert call(b"%d" % i, timeout=5) == b"api-v1:%d" % i
            took.append(time.perf_counter() - t0)
        took.sort()
        assert took[150] < 0.05 and took[-1] < 2.0, (took[150], took[-1])
        dropped = value(scrape(m.a), "meshd_spans_dropped_total")
        assert dropped >= 300 - 2 * 16, dropped  # all but a queue and the batch in export
    finally:
        m.close()
