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
    handed back in Failure.target.context. Targets are immutable and meant to be reused:
    the pool key is computed once here.
    """

    def __init__(self, str host, int port, ssl=None, str server_hostname=None, headers=(),
                 double timeout=0.0, retry_statuses=None, retry_grpc=None, context=None,
                 double try_timeout=0.0):
        self.host = host
        self.port = port
        self.ssl = ssl
        self.server_hostname = server_hostname if server_hostname is not None else (host if ssl is not None else None)
        self.timeout = timeout
        self.try_timeout = try_timeout
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
cdef class Failure:
    """Why an attempt failed, as handed to the retry hook.

    kind: "connect_error", "refused_stream", "reset", "goaway" or "status". error_code: the
    HTTP/2 error code of a reset. http_status / grpc_status: the response that matched
    Target.retry_statuses / retry_grpc (kind "status"), else 0 / -1. target: the attempt's Target.
    """

    @staticmethod
    cdef Failure new(str kind, Target target, uint32_t error_code, int http_status, int grpc_status):
        cdef Failure f = Failure.__new__(Failure)
        f.kind, f.target, f.error_code = kind, target, error_code
        f.http_status, f.grpc_status = http_status, grpc_status
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
    "route_error": (500, GRPC_INTERNAL, "route_error"),
    "draining": (503, GRPC_UNAVAILABLE, "draining"),
}


cdef int64_t _parse_grpc_timeout(const uint8_t *v, size_t n) noexcept:
    # "grpc-timeout" is 1-8 ASCII digits and a unit H M S m u n (gRPC over HTTP/2).
    cdef int64_t x = 0
    cdef size_t i
    cdef uint8_t unit
    if n < 2 or n > 9:
        return -1
    for i in range(n - 1):
        if v[i] < 48 or v[i] > 57:
            return -1
        x = x * 10 + (v[i] - 48)
    unit = v[n - 1]
    if unit == b'H':
        return x * 3600 * 1000000000
    if unit == b'M':
        return x * 60 * 1000000000
    if unit == b'S':
        return x * 1000000000
    if unit == b'm':
        return x * 1000000
    if unit == b'u':
        return x * 1000
    if unit == b'n':
        return x
    return -1


cdef bytes _format_grpc_timeout(int64_t ns):
    # The shortest unit that keeps the value within 8 digits, rounding up to stay >= 1.
    if ns < 1:
        ns = 1
    if ns < 100000000:
        return b"%du" % ((ns + 999) // 1000)
    if ns < 99999999 * 1000000:
        return b"%dm" % ((ns + 999999) // 1000000)
    return b"%dS" % ((ns + 999999999) // 1000000000)
