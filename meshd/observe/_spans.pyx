# cython: freethreading_compatible = False
"""The exporter thread's per-span loop in C: meshd's tracer records -> OTLP Span messages.

`meshd.observe.otlp.SpanEncoder.records` keeps what spans share (the encoded name, kind,
attributes and status of each outcome, trace states, the resource and scope envelope) and
calls `encode_spans` for the spans themselves. In Python that loop cost the exporter
thread several microseconds a span inside a busy meshd (tuple unpacking, struct packing,
three concatenations per span); here it is one pass into a growing buffer.

Field numbers: opentelemetry-proto trace/v1/trace.proto, Span: trace_id 1, span_id 2,
trace_state 3, parent_span_id 4, start_time_unix_nano 7 (fixed64), end_time_unix_nano 8
(fixed64), flags 16 (fixed32); ScopeSpans.spans is field 2.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef struct Buf:
    char *p
    Py_ssize_t n
    Py_ssize_t cap


cdef int _reserve(Buf *b, Py_ssize_t more) except -1:
    cdef Py_ssize_t cap = b.cap
    cdef char *p
    if b.n + more <= cap:
        return 0
    while cap < b.n + more:
        cap *= 2
    p = <char *>PyMem_Realloc(b.p, cap)
    if p == NULL:
        raise MemoryError()
    b.p, b.cap = p, cap
    return 0


cdef inline void _byte(Buf *b, uint8_t v) noexcept:
    b.p[b.n] = <char>v
    b.n += 1


cdef inline void _bytes(Buf *b, bytes s) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(s)
    memcpy(b.p + b.n, PyBytes_AS_STRING(s), n)
    b.n += n


cdef inline void _varint(Buf *b, uint64_t v) noexcept:
    while v > 0x7F:
        _byte(b, <uint8_t>((v & 0x7F) | 0x80))
        v >>= 7
    _byte(b, <uint8_t>v)


cdef inline Py_ssize_t _varint_len(uint64_t v) noexcept:
    cdef Py_ssize_t n = 1
    while v > 0x7F:
        v >>= 7
        n += 1
    return n


cdef inline void _fixed(Buf *b, uint64_t v, int width) noexcept:
    cdef int i
    for i in range(width):
        _byte(b, <uint8_t>(v >> (8 * i)))


# Span.flags (SpanFlags): the parent's is-remote bit is known (0x100), and set (0x200).
cdef uint32_t FLAGS_LOCAL = 0x100
cdef uint32_t FLAGS_REMOTE = 0x300


def encode_spans(records, dict blocks, block_of, state_of):
    """ScopeSpans.spans entries of tracer records `((trace id, span id, parent span id or
    b"", tracestate or ""), start ns, end ns, shape)`, concatenated. `blocks` maps
    id(shape) -> (shape, encoded name/kind/attributes/status); `block_of(shape)` encodes
    (and keeps) a shape it does not have; `state_of(header)` encodes a trace state."""
    cdef Buf b
    cdef tuple rec, ids
    cdef bytes trace, span, parent, block, state
    cdef object got, shape, st
    cdef Py_ssize_t size
    b.n, b.cap = 0, 256 * (len(records) + 1)
    b.p = <char *>PyMem_Malloc(b.cap)
    if b.p == NULL:
        raise MemoryError()
    try:
        for rec in records:
            ids, shape = <tuple>rec[0], rec[3]
            trace, span, parent, st = <bytes>ids[0], <bytes>ids[1], <bytes>ids[2], ids[3]
            if PyBytes_GET_SIZE(trace) != 16 or PyBytes_GET_SIZE(span) != 8 or \
                    PyBytes_GET_SIZE(parent) not in (0, 8):
                raise ValueError(f"span ids of 16 and 8 bytes expected, not {ids!r}")
            got = blocks.get(id(shape))
            block = <bytes>(<tuple>got)[1] if got is not None and (<tuple>got)[0] is shape else block_of(shape)
            state = state_of(st) if st else b""
            size = (18 + 10 + 9 + 9 + (10 if PyBytes_GET_SIZE(parent) else 0) + 6
                    + PyBytes_GET_SIZE(state) + PyBytes_GET_SIZE(block))
            _reserve(&b, 1 + _varint_len(size) + size)
            _byte(&b, 0x12)
            _varint(&b, size)
            _byte(&b, 0x0A)
            _byte(&b, 16)
            _bytes(&b, trace)
            _byte(&b, 0x12)
            _byte(&b, 8)
            _bytes(&b, span)
            _byte(&b, 0x39)
            _fixed(&b, <uint64_t>rec[1], 8)
            _byte(&b, 0x41)
            _fixed(&b, <uint64_t>rec[2], 8)
            if PyBytes_GET_SIZE(parent):  # a parent named by a request header: remote
                _byte(&b, 0x22)
                _byte(&b, 8)
                _bytes(&b, parent)
            _byte(&b, 0x85)
            _byte(&b, 0x01)
            _fixed(&b, FLAGS_REMOTE if PyBytes_GET_SIZE(parent) else FLAGS_LOCAL, 4)
            _bytes(&b, state)
            _bytes(&b, block)
        return PyBytes_FromStringAndSize(b.p, b.n)
    finally:
        PyMem_Free(b.p)
