# One request/response relay: a downstream stream paired with the current upstream attempt.
#
# Flow control (RFC 9113 §5.2, §6.9): both sessions run with no_auto_window_update and credit
# the two windows apart, as Envoy's HTTP/2 codec bounds each stream by its own buffer limit:
#   - the connection window as soon as a DATA byte is in a relay buffer (the receive
#     callbacks in _conn.pxi, nghttp2_session_consume_connection);
#   - the stream window only when the other side's session has copied the byte into an
#     outgoing frame (the read callbacks below, nghttp2_session_consume_stream).
# A stream whose reader stalls therefore holds at most its own stream window here and stalls
# only its own sender: it never uses up the connection window that the other streams of the
# connection (a pooled upstream shared by every caller, or another meshd's pooled connection
# into our listener) need. Memory stays bounded by stream window x open streams.

cdef enum:
    SUBMIT_REQUEST = 0
    SUBMIT_RESPONSE = 1
    SUBMIT_TRAILER = 2
    NV_STACK = 48


cdef inline void _mark(Conn c) except *:
    if not c.dirty and c.session != NULL:
        c.dirty = True
        c.engine.dirty.append(c)


cdef void _flush_dirty(Engine e) except *:
    """Serialise and write every connection touched since the last flush (batches writes).

    The list is per Engine, so engines on different threads' loops never touch each
    other's transports."""
    cdef list dirty = e.dirty
    cdef Conn c
    while dirty:
        c = <Conn>dirty.pop()
        c.dirty = False
        try:
            c.flush()
        except Exception:
            _log.exception("flush failed; closing %r", c)
            c.close_now()


cdef int _submit(int kind, nghttp2_session *s, int32_t sid, list flat,
                 const nghttp2_data_provider *prd, void *stream_data,
                 Py_ssize_t never_index_from=-1) except? -99999:
    # nghttp2 copies names and values at submit time, so nva may point into the bytes objects.
    # Fields from `never_index_from` on carry a value unique to this request (trace context):
    # sent as "never indexed" literals (RFC 7541 §6.2.3), so they do not churn the HPACK
    # dynamic table and evict the fields that repeat on every request.
    cdef Py_ssize_t n = len(flat) // 2, i
    cdef nghttp2_nv small[NV_STACK]
    cdef nghttp2_nv *nva = small
    cdef bytes k, v
    cdef int rv
    if n > NV_STACK:
        nva = <nghttp2_nv *>PyMem_Malloc(n * sizeof(nghttp2_nv))
        if nva == NULL:
            raise MemoryError()
    try:
        for i in range(n):
            k = <bytes>flat[2 * i]
            v = <bytes>flat[2 * i + 1]
            nva[i].name = <uint8_t *>PyBytes_AS_STRING(k)
            nva[i].namelen = PyBytes_GET_SIZE(k)
            nva[i].value = <uint8_t *>PyBytes_AS_STRING(v)
            nva[i].valuelen = PyBytes_GET_SIZE(v)
            nva[i].flags = NGHTTP2_NV_FLAG_NO_INDEX if 0 <= never_index_from <= i else NGHTTP2_NV_FLAG_NONE
        if kind == SUBMIT_REQUEST:
            rv = nghttp2_submit_request(s, NULL, nva, n, prd, stream_data)
        elif kind == SUBMIT_RESPONSE:
            rv = nghttp2_submit_response(s, sid, nva, n, prd)
        else:
            rv = nghttp2_submit_trailer(s, sid, nva, n)
    finally:
        if nva != small:
            PyMem_Free(nva)
    return rv


cdef inline void _append(bytearray buf, const uint8_t *data, size_t n) except *:
    cdef Py_ssize_t old = PyByteArray_GET_SIZE(buf)
    PyByteArray_Resize(buf, old + <Py_ssize_t>n)
    memcpy(PyByteArray_AS_STRING(buf) + old, data, n)


cdef inline void _end_body(uint32_t *flags, list trailers, nghttp2_session *s, int32_t sid) except *:
    # Trailers are submitted from inside the read callback, with NO_END_STREAM on the last
    # DATA frame, as nghttp2's nghttp2_data_source_read_callback documents.
    if trailers:
        if _submit(SUBMIT_TRAILER, s, sid, trailers, NULL, NULL) == 0:
            flags[0] |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM
            return
    flags[0] |= NGHTTP2_DATA_FLAG_EOF


cdef ssize_t _read_request_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length,
                                uint32_t *flags, nghttp2_data_source *src, void *ud) noexcept:
    """Upstream session pulls the request body: copy out, credit the downstream sender."""
    cdef Exchange x = <Exchange>src.ptr
    cdef Py_ssize_t avail, n, pos
    try:
        if x.up is not <object>ud or x.up_sid != sid:
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE   # an abandoned attempt
        avail = PyByteArray_GET_SIZE(x.req_buf) - x.req_off
        if avail > 0:
            n = avail if <size_t>avail < length else <Py_ssize_t>length
            memcpy(buf, PyByteArray_AS_STRING(x.req_buf) + x.req_off, n)
            x.req_off += n
            x.active_ns = now_ns()
            pos = x.req_base + x.req_off
            if pos > x.req_credited:
                if x.down.session != NULL:
                    nghttp2_session_consume_stream(x.down.session, x.down_sid, pos - x.req_credited)
                    _mark(x.down)
                x.req_credited = pos
            if not x.replayable:
                del x.req_buf[:x.req_off]
                x.req_base += x.req_off
                x.req_off = 0
            if n == avail and x.req_eof:
                _end_body(flags, x.req_trailers, s, sid)
            return n
        if x.req_eof:
            _end_body(flags, x.req_trailers, s, sid)
            return 0
        return NGHTTP2_ERR_DEFERRED
    except BaseException:
        _log.exception("request body relay failed")
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE


cdef ssize_t _read_response_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length,
                                 uint32_t *flags, nghttp2_data_source *src, void *ud) noexcept:
    """Downstream session pulls the response body: copy out, credit the upstream sender."""
    cdef Exchange x = <Exchange>src.ptr
    cdef Py_ssize_t avail, n
    try:
        avail = PyByteArray_GET_SIZE(x.resp_buf)
        if avail > 0:
            n = avail if <size_t>avail < length else <Py_ssize_t>length
            memcpy(buf, PyByteArray_AS_STRING(x.resp_buf), n)
            del x.resp_buf[:n]
            x.active_ns = now_ns()
            x.head.bytes_sent += n
            if x.up is not None and x.up.session != NULL:
                nghttp2_session_consume_stream(x.up.session, x.up_sid, n)
                _mark(x.up)
            if n == avail and x.resp_eof:
                _end_body(flags, x.resp_trailers, s, sid)
            return n
        if x.resp_eof:
            _end_body(flags, x.resp_trailers, s, sid)
            return 0
        return NGHTTP2_ERR_DEFERRED
    except BaseException:
        _log.exception("response body relay failed")
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE


cdef str _reason_of(list flat):
    # The `x-meshd-reason` of a response head ([name, value, ...]; nghttp2 hands HTTP/2
    # names lowercase), read only on the retry path.
    cdef Py_ssize_t i
    for i in range(0, len(flat) - 1, 2):
        if flat[i] == b"x-meshd-reason":
            return (<bytes>flat[i + 1]).decode("latin-1")
    return ""


@cython.final
cdef class Exchange:
    """One proxied request: the downstream stream, the current upstream attempt, the buffers."""

    @staticmethod
    cdef Exchange new(Engine engine, ServerConn down, int32_t sid):
        cdef Exchange x = Exchange.__new__(Exchange)
        x.engine = engine
        x.down = down
        x.down_sid = sid
        x.head = RequestHead.new()
        x.head.local_port = down.local_port
        x.head.peer_cert = down.peer_cert
        x.head.remote_address = down.remote_address
        x.head.original_dst = down.original_dst
        x.req_buf = bytearray()
        x.resp_buf = bytearray()
        x.resp_head = []
        x.replayable = True
        x.resp_grpc = -1
        x.out_grpc = -1
        x.out_reason = ""
        x.start_ns = x.active_ns = now_ns()
        x.idle_ns = down.stream_idle_ns
        return x

    # -- routing ---------------------------------------------------------------------

    cdef void routed(self, object answer) except *:
        """Act on the routing hook's answer: forward to a Target or answer a Refusal."""
        cdef Target t
        cdef Refusal r
        cdef int64_t limit
        if type(answer) is Target:
            t = <Target>answer
            self.target = t
            if t.idle_ns >= 0:
                # The route's idle timeout wins over the listener's (Envoy: the route's
                # idle_timeout over the connection manager's stream_idle_timeout).
                self.idle_ns = t.idle_ns
                self.engine.note_idle(t.idle_ns)
            if self.head.attempt == 0 and self.timer is None:
                # The deadline is fixed once, by the smaller of the route timeout and the
                # caller's grpc-timeout; retries run inside it.
                limit = <int64_t>(t.timeout * 1e9) if t.timeout > 0 else 0
                if self.grpc_timeout_ns > 0 and (limit == 0 or self.grpc_timeout_ns < limit):
                    limit = self.grpc_timeout_ns
                if limit > 0:
                    self.arm_deadline(self.start_ns + limit)
            self.start_attempt()
            if self.head._mirror is not None:
                self.take_mirror()
        elif type(answer) is Refusal:
            r = <Refusal>answer
            self.respond(r.http_status, r.grpc_status if r.grpc_status >= 0 else _grpc_from_http(r.http_status),
                         r.message or r.reason, r.reason)
        elif type(answer) is Deferred:
            self.park(<Deferred>answer)
        else:
            _log.error("routing hook returned %r for %r", answer, self.head)
            self.respond_kind("route_error")

    cdef void arm_deadline(self, int64_t deadline_ns) except *:
        """End the request at deadline_ns (monotonic): 504 / DEADLINE_EXCEEDED, or a reset
        once the response has started (_on_timeout)."""
        if self.timer is not None:
            self.timer.cancel()
        self.deadline_ns = deadline_ns
        self.timer = self.engine.loop.call_later(max(0.0, (deadline_ns - now_ns()) / 1e9), self._on_timeout)

    # -- parked requests (the routing hook answered with a Deferred) --------------------
    # The stream waits with no upstream: request DATA collects in req_buf as usual, and
    # since only an upstream read credits the stream window (_read_request_body), the
    # client can send at most one stream window meanwhile. The stream idle timeout and the
    # caller's grpc-timeout run as for any stream; the route's timeout starts when the
    # answer comes. Whatever ends the stream first (a reset, a timeout, the client's
    # connection) clears `parked`, and the answer that comes later is dropped.

    cdef void park(self, Deferred d) except *:
        self.parked = True
        if d._done:
            self.resume(d._answer)      # answered inside the hook
            return
        if self.grpc_timeout_ns > 0 and self.timer is None:
            self.arm_deadline(self.start_ns + self.grpc_timeout_ns)
        d._then = self._deferred_answer

    def _deferred_answer(self, answer):
        self.resume(answer)
        _flush_dirty(self.engine)

    cdef void resume(self, object answer) except *:
        cdef int64_t end
        if not self.parked:
            return
        self.parked = False
        if type(answer) is Target and (<Target>answer).timeout > 0 and self.head.attempt == 0:
            # Envoy's router starts the route timeout when the request reaches it, after
            # the fault filter's delay: counted from now, within the caller's deadline.
            end = now_ns() + <int64_t>((<Target>answer).timeout * 1e9)
            if self.deadline_ns == 0 or end < self.deadline_ns:
                self.arm_deadline(end)
        self.routed(answer)

    # -- mirroring (head.mirror_to; see Mirror) ----------------------------------------
    # The original collects its own copy of the body as DATA arrives (mirror_data), beside
    # req_buf, which upstream reads consume: the copy costs memory up to max_body_bytes and
    # never flow-control credit, so it cannot slow the original. When the request has ended
    # (request_progress) the copy goes out as its own Exchange with no downstream, a
    # "shadow": the attempt machinery and pools are the original's, and the shadow's
    # branches in attempt_failed, on_response_head, on_up_closed, up_lost and _on_timeout
    # turn every ending into one Mirror.report.

    cdef void take_mirror(self) except *:
        """The request is forwarded: start its copy with the body that arrived meanwhile
        (all of it is still in req_buf: upstream reads begin after this)."""
        cdef Mirror m = self.head._mirror
        self.head._mirror = None
        if PyByteArray_GET_SIZE(self.req_buf) > m.max_body_bytes:
            m.report("too_large")
            return
        self.mirror = m
        self.mirror_body = bytearray(self.req_buf)
        self.request_progress()

    cdef void mirror_data(self, const uint8_t *data, size_t n) except *:
        if PyByteArray_GET_SIZE(self.mirror_body) + <Py_ssize_t>n > self.mirror.max_body_bytes:
            self.drop_mirror("too_large")
        else:
            _append(self.mirror_body, data, n)

    cdef void drop_mirror(self, str outcome) except *:
        """Abandon the copy (of a request refused, too large or left by its client)."""
        cdef Mirror m = self.mirror if self.mirror is not None else self.head._mirror
        self.mirror = self.head._mirror = None
        self.mirror_body = None
        if m is not None:
            m.report(outcome)

    @staticmethod
    cdef Exchange shadow_of(Exchange x, Mirror m, bytearray body):
        """The copy of x's request for m.target: x's head as it goes upstream (method, path,
        headers, the hook's set_header fields), the authority suffixed with -shadow as
        Envoy's shadows are, the whole body and trailers; sent at once on m.target's pool."""
        cdef Exchange s = Exchange.__new__(Exchange)
        cdef RequestHead o = x.head
        cdef RequestHead h = RequestHead.new()
        cdef Target t = m.target
        cdef bytes authority = o._up_authority if o._up_authority is not None else (
            t._authority if t._authority is not None else o._authority)
        h._method, h._scheme, h._raw, h.grpc = o._method, o._scheme, o._raw, o.grpc
        h._path = o._up_path if o._up_path is not None else o._path
        h._up_set = list(o._up_set) if o._up_set is not None else None
        h._up_authority = authority + b"-shadow"
        s.engine, s.head, s.target, s.mirror, s.shadow = x.engine, h, t, m, True
        s.req_buf = body
        s.req_trailers = x.req_trailers
        s.req_eof = s.replayable = True
        s.req_credited = PyByteArray_GET_SIZE(body)     # nothing to credit: no downstream
        s.resp_buf = bytearray()
        s.resp_head = []
        s.resp_grpc = s.out_grpc = -1
        s.out_reason = ""
        s.start_ns = s.active_ns = now_ns()
        if m.timeout > 0:
            s.arm_deadline(s.start_ns + <int64_t>(m.timeout * 1e9))
        x.engine.pool_for(t).acquire(s)
        return s

    cdef void shadow_end(self, str outcome) except *:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.mirror.report(outcome, self.resp_status if self.resp_head_done else 0)

    cdef void respond_kind(self, str kind) except *:
        http, grpc, reason = FAILURE_RESPONSES[kind]
        self.respond(http, grpc, reason, reason)

    cdef void start_attempt(self) except *:
        if self.down_closed:
            return
        self.cancel_try_timer()
        if self.head.backoff > 0:
            # A retry after the router's backoff (Envoy: fully jittered, 25 ms base, 250 ms
            # cap). The wait holds the per-try timer's slot, so whatever ends the request
            # meanwhile (client reset, overall timeout) cancels it with the same call.
            self.try_timer = self.engine.loop.call_later(self.head.backoff, self._after_backoff)
            self.head.backoff = 0
            return
        self.begin_attempt()

    def _after_backoff(self):
        self.try_timer = None
        if self.down_closed or self.resp_started:
            return
        self.begin_attempt()
        _flush_dirty(self.engine)

    cdef void begin_attempt(self) except *:
        if self.target.try_timeout > 0:
            self.try_timer = self.engine.loop.call_later(self.target.try_timeout, self._on_try_timeout)
        self.engine.pool_for(self.target).acquire(self)

    cdef void cancel_try_timer(self) except *:
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None

    def _on_try_timeout(self):
        # The attempt took longer than its per-try timeout before any response: cut it and
        # let the retry hook decide (Envoy's per_try_timeout, App Mesh perRetryTimeout).
        self.try_timer = None
        if self.down_closed or self.resp_started:
            return
        C.timeouts += 1
        self.abandon_up(NGHTTP2_CANCEL)
        self.attempt_failed(Failure.new("timeout", self.target, 0, 0, -1))
        _flush_dirty(self.engine)

    cdef void submit_upstream(self, ClientConn c) except *:
        """Open the upstream stream on a ready connection: headers now, body as it arrives."""
        cdef RequestHead h = self.head
        cdef Target t = self.target
        cdef list raw = h._raw
        cdef frozenset names = t._set_names
        cdef bytes strip = t._strip
        cdef bint rewrite_timeout = self.deadline_ns > 0 and h.grpc
        cdef nghttp2_data_provider prd
        cdef const nghttp2_data_provider *prdp = &prd
        cdef Py_ssize_t i
        cdef int32_t sid
        cdef list extra = h._up_set
        cdef list extra_names = extra[::2] if extra is not None else None
        cdef Py_ssize_t n_set = -1   # the first of the set_header fields in `flat`
        cdef list flat = [b":method", h._method,
                          b":scheme", b"https" if t.ssl is not None else b"http",
                          b":authority", h._up_authority if h._up_authority is not None else (
                              t._authority if t._authority is not None else h._authority),
                          b":path", h._up_path if h._up_path is not None else h._path]
        for i in range(0, len(raw), 2):
            k = raw[i]
            if names is not None and k in names:
                continue
            if strip is not None and (<bytes>k).startswith(strip):
                continue
            if extra_names is not None and k in extra_names:
                continue
            if rewrite_timeout and k == b"grpc-timeout":
                continue
            flat.append(k)
            flat.append(raw[i + 1])
        if rewrite_timeout:
            # Propagate the deadline reduced by the time already spent (gRPC over HTTP/2).
            flat.append(b"grpc-timeout")
            flat.append(_format_grpc_timeout(self.deadline_ns - now_ns()))
        if t._set:
            flat.extend(t._set)
        if extra is not None:
            n_set = len(flat) // 2
            flat.extend(extra)
        prd.source.ptr = <void *>self
        prd.read_callback = _read_request_body
        if self.req_eof and PyByteArray_GET_SIZE(self.req_buf) == 0 and not self.req_trailers:
            prdp = NULL     # END_STREAM on the HEADERS frame
        sid = _submit(SUBMIT_REQUEST, c.session, 0, flat, prdp, <void *>self, n_set)
        if sid < 0:
            # Stream ids exhausted or GOAWAY already received: this connection is done.
            _log.debug("submit_request on %r: %s", c, nghttp2_strerror(sid).decode())
            c.goaway = True
            self.up = None
            self.engine.pool_for(t).acquire(self)
            return
        self.up = c
        self.up_sid = sid
        c.streams[sid] = self
        _mark(c)

    # -- attempts and retries ---------------------------------------------------------

    cdef void abandon_up(self, uint32_t code) except *:
        """Detach the current attempt, resetting its stream with code (0 = already closed)."""
        cdef ClientConn c = self.up
        if c is None:
            return
        if self.up_sid > 0:
            if c.session != NULL:
                # What resp_buf drops needs no credit: the connection window had it on
                # arrival, and the stream is closed or reset here.
                nghttp2_session_set_stream_user_data(c.session, self.up_sid, NULL)
                if not self.up_closed and code:
                    nghttp2_submit_rst_stream(c.session, NGHTTP2_FLAG_NONE, self.up_sid, code)
                    C.resets_sent += 1
                _mark(c)
        else:
            try:
                c.waiting.remove(self)
            except ValueError:
                pass
        self.up = None
        self.up_sid = 0
        self.up_closed = False
        if not self.resp_started:
            self.resp_buf = bytearray()
            self.resp_head = []
            self.resp_trailers = None
            self.resp_status = 0
            self.resp_grpc = -1
            self.resp_head_done = False
            self.resp_eof = False

    cdef object ask_retry(self, Failure f):
        """Ask the retry hook, if a retry is still possible: nothing sent downstream, body replayable."""
        if (self.engine.retry_cb is None or not self.replayable or self.resp_started
                or self.down_closed):
            return None
        try:
            r = self.engine.retry_cb(self.head, f)
        except BaseException:
            _log.exception("retry hook failed for %r", self.head)
            return None
        if r is None or type(r) is Target or type(r) is Refusal:
            return r
        _log.error("retry hook returned %r", r)
        return None

    cdef void follow(self, object r) except *:
        self.head.attempt += 1
        if type(r) is Target:
            C.retries += 1
            self.req_off = 0     # replay the retained body from its start
        self.routed(r)

    cdef void attempt_failed(self, Failure f) except *:
        """The current attempt is gone before any response byte went downstream."""
        if self.shadow:
            self.shadow_end("failed")       # a copy is never retried
            return
        if self.down_closed or self.resp_started:
            return
        if (f.kind == "refused_stream" and self.engine.retry_cb is not None and not self.resent_refused
                and self.replayable):
            # RFC 9113 §8.7: a refused stream was not processed, so it is safe to send it
            # again. Once per request that is done before the retry hook is asked, as a gRPC
            # client's transparent retry (gRFC A6): a policy retrying only `unavailable` or
            # connection errors would otherwise fail the call on a lone refusal (a GOAWAY
            # racing the request). A second refusal is the hook's, as any failure.
            self.resent_refused = True
            self.follow(self.target)
            return
        r = self.ask_retry(f)
        if (r is None and self.engine.retry_cb is None and f.kind == "refused_stream"
                and self.head.attempt < 2 and self.replayable):
            # Without a retry hook the engine resends a refused stream itself, at most twice.
            r = self.target
        if r is not None:
            self.follow(r)
        else:
            self.respond_kind(f.kind)

    cdef void on_response_head(self, bint end_stream) except *:
        """Final response headers arrived upstream: maybe retry, else start the response."""
        cdef Target t = self.target
        cdef Failure f
        cdef nghttp2_data_provider prd
        if self.shadow:
            # The copy's answer has nowhere to go: from here its DATA is consumed on
            # arrival as for a stream whose client left (_cli_on_data); the stream's close
            # reports it.
            self.down_closed = True
            return
        if self.down_closed:
            self.abandon_up(NGHTTP2_CANCEL)
            return
        if ((t.retry_statuses is not None and self.resp_status in t.retry_statuses)
                or (t.retry_grpc is not None and self.resp_grpc >= 0 and self.resp_grpc in t.retry_grpc)):
            f = Failure.new("status", t, 0, self.resp_status, self.resp_grpc)
            f.reason = _reason_of(self.resp_head)
            r = self.ask_retry(f)
            if r is not None:
                self.abandon_up(NGHTTP2_CANCEL)
                self.follow(r)
                return
        self.resp_started = True
        self.head._resp_raw = self.resp_head
        self.resp_eof = end_stream
        self.out_status = self.resp_status
        self.cancel_try_timer()
        prd.source.ptr = <void *>self
        prd.read_callback = _read_response_body
        if _submit(SUBMIT_RESPONSE, self.down.session, self.down_sid, self.resp_head,
                   NULL if end_stream else &prd, NULL) != 0:
            self.abandon_up(NGHTTP2_CANCEL)
        _mark(self.down)

    cdef void respond(self, int http_status, int grpc_status, str message, str reason) except *:
        """Answer downstream without an upstream: trailers-only for gRPC, a bare status otherwise."""
        cdef list flat
        if self.down_closed:
            return
        if self.resp_started:
            self.down_reset(NGHTTP2_INTERNAL_ERROR)
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.cancel_try_timer()
        self.parked = False
        if self.head._mirror is not None:
            self.drop_mirror("cancelled")       # refused: nothing was forwarded to copy
        self.resp_started = True
        self.resp_eof = True
        self.out_status = 200 if self.head.grpc else http_status
        self.out_grpc = grpc_status if self.head.grpc else -1
        self.out_reason = reason
        if self.head.grpc:
            flat = [b":status", b"200", b"content-type", b"application/grpc",
                    b"grpc-status", str(grpc_status).encode(),
                    b"grpc-message", _pct_encode(message).encode(),
                    b"x-meshd-reason", reason.encode()]
        else:
            flat = [b":status", str(http_status).encode(), b"x-meshd-reason", reason.encode(),
                    b"content-length", b"0"]
        _submit(SUBMIT_RESPONSE, self.down.session, self.down_sid, flat, NULL, NULL)
        if not self.req_eof and not self.head.grpc:
            # RFC 9113 §8.1: after a complete response the server may stop the request
            # body with RST_STREAM(NO_ERROR). After: nghttp2 marks a stream closing as soon
            # as RST_STREAM is queued and then drops the response still queued before it,
            # so the reset waits for the response's END_STREAM (_srv_on_frame_send). gRPC
            # clients report that reset as INTERNAL even after the trailers, so for them the
            # rest of the body is just discarded.
            self.rst_after_response = True
        self.discard_req = True
        self.credit_rest()
        C.synthetic += 1
        _mark(self.down)

    cdef void credit_rest(self) except *:
        # Hand back the stream's credit for request bytes that will never be forwarded (the
        # connection's was given when they arrived).
        cdef Py_ssize_t total = self.req_base + PyByteArray_GET_SIZE(self.req_buf)
        if total > self.req_credited:
            if self.down.session != NULL:
                nghttp2_session_consume_stream(self.down.session, self.down_sid, total - self.req_credited)
                _mark(self.down)
            self.req_credited = total
        self.req_buf = bytearray()
        self.req_base = total
        self.req_off = 0

    cdef void down_reset(self, uint32_t code) except *:
        if self.down_closed or self.down.session == NULL:
            return
        nghttp2_submit_rst_stream(self.down.session, NGHTTP2_FLAG_NONE, self.down_sid, code)
        C.resets_sent += 1
        _mark(self.down)

    cdef void idle_expired(self, int64_t now) except *:
        """No byte of this stream moved either way for idle_ns: end it both sides.

        Envoy's stream idle timeout: before a response started, a local reply (408 while the
        request is still arriving, 504 once it has; FAILURE_RESPONSES), after it, a reset.
        The upstream stream is reset with CANCEL either way (RFC 9113 §8.1). If our own reply
        is stuck too (its stream window closed), the next expiry resets the stream.
        """
        C.idle_timeouts += 1
        self.active_ns = now
        self.abandon_up(NGHTTP2_CANCEL)
        if not self.resp_started:
            self.respond_kind("idle_timeout" if self.req_eof else "request_idle_timeout")
        else:
            self.out_reason = "stream_idle_timeout"
            self.down_reset(NGHTTP2_CANCEL)

    def _on_timeout(self):
        self.timer = None
        if self.shadow:
            status = self.resp_status if self.resp_head_done else 0
            self.abandon_up(NGHTTP2_CANCEL)
            self.mirror.report("timeout", status)
            _flush_dirty(self.engine)
            return
        if self.down_closed:
            return
        C.timeouts += 1
        self.cancel_try_timer()
        self.abandon_up(NGHTTP2_CANCEL)
        if not self.resp_started:
            self.respond_kind("timeout")
        else:
            self.down_reset(NGHTTP2_CANCEL)
        _flush_dirty(self.engine)

    # -- stream ends -------------------------------------------------------------------

    cdef void on_down_closed(self, uint32_t code) except *:
        """The downstream stream closed: normally, by a client reset, or with its connection."""
        if not self.completed and self.head_done:
            self.completed = True
            if self.out_reason == "" and self.out_grpc < 0:
                self.out_grpc = self.resp_grpc
            if (code != NGHTTP2_NO_ERROR or not self.resp_started) and self.out_reason == "":
                # A client's RST_STREAM, even with NO_ERROR, before any answer is its leaving.
                self.out_reason = "reset"
            if self.engine.complete_cb is not None:
                try:
                    self.engine.complete_cb(self.head, self.target, self.out_status, self.out_grpc,
                                            self.out_reason, now_ns() - self.start_ns)
                except BaseException:
                    _log.exception("completion hook failed for %r", self.head)
        self.down_closed = True
        self.parked = False
        if self.mirror is not None or self.head._mirror is not None:
            self.drop_mirror("cancelled")       # the request never ended: no whole copy
        C.active_streams -= 1
        self.cancel_try_timer()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if code != NGHTTP2_NO_ERROR or not self.resp_started:
            # Cancellation propagates upstream (RFC 9113 §8.1: RST_STREAM CANCEL).
            self.abandon_up(NGHTTP2_CANCEL)
            self.credit_rest()
        self.resp_buf = bytearray()

    cdef void on_up_closed(self, uint32_t code) except *:
        """The current upstream stream closed."""
        self.up_closed = True
        if self.shadow:
            self.up = None
            self.shadow_end("ok" if code == NGHTTP2_NO_ERROR and self.resp_head_done else "failed")
            return
        if code == NGHTTP2_NO_ERROR and self.resp_eof:
            return
        if not self.resp_started:
            self.abandon_up(0)
            self.attempt_failed(Failure.new(
                "refused_stream" if code == NGHTTP2_REFUSED_STREAM else "reset",
                self.target, code, 0, -1))
        elif not self.resp_eof:
            # Mid-response: the reset passes through with its code (cancellation both ways).
            self.down_reset(code if code != NGHTTP2_NO_ERROR else NGHTTP2_INTERNAL_ERROR)

    cdef void up_lost(self, str kind) except *:
        """The upstream connection died under this attempt."""
        self.up_closed = True
        if self.shadow:
            self.up = None
            self.shadow_end("failed")
            return
        if not self.resp_started:
            self.abandon_up(0)
            self.attempt_failed(Failure.new(kind, self.target, NGHTTP2_INTERNAL_ERROR, 0, -1))
        elif not self.resp_eof:
            self.down_reset(NGHTTP2_INTERNAL_ERROR)

    cdef void request_progress(self) except *:
        # New request bytes or the end of the request: wake the deferred upstream DATA, and
        # send the mirror's copy once the request is whole.
        cdef Mirror m
        if self.up is not None and self.up_sid > 0 and self.up.session != NULL:
            nghttp2_session_resume_data(self.up.session, self.up_sid)
            _mark(self.up)
        if self.mirror is not None and self.req_eof:
            m, self.mirror = self.mirror, None
            body, self.mirror_body = self.mirror_body, None
            Exchange.shadow_of(self, m, body)

    cdef void response_progress(self) except *:
        if self.resp_started and not self.down_closed and self.down.session != NULL:
            nghttp2_session_resume_data(self.down.session, self.down_sid)
            _mark(self.down)
