"""Traces through real meshds, exported over OTLP gRPC to a real receiver run by the test."""
from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

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


class _Captured(SpanExporter):
    def __init__(self):
        self.spans = []

    def export(self, spans):
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


class _Head:
    """The request-head surface the tracer reads and writes (what both engines' heads have)."""

    def __init__(self, headers, grpc_call=True):
        self.headers = headers
        self.header = headers.get
        self.method, self.path, self.authority, self.grpc = "POST", "/echo.Echo/Say", "api:9090", grpc_call
        self.set = {}

    def set_header(self, name, value):
        self.set[name] = value.decode() if isinstance(value, bytes) else value

    def trace_context(self, bound):
        from meshd.dataplane import trace_context
        return trace_context(self, bound)


ALL = 1 << 64  # TraceIdRatioBased's bound at ratio 1.0


def test_trace_context_continues_a_w3c_parent_and_names_the_new_span_upstream():
    from meshd.dataplane import trace_context

    tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    for flags, sampled in (("01", True), ("00", False), ("03", True)):
        head = _Head({"traceparent": f"00-{tid}-{sid}-{flags}"})
        trace, span, parent, got_sampled = trace_context(head, 0)  # the caller's flag wins over the ratio
        assert (trace.hex(), parent.hex(), got_sampled) == (tid, sid, sampled)
        assert len(span) == 8 and span != bytes(8)
        assert head.set["traceparent"] == f"00-{tid}-{span.hex()}-{'01' if sampled else '00'}"
    # No context: a new trace, sampled by the low 64 bits of its id against the bound.
    head = _Head({})
    trace, span, parent, sampled = trace_context(head, ALL)
    assert parent == b"" and sampled and trace != bytes(16)
    assert head.set["traceparent"] == f"00-{trace.hex()}-{span.hex()}-01"
    assert trace_context(_Head({}), 0)[3] is False
    half = [trace_context(_Head({}), 1 << 63) for _ in range(4000)]
    assert all(s == (int.from_bytes(t[8:], "big") < 1 << 63) for t, _, _, s in half)
    assert 0.45 < sum(s for *_, s in half) / len(half) < 0.55
    assert len({t for t, *_ in half}) == len(half) and len({s for _, s, _, _ in half}) == len(half)
    # B3 without traceparent is the tracer's to read: nothing set, None returned.
    for b3 in ({"b3": f"{tid}-{sid}-1"}, {"x-b3-traceid": tid, "x-b3-spanid": sid}):
        head = _Head(b3)
        assert trace_context(head, ALL) is None and head.set == {}


def test_trace_context_parses_traceparent_as_the_reference_parser_does():
    """The C parser against parse_parent (the Python reading of W3C Trace Context §3.2), on
    valid headers and on every single-character corruption of them."""
    import random

    from meshd.dataplane import trace_context
    from meshd.observe.tracing import parse_parent

    rng = random.Random(7)
    samples = ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "01-" + "a" * 32 + "-" + "b" * 16 + "-00-x",
               "00-" + "0" * 32 + "-" + "1" * 16 + "-01", "ff-" + "1" * 32 + "-" + "1" * 16 + "-01"]
    for _ in range(30):
        samples.append(f"{rng.choice(['00', '01', 'fe'])}-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-"
                       f"{rng.getrandbits(8):02x}")
    alphabet = "0123456789abcdefABF-xz_ "
    headers = list(samples)
    for s in samples:
        for i in range(len(s)):
            headers.append(s[:i] + rng.choice(alphabet) + s[i + 1:])
        headers += [s[:-1], s + "0", s + "-", s + "-more"]
    for tp in headers:
        want = parse_parent({"traceparent": tp}.get)
        head = _Head({"traceparent": tp})
        trace, span, parent, sampled = trace_context(head, 0)
        if want is None:
            assert parent == b"" and not sampled, tp  # ignored: a new trace, unsampled at bound 0
        else:
            assert (trace.hex(), parent.hex(), sampled) == want, tp


def test_the_direct_span_encoder_writes_the_sdks_message():
    """meshd's OTLP encoder (meshd/observe/otlp.py) against the SDK's, on the span shapes
    meshd records: roots and children, remote parents, tracestate, errors, both kinds."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from meshd.observe.observer import Exchange
    from meshd.observe.otlp import SpanEncoder
    from meshd.observe.tracing import _SCOPE, Tracer

    from meshd.observe.otlp import SpanBatch

    captured = _Captured()
    tracer = Tracer(host="h", exporter=captured)
    records = tracer._records
    for i in range(40):
        headers = {"content-type": "application/grpc"}
        if i % 2:
            headers["traceparent"] = f"00-{i + 1:032x}-{i + 7:016x}-01"
            headers["tracestate"] = f"app={i % 3},x=y" if i % 7 else "bad entry"  # the latter: dropped
        x = Exchange("egress" if i % 4 < 2 else "ingress", "shop", "web", "web", True)
        head = _Head(headers, grpc_call=i % 5 != 0)
        x.trace = tracer.begin(head, x.direction)
        x.retries = i % 3
        failed = i % 3 == 0
        tracer.end(x, head, None, 503 if failed else 200, 14 if failed else 0, "upstream_reset" if failed else "",
                   1_000_000 + i)
    batch = SpanBatch(records)  # the records the exporter thread will take (it waits for 512)
    batch.resource, batch.scope = tracer.resource, _SCOPE
    tracer.close()
    assert len(captured.spans) == len(batch) == 40
    sdk = encode_spans(captured.spans)  # the SDK's encoder, on the SDK's spans of these records
    assert ExportTraceServiceRequest.FromString(SpanEncoder().request(captured.spans)) == sdk
    assert ExportTraceServiceRequest.FromString(SpanEncoder().records(batch)) == sdk
    assert sdk.resource_spans[0].scope_spans[0].spans[1].trace_state == "app=1,x=y"


def test_trace_context_parsing_follows_w3c_and_b3():
    from meshd.observe.tracing import parse_parent

    tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    def parse(headers):
        return parse_parent(headers.get)

    assert parse({"traceparent": f"00-{tid}-{sid}-01"}) == (tid, sid, True)
    assert parse({"traceparent": f"00-{tid}-{sid}-00"})[2] is False
    assert parse({"traceparent": f"00-{tid}-{sid}-03"})[2] is True      # other flag bits: sampled is bit 0
    # A later version may carry more fields after a dash (§4.3); version 00 may not.
    assert parse({"traceparent": f"01-{tid}-{sid}-01-extra"}) == (tid, sid, True)
    # W3C Trace Context §3.2: all-zero ids, version ff, uppercase or non-hex digits and
    # malformed values are ignored.
    for bad in (f"00-{'0' * 32}-{sid}-01", f"00-{tid}-{'0' * 16}-01", f"ff-{tid}-{sid}-01", "00-xyz", "",
                f"00-{tid.upper()}-{sid}-01", f"00-{tid[:-1]}_-{sid}-01", f"00-{tid}-{sid}-01-extra",
                f"01-{tid}-{sid}-01x"):
        assert parse({"traceparent": bad}) is None, bad
    # traceparent wins over B3; B3 single and multi header forms; 64-bit B3 trace ids widen.
    assert parse({"traceparent": f"00-{tid}-{sid}-01", "b3": f"{'1' * 32}-{'2' * 16}-1"})[0] == tid
    assert parse({"b3": f"{tid}-{sid}-0"}) == (tid, sid, False)
    assert parse({"b3": f"{tid}-{sid}"})[2] is True
    assert parse({"b3": f"{tid[16:]}-{sid}-1"}) == ("0" * 16 + tid[16:], sid, True)
    assert parse({"b3": f"{tid}-zz"}) is None
    assert parse({"x-b3-traceid": tid, "x-b3-spanid": sid, "x-b3-sampled": "0"})[2] is False
    assert parse({"x-b3-traceid": tid, "x-b3-spanid": sid}) == (tid, sid, True)
