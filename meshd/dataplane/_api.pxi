# Values that cross into Python: what the routing hook receives and returns, and counters.

cdef Counters C  # zero-initialised C statics; the only global state of the engine

# gRPC status codes used by synthetic responses (grpc/doc/statuscodes.md).
cdef enum:
    GRPC_OK = 0
    GRPC_UNKNOWN = 2
    GRPC_DEADLINE_EXCEEDED = 4
    GRPC_PERMISSION_DENIED = 7
    GRPC_UNIMPLEMENTED = 12
    GRPC_INTERNAL = 13
    GRPC_UNAVAILABLE = 14
    GRPC_UNAUTHENTICATED = 16


cdef inline int64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def counters():
    """Return the engine's counters as a dict of ints (a snapshot of C integers)."""
    return {
        "requests": C.requests,
        "active_streams": C.active_streams,
        "bytes_in": C.bytes_in,
        "bytes_out": C.bytes_out,
        "downstream_conns": C.downstream_conns,
        "upstream_conns_opened": C.upstream_conns_opened,
        "upstream_connect_errors": C.upstream_connect_errors,
        "tls_full_handshakes": C.tls_full,
        "tls_resumed_handshakes": C.tls_resumed,
        "resets_from_downstream": C.resets_from_downstream,
        "resets_from_upstream": C.resets_from_upstream,
        "resets_sent": C.resets_sent,
        "retries": C.retries,
        "synthetic_responses": C.synthetic,
        "timeouts": C.timeouts,
        "protocol_errors": C.protocol_errors,
        "slow_closed": C.slow_closed,
        "ping_timeouts": C.ping_timeouts,
        "idle_timeouts": C.idle_timeouts,
        "refused_from_upstream": C.refused_from_upstream,   # RST_STREAM REFUSED_STREAM received
        "goaways_from_upstream": C.goaways_from_upstream,
    }


cdef bytes _lower_b(object s):
    return (s.encode("latin-1") if isinstance(s, str) else bytes(s)).lower()


@cython.final
cdef class Target:
    """Where to send a request: one upstream key plus what to change on the way.

    host, port: the upstream endpoint. ssl: an ssl.SSLContext for a TLS upstream (it should
    offer ALPN "h2"), or None for h2c. server_hostname: SNI and certificate name (defaults to
    host). headers: (name, value) pairs to add or replace upstream; ":authority" rewrites
    the authority. timeout: per-request timeout in seconds (0 = none; a smaller grpc-timeout
    wins). try_timeout: per-attempt timeout in seconds until the response starts; when it
    fires the attempt fails with kind "timeout" and the retry hook may send another.
    retry_statuses / retry_grpc: HTTP statuses / gRPC codes (the latter only visible
    in trailers-only responses) that make the engine ask the retry hook. context: opaque,
    handed back in Failure.target.context. strip_prefix: request headers whose (lowercase)
    name starts with it are not sent upstream (`headers` are still added): a proxy's own
    headers never cross the edge they are meant for. strip_response_prefix: response
    headers and trailers whose (lowercase) name starts with it are neither relayed
    downstream nor seen by the retry hook: an upstream cannot speak for the proxy. Targets are immutable and meant to be
    reused: the pool key is computed once here.

    idle_timeout: the route's idle timeout in seconds (App Mesh's route `timeout.idle`),
    winning over the listener's: an HTTP/2 or gRPC stream, an HTTP/1.1 request, or a TCP
    connection with no byte in either direction for this long is ended (see the engines'
    stream_idle_timeout / idle_timeout). None (the default) keeps the listener's; 0 turns
    idleness off for this route.
    """

    def __init__(self, str host, int port, ssl=None, str server_hostname=None, headers=(),
                 double timeout=0.0, retry_statuses=None, retry_grpc=None, context=None,
                 double try_timeout=0.0, idle_timeout=None, str strip_prefix="", str strip_response_prefix=""):
        self.host = host
        self.port = port
        self.ssl = ssl
        self.server_hostname = server_hostname if server_hostname is not None else (host if ssl is not None else None)
        self.timeout = timeout
        self.try_timeout = try_timeout
        if idle_timeout is None:
            self.idle_ns = -1
        elif idle_timeout >= 0:
            self.idle_timeout = float(idle_timeout)
            self.idle_ns = <int64_t>(self.idle_timeout * 1e9)
        else:
            raise ValueError(f"idle_timeout must be >= 0 or None, not {idle_timeout!r}")
        self.retry_statuses = frozenset(retry_statuses) if retry_statuses else None
        self.retry_grpc = frozenset(retry_grpc) if retry_grpc else None
        self.context = context
        self.key = (host, port, id(ssl) if ssl is not None else 0, self.server_hostname)
        self._authority = None
        self._set = []
        names = set()
        for name, value in headers:
            n = _lower_b(name)
            v = value.encode("latin-1") if isinstance(value, str) else bytes(value)
            if n == b":authority":
                self._authority = v
            elif n.startswith(b":"):
                raise ValueError(f"only :authority may be rewritten, not {name!r}")
            else:
                self._set += [n, v]
                names.add(n)
        self._set_names = frozenset(names) if names else None
        self._strip = strip_prefix.lower().encode("latin-1") if strip_prefix else None
        self._resp_strip = strip_response_prefix.lower().encode("latin-1") if strip_response_prefix else None

    @property
    def strip_prefix(self):
        """Request headers starting with these lowercase bytes are not forwarded (or None)."""
        return self._strip

    @property
    def strip_response_prefix(self):
        """Response headers starting with these lowercase bytes are not relayed (or None)."""
        return self._resp_strip

    @property
    def rewrite(self):
        """(authority or None, [name, value, ...]): what this Target changes upstream, as the
        lower-case bytes the engine sends; for the HTTP/1.1 and TCP relays."""
        return self._authority, list(self._set)

    def __repr__(self):
        return f"Target({self.host!r}, {self.port}, tls={self.ssl is not None})"


@cython.final
cdef class Refusal:
    """A synthetic answer instead of forwarding.

    http_status: the HTTP status for plain HTTP/2 requests. grpc_status: the gRPC code for
    gRPC requests, answered trailers-only (HTTP 200, grpc-status, grpc-message); -1 derives it
    from http_status by gRPC's HTTP-to-gRPC mapping. message: grpc-message text. reason: a
    short token sent as the `x-meshd-reason` header.
    """

    def __init__(self, int http_status, int grpc_status=-1, str message="", str reason=""):
        self.http_status = http_status
        self.grpc_status = grpc_status
        self.message = message
        self.reason = reason

    def __repr__(self):
        return f"Refusal({self.http_status}, grpc={self.grpc_status}, reason={self.reason!r})"


@cython.final
cdef class Deferred:
    """A routing answer that comes later: the decide hook returns one when the request has to
    wait (a fault delay, Envoy's pending-request queue of a connection pool), and its owner
    calls `resolve(Target or Refusal)` once, on the loop. Both engines park the request
    meanwhile; an answer for a request that ended in the meantime (client reset, timeout) is
    dropped. A second `resolve` is ignored."""

    def __init__(self):
        self._then = None
        self._answer = None
        self._done = False

    def then(self, fn):
        """The engine: call `fn(answer)` when it is known (now, if it is already)."""
        if self._done:
            fn(self._answer)
        else:
            self._then = fn

    def resolve(self, answer):
        """Give the answer (a Target or a Refusal); runs the engine's continuation now."""
        if self._done:
            return
        self._done, self._answer = True, answer
        fn, self._then = self._then, None
        if fn is not None:
            fn(answer)

    @property
    def resolved(self):
        """Whether resolve() has been called."""
        return self._done

    def __repr__(self):
        return f"Deferred({self._answer!r})" if self._done else "Deferred(pending)"


@cython.final
cdef class Mirror:
    """A copy of one request for a second Target, its answer read and discarded (Envoy's
    request_mirror_policies, "shadowing"). The routing hook asks for it with
    head.mirror_to(target, done, max_body_bytes=, timeout=); the engine keeps the request's
    head and up to max_body_bytes of its body, and once the request has ended (and was
    forwarded) sends the copy over its own pools with `-shadow` appended to the authority.
    The original never waits for the copy, and the copy never holds back the original.

    done(outcome, http_status) is called exactly once, on the loop: "ok" (the mirror
    answered; http_status is its status), "failed" (connect error, reset, connection lost),
    "timeout" (no complete answer within `timeout` seconds: the argument, else the Target's
    per-request timeout, 0 = none), "too_large" (the body went past max_body_bytes: no copy
    is sent), or "cancelled" (the request was refused, or its client left before it ended).
    Bounding the copies in flight is the caller's: count the done calls.
    """

    def __init__(self, Target target, done=None, Py_ssize_t max_body_bytes=65536, timeout=None):
        if max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be >= 0, not {max_body_bytes!r}")
        self.target = target
        self.done = done
        self.max_body_bytes = max_body_bytes
        self.timeout = float(timeout) if timeout is not None else target.timeout

    cpdef void report(self, str outcome, int http_status=0):
        """Tell done how the copy ended; every call after the first is ignored."""
        if self.reported:
            return
        self.reported = True
        if self.done is not None:
            try:
                self.done(outcome, http_status)
            except BaseException:
                _log.exception("mirror done callback failed for %r", self.target)

    def __repr__(self):
        return f"Mirror({self.target!r}, max_body_bytes={self.max_body_bytes})"


@cython.final
cdef class Failure:
    """Why an attempt failed, as handed to the retry hook.

    kind: "connect_error", "refused_stream", "reset", "goaway" or "status". error_code: the
    HTTP/2 error code of a reset. http_status / grpc_status: the response that matched
    Target.retry_statuses / retry_grpc (kind "status"), else 0 / -1. target: the attempt's Target.
    reason: that response's `x-meshd-reason` (kind "status"), else "": an upstream that is
    itself a meshd names why it answered so, and only the hook knows whether to trust it.
    """

    @staticmethod
    cdef Failure new(str kind, Target target, uint32_t error_code, int http_status, int grpc_status):
        cdef Failure f = Failure.__new__(Failure)
        f.kind, f.target, f.error_code = kind, target, error_code
        f.http_status, f.grpc_status = http_status, grpc_status
        f.reason = ""
        return f

    def __repr__(self):
        return f"Failure({self.kind!r}, code={self.error_code}, http={self.http_status}, grpc={self.grpc_status})"


@cython.final
cdef class RequestHead:
    """The request as the routing hook sees it: pseudo-headers as str, a header view, attempt."""

    @staticmethod
    cdef RequestHead new():
        cdef RequestHead h = RequestHead.__new__(RequestHead)
        h._raw = []
        h._method = h._scheme = h._authority = h._path = b""
        return h

    @property
    def method(self):
        return self._method.decode("latin-1")

    @property
    def scheme(self):
        return self._scheme.decode("latin-1")

    @property
    def authority(self):
        return self._authority.decode("latin-1")

    @property
    def path(self):
        return self._path.decode("latin-1")

    @property
    def headers(self):
        """Regular headers as {lowercase name: value}; repeated fields joined with ", " (RFC 9110 §5.3)."""
        cdef Py_ssize_t i
        cdef dict d
        if self._dict is None:
            d = {}
            for i in range(0, len(self._raw), 2):
                k = (<bytes>self._raw[i]).decode("latin-1")
                v = (<bytes>self._raw[i + 1]).decode("latin-1")
                d[k] = d[k] + ", " + v if k in d else v
            self._dict = d
        return self._dict

    def trace_context(self, bound):
        """`trace_context(self, bound)`: this request's W3C trace context and new span."""
        return trace_context(self, bound)

    def header(self, str name):
        """`headers.get(name)` (`name` lowercase) without building the dict: the routing
        hook's few lookups cost a scan of the raw fields."""
        cdef bytes n
        cdef list raw = self._raw
        cdef Py_ssize_t i
        cdef object found = None
        if self._dict is not None:
            return self._dict.get(name)
        n = name.encode("latin-1")
        for i in range(0, len(raw), 2):
            if <bytes>raw[i] == n:
                v = (<bytes>raw[i + 1]).decode("latin-1")
                found = v if found is None else found + ", " + v
        return found

    @property
    def raw_headers(self):
        """Regular headers as a list of (name, value) bytes pairs, in arrival order."""
        return [(self._raw[i], self._raw[i + 1]) for i in range(0, len(self._raw), 2)]

    # -- per-request rewrites (the routing hook's; a Target's own apply to every request) --

    def rewrite_path(self, path):
        """Send `path` upstream as :path instead of the request's (a gateway's prefix rewrite)."""
        self._up_path = path.encode("latin-1") if isinstance(path, str) else bytes(path)

    def rewrite_authority(self, authority):
        """Send `authority` upstream as :authority; wins over the Target's authority."""
        self._up_authority = authority.encode("latin-1") if isinstance(authority, str) else bytes(authority)

    def mirror_to(self, Target target, done=None, Py_ssize_t max_body_bytes=65536, timeout=None):
        """Send a copy of this request to target as well, its answer discarded (see Mirror).
        Call it from the routing hook (or before resolving its Deferred); once per request."""
        if self._mirror is not None:
            raise ValueError("this request is already mirrored")
        self._mirror = Mirror(target, done, max_body_bytes, timeout)
        return self._mirror

    def set_header(self, name, value):
        """Add a regular header upstream, replacing the request's fields of that name
        (trace context, for instance). Pseudo-headers have their own methods. Over HTTP/2
        the value goes out never indexed in HPACK: these are values unique to a request."""
        n = _lower_b(name)
        if n.startswith(b":"):
            raise ValueError(f"use rewrite_path/rewrite_authority for {name!r}")
        if self._up_set is None:
            self._up_set = []
        self._up_set += [n, value.encode("latin-1") if isinstance(value, str) else bytes(value)]

    @property
    def upstream_path(self):
        """The :path sent upstream."""
        return (self._up_path if self._up_path is not None else self._path).decode("latin-1")

    @property
    def response_headers(self):
        """The forwarded response head as {lowercase name: value} (":status" included);
        empty when meshd answered itself."""
        cdef Py_ssize_t i
        d = {}
        if self._resp_raw is not None:
            for i in range(0, len(self._resp_raw), 2):
                d[(<bytes>self._resp_raw[i]).decode("latin-1")] = (<bytes>self._resp_raw[i + 1]).decode("latin-1")
        return d

    def __repr__(self):
        return f"RequestHead({self.method} {self.scheme}://{self.authority}{self.path}, grpc={self.grpc})"


cdef str _pct_encode(str message):
    # grpc-message is percent-encoded UTF-8 (gRPC over HTTP/2, "Responses").
    cdef bytes raw = message.encode("utf-8")
    out = []
    for b in raw:
        if 0x20 <= b <= 0x7e and b != 0x25:
            out.append(chr(b))
        else:
            out.append("%%%02X" % b)
    return "".join(out)


cdef int _grpc_from_http(int http_status) noexcept:
    # gRPC's HTTP-to-gRPC status mapping (grpc/doc/http-grpc-status-mapping.md).
    if http_status == 400:
        return GRPC_INTERNAL
    if http_status == 401:
        return GRPC_UNAUTHENTICATED
    if http_status == 403:
        return GRPC_PERMISSION_DENIED
    if http_status == 404:
        return GRPC_UNIMPLEMENTED
    if http_status == 429 or http_status == 502 or http_status == 503 or http_status == 504:
        return GRPC_UNAVAILABLE
    return GRPC_UNKNOWN


# The one table of data-plane failures -> synthetic response (STYLE §13):
# kind -> (HTTP status, gRPC status, x-meshd-reason).
FAILURE_RESPONSES = {
    "connect_error": (503, GRPC_UNAVAILABLE, "upstream_connect_failure"),
    "refused_stream": (503, GRPC_UNAVAILABLE, "upstream_refused_stream"),
    "goaway": (503, GRPC_UNAVAILABLE, "upstream_goaway"),
    "reset": (502, GRPC_UNAVAILABLE, "upstream_reset"),
    "timeout": (504, GRPC_DEADLINE_EXCEEDED, "request_timeout"),
    # Envoy's stream idle timeout (ConnectionManagerImpl::ActiveStream::onIdleTimeout with
    # Http::Utility::maybeRequestTimeoutCode): 408 while the request is still arriving, 504
    # once it has arrived. Envoy derives the gRPC code from those statuses (UNKNOWN,
    # UNAVAILABLE); here it is DEADLINE_EXCEEDED as for the request timeout above, since the
    # stream ran out of time and UNAVAILABLE would invite clients to retry a request the
    # upstream may have acted on.
    "idle_timeout": (504, GRPC_DEADLINE_EXCEEDED, "stream_idle_timeout"),
    "request_idle_timeout": (408, GRPC_DEADLINE_EXCEEDED, "stream_idle_timeout"),
    "route_error": (500, GRPC_INTERNAL, "route_error"),
    "draining": (503, GRPC_UNAVAILABLE, "draining"),
}


# The longest deadline taken from grpc-timeout: 2**62 ns, about 146 years. 99999999H (the
# grammar's largest value) is 3.6e20 ns and overflows int64; this bound also keeps
# start + deadline within int64 on any monotonic clock.
cdef int64_t GRPC_TIMEOUT_MAX_NS = (<int64_t>1) << 62


cdef int64_t _parse_grpc_timeout(const uint8_t *v, size_t n) noexcept:
    # "grpc-timeout" is 1-8 ASCII digits and a unit H M S m u n (gRPC over HTTP/2). A value
    # beyond GRPC_TIMEOUT_MAX_NS, or with more than 8 digits, means "as long as can be": it
    # is clamped to the maximum, never wrapped. Anything else malformed is ignored (-1).
    cdef int64_t x = 0, unit_ns
    cdef size_t i
    cdef uint8_t unit
    if n < 2:
        return -1
    for i in range(n - 1):
        if v[i] < 48 or v[i] > 57:
            return -1
        if i < 8:
            x = x * 10 + (v[i] - 48)
    unit = v[n - 1]
    if unit == b'H':
        unit_ns = 3600 * <int64_t>1000000000
    elif unit == b'M':
        unit_ns = 60 * <int64_t>1000000000
    elif unit == b'S':
        unit_ns = 1000000000
    elif unit == b'm':
        unit_ns = 1000000
    elif unit == b'u':
        unit_ns = 1000
    elif unit == b'n':
        unit_ns = 1
    else:
        return -1
    if n > 9 or x > GRPC_TIMEOUT_MAX_NS // unit_ns:
        return GRPC_TIMEOUT_MAX_NS
    return x * unit_ns


cdef bytes _format_grpc_timeout(int64_t ns):
    # What is left, in the finest unit that keeps the value within the grammar's 8 digits
    # (n below 0.1 s, u below 100 s, m below 27.7 h, then S, M, H), rounded down: the next
    # hop never gets more time than remains (rounding up to whole milliseconds gave it up to
    # 1 ms more). At least 1 n.
    cdef int64_t v
    if ns < 1:
        ns = 1
    if ns <= 99999999:
        return b"%dn" % ns
    if ns // 1000 <= 99999999:
        return b"%du" % (ns // 1000)
    if ns // 1000000 <= 99999999:
        return b"%dm" % (ns // 1000000)
    v = ns // 1000000000
    if v <= 99999999:
        return b"%dS" % v
    v //= 60
    if v <= 99999999:
        return b"%dM" % v
    return b"%dH" % min(v // 60, 99999999)


# -- W3C trace context: the tracer's per-request work, done here in C ----------------------
# A tracer that wrote this in Python (parse the caller's traceparent, make a span id, format
# the header for the next hop) paid for it on every traced request, several times over what
# the same steps cost in a benchmark loop; here it is a header scan and some byte twiddling.

cdef uint64_t _id_state = 0
cdef const char *_HEX = b"0123456789abcdef"
cdef object _MAX_BOUND = 1 << 64


def seed_trace_ids(bytes seed):
    """Seed the span and trace id generator (from os.urandom, at import)."""
    global _id_state
    _id_state = int.from_bytes(seed[:8], "little")


cdef inline uint64_t _rand64() noexcept:
    # splitmix64 (Steele, Lea and Flood 2014): ids need only be unique and unpredictable
    # enough for sampling (W3C Trace Context §3.2.2.3, "random" not "cryptographic").
    global _id_state
    cdef uint64_t z
    _id_state += <uint64_t>0x9E3779B97F4A7C15
    z = _id_state
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EB
    return z ^ (z >> 31)


cdef inline int _nibble(uint8_t c) noexcept:
    # W3C traceparent fields are lowercase hex only.
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef bint _unhex(const uint8_t *s, Py_ssize_t n, uint8_t *out) noexcept:
    """`n` hex digits at `s` -> n/2 bytes; False on a character that is not lowercase hex or
    when every digit is zero (an invalid id)."""
    cdef Py_ssize_t i
    cdef int hi, lo
    cdef uint8_t any = 0
    for i in range(0, n, 2):
        hi = _nibble(s[i])
        lo = _nibble(s[i + 1])
        if hi < 0 or lo < 0:
            return False
        out[i // 2] = <uint8_t>((hi << 4) | lo)
        any |= out[i // 2]
    return any != 0


cdef void _hex(const uint8_t *b, Py_ssize_t n, char *out) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        out[2 * i] = _HEX[b[i] >> 4]
        out[2 * i + 1] = _HEX[b[i] & 15]


cdef void _put64(uint64_t v, uint8_t *out) noexcept:
    cdef int i
    for i in range(8):
        out[7 - i] = <uint8_t>(v >> (8 * i))


cdef object _raw_get(list raw, bytes name):
    cdef Py_ssize_t i
    for i in range(0, len(raw), 2):
        if <bytes>raw[i] == name:
            return raw[i + 1]
    return None


cdef bint _parse_traceparent(bytes tp, uint8_t *trace, uint8_t *parent, bint *sampled) noexcept:
    # W3C Trace Context §3.2: version "-" trace-id "-" parent-id "-" flags; version ff is
    # invalid; version 00 is exactly 55 characters, a later one may append "-" and more.
    cdef const uint8_t *s = <const uint8_t *>PyBytes_AS_STRING(tp)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(tp)
    cdef uint8_t version, flags
    if n < 55 or s[2] != 45 or s[35] != 45 or s[52] != 45:  # "-"
        return False
    if not _unhex(s, 2, &version) and not (s[0] == 48 and s[1] == 48):
        return False          # not hex (version 00 is all zeros, which _unhex calls invalid)
    if version == 0xFF or (version == 0 and n != 55) or (n > 55 and s[55] != 45):
        return False
    if not _unhex(s + 3, 32, trace) or not _unhex(s + 36, 16, parent):
        return False
    if _nibble(s[53]) < 0 or _nibble(s[54]) < 0:
        return False
    sampled[0] = (_nibble(s[54]) & 1) == 1
    return True


def trace_context(head, bound):
    """The trace context of `head`'s hop, with a new span: continue the caller's W3C
    `traceparent` (an invalid one is ignored), else start a trace, sampled when the low 64
    bits of its id are below `bound` (OpenTelemetry's TraceIdRatioBased; 2**64 samples all).
    Sets `traceparent` upstream to the new span and returns (trace id, span id, parent span
    id or b"", sampled), the ids as bytes. Returns None, changing nothing, when the request
    carries no traceparent but B3 headers: those are the caller's to read."""
    cdef RequestHead h
    cdef uint8_t trace[16]
    cdef uint8_t parent[8]
    cdef uint8_t span[8]
    cdef char out[55]
    cdef bint sampled = False, has_parent = False
    cdef uint64_t lo, s
    cdef object tp
    if type(head) is RequestHead:
        h = <RequestHead>head
        tp = _raw_get(h._raw, b"traceparent")
        if tp is None and (_raw_get(h._raw, b"b3") is not None or _raw_get(h._raw, b"x-b3-traceid") is not None):
            return None
    else:
        tp = head.header("traceparent")
        if tp is None and (head.header("b3") is not None or head.header("x-b3-traceid") is not None):
            return None
        if tp is not None:
            tp = tp.encode("latin-1")
    if tp is not None:
        has_parent = _parse_traceparent(<bytes>tp, trace, parent, &sampled)
    if not has_parent:
        lo = _rand64() or 1
        _put64(_rand64(), trace)
        _put64(lo, trace + 8)
        sampled = bound >= _MAX_BOUND or lo < <uint64_t>bound
    s = _rand64() or 1
    _put64(s, span)
    memcpy(out, b"00-", 3)
    _hex(trace, 16, out + 3)
    out[35] = 45
    _hex(span, 8, out + 36)
    out[52] = 45
    out[53] = 48
    out[54] = 49 if sampled else 48
    value = PyBytes_FromStringAndSize(out, 55)
    if type(head) is RequestHead:
        if h._up_set is None:
            h._up_set = []
        h._up_set += [b"traceparent", value]
    else:
        head.set_header("traceparent", value)
    return (PyBytes_FromStringAndSize(<char *>trace, 16), PyBytes_FromStringAndSize(<char *>span, 8),
            PyBytes_FromStringAndSize(<char *>parent, 8) if has_parent else b"", sampled)
