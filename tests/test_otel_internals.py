"""The private OpenTelemetry names meshd's span export relies on, each checked to exist with
the shape meshd uses, so that moving the exact-minor pins in pyproject.toml to an SDK that
changed them fails here, loudly, rather than slowing or breaking trace export quietly."""
from __future__ import annotations

import re
import tomllib
from concurrent import futures
from importlib.metadata import version
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from meshd.observe import tracing
from meshd.observe.otlp import FastOTLPSpanExporter, SpanBatch, SpanEncoder, _RawTraceStub

pytestmark = [pytest.mark.observability, pytest.mark.hardening]

# The packages whose private names meshd uses, and the minor version these tests vetted.
# Moving a pin means running this module against the new version and updating VETTED.
VETTED = {"opentelemetry-api": "1.45", "opentelemetry-sdk": "1.45", "opentelemetry-exporter-otlp-proto-grpc": "1.45"}
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def test_the_pins_hold_each_package_to_the_vetted_minor_version():
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    for name, minor in VETTED.items():
        major, mnr = minor.split(".")
        spec = next((d for d in deps if re.match(rf"{re.escape(name)}\s*[<>=~!]", d)), None)
        assert spec is not None, f"{name} is not pinned in pyproject.toml"
        assert spec.split("#")[0].replace(" ", "") == f"{name}>={major}.{mnr},<{major}.{int(mnr) + 1}", spec
        assert version(name).startswith(f"{minor}."), f"{name} {version(name)} installed, {minor} vetted"


def test_span_context_is_the_tuple_tracing_builds_without_its_checks():
    """tracing._context fills SpanContext's tuple directly: (trace_id, span_id, is_remote,
    trace_flags, trace_state, is_valid), the order SpanContext.__new__ stores them in."""
    state = TraceState([("app", "1")])
    made = tracing._context(0xABC, 0xDEF, True, state)
    ref = SpanContext(0xABC, 0xDEF, True, TraceFlags(TraceFlags.SAMPLED), state)
    assert type(made) is SpanContext and tuple(made) == tuple(ref)
    for name in ("trace_id", "span_id", "is_remote", "trace_flags", "trace_state", "is_valid"):
        assert getattr(made, name) == getattr(ref, name), name


def test_readable_span_fields_are_the_ones_tracing_fills():
    """Tracer._span fills ReadableSpan's __dict__ when its fields are the known set; then the
    span reads back through every public property as one made by __init__ does."""
    assert tracing._FIELDS_KNOWN, (
        f"ReadableSpan.__init__ now sets {sorted(vars(ReadableSpan('x', resource=Resource.get_empty())))}")
    tracer = tracing.Tracer(host="h", exporter=_Discard())
    try:
        attrs = {"meshd.mesh": "shop", "meshd.retries": 1}
        status = Status(StatusCode.ERROR, "upstream_reset")
        ids = (bytes(range(1, 17)), bytes(range(1, 9)), bytes(range(9, 17)), "app=1")
        made = tracer._span(ids, 1_000, 2_000, ("echo.Echo/Say", attrs, status, SpanKind.CLIENT))
        trace_id = int.from_bytes(ids[0], "big")
        ref = ReadableSpan(
            "echo.Echo/Say", resource=tracer.resource, attributes=attrs, kind=SpanKind.CLIENT, status=status,
            context=SpanContext(trace_id, int.from_bytes(ids[1], "big"), False, TraceFlags(TraceFlags.SAMPLED),
                                TraceState.from_header(["app=1"])),
            parent=SpanContext(trace_id, int.from_bytes(ids[2], "big"), True, TraceFlags(TraceFlags.SAMPLED)),
            instrumentation_scope=tracing._SCOPE, start_time=1_000, end_time=2_000)
        for name in ("name", "context", "parent", "kind", "attributes", "status", "start_time", "end_time",
                     "resource", "instrumentation_scope", "events", "links", "dropped_attributes"):
            got, want = getattr(made, name), getattr(ref, name)
            assert (got == want) if name != "status" else (got.status_code, got.description) == (
                want.status_code, want.description), name
        # SpanEncoder reads `_attributes`, the dict the public `attributes` wraps per call.
        assert made._attributes is attrs and ref._attributes == dict(ref.attributes)
    finally:
        tracer.close(timeout_s=1)


def test_the_exporter_internals_fast_otlp_overrides():
    """FastOTLPSpanExporter replaces the SDK exporter's `_stub`/`_client` (built on `_channel`)
    and `_translate_data`, and SpanBatch relies on `_count_data` taking its len()."""
    for name in ("_translate_data", "_count_data", "_export", "_initialize_channel_and_stub"):
        assert callable(getattr(OTLPSpanExporter, name, None)), f"OTLPSpanExporter.{name} is gone"
    exporter = FastOTLPSpanExporter(endpoint="http://127.0.0.1:9", insecure=True)
    try:
        assert exporter._stub is _RawTraceStub and isinstance(exporter._client, _RawTraceStub)
        assert isinstance(exporter._channel, grpc.Channel)
        # The SDK rebuilds its client from `_stub` and `_channel` after an UNAVAILABLE.
        exporter._initialize_channel_and_stub()
        assert isinstance(exporter._client, _RawTraceStub)
        assert exporter._count_data(SpanBatch([1, 2, 3])) == 3
    finally:
        exporter.shutdown()


def test_encoded_bytes_go_out_as_they_are_also_after_a_reconnect():
    """End to end through the SDK's own export loop: a receiver taking raw bytes gets exactly
    SpanEncoder's, first refused with UNAVAILABLE (so the SDK rebuilds its client) then taken."""
    seen: list[bytes] = []

    def export(request: bytes, context):
        seen.append(request)
        if len(seen) == 1:
            retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=50_000_000))
            context.set_trailing_metadata((("google.rpc.retryinfo-bin", retry.SerializeToString()),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "first call refused")
        return ExportTraceServiceResponse().SerializeToString()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(export)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    exporter = FastOTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True, timeout=10)
    tracer = tracing.Tracer(host="h", exporter=_Discard())
    try:
        batch = SpanBatch([((bytes(range(1, 17)), bytes(range(1, 9)), b"", ""), 1_000, 2_000,
                            ("echo.Echo/Say", {"meshd.mesh": "shop", "ok": True, "ratio": 0.5}, Status(StatusCode.UNSET),
                             SpanKind.SERVER))])
        batch.resource = tracer.resource
        batch.scope = tracing._SCOPE
        assert exporter.export(batch) is SpanExportResult.SUCCESS
        assert len(seen) == 2 and seen[0] == seen[1] == SpanEncoder().records(batch)
        # And those bytes are the SDK's own message for the same span, bool and float included.
        sdk = encode_spans([tracer._span(*batch[0])])
        assert ExportTraceServiceRequest.FromString(seen[1]) == sdk
    finally:
        tracer.close(timeout_s=1)
        exporter.shutdown()
        server.stop(0)


class _Discard(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def test_scope_and_resource_encode_as_the_sdk_does():
    """otlp.py encodes resources, scopes and attribute values from opentelemetry-proto's
    messages: the same bytes as the SDK's encoder, for every attribute value type."""
    scope = InstrumentationScope("meshd", "9.9", attributes={"s": "x"})
    res = Resource.create({"host.name": "h", "n": 3, "f": 1.5, "b": False, "seq": ("a", "b")})
    span = ReadableSpan("x", resource=res, instrumentation_scope=scope,
                        attributes={"str": "v", "int": 7, "bool": True, "float": 0.25, "ints": (1, 2)},
                        context=SpanContext(1, 2, False, TraceFlags(TraceFlags.SAMPLED)), start_time=1, end_time=2)
    ours = ExportTraceServiceRequest.FromString(SpanEncoder().request([span]))
    assert ours == encode_spans([span])
