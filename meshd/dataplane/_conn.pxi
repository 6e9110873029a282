# nghttp2 sessions on asyncio transports: the downstream (server) and upstream (client) sides.
#
# Each connection feeds received bytes to nghttp2_session_mem_recv; nghttp2 calls the cdef
# callbacks below; they move bytes between Exchanges and mark connections dirty; at the end of
# the loop callback _flush_dirty(engine) serialises every dirty session with nghttp2_session_mem_send
# into one transport.write per connection. No codec work happens in Python.

cdef inline Exchange _stream_exchange(nghttp2_session *s, int32_t sid):
    cdef void *p = nghttp2_session_get_stream_user_data(s, sid)
    return <Exchange>p if p != NULL else None


# -- downstream (server) callbacks -------------------------------------------------------

cdef int _srv_on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *ud) noexcept:
    cdef ServerConn conn = <ServerConn>ud
    cdef Exchange x
    if frame.hd.type != NGHTTP2_HEADERS or frame.headers.cat != NGHTTP2_HCAT_REQUEST:
        return 0
    try:
        x = Exchange.new(conn.engine, conn, frame.hd.stream_id)
        conn.streams[frame.hd.stream_id] = x
        nghttp2_session_set_stream_user_data(s, frame.hd.stream_id, <void *>x)
        C.active_streams += 1
        if not conn.partial:
            conn.partial = True
            conn.partial_since_ns = now_ns()
        return 0
    except BaseException:
        _log.exception("begin headers")
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _srv_on_header(nghttp2_session *s, const nghttp2_frame *frame,
                        const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen,
                        uint8_t flags, void *ud) noexcept:
    cdef Exchange x = _stream_exchange(s, frame.hd.stream_id)
    cdef RequestHead h
    if x is None:
        return 0
    try:
        # SETTINGS_MAX_HEADER_LIST_SIZE accounting (RFC 9113 §6.5.2: name + value + 32).
        x.hdr_bytes += namelen + valuelen + 32
        if x.hdr_bytes > x.engine.max_header_list:
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE   # nghttp2 resets the stream
        h = x.head
        if frame.headers.cat == NGHTTP2_HCAT_REQUEST:
            if namelen and name[0] == b':':
                if namelen == 7 and memcmp(name, b":method", 7) == 0:
                    h._method = PyBytes_FromStringAndSize(<char *>value, valuelen)
                elif namelen == 5 and memcmp(name, b":path", 5) == 0:
                    h._path = PyBytes_FromStringAndSize(<char *>value, valuelen)
                elif namelen == 10 and memcmp(name, b":authority", 10) == 0:
                    h._authority = PyBytes_FromStringAndSize(<char *>value, valuelen)
                elif namelen == 7 and memcmp(name, b":scheme", 7) == 0:
                    h._scheme = PyBytes_FromStringAndSize(<char *>value, valuelen)
                elif namelen == 9 and memcmp(name, b":protocol", 9) == 0:
                    h._protocol = PyBytes_FromStringAndSize(<char *>value, valuelen)
                return 0
            if namelen == 12:
                if memcmp(name, b"content-type", 12) == 0:
                    if valuelen >= 16 and memcmp(value, b"application/grpc", 16) == 0:
                        h.grpc = True
                elif memcmp(name, b"grpc-timeout", 12) == 0:
                    x.grpc_timeout_ns = _parse_grpc_timeout(value, valuelen)
            h._raw.append(PyBytes_FromStringAndSize(<char *>name, namelen))
            h._raw.append(PyBytes_FromStringAndSize(<char *>value, valuelen))
        else:
            if x.req_trailers is None:
                x.req_trailers = []
            x.req_trailers.append(PyBytes_FromStringAndSize(<char *>name, namelen))
            x.req_trailers.append(PyBytes_FromStringAndSize(<char *>value, valuelen))
        return 0
    except BaseException:
        _log.exception("request header")
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE


cdef void _route(Exchange x) except *:
    """The one Python crossing per request: ask the routing hook where this request goes."""
    cdef RequestHead h = x.head
    cdef Py_ssize_t i
    if not h._authority:
        # RFC 9113 §8.3.1: a request may carry Host instead of :authority.
        for i in range(0, len(h._raw), 2):
            if h._raw[i] == b"host":
                h._authority = h._raw[i + 1]
                break
    try:
        answer = x.engine.decide_cb(h)
    except BaseException:
        _log.exception("routing hook failed for %r", h)
        answer = None
    x.routed(answer)


cdef int _srv_on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud) noexcept:
    cdef ServerConn conn = <ServerConn>ud
    cdef Exchange x
    cdef uint8_t t = frame.hd.type
    try:
        if t == NGHTTP2_DATA:
            if frame.hd.flags & NGHTTP2_FLAG_END_STREAM:
                x = _stream_exchange(s, frame.hd.stream_id)
                if x is not None:
                    x.req_eof = True
                    x.request_progress()
        elif t == NGHTTP2_HEADERS:
            x = _stream_exchange(s, frame.hd.stream_id)
            if x is None:
                return 0
            if frame.headers.cat == NGHTTP2_HCAT_REQUEST:
                conn.partial = False
                conn.last_active_ns = x.start_ns
                C.requests += 1
                x.head_done = True
                if frame.hd.flags & NGHTTP2_FLAG_END_STREAM:
                    x.req_eof = True
                _route(x)
            else:
                x.req_eof = True     # trailers end the request (RFC 9113 §8.1)
                x.active_ns = conn.last_recv_ns
                x.request_progress()
        elif t == NGHTTP2_SETTINGS:
            conn.established = True
        elif t == NGHTTP2_RST_STREAM:
            C.resets_from_downstream += 1
        return 0
    except BaseException:
        _log.exception("downstream frame")
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _srv_on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *ud) noexcept:
    # Only our own complete responses to requests still arriving need this (Exchange.respond).
    cdef Exchange x
    if not (frame.hd.flags & NGHTTP2_FLAG_END_STREAM):
        return 0
    x = _stream_exchange(s, frame.hd.stream_id)
    if x is not None and x.rst_after_response:
        x.rst_after_response = False
        if not x.req_eof:
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame.hd.stream_id, NGHTTP2_NO_ERROR)
    return 0


cdef int _srv_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                      size_t n, void *ud) noexcept:
    cdef Exchange x = _stream_exchange(s, sid)
    try:
        if x is not None:
            x.head.bytes_received += n
            x.active_ns = (<ServerConn>ud).last_recv_ns     # feed() read the clock for us
            if x.mirror is not None:
                x.mirror_data(data, n)
        if x is None or x.discard_req or x.up_closed:
            nghttp2_session_consume(s, sid, n)    # nobody will forward it; keep windows open
            return 0
        _append(x.req_buf, data, n)
        # The connection window is credited now that the bytes are ours; the stream window
        # only when upstream took them (_read_request_body). See _exchange.pxi.
        nghttp2_session_consume_connection(s, n)
        if x.replayable and PyByteArray_GET_SIZE(x.req_buf) > x.engine.retry_buffer:
            x.replayable = False      # too big to keep for a retry; stream it from now on
        x.request_progress()
        return 0
    except BaseException:
        _log.exception("downstream data")
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _srv_on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud) noexcept:
    cdef ServerConn conn = <ServerConn>ud
    cdef Exchange x
    try:
        x = conn.streams.pop(sid, None)
        if x is not None:
            x.on_down_closed(code)
        return 0
    except BaseException:
        _log.exception("downstream close")
        return NGHTTP2_ERR_CALLBACK_FAILURE


# -- upstream (client) callbacks ---------------------------------------------------------

cdef int _cli_on_header(nghttp2_session *s, const nghttp2_frame *frame,
                        const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen,
                        uint8_t flags, void *ud) noexcept:
    cdef Exchange x = _stream_exchange(s, frame.hd.stream_id)
    cdef size_t i
    cdef int code
    cdef bytes strip
    if x is None:
        return 0
    try:
        strip = x.target._resp_strip
        if (strip is not None and namelen >= <size_t>len(strip)
                and memcmp(name, <const char *>strip, len(strip)) == 0):
            return 0  # the upstream's copy of a header only this proxy may set (nghttp2 lowercases names)
        if not x.resp_head_done:
            if namelen == 7 and memcmp(name, b":status", 7) == 0:
                code = 0
                for i in range(valuelen):
                    code = code * 10 + (value[i] - 48)
                x.resp_status = code
            elif namelen == 11 and memcmp(name, b"grpc-status", 11) == 0 and 0 < valuelen < 4:
                code = 0
                for i in range(valuelen):
                    code = code * 10 + (value[i] - 48)
                x.resp_grpc = code
            x.resp_head.append(PyBytes_FromStringAndSize(<char *>name, namelen))
            x.resp_head.append(PyBytes_FromStringAndSize(<char *>value, valuelen))
        else:
            if namelen == 11 and memcmp(name, b"grpc-status", 11) == 0 and 0 < valuelen < 4:
                code = 0
                for i in range(valuelen):
                    code = code * 10 + (value[i] - 48)
                x.resp_grpc = code
            if x.resp_trailers is None:
                x.resp_trailers = []
            x.resp_trailers.append(PyBytes_FromStringAndSize(<char *>name, namelen))
            x.resp_trailers.append(PyBytes_FromStringAndSize(<char *>value, valuelen))
        return 0
    except BaseException:
        _log.exception("response header")
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE


cdef int _cli_on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud) noexcept:
    cdef ClientConn conn = <ClientConn>ud
    cdef Exchange x
    cdef uint8_t t = frame.hd.type
    try:
        if t == NGHTTP2_DATA:
            if frame.hd.flags & NGHTTP2_FLAG_END_STREAM:
                x = _stream_exchange(s, frame.hd.stream_id)
                if x is not None:
                    x.resp_eof = True
                    x.response_progress()
        elif t == NGHTTP2_HEADERS:
            x = _stream_exchange(s, frame.hd.stream_id)
            if x is None:
                return 0
            if not x.resp_head_done:
                if 100 <= x.resp_status < 200:
                    # Informational responses are not relayed (RFC 9113 §8.1); wait for the final one.
                    x.resp_head = []
                    x.resp_status = 0
                    return 0
                x.resp_head_done = True
                x.active_ns = conn.last_recv_ns
                x.on_response_head(frame.hd.flags & NGHTTP2_FLAG_END_STREAM)
            else:
                x.resp_eof = True
                x.active_ns = conn.last_recv_ns
                x.response_progress()
        elif t == NGHTTP2_SETTINGS:
            if not (frame.hd.flags & NGHTTP2_FLAG_ACK) and not conn.ready:
                conn.peer_settings()
        elif t == NGHTTP2_GOAWAY:
            conn.goaway = True     # no new streams here; those above last_stream_id come back refused
            C.goaways_from_upstream += 1
        elif t == NGHTTP2_RST_STREAM:
            C.resets_from_upstream += 1
            if frame.rst_stream.error_code == NGHTTP2_REFUSED_STREAM:
                C.refused_from_upstream += 1
        return 0
    except BaseException:
        _log.exception("upstream frame")
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _cli_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                      size_t n, void *ud) noexcept:
    cdef Exchange x = _stream_exchange(s, sid)
    try:
        if x is None or x.down_closed:
            nghttp2_session_consume(s, sid, n)
            return 0
        x.active_ns = (<ClientConn>ud).last_recv_ns
        _append(x.resp_buf, data, n)
        nghttp2_session_consume_connection(s, n)    # the stream's credit waits for downstream
        x.response_progress()
        return 0
    except BaseException:
        _log.exception("upstream data")
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int _cli_on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud) noexcept:
    cdef ClientConn conn = <ClientConn>ud
    cdef Exchange x
    try:
        conn.last_active_ns = now_ns()
        x = conn.streams.pop(sid, None)
        if x is not None and x.up is conn and x.up_sid == sid:
            x.on_up_closed(code)
        return 0
    except BaseException:
        _log.exception("upstream close")
        return NGHTTP2_ERR_CALLBACK_FAILURE


# -- connections -----------------------------------------------------------------------

cdef class Conn:
    """An nghttp2 session bound to an asyncio transport (the protocol half shared by both sides)."""

    def __dealloc__(self):
        if self.session != NULL:
            nghttp2_session_del(self.session)
            self.session = NULL
        if self.wbuf != NULL:
            PyMem_Free(self.wbuf)
            self.wbuf = NULL

    cdef void feed(self, const uint8_t *data, size_t n) except *:
        cdef ssize_t rv
        if self.session == NULL:
            return
        C.bytes_in += n
        self.last_recv_ns = now_ns()
        rv = nghttp2_session_mem_recv(self.session, data, n)
        if rv < 0:
            # Bad preface, a protocol violation, a flood (NGHTTP2_ERR_FLOODED) or a callback
            # failure: nghttp2 has queued GOAWAY where it can; send it and close.
            C.protocol_errors += 1
            _log.debug("closing %r: %s", self, nghttp2_strerror(rv).decode())
            self.flush()
            self.close_now()
        else:
            _mark(self)

    cdef void flush(self) except *:
        cdef const uint8_t *p
        cdef ssize_t n
        cdef size_t cap
        cdef char *nb
        if self.session == NULL or self.transport is None or self.lost:
            return
        while not self.paused:
            n = nghttp2_session_mem_send(self.session, &p)
            if n < 0:
                _log.debug("send on %r: %s", self, nghttp2_strerror(n).decode())
                self.close_now()
                return
            if n == 0:
                break
            if self.wlen + n > self.wcap:
                cap = max(self.wcap * 2, self.wlen + n, 65536)
                nb = <char *>PyMem_Realloc(self.wbuf, cap)
                if nb == NULL:
                    raise MemoryError()
                self.wbuf, self.wcap = nb, cap
            memcpy(self.wbuf + self.wlen, p, n)
            self.wlen += n
            if self.wlen >= 262144:
                self.write_out()    # may pause us; the rest stays unserialised in nghttp2
        if self.wlen:
            self.write_out()
        if (not self.paused and nghttp2_session_want_read(self.session) == 0
                and nghttp2_session_want_write(self.session) == 0):
            self.close_now()        # both sides said GOAWAY and no stream is left

    cdef void write_out(self) except *:
        cdef bytes b = PyBytes_FromStringAndSize(self.wbuf, self.wlen)
        C.bytes_out += self.wlen
        self.wlen = 0
        if self.sslobj is None:
            self.transport.write(b)
        else:
            self.sslobj.write(b)
            self.transport.write(self.bio_out.read())

    cdef void close_now(self) except *:
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.close()

    # asyncio write flow control: while the transport's buffer is above its high-water mark we
    # stop serialising (DATA stays in our bounded buffers, unconsumed, so windows close) and stop
    # reading, so control-frame replies cannot pile up either.
    def pause_writing(self):
        self.paused = True
        if self.transport is not None:
            try:
                self.transport.pause_reading()
            except Exception:
                pass

    def resume_writing(self):
        self.paused = False
        if self.transport is not None and not self.closing:
            try:
                self.transport.resume_reading()
            except Exception:
                pass
        _mark(self)
        _flush_dirty(self.engine)

    def eof_received(self):
        return False


cdef void _submit_settings(nghttp2_session *s, Engine e, bint server) except *:
    cdef nghttp2_settings_entry iv[4]
    cdef size_t n = 0
    if server:
        iv[n].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        iv[n].value = e.max_concurrent
        n += 1
    else:
        iv[n].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH
        iv[n].value = 0
        n += 1
    iv[n].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
    iv[n].value = e.stream_window
    n += 1
    iv[n].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
    iv[n].value = e.max_header_list
    n += 1
    nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, n)
    # The connection window is not a setting (RFC 9113 §6.9.2); raise it with WINDOW_UPDATE.
    nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0, e.conn_window)


cdef inline const uint8_t *_bytes_ptr(object data, Py_ssize_t *n) except NULL:
    if type(data) is bytes:
        n[0] = PyBytes_GET_SIZE(data)
        return <const uint8_t *>PyBytes_AS_STRING(data)
    raise TypeError


@cython.final
cdef class ServerConn(Conn):
    """Downstream protocol: one client connection speaking HTTP/2 (h2c prior knowledge, or ALPN h2 under TLS)."""

    def __cinit__(self, Engine engine):
        self.engine = engine
        self.streams = {}
        self.stream_idle_ns = engine.stream_idle_ns

    def connection_made(self, transport):
        cdef Engine e = self.engine
        self.transport = transport
        if nghttp2_session_server_new2(&self.session, e.server_cbs, <void *>self, e.server_opt) != 0:
            raise MemoryError()
        _submit_settings(self.session, e, True)
        self.opened_ns = self.last_active_ns = now_ns()
        sockname = transport.get_extra_info("sockname")
        self.local_port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None
        peer = transport.get_extra_info("peername")
        self.remote_address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
        # Read once per connection, so the routing hook can authorize the caller's identity.
        ssl_object = transport.get_extra_info("ssl_object")
        self.peer_cert = ssl_object.getpeercert(True) if ssl_object is not None else None
        e.servers.add(self)
        C.downstream_conns += 1
        if e.draining:
            self.start_drain(True)
        _mark(self)
        _flush_dirty(self.engine)

    def data_received(self, data):
        cdef Py_ssize_t n
        if type(data) is not bytes:
            data = bytes(data)
        self.feed(_bytes_ptr(data, &n), n)
        _flush_dirty(self.engine)

    def connection_lost(self, exc):
        cdef nghttp2_session *s = self.session
        cdef Exchange x
        self.lost = True
        self.engine.servers.discard(self)
        streams, self.streams = self.streams, {}
        self.session = NULL    # nghttp2_session_del below runs no callbacks
        for x in streams.values():
            x.on_down_closed(NGHTTP2_CANCEL)
        if s != NULL:
            nghttp2_session_del(s)
        self.transport = None
        _flush_dirty(self.engine)

    cdef void start_drain(self, bint final) except *:
        # RFC 9113 §6.8: a GOAWAY with the maximum stream id first (nghttp2's shutdown notice),
        # then, a round trip later, one naming the last stream we will serve.
        if self.session == NULL:
            return
        if final:
            nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(self.session),
                                  NGHTTP2_NO_ERROR, NULL, 0)
        else:
            nghttp2_submit_shutdown_notice(self.session)
        _mark(self)

    def __repr__(self):
        return f"<ServerConn streams={len(self.streams)} lost={self.lost}>"


@cython.final
cdef class ClientConn(Conn):
    """Upstream protocol: one pooled HTTP/2 client connection, TLS through a memory BIO when asked."""

    def __cinit__(self, Pool pool):
        self.pool = pool
        self.engine = pool.engine
        self.streams = {}
        self.waiting = []

    cdef uint32_t capacity(self):
        cdef uint32_t m = self.engine.up_max_streams, r
        if self.ready and self.session != NULL:
            r = nghttp2_session_get_remote_settings(self.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
            if r < m:
                m = r
        return m

    def _factory(self):
        return self

    def connect(self):
        """Start connecting; queued exchanges are submitted once HTTP/2 is up."""
        cdef Target t = self.pool.target
        cdef Engine e = self.engine
        task = self.connect_task = e.loop.create_task(e.loop.create_connection(self._factory, t.host, t.port))
        task.add_done_callback(self._connected)
        if e.connect_timeout > 0:
            self.connect_timer = e.loop.call_later(e.connect_timeout, self._connect_timed_out)

    def _connected(self, task):
        self.connect_task = None
        if task.cancelled():
            self.connect_failed("cancelled")
        elif task.exception() is not None:
            self.connect_failed(repr(task.exception()))
        _flush_dirty(self.engine)

    def _connect_timed_out(self):
        self.connect_timer = None
        if self.ready or self.lost:
            return
        C.timeouts += 1
        self.connect_failed(f"not ready within {self.engine.connect_timeout:g} s")
        if self.connect_task is not None:
            self.connect_task.cancel()
        self.close_now()
        _flush_dirty(self.engine)

    cdef void stop_connect_timer(self) except *:
        if self.connect_timer is not None:
            self.connect_timer.cancel()
            self.connect_timer = None

    cdef void connect_failed(self, str why) except *:
        cdef Exchange x
        _log.debug("upstream %r: %s", self.pool.target, why)
        self.stop_connect_timer()
        if self.goaway and not self.waiting and self not in self.pool.conns:
            return      # already failed (a timeout, then the cancelled connect)
        C.upstream_connect_errors += 1
        self.goaway = True
        if self in self.pool.conns:
            self.pool.conns.remove(self)
        waiting, self.waiting = self.waiting, []
        for x in waiting:
            if x.up is self:
                x.up = None
                x.attempt_failed(Failure.new("connect_error", x.target, 0, 0, -1))

    def connection_made(self, transport):
        cdef Target t = self.pool.target
        self.transport = transport
        self.opened_ns = self.last_active_ns = self.last_recv_ns = now_ns()
        C.upstream_conns_opened += 1
        if t.ssl is not None:
            # TLS through memory BIOs rather than loop.create_connection(ssl=...), so that the
            # pool's saved SSLSession can be offered for resumption.
            self.bio_in = _ssl.MemoryBIO()
            self.bio_out = _ssl.MemoryBIO()
            self.sslobj = t.ssl.wrap_bio(self.bio_in, self.bio_out, server_side=False,
                                         server_hostname=t.server_hostname,
                                         session=self.pool.tls_session)
            self.tls_step()
        else:
            self.start_h2()
        _flush_dirty(self.engine)

    cdef void tls_step(self) except *:
        try:
            self.sslobj.do_handshake()
        except _ssl.SSLWantReadError:
            out = self.bio_out.read()
            if out:
                self.transport.write(out)
            return
        except Exception as exc:
            self.connect_failed(f"TLS handshake: {exc!r}")
            self.close_now()
            return
        out = self.bio_out.read()
        if out:
            self.transport.write(out)
        if self.sslobj.session_reused:
            C.tls_resumed += 1
        else:
            C.tls_full += 1
        alpn = self.sslobj.selected_alpn_protocol()
        if alpn is not None and alpn != "h2":
            self.connect_failed(f"ALPN chose {alpn!r}, not h2")
            self.close_now()
            return
        if self.sslobj.version() != "TLSv1.3":
            self.pool.tls_session = self.sslobj.session
            self.have_ticket = True
        self.start_h2()

    cdef void start_h2(self) except *:
        cdef Engine e = self.engine
        cdef Exchange x
        if nghttp2_session_client_new2(&self.session, e.client_cbs, <void *>self, e.client_opt) != 0:
            raise MemoryError()
        _submit_settings(self.session, e, False)
        _mark(self)

    cdef void peer_settings(self) except *:
        # Streams wait for the peer's first SETTINGS, so that its MAX_CONCURRENT_STREAMS is
        # known before we open any (RFC 9113 §6.5: until then the limit is unknown); the
        # overflow goes back to the pool, which opens another connection.
        cdef Exchange x
        self.ready = True
        self.stop_connect_timer()
        waiting, self.waiting = self.waiting, []
        for x in waiting:
            if x.up is not self or x.up_sid != 0 or x.down_closed:
                continue
            if <uint32_t>len(self.streams) < self.capacity():
                x.submit_upstream(self)
            else:
                x.up = None
                self.pool.acquire(x)

    def data_received(self, data):
        cdef Py_ssize_t n
        if self.sslobj is None:
            if type(data) is not bytes:
                data = bytes(data)
            self.feed(_bytes_ptr(data, &n), n)
            _flush_dirty(self.engine)
            return
        self.bio_in.write(data)
        if self.session == NULL:        # still in the TLS handshake
            self.tls_step()
            if self.session == NULL:
                _flush_dirty(self.engine)
                return
        while self.session != NULL:
            try:
                chunk = self.sslobj.read(262144)
            except _ssl.SSLWantReadError:
                break
            except _ssl.SSLError as exc:
                _log.debug("upstream TLS: %r", exc)
                self.close_now()
                break
            if not chunk:
                self.close_now()
                break
            self.feed(_bytes_ptr(chunk, &n), n)
        if not self.have_ticket:
            # TLS 1.3 tickets arrive after the handshake; keep one for the next connection.
            s = self.sslobj.session
            if s is not None and s.has_ticket:
                self.pool.tls_session = s
                self.have_ticket = True
        out = self.bio_out.read()
        if out:
            self.transport.write(out)
        _flush_dirty(self.engine)

    def connection_lost(self, exc):
        cdef nghttp2_session *s = self.session
        cdef Exchange x
        self.lost = True
        if self in self.pool.conns:
            self.pool.conns.remove(self)
        streams, self.streams = self.streams, {}
        self.session = NULL
        kind = "goaway" if self.goaway else "reset"
        for sid, x in streams.items():
            if x.up is self and x.up_sid == sid:
                x.up_lost(kind)
        if s != NULL:
            nghttp2_session_del(s)
        if self.waiting:
            self.connect_failed(f"connection lost before HTTP/2 was up: {exc!r}")
        self.transport = None
        _flush_dirty(self.engine)

    def __repr__(self):
        return f"<ClientConn {self.pool.target!r} streams={len(self.streams)} ready={self.ready}>"
