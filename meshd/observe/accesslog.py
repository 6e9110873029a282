"""App Mesh access logs (`logging.accessLog.file` of a virtual node or gateway): a format
compiled once into a list of small functions, lines queued to a writer thread per file.

Formats use Envoy's command operators (Envoy docs, "Access logging: command operators");
the ones meshd knows are in OPERATORS. `format.text` is one line (a newline is added when
it does not end with one); `format.json` is a list of key/value pairs whose values are
format strings, written as one JSON object per line. Without a format, Envoy's default
format is used (DEFAULT_FORMAT). A value that is not there is "-" in text and null in
JSON, as in Envoy; a value that is exactly one numeric operator is a JSON number.
"""
from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from datetime import datetime, timezone
from typing import Callable

# meshd's reason tokens -> Envoy response flags: a column of the outcomes table.
from meshd.proxy.outcomes import DELAY_INJECTED_FLAG, RESPONSE_FLAGS

log = logging.getLogger("meshd.observe.accesslog")

# Envoy's default access log format (docs, "Default format string").
DEFAULT_FORMAT = ('[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
                  '%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
                  '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
                  '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n')

# A failure of the last attempt after retries: Envoy's "upstream retry limit exceeded".
_RETRYABLE = frozenset(("UF", "UR", "UC"))

_OPERATOR = re.compile(r"%([A-Z_0-9]+)(?:\(([^)]*)\))?(?::(\d+))?%")


class FormatError(ValueError):
    """An access log format meshd cannot write: `operator` is the offending text."""

    def __init__(self, operator: str, why: str):
        super().__init__(f"{operator}: {why}")
        self.operator = operator
        self.why = why


class Entry:
    """What a finished request hands the formatter (built once per logged request)."""

    __slots__ = ("x", "head", "target", "status", "grpc_status", "reason", "duration_ns", "end_ns")

    def __init__(self, x, head, target, status, grpc_status, reason, duration_ns):
        self.x, self.head, self.target = x, head, target
        self.status, self.grpc_status, self.reason, self.duration_ns = status, grpc_status, reason, duration_ns
        self.end_ns = time.time_ns()


_PROTOCOLS = {"RequestHead": "HTTP/2", "H1RequestHead": "HTTP/1.1"}  # TCP: "-", as Envoy


def _start_time(fmt: str | None) -> Callable[[Entry], str]:
    def iso(e: Entry) -> str:
        t = datetime.fromtimestamp((e.end_ns - e.duration_ns) / 1e9, timezone.utc)
        # Envoy's default START_TIME: ISO 8601 in UTC with milliseconds.
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z" if fmt is None else t.strftime(fmt)
    return iso


def _header(arg: str | None, response: bool, op: str) -> Callable[[Entry], str | None]:
    if not arg:
        raise FormatError(op, "needs a header name, e.g. REQ(:PATH)")
    names = [n.strip().lower() for n in arg.split("?")]
    if len(names) > 2 or not all(names):
        raise FormatError(op, "takes X or X?Y")
    pseudo = {":path": "path", ":method": "method", ":authority": "authority", ":scheme": "scheme"}

    def one(name):
        if not response and name in pseudo:
            attr = pseudo[name]
            return lambda e: getattr(e.head, attr) or None
        if response:
            return lambda e: e.head.response_headers.get(name)
        if name == "host":  # HTTP/1.1's Host is the head's authority
            return lambda e: e.head.headers.get("host") or e.head.authority or None
        return lambda e: e.head.headers.get(name)
    first = one(names[0])
    if len(names) == 1:
        return first
    second = one(names[1])
    return lambda e: first(e) or second(e)


def _flags(e: Entry) -> str:
    f = RESPONSE_FLAGS.get(e.reason, "-") if e.reason else "-"
    f = "URX" if f in _RETRYABLE and e.x.retries else f
    if e.x.injected == "delay":
        # Envoy lists every flag that applies, comma-separated: DI beside the outcome's own.
        return DELAY_INJECTED_FLAG if f == "-" else f"{DELAY_INJECTED_FLAG},{f}"
    return f


def _cluster(e: Entry) -> str | None:
    x = e.x
    return (x.local if x.direction == "ingress" else x.target_node) or None


# Operator name -> (takes an argument, numeric, builder(arg, op) -> fn(Entry) -> value or None).
OPERATORS: dict[str, tuple[bool, bool, Callable]] = {
    "START_TIME": (True, False, lambda arg, op: _start_time(arg)),
    "REQ": (True, False, lambda arg, op: _header(arg, False, op)),
    "RESP": (True, False, lambda arg, op: _header(arg, True, op)),
    "RESPONSE_CODE": (False, True, lambda arg, op: lambda e: e.status),
    "GRPC_STATUS": (False, True, lambda arg, op: lambda e: e.grpc_status if e.grpc_status >= 0 else None),
    "RESPONSE_FLAGS": (False, False, lambda arg, op: _flags),
    "DURATION": (False, True, lambda arg, op: lambda e: e.duration_ns // 1_000_000),
    "BYTES_RECEIVED": (False, True, lambda arg, op: lambda e: e.head.bytes_received),
    "BYTES_SENT": (False, True, lambda arg, op: lambda e: e.head.bytes_sent),
    "UPSTREAM_HOST": (False, False, lambda arg, op: lambda e: f"{e.target.host}:{e.target.port}"
                      if e.target is not None else None),
    "UPSTREAM_CLUSTER": (False, False, lambda arg, op: _cluster),
    "DOWNSTREAM_REMOTE_ADDRESS": (False, False, lambda arg, op: lambda e: e.head.remote_address or None),
    "PROTOCOL": (False, False, lambda arg, op: lambda e: _PROTOCOLS.get(type(e.head).__name__)),
}


def _compile_one(text: str) -> list:
    """A format string -> [literal str | (fn, max_len, numeric)]; FormatError when unknown."""
    parts: list = []
    pos = 0
    for m in _OPERATOR.finditer(text):
        if m.start() > pos:
            parts.append(_literal(text[pos:m.start()]))
        name, arg, limit = m.group(1), m.group(2), m.group(3)
        spec = OPERATORS.get(name)
        if spec is None:
            raise FormatError(m.group(0), "unknown operator")
        takes_arg, numeric, build = spec
        if arg is not None and not takes_arg:
            raise FormatError(m.group(0), "takes no argument")
        parts.append((build(arg, m.group(0)), int(limit) if limit else 0, numeric))
        pos = m.end()
    if text[pos:]:
        parts.append(_literal(text[pos:]))
    return parts


def _literal(text: str) -> str:
    """Text between operators; `%%` is a literal %, any other % an unknown operator."""
    plain = text.replace("%%", "")
    if "%" in plain:
        raise FormatError(plain[plain.index("%"):].split()[0], "unknown operator")
    return text.replace("%%", "%")


def _value(part, e: Entry):
    fn, limit, _ = part
    v = fn(e)
    if v is None or v == "":
        return None
    if limit and isinstance(v, str):
        v = v[:limit]
    return v


def _text(parts: list) -> Callable[[Entry], str]:
    def render(e: Entry) -> str:
        out = []
        for p in parts:
            if type(p) is str:
                out.append(p)
            else:
                v = _value(p, e)
                out.append("-" if v is None else str(v))
        return "".join(out)
    return render


def compile_text(text: str) -> Callable[[Entry], str]:
    """`format.text` -> a function from an Entry to the line (newline-terminated)."""
    if not text.endswith("\n"):
        text += "\n"
    return _text(_compile_one(text))


def compile_json(pairs: list[tuple[str, str]]) -> Callable[[Entry], str]:
    """`format.json` [(key, format string)] -> a function from an Entry to a JSON line."""
    fields = []
    for key, fmt in pairs:
        parts = _compile_one(fmt)
        if len(parts) == 1 and not isinstance(parts[0], str):
            one = parts[0]
            fields.append((key, (lambda e, one=one: _value(one, e))))  # typed: number, string or null
        else:
            fields.append((key, _text(parts)))
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def render(e: Entry) -> str:
        return dumps({k: fn(e) for k, fn in fields}) + "\n"
    return render


def compile_spec(file_log) -> Callable[[Entry], str]:
    """The formatter of an App Mesh FileAccessLog (meshd.v1 protobuf): text, json or the default."""
    fmt = file_log.format
    if file_log.HasField("format") and fmt.HasField("text"):
        return compile_text(fmt.text)
    if file_log.HasField("format") and fmt.json:
        return compile_json([(p.key, p.value) for p in fmt.json])
    return compile_text(DEFAULT_FORMAT)


def format_errors(fmt) -> list[tuple[str, FormatError]]:
    """[(field, error)] for a LoggingFormat (meshd.v1): `text`, or `json[i].value`."""
    errors = []
    candidates = [("text", fmt.text)] if fmt.HasField("text") else []
    candidates += [(f"json[{i}].value", p.value) for i, p in enumerate(fmt.json)]
    for field, text in candidates:
        try:
            _compile_one(text)
        except FormatError as err:
            errors.append((field, err))
    return errors


class Writer:
    """One file's writer thread: lines queue (bounded) and are written in batches, so a
    slow disk or a blocked pipe never holds up a request; a full queue drops, counted."""

    def __init__(self, path: str, on_drop: Callable[[int], None], max_queue: int = 8192):
        self.path = path
        self.on_drop = on_drop
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.max_queue = max_queue
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"access-log {path}", daemon=True)
        self._thread.start()

    def put(self, line: str) -> None:
        if self.q.qsize() >= self.max_queue:
            self.on_drop(1)
            return
        self.q.put(line)

    def _run(self) -> None:
        try:
            f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the thread's life
        except OSError as err:
            log.warning("access log cannot be opened; its lines are dropped", extra={"path": self.path,
                                                                                    "error": str(err)})
            f = None
        while True:
            line = self.q.get()
            if line is None:
                break
            batch = [line]
            while len(batch) < 512:
                try:
                    more = self.q.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._closed = True
                    break
                batch.append(more)
            if f is None:
                self.on_drop(len(batch))
            else:
                try:
                    f.write("".join(batch))
                    f.flush()
                except OSError:
                    self.on_drop(len(batch))
            if self._closed:
                break
        if f is not None:
            f.close()

    def close(self, timeout: float = 2.0) -> None:
        self.q.put(None)
        self._thread.join(timeout)


class AccessLog:
    """A virtual node's (or gateway's) access log: its formatter and its file's writer."""

    __slots__ = ("render", "writer")

    def __init__(self, render: Callable[[Entry], str], writer: Writer):
        self.render = render
        self.writer = writer

    def write(self, x, head, target, status, grpc_status, reason, duration_ns) -> None:
        try:
            line = self.render(Entry(x, head, target, status, grpc_status, reason, duration_ns))
        except Exception:  # noqa: BLE001 - a bad value must not fail the request's completion
            log.exception("access log line could not be formatted")
            self.writer.on_drop(1)
            return
        self.writer.put(line)


# The key of a virtual gateway's log beside the virtual nodes' (mesh, node) keys.
GATEWAY_KEY = "virtualGateway/"


class AccessLogs:
    """The access logs of the local virtual nodes, rebuilt when the configuration changes.

    `get(mesh, node)` is a dict lookup on the request path; a node seen for the first time
    is looked up in the MeshView's snapshot once.
    """

    def __init__(self, on_drop: Callable[[int], None], max_queue: int = 8192):
        self.on_drop = on_drop
        self.max_queue = max_queue
        self._view = None
        self._logs: dict[tuple[str, str], AccessLog | None] = {}
        self._writers: dict[str, Writer] = {}

    def get(self, mesh: str, node: str) -> AccessLog | None:
        got = self._logs.get((mesh, node), False)
        return self._build(mesh, node) if got is False else got

    def configure(self, view) -> None:
        """A new configuration was published: rebuild each known node's log from it."""
        self._view = view
        for mesh, node in list(self._logs):
            self._build(mesh, node)

    def set(self, key: tuple[str, str], logging_spec) -> AccessLog | None:
        """Set `key`'s log from an App Mesh Logging message (also for gateways)."""
        file_log = logging_spec.access_log.file if logging_spec.access_log.HasField("file") else None
        if file_log is None or not file_log.path:
            self._logs[key] = None
            return None
        try:
            render = compile_spec(file_log)
        except FormatError as err:  # validate.py refuses these; an older stored spec may have one
            log.warning("access log format refused", extra={"node": "/".join(key), "error": str(err)})
            self._logs[key] = None
            return None
        writer = self._writers.get(file_log.path)
        if writer is None:
            writer = self._writers[file_log.path] = Writer(file_log.path, self.on_drop, self.max_queue)
        self._logs[key] = got = AccessLog(render, writer)
        return got

    def _build(self, mesh: str, node: str) -> AccessLog | None:
        snap = self._view.snapshot(mesh) if self._view is not None else None
        if node.startswith(GATEWAY_KEY):  # a virtual gateway's listeners (names have no "/")
            spec = snap.gateways.get(node[len(GATEWAY_KEY):]) if snap is not None else None
        else:
            spec = snap.nodes.get(node) if snap is not None else None
        if spec is None or not spec.spec.HasField("logging"):
            self._logs[(mesh, node)] = None
            return None
        return self.set((mesh, node), spec.spec.logging)

    def close(self) -> None:
        for w in self._writers.values():
            w.close()


__all__ = ["AccessLog", "AccessLogs", "DEFAULT_FORMAT", "GATEWAY_KEY", "FormatError", "OPERATORS", "RESPONSE_FLAGS",
           "compile_json", "compile_spec", "compile_text", "format_errors"]
