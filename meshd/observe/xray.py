"""AWS X-Ray segments for requests through meshd, as App Mesh's Envoy sent them with
ENABLE_ENVOY_XRAY_TRACING: one segment document per sampled request, over UDP to the X-Ray
daemon (127.0.0.1:2000; XRAY_DAEMON_PORT, or AWS_XRAY_DAEMON_ADDRESS).

Propagation: the `X-Amzn-Trace-Id` header (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;
Sampled=<0|1|?>`) is continued when a caller sent it, else a W3C `traceparent` (its trace id
is the X-Ray trace id written as X-Ray writes it), else a new trace starts, sampled at the
configured rate (XRAY_SAMPLING_RATE, App Mesh's default 0.05). The next hop gets both
headers, naming meshd's segment as the parent, so X-Ray and OpenTelemetry tooling see one
trace. `Sampled=?` (the caller left the decision) is decided here.

The segment document (the X-Ray "segment documents" format, as aws-xray-sdk's UDP emitter
sends it: a `{"format": "json", "version": 1}` line, then the document):
name (XRAY_SEGMENT_NAME, default `<mesh>/<node>`), id, trace_id, parent_id (when the caller
named one), start_time and end_time (epoch seconds), origin `AWS::AppMesh::Proxy`,
http.request (method, url) and http.response (status), error (4xx) / throttle (429) /
fault (5xx, or no response), and annotations meshd knows (direction, route, target node).

The request path appends one tuple to a bounded queue; a thread sends the datagrams.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import threading
import time
from collections import deque

from meshd.observe.tracing import parse_parent

log = logging.getLogger("meshd.observe.xray")

HEADER = "x-amzn-trace-id"
DAEMON_HEADER = b'{"format": "json", "version": 1}\n'
ORIGIN = "AWS::AppMesh::Proxy"
DEFAULT_RATE = 0.05
_ROOT = re.compile(r"1-[0-9a-f]{8}-[0-9a-f]{24}")
_ID = re.compile(r"[0-9a-f]{16}")


def parse_header(value: str) -> tuple[str, str, bool | None] | None:
    """(root, parent or "", sampled: True/False/None for "?") of an X-Amzn-Trace-Id, or None
    when it names no valid root."""
    fields = {}
    for part in value.split(";"):
        k, _, v = part.strip().partition("=")
        fields[k.strip().lower()] = v.strip()
    root = fields.get("root", "").lower()
    if not _ROOT.fullmatch(root):
        return None
    parent = fields.get("parent", "").lower()
    if parent and not _ID.fullmatch(parent):
        parent = ""
    sampled = {"1": True, "0": False}.get(fields.get("sampled", "?"))
    return root, parent, sampled


def daemon_address(env) -> tuple[str, int]:
    """Where the X-Ray daemon listens: AWS_XRAY_DAEMON_ADDRESS (HOST:PORT, or udp:HOST:PORT
    tcp:... pairs as the SDKs take it), else 127.0.0.1:XRAY_DAEMON_PORT (2000)."""
    spec = env.get("AWS_XRAY_DAEMON_ADDRESS", "").strip()
    if spec:
        for part in spec.split():
            if part.startswith("udp:") or ":" in part and not part.startswith("tcp:"):
                host, _, port = part.removeprefix("udp:").rpartition(":")
                return host or "127.0.0.1", int(port)
    return "127.0.0.1", int(env.get("XRAY_DAEMON_PORT", "2000") or 2000)


class XRayTracer:
    """The Observer's tracer interface (begin/end/close), writing X-Ray segments."""

    def __init__(self, *, segment_name: str, mesh: str, node: str, address: tuple[str, int],
                 rate: float = DEFAULT_RATE, max_queue: int = 2048, on_drop=lambda n: None):
        self.segment_name = segment_name
        self.mesh, self.node = mesh, node
        self.rate = rate
        self.max_queue = max_queue
        self._on_drop = on_drop
        self._rng = random.Random(os.urandom(16))
        self._records: deque = deque()
        self._wake = threading.Event()
        self._stopping = False
        info = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_DGRAM)[0]
        self._sock = socket.socket(info[0], socket.SOCK_DGRAM)
        self._dest = info[4]
        self.sent = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="xray-export", daemon=True)
        self._thread.start()

    # -- per request ---------------------------------------------------------------------
    def begin(self, head, direction: str):
        """Continue or start the trace, tell the next hop; (root, id, parent, start) when sampled."""
        got = head.header(HEADER)
        parsed = parse_header(got) if got else None
        if parsed is None:
            w3c = parse_parent(head.header)
            if w3c is not None:
                tid, parent, sampled = w3c
                parsed = (f"1-{tid[:8]}-{tid[8:]}", parent, sampled)
        rng = self._rng
        if parsed is None:
            root = f"1-{int(time.time()):08x}-{rng.getrandbits(96):024x}"
            parent, sampled = "", None
        else:
            root, parent, sampled = parsed
        if sampled is None:
            sampled = rng.random() < self.rate
        seg = f"{rng.getrandbits(64) or 1:016x}"
        head.set_header(HEADER, f"Root={root};Parent={seg};Sampled={1 if sampled else 0}")
        head.set_header("traceparent", f"00-{root[2:10]}{root[11:]}-{seg}-{'01' if sampled else '00'}")
        return (root, seg, parent, direction) if sampled else None

    def end(self, x, head, target, status: int, grpc_status: int, reason: str, duration_ns: int) -> None:
        if len(self._records) >= self.max_queue:
            self._on_drop(1)
            return
        end = time.time()
        self._records.append((x.trace, end - duration_ns / 1e9, end, head.method, head.scheme, head.authority,
                              head.path, status, grpc_status, reason, x.series.labels[4] if x.series else "",
                              x.target_node))
        if len(self._records) >= 64 and not self._wake.is_set():
            self._wake.set()

    # -- the sending thread -----------------------------------------------------------------
    def document(self, rec) -> dict:
        (root, seg, parent, direction), start, end, method, scheme, authority, path, status, grpc_status, \
            reason, route, target = rec
        doc = {"name": self.segment_name, "id": seg, "trace_id": root, "start_time": round(start, 6),
               "end_time": round(end, 6), "origin": ORIGIN,
               "http": {"request": {"method": method, "url": f"{scheme or 'http'}://{authority}{path}"},
                        "response": {"status": status}},
               "annotations": {"direction": direction, "mesh": self.mesh, "node": self.node},
               "aws": {"app_mesh": {"mesh_name": self.mesh, "virtual_node_name": self.node}}}
        if parent:
            doc["parent_id"] = parent
        if route:
            doc["annotations"]["route"] = route
        if target:
            doc["annotations"]["target_node"] = target
        if grpc_status >= 0:
            doc["annotations"]["grpc_status"] = grpc_status
        if status == 429:
            doc["throttle"] = doc["error"] = True
        elif 400 <= status < 500:
            doc["error"] = True
        elif status >= 500 or status == 0 or reason or grpc_status > 0:
            doc["fault"] = True
        return doc

    def _run(self) -> None:
        while True:
            self._wake.wait(1.0)
            self._wake.clear()
            while self._records:
                rec = self._records.popleft()
                try:
                    self._sock.sendto(DAEMON_HEADER + json.dumps(self.document(rec), separators=(",", ":")).encode(),
                                      self._dest)
                    self.sent += 1
                except OSError:
                    self.dropped += 1
                    self._on_drop(1)
            if self._stopping:
                return

    def close(self, timeout_s: float = 5.0) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        self._sock.close()


__all__ = ["XRayTracer", "daemon_address", "parse_header"]
