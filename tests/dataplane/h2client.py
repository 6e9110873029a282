"""A small blocking HTTP/2 client and origin on the python-hyper `h2` codec, for tests that must
control flow control byte by byte (never reading, never crediting a stream)."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings


class Stream:
    """What one stream received: status, headers, body, trailers, and how it ended."""

    def __init__(self):
        self.headers = {}
        self.trailers = {}
        self.body = bytearray()
        self.ended = False
        self.reset = None           # the RST_STREAM error code, when reset

    @property
    def status(self):
        return int(self.headers.get(":status", "0"))

    @property
    def done(self):
        return self.ended or self.reset is not None


class H2Client:
    """One HTTP/2 connection over a blocking socket. Data is credited back (WINDOW_UPDATE) only
    for streams not in `hold`, so a test can stall chosen streams and keep the rest flowing."""

    def __init__(self, port, window=65535):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="latin-1"))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.conn.initiate_connection()
        self.streams: dict[int, Stream] = {}
        self.hold: set[int] = set()
        self.flush()

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def request(self, path, body=b"", headers=(), end=True, method="POST", grpc=False):
        """Open a stream; send as much of body as flow control allows now (the rest via send_more)."""
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", "test"), (":path", path)]
        if grpc:
            hdrs += [("content-type", "application/grpc"), ("te", "trailers")]
        hdrs += list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=end and not body)
        self.streams[sid] = Stream()
        self.streams[sid].pending = bytearray(body)
        self.streams[sid].end_after = end
        self.send_more(sid)
        return sid

    def send_more(self, sid):
        """Send what the windows allow of the stream's remaining body; True when all is sent."""
        st = self.streams[sid]
        while st.pending:
            n = min(len(st.pending), self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if n <= 0:
                break
            last = n == len(st.pending)
            self.conn.send_data(sid, bytes(st.pending[:n]), end_stream=last and st.end_after)
            del st.pending[:n]
        self.flush()
        return not st.pending

    def pump(self, until, timeout=10.0):
        """Read and answer frames until until() is true or timeout passes; returns until()."""
        end = time.monotonic() + timeout
        self.sock.settimeout(0.05)
        while not until():
            if time.monotonic() > end:
                return False
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            if not data:
                return until()
            self.feed(data)
        return True

    def feed(self, data):
        for ev in self.conn.receive_data(data):
            st = self.streams.get(getattr(ev, "stream_id", 0))
            if isinstance(ev, h2.events.ResponseReceived):
                st.headers.update(ev.headers)
            elif isinstance(ev, h2.events.TrailersReceived):
                st.trailers.update(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                st.body += ev.data
                if ev.stream_id not in self.hold:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                else:
                    # Credit the connection only, as a client that reads its socket but not this
                    # one stream would (its stream window closes, the connection keeps flowing).
                    self.conn.increment_flow_control_window(ev.flow_controlled_length)
            elif isinstance(ev, h2.events.StreamEnded):
                st.ended = True
            elif isinstance(ev, h2.events.StreamReset):
                if st is not None:
                    st.reset = ev.error_code
            elif isinstance(ev, h2.events.WindowUpdated):
                for sid, s in self.streams.items():
                    if getattr(s, "pending", None) and not s.done:
                        self.send_more(sid)
        self.flush()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class H2Origin:
    """An HTTP/2 origin on its own thread. With `refuse` set, that many of the next streams are
    refused (RST_STREAM REFUSED_STREAM, RFC 9113 §8.7: not processed). POST /stall* is
    accepted and never read: its stream window is never credited and it is never answered.
    Anything else is answered 200 with the request body's length once the request ends,
    `delay` seconds later. Every request is
    counted when its headers arrive (`opened`) and recorded whole when it ends (`requests`:
    (headers dict, body bytes))."""

    def __init__(self, delay=0.0):
        self.loop = asyncio.new_event_loop()
        self.delay = delay
        self.opened = 0
        self.requests = []
        self.stalled = 0            # /stall streams opened
        self.answered = 0
        self.resets = 0             # RST_STREAM frames received
        self.refuse = 0             # refuse this many of the next streams (RST_STREAM REFUSED_STREAM)
        self.refused = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _OriginProtocol(self), "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    def stop(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _OriginProtocol(asyncio.Protocol):
    def __init__(self, origin):
        self.origin = origin
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="latin-1"))
        self.paths = {}
        self.sizes = {}
        self.heads = {}
        self.bodies = {}

    def connection_made(self, transport):
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data):
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                path = dict(ev.headers)[":path"]
                self.origin.opened += 1
                if self.origin.refuse > 0:
                    self.origin.refuse -= 1
                    self.origin.refused += 1
                    self.conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                    continue
                self.paths[ev.stream_id] = path
                self.heads[ev.stream_id] = dict(ev.headers)
                self.bodies[ev.stream_id] = bytearray()
                self.sizes[ev.stream_id] = 0
                if path.startswith("/stall"):
                    self.origin.stalled += 1
            elif isinstance(ev, h2.events.DataReceived):
                self.sizes[ev.stream_id] = self.sizes.get(ev.stream_id, 0) + len(ev.data)
                self.bodies.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                if not self.paths.get(ev.stream_id, "").startswith("/stall"):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                else:
                    self.conn.increment_flow_control_window(ev.flow_controlled_length)
            elif isinstance(ev, h2.events.StreamEnded):
                self.origin.requests.append((self.heads.get(ev.stream_id, {}),
                                             bytes(self.bodies.get(ev.stream_id, b""))))
                if self.origin.delay > 0:
                    self.origin.loop.call_later(self.origin.delay, self._answer, ev.stream_id)
                else:
                    self._answer(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.origin.resets += 1
        self._flush()

    def _flush(self):
        out = self.conn.data_to_send()
        if out and not self.transport.is_closing():
            self.transport.write(out)

    def _answer(self, sid):
        if self.paths.get(sid, "").startswith("/stall"):
            return
        if self.conn.state_machine.state == h2.connection.ConnectionState.CLOSED:
            return
        try:
            self._send_answer(sid)
        except h2.exceptions.StreamClosedError:
            return              # the relay gave up on it meanwhile (a reset)
        self._flush()

    def _send_answer(self, sid):
        body = b"%d" % self.sizes.get(sid, 0)
        self.conn.send_headers(sid, [(":status", "200"), ("content-length", str(len(body)))])
        self.conn.send_data(sid, body, end_stream=True)
        self.origin.answered += 1
