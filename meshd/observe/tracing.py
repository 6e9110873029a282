"""Request spans, exported with the OpenTelemetry SDK's OTLP gRPC exporter.

A span is one finished record: meshd knows a request's start, end, route and outcome only
at completion, so the request path appends one flat tuple (binary ids, times, and the
outcome's shared attributes) to a bounded queue, and the exporter thread encodes the
tuples straight into OTLP (`meshd.observe.otlp`) and exports them. On the request path
the W3C work (read the caller's `traceparent`, make the span id, set the next hop's header)
is the head's `trace_context`, in C; then one tuple: no SDK object, no Context, no lock.
Another SpanExporter gets the SDK's `ReadableSpan`s, made from the tuples on the exporter
thread.

Propagation: W3C Trace Context (`traceparent`, `tracestate`), and B3 (`b3` single header,
or `x-b3-traceid`/`x-b3-spanid`/`x-b3-sampled`) when no `traceparent` came. The span meshd
records becomes the parent of the next hop: meshd sets `traceparent` (and rewrites B3
headers the request carried) with its own span id.
"""
from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections import deque

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from meshd.observe.otlp import FastOTLPSpanExporter, SpanBatch

log = logging.getLogger("meshd.observe.tracing")

_SCOPE = InstrumentationScope("meshd")
_KINDS = {"egress": SpanKind.CLIENT, "ingress": SpanKind.SERVER, "gateway": SpanKind.SERVER}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
_NO_STATE = TraceState()


def _context(trace_id: int, span_id: int, remote: bool, state: TraceState) -> SpanContext:
    """A sampled SpanContext without SpanContext.__new__'s range checks (a third of a span's
    cost): the ids here were generated non-zero or parsed from 32/16 hex digits and checked
    non-zero, so they are valid; the tuple layout is the API's (ids, remote, flags, state, valid)."""
    return tuple.__new__(SpanContext, (trace_id, span_id, remote, _SAMPLED, state, True))


_new_span = object.__new__
# The fields ReadableSpan.__init__ sets in the SDK versions meshd was built against; with
# another set, spans are made through __init__. This and _context's tuple layout are the
# SDK's and API's private shapes: tests/test_otel_internals.py checks both against the
# exact minor versions pyproject.toml pins.
_FIELDS_KNOWN = set(vars(ReadableSpan("x", resource=Resource.get_empty()))) == {
    "_name", "_context", "_kind", "_instrumentation_info", "_instrumentation_scope", "_parent", "_start_time",
    "_end_time", "_attributes", "_events", "_links", "_resource", "_status"}


def sample_ratio_from_env(default: float) -> float:
    """The ratio OTEL_TRACES_SAMPLER(_ARG) ask for (parent-based in every case: meshd is
    always a hop inside someone's trace), else `default`."""
    sampler = os.environ.get("OTEL_TRACES_SAMPLER", "").lower()
    if sampler.endswith("always_on"):
        return 1.0
    if sampler.endswith("always_off"):
        return 0.0
    if sampler.endswith("traceidratio"):
        try:
            return min(1.0, max(0.0, float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))))
        except ValueError:
            return 1.0
    return default


# W3C Trace Context §3.2: version-traceid-parentid-flags, lowercase hex; a later version may
# append fields after a dash, version 00 may not.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_B3_TRACE = re.compile(r"[0-9a-f]{16}|[0-9a-f]{32}")
_B3_SPAN = re.compile(r"[0-9a-f]{16}")


def parse_parent(get) -> tuple[str, str, bool] | None:
    """(trace id, parent span id, sampled) from W3C traceparent, else B3, the ids as 32 and
    16 lowercase hex digits; None when absent or malformed (W3C Trace Context §3.2: an
    invalid traceparent is ignored). `get(name)` returns a request header's value or None.
    The tracer reads B3 with it; its W3C reading is the reference the data plane's C
    `trace_context` is tested against (that one serves requests)."""
    tp = get("traceparent")
    if tp is not None:
        m = _TRACEPARENT.match(tp)
        if m is None or (len(tp) > 55 and (tp[55] != "-" or tp[:2] == "00")):
            return None
        version, tid, sid, flags = m.groups()
        if version == "ff" or tid == _ZERO_TRACE or sid == _ZERO_SPAN:
            return None
        return tid, sid, (int(flags, 16) & 1) == 1
    b3 = get("b3")
    if b3 is not None:
        # b3: {TraceId}-{SpanId}-{SamplingState}-{ParentSpanId}, the last two optional
        parts = b3.lower().split("-")
        if len(parts) >= 2:
            return _b3(parts[0], parts[1], len(parts) < 3 or parts[2] in ("1", "d"))
        return None
    tid = get("x-b3-traceid")
    sid = get("x-b3-spanid")
    if tid and sid:
        return _b3(tid.lower(), sid.lower(), get("x-b3-sampled") in (None, "1") or get("x-b3-flags") == "1")
    return None


def _b3(tid: str, sid: str, sampled: bool) -> tuple[str, str, bool] | None:
    """B3 ids as W3C's: a 64-bit trace id is the low half of a 128-bit one."""
    if _B3_TRACE.fullmatch(tid) is None or _B3_SPAN.fullmatch(sid) is None:
        return None
    tid = tid.rjust(32, "0")
    if tid == _ZERO_TRACE or sid == _ZERO_SPAN:
        return None
    return tid, sid, sampled


_BATCH = 512  # spans per export call


def _schedule_delay_s() -> float:
    """The longest a span waits for its batch: OTEL_BSP_SCHEDULE_DELAY (milliseconds,
    default 5000, as the SDK's batch processor reads it)."""
    try:
        return max(0.001, int(os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "5000")) / 1000)
    except ValueError:
        return 5.0


class Tracer:
    """Spans for requests through meshd, parent-based sampling at `ratio` for new traces."""

    def __init__(self, *, host: str, endpoint: str = "", ratio: float = 1.0, max_queue: int = 2048,
                 on_drop=lambda n: None, exporter: SpanExporter | None = None):
        self.ratio = ratio
        self._bound = TraceIdRatioBased.get_bound_for_rate(ratio)
        # Trace and span ids need only be unique (W3C Trace Context §3.2.2.3): a per-process
        # generator seeded from the OS is enough, and a tenth of os.urandom's cost.
        self._rng = random.Random(os.urandom(16))
        self._on_drop = on_drop
        self.max_queue = max_queue
        # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES are read by Resource.create.
        self.resource = Resource.create({"service.name": "meshd", "host.name": host})
        self._exporter = exporter or (FastOTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
                                      if endpoint else FastOTLPSpanExporter())  # endpoint from OTEL_EXPORTER_OTLP_*
        self._shapes: dict[tuple, tuple] = {}
        self._states: dict[str, TraceState] = {}
        # Finished spans as flat tuples: the loop thread appends, the exporter thread pops
        # (deque's append and popleft are atomic); the length check bounds it.
        self._records: deque = deque()
        self._batch = min(_BATCH, max_queue)
        self._wake = threading.Event()
        self._delay_s = _schedule_delay_s()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="meshd-span-export", daemon=True)
        self._thread.start()

    # -- per request ---------------------------------------------------------------------
    def begin(self, head, direction: str) -> tuple | None:
        """Continue (or start) the trace, and tell the next hop meshd's span id. Returns
        (trace id, span id, parent span id or b"", tracestate) when the request is sampled,
        the ids as bytes. W3C context is the head's own work (the data plane's
        `trace_context`, in C); B3 is read here."""
        ctx = head.trace_context(self._bound)
        if ctx is None:
            return self._begin_b3(head)
        if not ctx[3]:
            return None
        return ctx[0], ctx[1], ctx[2], (head.header("tracestate") or "") if ctx[2] else ""

    def _begin_b3(self, head) -> tuple | None:
        """A caller's B3 context (no traceparent came): continue it, and set both W3C and
        the caller's form of B3 for the next hop."""
        get = head.header
        parent = parse_parent(get)
        span_id = "%016x" % (self._rng.getrandbits(64) or 1)
        if parent is None:  # malformed B3: a new trace, as without any context
            n = self._rng.getrandbits(128) or 1
            sampled = (n & 0xFFFFFFFFFFFFFFFF) < self._bound  # TraceIdRatioBased: the low 64 bits
            tid = n.to_bytes(16, "big")
            head.set_header("traceparent", "00-" + tid.hex() + "-" + span_id + ("-01" if sampled else "-00"))
            return (tid, bytes.fromhex(span_id), b"", "") if sampled else None
        trace_id, parent_id, sampled = parent
        head.set_header("traceparent", "00-" + trace_id + "-" + span_id + ("-01" if sampled else "-00"))
        if get("b3") is not None:
            head.set_header("b3", trace_id + "-" + span_id + ("-1" if sampled else "-0"))
        else:
            head.set_header("x-b3-spanid", span_id)
            head.set_header("x-b3-parentspanid", parent_id)
        return (bytes.fromhex(trace_id), bytes.fromhex(span_id), bytes.fromhex(parent_id), "") if sampled else None

    def end(self, x, head, target, status: int, grpc_status: int, reason: str, duration_ns: int) -> None:
        """Queue the (sampled) request's span for export, or count a drop."""
        records = self._records
        if len(records) >= self.max_queue:
            self._on_drop(1)  # the queue is full: a dead or slow collector never slows requests
            return
        key = (x.series, x.direction, x.source, x.instance, target, status, grpc_status, reason, x.retries,
               head.method, head.path if head.grpc else "")
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shape(key, x)
        end_ns = time.time_ns()  # the start is this less the engine's duration: one clock read
        records.append((x.trace, end_ns - duration_ns, end_ns, shape))
        if len(records) >= self._batch and not self._wake.is_set():
            self._wake.set()

    # -- exporter thread -----------------------------------------------------------------
    def _run(self) -> None:
        records, wake = self._records, self._wake
        direct = getattr(self._exporter, "accepts_records", False)
        while True:
            wake.wait(self._delay_s)
            wake.clear()
            while records:
                batch = SpanBatch(records.popleft() for _ in range(min(self._batch, len(records))))
                batch.resource, batch.scope = self.resource, _SCOPE
                self._export(batch if direct else [self._span(*r) for r in batch])
            if self._stopping:
                return

    def _export(self, spans: list) -> None:
        try:
            result = self._exporter.export(spans)
        except Exception:  # noqa: BLE001 - an exporter failure drops the batch, counted
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._on_drop(len(spans))

    def _span(self, ids: tuple, start_ns: int, end_ns: int, shape: tuple) -> ReadableSpan:
        """The SDK span of one queued record (on the exporter thread)."""
        trace_b, span_b, parent_b, state = ids
        name, attrs, span_status, kind = shape
        trace_id = int.from_bytes(trace_b, "big")
        context = _context(trace_id, int.from_bytes(span_b, "big"), False,
                           self._trace_state(state) if state else _NO_STATE)
        parent = _context(trace_id, int.from_bytes(parent_b, "big"), True, _NO_STATE) if parent_b else None
        if _FIELDS_KNOWN:
            # ReadableSpan.__init__'s assignments as one dict (its keyword call is most of a
            # span's cost); _FIELDS_KNOWN checked they are all of its fields.
            span = _new_span(ReadableSpan)
            span.__dict__ = {"_name": name, "_context": context, "_kind": kind, "_instrumentation_info": None,
                             "_instrumentation_scope": _SCOPE, "_parent": parent, "_start_time": start_ns,
                             "_end_time": end_ns, "_attributes": attrs, "_events": (), "_links": (),
                             "_resource": self.resource, "_status": span_status}
            return span
        return ReadableSpan(name, context=context, parent=parent, resource=self.resource, attributes=attrs,
                            kind=kind, instrumentation_scope=_SCOPE, status=span_status,
                            start_time=start_ns, end_time=end_ns)

    def _trace_state(self, header: str) -> TraceState:
        """The TraceState of a `tracestate` header, parsed once per distinct value."""
        ts = self._states.get(header)
        if ts is None:
            if len(self._states) >= 4096:
                self._states.clear()
            ts = self._states[header] = TraceState.from_header([header])
        return ts

    def _shape(self, key: tuple, x) -> tuple:
        """(name, attributes, status, kind) of spans with this outcome, built once and shared:
        the span's attributes are what routing decided and how it ended, never the path or
        authority (so shapes stay few, and the exporter encodes each one once)."""
        series, direction, source, instance, target, status, grpc_status, reason, retries, method, rpc = key
        attrs = {"meshd.direction": direction, "meshd.mesh": x.mesh, "meshd.source_node": source,
                 "meshd.target_node": x.target_node, "meshd.retries": retries, "http.request.method": method}
        if series is not None:
            attrs["meshd.virtual_service"] = series.labels[3]
            attrs["meshd.route"] = series.labels[4]
        if instance:
            attrs["meshd.upstream_instance"] = instance
        if target is not None:
            attrs["server.upstream"] = f"{target.host}:{target.port}"
        if status:
            attrs["http.response.status_code"] = status
        if grpc_status >= 0:
            attrs["rpc.grpc.status_code"] = grpc_status
        if reason:
            attrs["meshd.reason"] = reason
        failed = bool(reason) or status >= 500 or (grpc_status > 0 if rpc else status == 0)
        if direction == "ingress" and not reason and 400 <= status < 500:
            failed = False  # OTel HTTP semconv: a 4xx is not a server span's error
        # OTel naming: gRPC "package.Service/Method"; HTTP "METHOD route".
        name = rpc[1:] if rpc else f"{method} {attrs.get('meshd.route') or ''}".rstrip()
        shape = (name, attrs, Status(StatusCode.ERROR, reason or None) if failed else _UNSET,
                 _KINDS.get(direction, SpanKind.INTERNAL))
        if len(self._shapes) >= 4096:
            self._shapes.clear()
        self._shapes[key] = shape
        return shape

    def close(self, timeout_s: float = 30.0) -> None:
        """Export what is queued (bounded by `timeout_s` and the exporter's timeout), then stop."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        try:
            self._exporter.shutdown()
        except Exception as err:  # noqa: BLE001 - shutting down must not fail meshd's stop
            log.warning("trace exporter shutdown failed", extra={"error": str(err)})


__all__ = ["Tracer", "parse_parent", "sample_ratio_from_env"]
