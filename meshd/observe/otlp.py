"""OTLP trace export at a cost a proxy can pay: the SDK's OTLP gRPC exporter (channel,
retries, OTEL_EXPORTER_OTLP_* settings) with a span encoder that writes the protobuf wire
format directly.

The SDK's encoder builds a tree of protobuf objects per span, about 125 µs per span here,
more than meshd spends relaying the request. meshd's spans have a fixed shape (no events
or links; attribute values str, int, bool or float; one resource and scope), and most of
their attributes repeat (mesh, route, target...), so this encoder writes each span's
envelope by hand and takes each attribute's KeyValue bytes from a small cache, filled from
opentelemetry-proto's messages as the SDK's own encoder does. It encodes the SDK's
ReadableSpans (`request`), or meshd's tracer records directly (`records`, a SpanBatch:
making a ReadableSpan per record only to read it back cost more than the encoding; its
per-span loop is in C, `meshd/observe/_spans.pyx`). tests/test_observability_tracing.py
checks both against the SDK's encoder.

Field numbers: opentelemetry-proto, trace/v1/trace.proto and common/v1/common.proto.
"""
from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.trace import SpanKind, TraceState

from meshd.observe._spans import encode_spans

# Span.SpanKind values of trace.proto (the API's SpanKind numbers differ).
_KIND = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3, SpanKind.PRODUCER: 4,
         SpanKind.CONSUMER: 5}
# Span.flags (16, fixed32) SpanFlags: the parent's is_remote is known (0x100), and it is remote (0x200).
_FLAGS_LOCAL, _FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x100), b"\x85\x01" + struct.pack("<I", 0x300)
# trace_id (1), span_id (2), start_time_unix_nano (7, fixed64), end_time_unix_nano (8, fixed64).
_IDS = struct.Struct("<BB16sBB8sBQBQ")
_MAX_CACHED = 8192


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((i,)) for i in range(0x80)]


class SpanBatch(list):
    """Finished spans as the tracer's records, `((trace id, span id, parent span id or b"",
    tracestate header or ""), start ns, end ns, (name, attributes, Status, SpanKind))` with
    the ids as bytes (16, 8, 8), and the Resource and InstrumentationScope they share."""

    __slots__ = ("resource", "scope")


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


def _any_value(value) -> common_pb2.AnyValue:
    """An attribute value as common.proto's AnyValue, typed as the SDK types it: bool before
    int (a Python bool is an int), a sequence as an array, a mapping as a key-value list."""
    if value is None:
        return common_pb2.AnyValue()
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, str):
        return common_pb2.AnyValue(string_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, bytes):
        return common_pb2.AnyValue(bytes_value=value)
    if isinstance(value, Sequence):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[_any_value(v) for v in value]))
    if isinstance(value, Mapping):
        return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=_key_values(value)))
    raise TypeError(f"attribute value of type {type(value).__name__} has no OTLP encoding: {value!r}")


def _key_values(attrs) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=str(k), value=_any_value(v)) for k, v in (attrs or {}).items()]


def _resource_message(res) -> resource_pb2.Resource:
    return resource_pb2.Resource(attributes=_key_values(res.attributes))


def _scope_message(scope) -> common_pb2.InstrumentationScope:
    return common_pb2.InstrumentationScope(name=scope.name, version=scope.version or "",
                                           attributes=_key_values(scope.attributes))


class SpanEncoder:
    """ReadableSpans -> ExportTraceServiceRequest wire bytes."""

    def __init__(self):
        self._kv: dict[tuple, bytes] = {}
        self._blocks: dict[int, tuple[object, bytes]] = {}
        self._states: dict[int, tuple[object, bytes]] = {}
        self._state_headers: dict[str, bytes] = {}
        self._shape_blocks: dict[int, tuple[tuple, bytes]] = {}
        self._resources: dict[int, tuple[object, bytes]] = {}
        self._scopes: dict[object, bytes] = {}

    def _static(self, s) -> bytes:
        """name, kind, attributes and status of `s`: the fields one outcome's spans share.
        The span's own dict is read (`_attributes`): the public property wraps it per call."""
        return self._block(s.name, s.kind, getattr(s, "_attributes", None) or s.attributes, s.status)

    def _block(self, name: str, kind, attrs, status) -> bytes:
        """The encoded name, kind, attributes and status. Spans of one outcome share one
        attribute dict and Status (Tracer._shape), so the bytes are kept by the dict's
        identity (the reference stops the id being reused)."""
        got = self._blocks.get(id(attrs))
        if got is not None and got[0] is attrs and got[1] == name and got[2] == kind and got[3] is status:
            return got[4]
        st = b""
        if status.description:
            st += _field(b"\x12", status.description.encode())
        if status.status_code.value:
            st += b"\x18" + _varint(status.status_code.value)
        block = b"".join((_field(b"\x2a", name.encode()), b"\x30", _varint(_KIND[kind]),
                          self._encode_attributes(attrs),
                          _field(b"\x7a", st)))  # Span.status (15): present even when UNSET
        if len(self._blocks) >= _MAX_CACHED:
            self._blocks.clear()
        self._blocks[id(attrs)] = (attrs, name, kind, status, block)
        return block

    def _encode_attributes(self, attrs) -> bytes:
        cache = self._kv
        out = []
        for k, v in attrs.items():
            key = (k, v, v.__class__)  # True == 1: the type keeps bool and int apart
            b = cache.get(key)
            if b is None:
                if len(cache) >= _MAX_CACHED:
                    cache.clear()
                # Span.attributes (field 9), each one KeyValue as the SDK encodes it.
                b = cache[key] = _field(b"\x4a", common_pb2.KeyValue(key=k, value=_any_value(v)).SerializeToString())
            out.append(b)
        return b"".join(out)

    def _trace_state(self, ts) -> bytes:
        got = self._states.get(id(ts))  # Tracer shares one TraceState per distinct header
        if got is None or got[0] is not ts:
            got = (ts, _field(b"\x1a", ",".join(f"{k}={v}" for k, v in ts.items()).encode()))
            if len(self._states) < _MAX_CACHED:
                self._states[id(ts)] = got  # (unhashable Mapping: by identity, kept alive)
        return got[1]

    def _trace_state_header(self, header: str) -> bytes:
        """Span.trace_state of a `tracestate` header, as the SDK's TraceState reads it."""
        got = self._state_headers.get(header)
        if got is None:
            ts = TraceState.from_header([header])
            got = _field(b"\x1a", ",".join(f"{k}={v}" for k, v in ts.items()).encode()) if ts else b""
            if len(self._state_headers) >= _MAX_CACHED:
                self._state_headers.clear()
            self._state_headers[header] = got
        return got

    def records(self, batch: SpanBatch) -> bytes:
        """The serialized ExportTraceServiceRequest of a tracer's records (the per-span loop
        is `_spans.encode_spans`, in C)."""
        return self._envelope(batch.resource, batch.scope,
                              encode_spans(batch, self._shape_blocks, self._shape_block, self._trace_state_header))

    def _shape_block(self, shape: tuple) -> bytes:
        """The encoded name, kind, attributes and status of a tracer shape, kept by its
        identity (the tracer shares one shape tuple per outcome)."""
        name, attrs, status, kind = shape
        block = self._block(name, kind, attrs, status)
        if len(self._shape_blocks) >= _MAX_CACHED:
            self._shape_blocks.clear()
        self._shape_blocks[id(shape)] = (shape, block)
        return block

    def _envelope(self, res, scope, encoded: bytes) -> bytes:
        """One ResourceSpans with one ScopeSpans holding `encoded` spans."""
        got = self._resources.get(id(res))
        if got is None or got[0] is not res:
            got = self._resources[id(res)] = (res, _field(b"\x0a", _resource_message(res).SerializeToString()))
        tail = _field(b"\x1a", res.schema_url.encode()) if res.schema_url else b""
        return _field(b"\x0a", got[1] + _field(b"\x12", self._scope(scope) + encoded) + tail)

    def _scope(self, scope) -> bytes:
        """ScopeSpans.scope (1) and schema_url (3)."""
        head = self._scopes.get(scope)
        if head is None:
            head = self._scopes[scope] = (_field(b"\x0a", _scope_message(scope).SerializeToString())
                                          if scope is not None else b"")
            if scope is not None and scope.schema_url:
                head += _field(b"\x1a", scope.schema_url.encode())
        return head

    def span(self, s) -> bytes:
        """One ScopeSpans.spans entry. Fields go in any order (protobuf encoding): the
        per-span ones first, then the shared block."""
        ctx = s.context
        parent = s.parent
        body = _IDS.pack(0x0A, 16, ctx.trace_id.to_bytes(16, "big"), 0x12, 8, ctx.span_id.to_bytes(8, "big"),
                         0x39, s.start_time, 0x41, s.end_time)
        if parent is not None:
            body += b"\x22\x08" + parent.span_id.to_bytes(8, "big")
            body += _FLAGS_REMOTE if parent.is_remote else _FLAGS_LOCAL
        else:
            body += _FLAGS_LOCAL
        if ctx.trace_state:
            body += self._trace_state(ctx.trace_state)
        body += self._static(s)
        return b"\x12" + _varint(len(body)) + body  # ScopeSpans.spans (field 2)

    def request(self, spans) -> bytes:
        """The serialized ExportTraceServiceRequest: spans grouped by resource, then scope."""
        groups: dict[tuple[int, object], list[bytes]] = {}
        for s in spans:
            res, scope = s.resource, s.instrumentation_scope
            if id(res) not in self._resources:
                # ResourceSpans.resource (1), and its schema_url (3) when it has one.
                body = _field(b"\x0a", _resource_message(res).SerializeToString())
                self._resources[id(res)] = (res, body)  # the resource is kept alive with its id
            groups.setdefault((id(res), scope), []).append(self.span(s))
        out = []
        by_resource: dict[int, list[bytes]] = {}
        for (rid, scope), encoded in groups.items():
            by_resource.setdefault(rid, []).append(_field(b"\x12", self._scope(scope) + b"".join(encoded)))
        for rid, scope_spans in by_resource.items():
            res, body = self._resources[rid]
            tail = _field(b"\x1a", res.schema_url.encode()) if res.schema_url else b""
            out.append(_field(b"\x0a", body + b"".join(scope_spans) + tail))
        return b"".join(out)


class _RawTraceStub:
    """TraceService's Export taking the request already serialized (bytes pass through)."""

    def __init__(self, channel):
        self.Export = channel.unary_unary(  # noqa: N815 - the generated stub's name
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString)


class FastOTLPSpanExporter(OTLPSpanExporter):
    """OTLPSpanExporter (gRPC: channel, retries, OTEL_EXPORTER_OTLP_* settings) sending
    SpanEncoder's bytes as they are: parsing them into the generated message only for the
    stub to serialize it again cost more than encoding (about 4 µs a span).

    The SDK has no public way to send bytes it did not encode, so this overrides private
    names (`_stub`, `_client`, `_channel`, `_translate_data`): pyproject.toml pins the SDK's
    exact minor version and tests/test_otel_internals.py checks each name's shape."""

    accepts_records = True  # export() takes a SpanBatch as well as ReadableSpans

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._encoder = SpanEncoder()
        # The exporter builds its client from `_stub` (again after an UNAVAILABLE).
        self._stub = _RawTraceStub
        self._client = _RawTraceStub(self._channel)

    def _translate_data(self, data) -> bytes:
        if data.__class__ is SpanBatch:
            return self._encoder.records(data)
        return self._encoder.request(data)


__all__ = ["FastOTLPSpanExporter", "SpanBatch", "SpanEncoder"]
