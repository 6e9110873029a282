# The header of the HTTP/2 forwarding engine: every cdef class's fields and cdef methods.
# Python sees the surface described in _h2.pyi.
cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from meshd.dataplane._nghttp2 cimport (
    nghttp2_option, nghttp2_session, nghttp2_session_callbacks,
)


cdef struct Counters:
    # Cheap C integers, bumped on the hot path and read by counters().
    uint64_t requests
    int64_t active_streams
    uint64_t bytes_in
    uint64_t bytes_out
    uint64_t downstream_conns
    uint64_t upstream_conns_opened
    uint64_t upstream_connect_errors
    uint64_t tls_full
    uint64_t tls_resumed
    uint64_t resets_from_downstream
    uint64_t resets_from_upstream
    uint64_t resets_sent
    uint64_t retries
    uint64_t synthetic
    uint64_t timeouts
    uint64_t protocol_errors
    uint64_t slow_closed
    uint64_t ping_timeouts
    uint64_t idle_timeouts
    uint64_t refused_from_upstream
    uint64_t goaways_from_upstream


@cython.final
cdef class Target:
    cdef readonly str host
    cdef readonly int port
    cdef readonly object ssl
    cdef readonly str server_hostname
    cdef readonly double timeout
    cdef readonly double try_timeout
    cdef readonly object idle_timeout   # seconds, or None: the listener's
    cdef int64_t idle_ns                # -1: the listener's; 0: none
    cdef readonly frozenset retry_statuses
    cdef readonly frozenset retry_grpc
    cdef readonly object context
    cdef readonly tuple key
    cdef bytes _authority
    cdef list _set          # flat [name, value, ...] of lowercase bytes, no pseudo-headers
    cdef frozenset _set_names
    cdef bytes _strip       # request header name prefix not forwarded, or None
    cdef bytes _resp_strip  # response header (and trailer) name prefix not relayed, or None


@cython.final
cdef class Refusal:
    cdef readonly int http_status
    cdef readonly int grpc_status
    cdef readonly str message
    cdef readonly str reason


@cython.final
cdef class Deferred:
    cdef object _then       # the engine's continuation, until resolved
    cdef object _answer
    cdef bint _done


@cython.final
cdef class Mirror:
    cdef readonly Target target
    cdef readonly object done             # done(outcome, http_status), called once
    cdef readonly Py_ssize_t max_body_bytes
    cdef readonly double timeout          # seconds, 0: none
    cdef readonly bint reported           # done has been called

    cpdef void report(self, str outcome, int http_status=*)


@cython.final
cdef class Failure:
    cdef readonly str kind
    cdef readonly int http_status
    cdef readonly int grpc_status
    cdef readonly uint32_t error_code
    cdef readonly Target target
    cdef readonly str reason

    @staticmethod
    cdef Failure new(str kind, Target target, uint32_t error_code, int http_status, int grpc_status)


@cython.final
cdef class RequestHead:
    cdef bytes _method
    cdef bytes _scheme
    cdef bytes _authority
    cdef bytes _path
    cdef bytes _protocol
    cdef list _raw          # flat [name, value, ...] bytes, regular headers in arrival order
    cdef dict _dict
    cdef readonly bint grpc
    cdef readonly int attempt
    cdef readonly object local_port
    cdef readonly object peer_cert
    cdef readonly object remote_address  # the downstream peer, "host:port"
    # (host, port) the client dialled before an iptables REDIRECT brought it here (transparent
    # interception); None on a listener the client dialled itself.
    cdef readonly object original_dst
    # Per-request rewrites, set by the routing hook (None: send the request's own).
    cdef bytes _up_path
    cdef bytes _up_authority
    cdef list _up_set       # flat [name, value, ...] lowercase bytes, replacing same-named headers
    cdef Mirror _mirror     # asked by the routing hook, until the request is forwarded
    # What happened, for the completion hook (access logs, metrics).
    cdef readonly uint64_t bytes_received  # request body bytes from downstream
    cdef readonly uint64_t bytes_sent      # response body bytes to downstream
    cdef list _resp_raw     # the response head that was forwarded: flat [name, value, ...]
    # The hooks' own record of this request, from the routing hook to the completion hook
    # (the engine never reads it): no side table keyed by the head.
    cdef public object context
    # Seconds to wait before the attempt the retry hook just returned a Target for (the
    # router's backoff); the engine waits, then clears it.
    cdef public double backoff

    @staticmethod
    cdef RequestHead new()


@cython.final
cdef class Exchange:
    cdef Engine engine
    cdef RequestHead head
    cdef Target target
    cdef ServerConn down
    cdef int32_t down_sid
    cdef ClientConn up
    cdef int32_t up_sid
    cdef size_t hdr_bytes
    cdef bint head_done
    # request direction (downstream -> upstream)
    cdef bytearray req_buf
    cdef Py_ssize_t req_off       # sent upstream in this attempt, relative to req_buf
    cdef Py_ssize_t req_base      # absolute offset of req_buf[0]; 0 while replayable
    cdef Py_ssize_t req_credited  # absolute bytes handed back to downstream flow control
    cdef bint req_eof
    cdef bint replayable
    cdef bint resent_refused      # a refused attempt was resent without asking the retry hook
    cdef bint discard_req
    cdef list req_trailers
    # response direction (upstream -> downstream)
    cdef bytearray resp_buf
    cdef list resp_head
    cdef list resp_trailers
    cdef int resp_status
    cdef int resp_grpc
    cdef bint resp_head_done
    cdef bint resp_started
    cdef bint resp_eof
    cdef bint rst_after_response  # stop the request body once our own response is out
    cdef bint up_closed
    cdef bint down_closed
    # deadlines
    cdef int64_t start_ns
    cdef int64_t grpc_timeout_ns
    cdef int64_t deadline_ns
    cdef object timer
    cdef object try_timer
    # the routing hook answered with a Deferred that has not resolved yet (see park)
    cdef bint parked
    # stream idle timeout: the engine's sweeper compares active_ns, the last time a byte of
    # this stream moved either way, with idle_ns (0: none); no timer per stream
    cdef int64_t idle_ns
    cdef int64_t active_ns
    # what the client got, reported once to the engine's completion hook
    cdef int out_status
    cdef int out_grpc
    cdef str out_reason
    cdef bint completed
    # mirroring: on the original, the Mirror whose copy of the body is being collected in
    # mirror_body (None once sent or abandoned); on the copy (shadow), the Mirror it reports to
    cdef Mirror mirror
    cdef bytearray mirror_body
    cdef bint shadow

    @staticmethod
    cdef Exchange new(Engine engine, ServerConn down, int32_t sid)
    @staticmethod
    cdef Exchange shadow_of(Exchange x, Mirror m, bytearray body)
    cdef void routed(self, object answer) except *
    cdef void take_mirror(self) except *
    cdef void mirror_data(self, const uint8_t *data, size_t n) except *
    cdef void drop_mirror(self, str outcome) except *
    cdef void shadow_end(self, str outcome) except *
    cdef void arm_deadline(self, int64_t deadline_ns) except *
    cdef void park(self, Deferred d) except *
    cdef void resume(self, object answer) except *
    cdef void start_attempt(self) except *
    cdef void begin_attempt(self) except *
    cdef void cancel_try_timer(self) except *
    cdef void submit_upstream(self, ClientConn c) except *
    cdef void abandon_up(self, uint32_t code) except *
    cdef void attempt_failed(self, Failure f) except *
    cdef object ask_retry(self, Failure f)
    cdef void on_response_head(self, bint end_stream) except *
    cdef void respond(self, int http_status, int grpc_status, str message, str reason) except *
    cdef void down_reset(self, uint32_t code) except *
    cdef void respond_kind(self, str kind) except *
    cdef void follow(self, object r) except *
    cdef void credit_rest(self) except *
    cdef void on_down_closed(self, uint32_t code) except *
    cdef void on_up_closed(self, uint32_t code) except *
    cdef void up_lost(self, str kind) except *
    cdef void request_progress(self) except *
    cdef void response_progress(self) except *
    cdef void idle_expired(self, int64_t now) except *


cdef class Conn:
    cdef nghttp2_session *session
    cdef Engine engine
    cdef object transport
    cdef dict streams
    cdef bint dirty
    cdef bint paused
    cdef bint closing
    cdef bint lost
    cdef int64_t opened_ns
    cdef int64_t last_active_ns
    cdef int64_t last_recv_ns   # bytes last arrived from the peer
    cdef object sslobj      # client side only: TLS through memory BIOs
    cdef object bio_in
    cdef object bio_out
    cdef char *wbuf
    cdef size_t wlen
    cdef size_t wcap

    cdef void feed(self, const uint8_t *data, size_t n) except *
    cdef void flush(self) except *
    cdef void write_out(self) except *
    cdef void close_now(self) except *


@cython.final
cdef class ServerConn(Conn):
    cdef bint established
    cdef bint partial
    cdef int64_t partial_since_ns
    cdef object local_port
    cdef int64_t stream_idle_ns   # the listener's stream idle timeout (0: none)
    cdef object peer_cert     # the TLS client's certificate (DER), None without TLS
    cdef object remote_address
    cdef public object original_dst  # set by an intercepting listener before connection_made

    cdef void start_drain(self, bint final) except *


@cython.final
cdef class ClientConn(Conn):
    cdef Pool pool
    cdef list waiting
    cdef bint ready
    cdef object connect_task    # TCP connect in progress
    cdef object connect_timer   # fires when TCP + TLS + the peer's SETTINGS take too long
    cdef int64_t ping_sent_ns   # a liveness PING is outstanding since then (0: none)
    cdef bint goaway
    cdef bint have_ticket

    cdef uint32_t capacity(self)
    cdef void start_h2(self) except *
    cdef void peer_settings(self) except *
    cdef void tls_step(self) except *
    cdef void connect_failed(self, str why) except *
    cdef void stop_connect_timer(self) except *


@cython.final
cdef class Pool:
    cdef Engine engine
    cdef Target target
    cdef list conns
    cdef object tls_session

    cdef void acquire(self, Exchange x) except *


@cython.final
cdef class Engine:
    cdef object loop
    cdef object decide_cb
    cdef object retry_cb
    cdef object complete_cb
    cdef dict pools
    cdef set servers
    cdef list dirty         # connections with frames to send, flushed once per loop callback
    cdef list listeners
    cdef uint32_t max_concurrent
    cdef uint32_t up_max_streams
    cdef int32_t stream_window
    cdef int32_t conn_window
    cdef size_t max_header_list
    cdef int64_t header_timeout_ns
    cdef int64_t idle_timeout_ns
    cdef int64_t stream_idle_ns     # the default for listeners that set none
    cdef int64_t min_idle_ns        # the shortest stream idle timeout seen: the sweep period
    cdef int64_t up_idle_ns
    cdef double connect_timeout
    cdef int64_t ping_interval_ns
    cdef int64_t ping_timeout_ns
    cdef Py_ssize_t retry_buffer
    cdef bint draining
    cdef bint closed
    cdef object sweeper
    cdef nghttp2_session_callbacks *server_cbs
    cdef nghttp2_session_callbacks *client_cbs
    cdef nghttp2_option *server_opt
    cdef nghttp2_option *client_opt

    cdef Pool pool_for(self, Target t)
    cdef void check_alive(self, ClientConn c, int64_t now) except *
    cdef void check_idle(self, ServerConn s, int64_t now) except *
    cdef void note_idle(self, int64_t idle_ns) noexcept
