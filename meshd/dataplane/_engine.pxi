# The Engine: configuration, nghttp2 callback tables, upstream pools, listeners, sweeper, drain.

@cython.final
cdef class Pool:
    """HTTP/2 client connections to one upstream key, multiplexing streams up to the peer's limit."""

    def __cinit__(self, Engine engine, Target target):
        self.engine = engine
        self.target = target
        self.conns = []

    cdef void acquire(self, Exchange x) except *:
        cdef ClientConn c
        for c in self.conns:
            # SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §5.1.2): open another connection
            # rather than queue behind a full one.
            if not c.goaway and not c.closing and <uint32_t>(len(c.streams) + len(c.waiting)) < c.capacity():
                x.up = c
                if c.ready:
                    x.submit_upstream(c)
                else:
                    c.waiting.append(x)
                return
        c = ClientConn(self)
        self.conns.append(c)
        x.up = c
        c.waiting.append(x)
        c.connect()

    @property
    def connections(self):
        """Open connections as a list of (active streams, ready) pairs."""
        cdef ClientConn c
        return [(len(c.streams), c.ready) for c in self.conns]

    @property
    def has_tls_session(self):
        return self.tls_session is not None


@cython.final
cdef class Engine:
    """The HTTP/2 forwarding engine: listeners call decide(head) once per request and relay to pools.

    decide(head: RequestHead) -> Target | Refusal | Deferred, called exactly once per request
    when its headers are complete; a Deferred parks the stream until it resolves (see
    Exchange.park in _exchange.pxi). retry(head, failure: Failure) -> Target | Refusal | None, called only
    when an attempt failed before any response byte went downstream and the request body
    (at most retry_buffer bytes) is still held; None gives up with the default response.
    Both run on the event loop and must not block.

    Timeouts, in seconds (0 turns one off):
      header_timeout: a connection's preface and each request's header block must arrive
        within it (slowloris); idle_timeout: a downstream connection with no open stream
        for this long is sent GOAWAY (Envoy's HTTP idle_timeout); upstream_idle_timeout:
        the same for pooled upstream connections; connect_timeout, ping_interval,
        ping_timeout: see below.
      stream_idle_timeout: a stream with no byte moving in either direction for this long
        is ended, as Envoy's stream idle timeout: answered 408 (request still arriving) or
        504 (request received, no response yet), or reset both ways once the response has
        started. App Mesh's listener `timeout.{http2,grpc}.idle`, 300 s by default. A
        listener may set its own (listen(stream_idle_timeout=)); a route's Target.idle_timeout
        wins over both. One sweeper per engine checks every stream's last activity, so the
        cost per byte is one stored clock reading and expiry is up to a quarter of the
        shortest timeout late (at most 1 s).
    """

    def __cinit__(self, *args, **kwargs):
        nghttp2_session_callbacks_new(&self.server_cbs)
        nghttp2_session_callbacks_set_on_begin_headers_callback(self.server_cbs, _srv_on_begin_headers)
        nghttp2_session_callbacks_set_on_header_callback(self.server_cbs, _srv_on_header)
        nghttp2_session_callbacks_set_on_frame_recv_callback(self.server_cbs, _srv_on_frame_recv)
        nghttp2_session_callbacks_set_on_frame_send_callback(self.server_cbs, _srv_on_frame_send)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(self.server_cbs, _srv_on_data)
        nghttp2_session_callbacks_set_on_stream_close_callback(self.server_cbs, _srv_on_close)
        nghttp2_session_callbacks_new(&self.client_cbs)
        nghttp2_session_callbacks_set_on_header_callback(self.client_cbs, _cli_on_header)
        nghttp2_session_callbacks_set_on_frame_recv_callback(self.client_cbs, _cli_on_frame_recv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(self.client_cbs, _cli_on_data)
        nghttp2_session_callbacks_set_on_stream_close_callback(self.client_cbs, _cli_on_close)
        nghttp2_option_new(&self.server_opt)
        nghttp2_option_new(&self.client_opt)

    def __init__(self, decide, retry=None, *, loop=None, int max_concurrent_streams=256,
                 int stream_window=1 << 20, int connection_window=16 << 20,
                 int max_header_list=65536, double header_timeout=10.0, double idle_timeout=300.0,
                 double upstream_idle_timeout=60.0, int upstream_max_streams=100,
                 int retry_buffer=65536, complete=None, double connect_timeout=5.0,
                 double ping_interval=0.0, double ping_timeout=2.0, double stream_idle_timeout=300.0):
        self.decide_cb = decide
        self.retry_cb = retry
        # complete(head, target, http_status, grpc_status, reason, duration_ns): once per
        # request when its downstream stream closes; target is None for a refusal, reason is
        # "" when the response came from upstream. It feeds outlier detection and metrics.
        self.complete_cb = complete
        self.loop = loop
        self.pools = {}
        self.servers = set()
        self.dirty = []
        self.listeners = []
        self.max_concurrent = max_concurrent_streams
        self.up_max_streams = upstream_max_streams
        # stream_window (SETTINGS_INITIAL_WINDOW_SIZE, both sides) is the per-stream buffer
        # bound: what one stalled reader can make the relay hold (Envoy's per-stream buffer
        # limit). connection_window is the receive window of each connection, credited as soon
        # as bytes are buffered, so it bounds bytes in flight, not memory: large, so that many
        # busy streams are not throttled by it (see _exchange.pxi).
        self.stream_window = stream_window
        self.conn_window = max(connection_window, stream_window)
        self.max_header_list = max_header_list
        self.header_timeout_ns = <int64_t>(header_timeout * 1e9)
        self.idle_timeout_ns = <int64_t>(idle_timeout * 1e9)
        self.min_idle_ns = 0
        self.stream_idle_ns = <int64_t>(max(0.0, stream_idle_timeout) * 1e9)
        self.note_idle(self.stream_idle_ns)
        self.up_idle_ns = <int64_t>(upstream_idle_timeout * 1e9)
        # An upstream that does not become usable (TCP connect, TLS, the peer's first
        # SETTINGS) within this fails its waiting requests with connect_error, which the
        # retry hook may send elsewhere; without it a blackholed host holds them until
        # the request timeout (Envoy: cluster connect_timeout, 5 s by default).
        self.connect_timeout = connect_timeout
        # Liveness of pooled upstream connections with requests in flight: after
        # ping_interval without a byte from the peer, send PING (RFC 9113 §6.7); no byte
        # within ping_timeout closes the connection, failing its streams as resets, which
        # the retry hook may send elsewhere (Envoy's connection_keepalive). 0: off.
        self.ping_interval_ns = <int64_t>(ping_interval * 1e9)
        self.ping_timeout_ns = <int64_t>(ping_timeout * 1e9)
        self.retry_buffer = retry_buffer
        # Manual flow control: credit a DATA byte only when the other side took it (see
        # _exchange.pxi). Flood limits: nghttp2 answers NGHTTP2_ERR_FLOODED when too many
        # SETTINGS/PING ACKs queue up unsent; oversize SETTINGS frames are rejected.
        for opt in (0, 1):
            o = self.server_opt if opt == 0 else self.client_opt
            nghttp2_option_set_no_auto_window_update(o, 1)
            nghttp2_option_set_no_closed_streams(o, 1)
            nghttp2_option_set_max_outbound_ack(o, 1000)
            nghttp2_option_set_max_settings(o, 32)
            nghttp2_option_set_max_deflate_dynamic_table_size(o, 4096)
        nghttp2_option_set_peer_max_concurrent_streams(self.client_opt, upstream_max_streams)
        nghttp2_option_set_max_reserved_remote_streams(self.client_opt, 0)

    def __dealloc__(self):
        if self.server_cbs != NULL:
            nghttp2_session_callbacks_del(self.server_cbs)
        if self.client_cbs != NULL:
            nghttp2_session_callbacks_del(self.client_cbs)
        if self.server_opt != NULL:
            nghttp2_option_del(self.server_opt)
        if self.client_opt != NULL:
            nghttp2_option_del(self.client_opt)

    cdef Pool pool_for(self, Target t):
        p = self.pools.get(t.key)
        if p is None:
            p = Pool(self, t)
            self.pools[t.key] = p
        return <Pool>p

    cdef void note_idle(self, int64_t idle_ns) noexcept:
        if idle_ns > 0 and (self.min_idle_ns == 0 or idle_ns < self.min_idle_ns):
            self.min_idle_ns = idle_ns

    def protocol_factory(self):
        """A downstream protocol for loop.create_server(engine.protocol_factory, ..., ssl=ctx)."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if self.sweeper is None and not self.closed:
            self._sweep()
        return ServerConn(self)

    def listener_factory(self, stream_idle_timeout=None):
        """protocol_factory for a listener with its own stream_idle_timeout (None: the engine's)."""
        cdef int64_t idle_ns
        if stream_idle_timeout is None:
            return self.protocol_factory
        idle_ns = <int64_t>(max(0.0, float(stream_idle_timeout)) * 1e9)
        self.note_idle(idle_ns)

        def factory():
            cdef ServerConn c = <ServerConn>self.protocol_factory()
            c.stream_idle_ns = idle_ns
            return c
        return factory

    async def listen(self, host="127.0.0.1", int port=0, ssl=None, *, stream_idle_timeout=None, **kwargs):
        """Start an HTTP/2 listener (ALPN h2 when ssl is an SSLContext); returns the asyncio Server.

        stream_idle_timeout: this listener's stream idle timeout in seconds (App Mesh's
        listener `timeout.{http2,grpc}.idle`); None keeps the engine's."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        server = await self.loop.create_server(self.listener_factory(stream_idle_timeout), host, port,
                                               ssl=ssl, **kwargs)
        self.listeners.append(server)
        if self.sweeper is None:
            self._sweep()
        return server

    def _sweep(self):
        """Once per period: close slow (slowloris) and idle downstream connections, end idle
        streams, expire idle upstreams."""
        cdef int64_t now = now_ns()
        cdef ServerConn s
        cdef ClientConn c
        cdef Pool p
        period = max(0.05, min(1.0, self.header_timeout_ns / 4e9, self.up_idle_ns / 4e9,
                               (self.ping_interval_ns or self.up_idle_ns) / 4e9,
                               (self.min_idle_ns or self.up_idle_ns) / 4e9))
        self.sweeper = self.loop.call_later(period, self._sweep)
        for s in list(self.servers):
            if s.closing:
                continue
            if s.streams:
                self.check_idle(s, now)
            if ((not s.established and now - s.opened_ns > self.header_timeout_ns)
                    or (s.partial and now - s.partial_since_ns > self.header_timeout_ns)):
                C.slow_closed += 1
                s.close_now()
            elif not s.streams and now - s.last_active_ns > self.idle_timeout_ns:
                s.start_drain(True)
        for p in list(self.pools.values()):
            for c in list(p.conns):
                if self.ping_interval_ns > 0 and c.ready and c.streams and c.session != NULL:
                    self.check_alive(c, now)
                if (c.ready and not c.streams and not c.waiting
                        and now - c.last_active_ns > self.up_idle_ns):
                    c.goaway = True
                    p.conns.remove(c)
                    if c.session != NULL:
                        nghttp2_submit_goaway(c.session, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0)
                        _mark(c)
                    c.close_now()
        _flush_dirty(self)

    cdef void check_idle(self, ServerConn s, int64_t now) except *:
        # A scan of the connection's streams per sweep, instead of a timer per stream re-armed
        # on every frame (Envoy's resetIdleTimer): no timer work on the per-frame path.
        cdef Exchange x
        cdef list expired = None
        for x in s.streams.values():
            if x.idle_ns > 0 and x.head_done and not x.down_closed and now - x.active_ns > x.idle_ns:
                if expired is None:
                    expired = []
                expired.append(x)
        if expired is not None:
            for x in expired:
                x.idle_expired(now)

    cdef void check_alive(self, ClientConn c, int64_t now) except *:
        if c.ping_sent_ns and c.last_recv_ns >= c.ping_sent_ns:
            c.ping_sent_ns = 0              # the peer spoke since: alive
        if c.ping_sent_ns:
            if now - c.ping_sent_ns > self.ping_timeout_ns:
                _log.debug("upstream %r: no answer to PING; closing", c)
                C.ping_timeouts += 1
                if c in c.pool.conns:
                    c.pool.conns.remove(c)
                if c.transport is not None:
                    c.transport.abort()     # a silent peer would never take the buffered bytes
        elif now - c.last_recv_ns > self.ping_interval_ns:
            if nghttp2_submit_ping(c.session, NGHTTP2_FLAG_NONE, NULL) == 0:
                c.ping_sent_ns = now
                _mark(c)

    async def drain(self, double grace=5.0):
        """Stop accepting, GOAWAY every client, let in-flight streams finish within grace seconds.

        Returns the number of streams still open when the grace ran out (they are cut).
        """
        cdef ServerConn s
        self.draining = True
        for server in self.listeners:
            server.close()
        for s in list(self.servers):
            s.start_drain(False)
        _flush_dirty(self)
        await asyncio.sleep(min(0.05, grace))
        for s in list(self.servers):
            s.start_drain(True)
        _flush_dirty(self)
        end = self.loop.time() + grace
        while self.loop.time() < end and any((<ServerConn>s).streams for s in self.servers):
            await asyncio.sleep(0.01)
        left = sum(len((<ServerConn>s).streams) for s in self.servers)
        for s in list(self.servers):
            s.close_now()
        return left

    def close(self):
        """Close listeners and every connection at once (no drain)."""
        cdef ServerConn s
        cdef ClientConn c
        cdef Pool p
        self.closed = True
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for server in self.listeners:
            server.close()
        for s in list(self.servers):
            s.close_now()
        for p in self.pools.values():
            for c in list(p.conns):
                c.close_now()
        self.pools.clear()

    def upstream_connections(self):
        """{pool key: [(active streams, ready), ...]} for every upstream pool."""
        return {k: (<Pool>p).connections for k, p in self.pools.items()}

    def pool(self, Target target):
        """The upstream pool for target's key (for inspection), or None."""
        return self.pools.get(target.key)

    @property
    def downstream_connections(self):
        """Downstream connections currently open."""
        return len(self.servers)

    @property
    def buffered_bytes(self):
        """Body bytes the relay holds in its stream buffers, both directions, all connections.

        Each stream holds at most stream_window bytes of response body, and at most
        stream_window + retry_buffer of request body (the retained copy for a retry), plus
        a mirrored request's copy (up to its max_body_bytes)."""
        cdef ServerConn s
        cdef Exchange x
        cdef Py_ssize_t n = 0
        for s in self.servers:
            for x in s.streams.values():
                n += PyByteArray_GET_SIZE(x.req_buf) + PyByteArray_GET_SIZE(x.resp_buf)
                if x.mirror_body is not None:
                    n += PyByteArray_GET_SIZE(x.mirror_body)
        return n

    @property
    def open_streams(self):
        """Downstream streams currently open across all connections."""
        return sum(len((<ServerConn>s).streams) for s in self.servers)
