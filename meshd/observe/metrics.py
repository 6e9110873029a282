"""meshd's Prometheus metrics: one registry of its own, label sets bounded by the mesh's
configuration, and per-request figures kept as plain integers per (direction, service,
route, target) that the registry reads at scrape time.

Label values come only from the compiled configuration (mesh, node, service and route
names) or from small fixed sets (direction, status code, reason tokens): a request's path
or authority is never a label, and a service name the mesh does not know is recorded as
UNKNOWN. So the number of series grows with the configuration, never with the traffic.
"""
from __future__ import annotations

import gc
import threading
import time
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

UNKNOWN = "unknown"  # the label value for a name the mesh's configuration does not hold
DIRECTIONS = ("egress", "ingress", "gateway", "tcp")

# Sub-millisecond (a pooled hop on loopback) up to the 15 s App Mesh default request
# timeout and twice that (a route may raise it).
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    15.0, 30.0)
APPLY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_ROUTE = ("direction", "mesh", "virtual_service", "route", "target_node")
_REQUEST = ("direction", "mesh", "source_node", "virtual_service", "route", "target_node")


def response_class(status: int) -> str:
    """The status class label: 2xx..5xx, or none when no HTTP status was sent (0)."""
    return f"{status // 100}xx" if 200 <= status < 600 else "none"


class Active:
    """Requests in flight to one (direction, mesh, target node); shared by its series."""

    __slots__ = ("n",)

    def __init__(self):
        self.n = 0


class Series:
    """The per-request figures of one (direction, mesh, source, service, route, target):
    plain integers the data-plane loop bumps, read by the registry at scrape time.

    prometheus_client's own children take a lock per increment (six or more per request,
    a third of meshd's per-request cost at saturation); one writer thread needs none. A
    scrape reads between two requests' updates, so a request may show in its counter a
    scrape before its histogram: Prometheus's model tolerates that.
    """

    __slots__ = ("labels", "requests", "retries", "buckets", "duration_sum", "request_bytes", "response_bytes",
                 "timeouts", "active")

    def __init__(self, labels: tuple, active: Active):
        self.labels = labels  # (direction, mesh, source, service, route, target)
        self.requests: dict[tuple[int, int], int] = {}  # (HTTP status, gRPC status or -1) -> count
        self.retries: dict[str, int] = {}
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket (not cumulative), +Inf last
        self.duration_sum = 0.0
        self.request_bytes = self.response_bytes = self.timeouts = 0
        self.active = active


# Loop lag buckets: a healthy loop stays under a millisecond; 5 ms is the bound meshd keeps.
LOOP_LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class _GcPauses:
    """How long each cyclic garbage collection of generation 1 or 2 held this process.

    A collection runs in whichever thread's allocation triggered it, holding the GIL
    throughout, so every other thread (the data-plane loop too) waits for it: a full
    collection takes milliseconds per 100,000 tracked objects. One histogram per process,
    fed by a gc callback, registered in each meshd's registry. Generation 0 collections
    (microseconds, and by far the most frequent) are not timed."""

    def __init__(self):
        self.histogram = Histogram(
            "meshd_gc_pause_seconds", "How long each garbage collection of generation 1 or 2 held the "
            "process (and with it the data-plane loop), by generation.", ["generation"],
            buckets=LOOP_LAG_BUCKETS, registry=None)
        self._timed = {1: self.histogram.labels("1"), 2: self.histogram.labels("2")}
        self._started = 0.0
        gc.callbacks.append(self._collected)

    def _collected(self, phase: str, info: dict) -> None:
        if info["generation"] == 0:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._timed[info["generation"]].observe(time.perf_counter() - self._started)


_gc_pauses: _GcPauses | None = None
_gc_lock = threading.Lock()


def gc_pauses() -> Histogram:
    """The process's GC pause histogram (its gc callback installed on first use)."""
    global _gc_pauses
    with _gc_lock:
        if _gc_pauses is None:
            _gc_pauses = _GcPauses()
        return _gc_pauses.histogram


class Metrics:
    """Every meshd metric, in a dedicated CollectorRegistry (never the process-global one,
    so two meshds in one process, as in the tests, keep separate figures)."""

    def __init__(self, *, version: str, host: str, counters: Iterable[Callable[[], dict]] = (),
                 open_connections: Callable[[], int] = lambda: 0):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._series: dict[tuple, Series] = {}
        self.ejections = Counter("meshd_outlier_ejections", "Endpoints ejected by outlier detection.",
                                 ["mesh", "target_node"], registry=r)
        self.overflows = Counter("meshd_overflows", "Requests refused by a connection-pool limit.",
                                 ["direction", "mesh", "target_node"], registry=r)
        self.fault_injected = Counter(
            "meshd_fault_injected", "Requests delayed or aborted by their route's fault injection (RoutePolicy), "
            "by kind: delay or abort.", ["direction", "mesh", "virtual_service", "route", "kind"], registry=r)
        self.mirror_requests = Counter(
            "meshd_mirror_requests", "Copies of requests sent to a route's mirror node, by how they ended "
            "(response class, or the failure); their answers are discarded.",
            ["mesh", "route", "mirror_node", "result"], registry=r)
        self.mirror_dropped = Counter(
            "meshd_mirror_dropped", "Copies not sent to a route's mirror node: too many outstanding on this "
            "meshd (in_flight), a body over the policy's limit (body), or no instance (no_endpoint).",
            ["mesh", "route", "mirror_node", "reason"], registry=r)
        self.authz_denials = Counter("meshd_authz_denials", "Requests refused by authorization.",
                                     ["direction", "mesh", "reason"], registry=r)
        self.config_generation = Gauge("meshd_config_generation", "Generation of the route table in use.",
                                       ["mesh"], registry=r)
        self.config_apply = Histogram("meshd_config_apply_seconds", "Time to compile and publish a route table.",
                                      buckets=APPLY_BUCKETS, registry=r)
        self.watch_lag = Gauge(
            "meshd_watch_lag_seconds", "For the last configuration change applied: seconds from its write in "
            "etcd (the resource's lastUpdatedAt, or an instance's registeredAt) to its publication in this "
            "meshd's data plane. Includes clock skew between hosts.", registry=r)
        self.loop_lag = Histogram(
            "meshd_dataplane_loop_lag_seconds", "How late the data-plane loop ran a timer due every "
            "10 ms: the longest any request could have waited for the loop meanwhile.",
            buckets=LOOP_LAG_BUCKETS, registry=r)
        self.loop_blocked = Histogram(
            "meshd_dataplane_loop_blocked_seconds", "The data-plane loop's lag less the time its thread, "
            "and the config threads that take the GIL from it, were ready to run but had no CPU (their "
            "run-queue wait, Linux schedstat): the part of the lag meshd caused itself (its own callbacks, "
            "the GIL held by its other threads while they ran), not the host's other processes.",
            buckets=LOOP_LAG_BUCKETS, registry=r)
        r.register(gc_pauses())
        self.loop_lag_max = Gauge("meshd_dataplane_loop_lag_max_seconds",
                                  "The largest data-plane loop lag seen since this meshd started.", registry=r)
        self.instance_health = Gauge("meshd_instance_health", "Local instance health: 1 healthy, 0 not.",
                                     ["mesh", "virtual_node", "instance"], registry=r)
        self.spans_dropped = Counter("meshd_spans_dropped", "Trace spans dropped (export queue full or export "
                                     "failed).", registry=r)
        self.access_log_dropped = Counter("meshd_access_log_dropped", "Access log lines dropped (queue full "
                                          "or write failed).", registry=r)
        Info("meshd", "This meshd's version and host.", registry=r).info({"version": version, "host": host})
        self._active: dict[tuple, Active] = {}
        # Redirected connections and requests (meshd.proxy.intercept), by (mesh, source node,
        # protocol, outcome): plain integers the loop bumps, read at scrape time.
        self.intercepted: dict[tuple[str, str, str, str], int] = {}
        r.register(_RequestFigures(self))
        r.register(_InterceptFigures(self.intercepted))
        r.register(_EngineCounters(counters, open_connections))

    def series(self, direction: str, mesh: str, source: str, service: str, route: str, target: str) -> Series:
        """The figures for these label values (made on first use, then kept: their number is
        bounded by the configuration, and dropping one would reset its counters)."""
        key = (direction, mesh, source, service, route, target)
        s = self._series.get(key)
        if s is None:
            with self._lock:
                active = self._active.get((direction, mesh, target))
                if active is None:
                    active = self._active[(direction, mesh, target)] = Active()
                s = self._series[key] = Series(key, active)
        return s


class _RequestFigures:
    """The per-request metrics, built from every Series at scrape time."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        m = self.metrics
        with m._lock:
            series = list(m._series.values())
            active = list(m._active.items())
        requests = CounterMetricFamily(
            "meshd_requests", "Requests (TCP: connections) that ended, by where they went and how.",
            labels=[*_REQUEST, "code", "grpc_status", "response_class"])
        duration = HistogramMetricFamily(
            "meshd_request_duration_seconds", "Time from a request's head to its last byte, retries included.",
            labels=_REQUEST)
        retries = CounterMetricFamily("meshd_retries", "Retried attempts, by what failed.",
                                      labels=[*_ROUTE, "reason"])
        timeouts = CounterMetricFamily("meshd_timeouts", "Requests ended by the route's (or gRPC) deadline.",
                                       labels=_ROUTE)
        req_bytes = CounterMetricFamily("meshd_request_bytes", "Request body bytes received from downstream.",
                                        labels=_ROUTE)
        resp_bytes = CounterMetricFamily("meshd_response_bytes", "Response body bytes sent downstream.",
                                         labels=_ROUTE)
        for s in series:
            labels = list(s.labels)
            short = [labels[0], labels[1], labels[3], labels[4], labels[5]]
            for (status, grpc_status), n in list(s.requests.items()):
                requests.add_metric([*labels, str(status), str(grpc_status) if grpc_status >= 0 else "",
                                     response_class(status)], n)
            counts = list(s.buckets)
            cumulative, total = [], 0
            for bound, n in zip((*DURATION_BUCKETS, float("inf")), counts):
                total += n
                cumulative.append((floatToGoString(bound), total))
            duration.add_metric(labels, cumulative, s.duration_sum)
            for reason, n in list(s.retries.items()):
                retries.add_metric([*short, reason], n)
            timeouts.add_metric(short, s.timeouts)
            req_bytes.add_metric(short, s.request_bytes)
            resp_bytes.add_metric(short, s.response_bytes)
        yield from (requests, duration, retries, timeouts, req_bytes, resp_bytes)
        gauge = GaugeMetricFamily("meshd_active_requests", "Requests in flight.",
                                  labels=["direction", "mesh", "target_node"])
        for (direction, mesh, target), a in active:
            gauge.add_metric([direction, mesh, target], a.n)
        yield gauge


class _InterceptFigures:
    """meshd_intercepted_total, from Metrics.intercepted at scrape time."""

    def __init__(self, counts: dict):
        self.counts = counts

    def describe(self):
        return []

    def collect(self):
        family = CounterMetricFamily(
            "meshd_intercepted", "Transparently intercepted traffic: connections (tcp, tls) and requests "
            "(http, http2), by outcome: routed in the mesh, passthrough to the original destination "
            "(ALLOW_ALL), refused (DROP_ALL, or nothing to route to), direct (not redirected, not HTTP).",
            labels=["mesh", "source_node", "protocol", "outcome"])
        for labels, n in list(self.counts.items()):
            family.add_metric(list(labels), n)
        yield family


class _EngineCounters:
    """Connection and TLS figures read from the engines' C counters at scrape time (they are
    process-wide integers the engines bump; copying them per request would cost more)."""

    def __init__(self, sources: Iterable[Callable[[], dict]], open_connections: Callable[[], int]):
        self.sources = list(sources)
        self.open_connections = open_connections

    def describe(self):
        return []

    def collect(self):
        snaps = [src() for src in self.sources]

        def total(*names):
            return sum(s.get(n, 0) for s in snaps for n in names)
        down = GaugeMetricFamily("meshd_downstream_connections_active", "Open downstream connections (HTTP/2, "
                                 "HTTP/1.1 and TCP listeners).")
        down.add_metric([], self.open_connections())
        yield down
        # The engines' `downstream_conns` (and the TCP relay's `connections`) only grow.
        accepted = CounterMetricFamily("meshd_downstream_connections", "Downstream connections accepted.")
        accepted.add_metric([], total("downstream_conns", "connections"))
        yield accepted
        up = CounterMetricFamily("meshd_upstream_connections_opened", "Upstream connections opened.")
        up.add_metric([], total("upstream_conns_opened"))
        yield up
        tls = CounterMetricFamily("meshd_tls_handshakes", "Upstream TLS handshakes, full or resumed.",
                                  labels=["kind"])
        tls.add_metric(["full"], total("tls_full_handshakes"))
        tls.add_metric(["resumed"], total("tls_resumed_handshakes"))
        yield tls
        frames = CounterMetricFamily(
            "meshd_upstream_http2_refusals", "HTTP/2 upstreams turning streams away: RST_STREAM with "
            "REFUSED_STREAM (frame=\"rst_stream_refused\"), and GOAWAY (frame=\"goaway\"), after which streams "
            "above its last stream id come back refused.", labels=["frame"])
        frames.add_metric(["rst_stream_refused"], total("refused_from_upstream"))
        frames.add_metric(["goaway"], total("goaways_from_upstream"))
        yield frames


__all__ = ["DURATION_BUCKETS", "DIRECTIONS", "Metrics", "Series", "UNKNOWN", "response_class"]
