"""meshd's metrics pushed as DogStatsD datagrams, as App Mesh's Envoy pushed its stats when a
task definition set ENABLE_ENVOY_DOG_STATSD: to STATSD_ADDRESS:STATSD_PORT (127.0.0.1:8125)
over UDP, or to the unix datagram socket STATSD_SOCKET_PATH, every flush interval (Envoy's
5 s stats_flush_interval).

Lines follow the DogStatsD datagram format, `<name>:<value>|<type>|#<tag>:<value>,...`:

- every meshd metric, named `meshd.<rest of its Prometheus name>`: counters as `c` with what
  they grew by since the last flush (nothing when they did not), gauges as `g`, histograms
  as their `.count` and `.sum` growth (`c`); the Prometheus labels are its tags;
- with ENABLE_ENVOY_STATS_TAGS=1 every line also carries `appmesh.mesh` and
  `appmesh.virtual_node` (or `appmesh.virtual_gateway`), the tags App Mesh's Envoy added;
- with APPMESH_METRIC_EXTENSION_VERSION=1, App Mesh's metrics-extension names, built from the
  same figures: `envoy.appmesh.RequestCount` and `GrpcRequestCount` (requests this node
  served; tags Mesh, VirtualNode), `envoy.appmesh.RequestCountPerTarget`,
  `HTTPCode_Target_2XX_Count` … `5XX`, `TargetProcessedBytes` (this node's calls, by
  TargetVirtualService and TargetVirtualNode), `TargetResponseTime` (their mean over the
  interval, `ms`), `ProcessedBytes`, `ActiveConnectionCount` (`g`) and `NewConnectionCount`.

Datagrams hold whole lines up to 1432 bytes (DogStatsD's advice for UDP on a 1500-byte
MTU). The push runs on a thread of its own, reading the registry as a scrape does; a send
that fails is dropped (the next interval carries the growth since the last good one).
"""
from __future__ import annotations

import logging
import re
import socket
import threading

log = logging.getLogger("meshd.observe.statsd")

MAX_DATAGRAM = 1432
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/\-]")


def _tag(k: str, v: str) -> str:
    return f"{_UNSAFE.sub('_', k)}:{_UNSAFE.sub('_', str(v))}" if v != "" else _UNSAFE.sub("_", k)


def line(name: str, value: float, kind: str, tags: list[str]) -> str:
    """One DogStatsD line."""
    v = int(value) if float(value).is_integer() else round(float(value), 6)
    return f"{name}:{v}|{kind}" + ("|#" + ",".join(tags) if tags else "")


def pack(lines: list[str], limit: int = MAX_DATAGRAM) -> list[bytes]:
    """Whole lines into datagrams of at most `limit` bytes (a longer line goes alone)."""
    out, cur = [], b""
    for ln in lines:
        b = ln.encode()
        if cur and len(cur) + 1 + len(b) > limit:
            out.append(cur)
            cur = b""
        cur = cur + b"\n" + b if cur else b
    if cur:
        out.append(cur)
    return out


def extension_figures(families, mesh: str, node: str) -> dict[tuple[str, tuple], float]:
    """App Mesh's metrics-extension figures, cumulative, from meshd's metric families:
    {(name, ((dimension, value), ...)): value}. Target figures are this node's calls
    (egress), by (TargetVirtualService, TargetVirtualNode); the others are its own."""
    out: dict[tuple[str, tuple], float] = {}

    def add(name, dims, v):
        out[(name, dims)] = out.get((name, dims), 0.0) + v
    for fam in families:
        for s in fam.samples:
            lab = s.labels
            if fam.name == "meshd_downstream_connections_active":
                add("ActiveConnectionCount", (), s.value)
            elif s.name == "meshd_downstream_connections_total":
                add("NewConnectionCount", (), s.value)
            if lab.get("mesh") != mesh or not fam.name.startswith(("meshd_request", "meshd_response")):
                continue
            direction = lab.get("direction")
            if direction == "ingress":
                if s.name == "meshd_requests_total":
                    add("RequestCount", (), s.value)
                    if lab.get("grpc_status"):
                        add("GrpcRequestCount", (), s.value)
                elif s.name in ("meshd_request_bytes_total", "meshd_response_bytes_total"):
                    add("ProcessedBytes", (), s.value)
                continue
            if direction not in ("egress", "gateway", "tcp") or lab.get("source_node", node) != node:
                continue
            target = (("TargetVirtualService", lab.get("virtual_service", "")),
                      ("TargetVirtualNode", lab.get("target_node", "")))
            if s.name == "meshd_requests_total":
                add("RequestCountPerTarget", target, s.value)
                cls = lab.get("response_class", "none")
                if cls in ("2xx", "3xx", "4xx", "5xx"):
                    add(f"HTTPCode_Target_{cls[0]}XX_Count", target, s.value)
            elif s.name in ("meshd_request_bytes_total", "meshd_response_bytes_total"):
                add("TargetProcessedBytes", target, s.value)
            elif s.name == "meshd_request_duration_seconds_sum":
                add("_time_sum", target, s.value)
            elif s.name == "meshd_request_duration_seconds_count":
                add("_time_count", target, s.value)
    return out


class StatsdPush:
    """Flushes a prometheus_client registry as DogStatsD lines every `interval` seconds."""

    def __init__(self, registry, *, address: str = "127.0.0.1", port: int = 8125, socket_path: str = "",
                 interval: float = 5.0, tags: dict[str, str] | None = None, extension: bool = False,
                 mesh: str = "", node: str = ""):
        self.registry = registry
        self.interval = interval
        self.tags = [_tag(k, v) for k, v in (tags or {}).items()]
        self.extension = extension
        self.mesh, self.node = mesh, node
        self._last: dict[tuple, float] = {}
        if socket_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.dest = socket_path
        else:
            info = socket.getaddrinfo(address, port, type=socket.SOCK_DGRAM)[0]
            self.sock = socket.socket(info[0], socket.SOCK_DGRAM)
            self.dest = info[4]
        self.sock.setblocking(False)
        self.sent = self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="statsd", daemon=True)

    def start(self) -> "StatsdPush":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.flush()  # what grew since the last interval
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception as err:  # noqa: BLE001 - the push never takes meshd down
                log.warning("statsd flush failed", extra={"error": str(err)})

    def _delta(self, key: tuple, value: float) -> float:
        last = self._last.get(key, 0.0)
        self._last[key] = value
        return value - last if value >= last else value  # a reset counter starts over

    def lines(self) -> list[str]:
        """This interval's lines (counters as their growth since the previous call)."""
        out = []
        families = list(self.registry.collect())
        for fam in families:
            base = "meshd." + fam.name[len("meshd_"):] if fam.name.startswith("meshd_") else fam.name
            for s in fam.samples:
                tags = [_tag(k, v) for k, v in sorted(s.labels.items())] + self.tags
                key = (s.name, tuple(sorted(s.labels.items())))
                if fam.type == "counter" and s.name.endswith("_total"):
                    d = self._delta(key, s.value)
                    if d:
                        out.append(line(base, d, "c", tags))
                elif fam.type == "gauge":
                    out.append(line(base, s.value, "g", tags))
                elif fam.type == "histogram" and (s.name.endswith("_count") or s.name.endswith("_sum")):
                    d = self._delta(key, s.value)
                    if d:
                        out.append(line(f"{base}.{s.name.rsplit('_', 1)[1]}", d, "c", tags))
        if self.extension:
            out += self._extension_lines(extension_figures(families, self.mesh, self.node))
        return out

    def _extension_lines(self, figures: dict) -> list[str]:
        base = [_tag("Mesh", self.mesh), _tag("VirtualNode", self.node)] + self.tags
        out = []
        growth = {k: self._delta(("ext",) + k, v) for k, v in figures.items() if k[0] != "ActiveConnectionCount"}
        for (name, dims), v in sorted(figures.items()):
            tags = base + [_tag(k, x) for k, x in dims]
            if name == "ActiveConnectionCount":
                out.append(line(f"envoy.appmesh.{name}", v, "g", tags))
            elif name == "_time_sum":
                n = growth.get(("_time_count", dims), 0)
                if n:
                    out.append(line("envoy.appmesh.TargetResponseTime", growth[(name, dims)] / n * 1000, "ms", tags))
            elif name != "_time_count" and growth[(name, dims)]:
                out.append(line(f"envoy.appmesh.{name}", growth[(name, dims)], "c", tags))
        return out

    def flush(self) -> None:
        for dgram in pack(self.lines()):
            try:
                self.sock.sendto(dgram, self.dest)
                self.sent += 1
            except OSError:
                self.dropped += 1  # no daemon listening (ECONNREFUSED), a full buffer: next interval


__all__ = ["StatsdPush", "extension_figures", "line", "pack"]
