"""meshd's Prometheus metrics: one registry of its own, label sets bounded by the mesh's
configuration, and labelled children bound once per (direction, service, route, target).

Label values come only from the compiled configuration (mesh, node, service and route
names) or from small fixed sets (direction, status code, reason tokens): a request's path
or authority is never a label, and a service name the mesh does not know is recorded as
UNKNOWN. So the number of series grows with the configuration, never with the traffic.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

UNKNOWN = "unknown"  # the label value for a name the mesh's configuration does not hold
DIRECTIONS = ("egress", "ingress", "gateway", "tcp")

# Sub-millisecond (a pooled hop on loopback) up to the 15 s App Mesh default request
# timeout and twice that (a route may raise it).
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    15.0, 30.0)
APPLY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_ROUTE = ("direction", "mesh", "virtual_service", "route", "target_node")
_REQUEST = ("direction", "mesh", "source_node", "virtual_service", "route", "target_node")
# A cache of bound series larger than this is dropped and rebuilt (route and node renames
# over a long life); the registry keeps the old series, as Prometheus expects.
_MAX_SERIES = 20_000


def response_class(status: int) -> str:
    """The status class label: 2xx..5xx, or none when no HTTP status was sent (0)."""
    return f"{status // 100}xx" if 200 <= status < 600 else "none"


class Series:
    """The labelled children of one (direction, mesh, source, service, route, target),
    bound once; per request only `requests(code, grpc)` looks a child up, in a dict keyed
    by the two integers the engine hands over."""

    __slots__ = ("labels", "duration", "request_bytes", "response_bytes", "timeouts", "active", "_requests",
                 "_retries", "_metrics")

    def __init__(self, metrics: "Metrics", direction: str, mesh: str, source: str, service: str, route: str,
                 target: str):
        self._metrics = metrics
        self.labels = (direction, mesh, source, service, route, target)
        short = (direction, mesh, service, route, target)
        self.duration = metrics.request_duration.labels(*self.labels)
        self.request_bytes = metrics.request_bytes.labels(*short)
        self.response_bytes = metrics.response_bytes.labels(*short)
        self.timeouts = metrics.timeouts.labels(*short)
        self.active = metrics.active_requests.labels(direction, mesh, target)
        self._requests: dict[tuple[int, int], object] = {}
        self._retries: dict[str, object] = {}

    def requests(self, status: int, grpc_status: int):
        """The requests_total child for this HTTP status and gRPC status (-1: not gRPC)."""
        child = self._requests.get((status, grpc_status))
        if child is None:
            child = self._requests[(status, grpc_status)] = self._metrics.requests.labels(
                *self.labels, str(status), str(grpc_status) if grpc_status >= 0 else "", response_class(status))
        return child

    def retries(self, reason: str):
        """The retries_total child for a retry `reason` token."""
        child = self._retries.get(reason)
        if child is None:
            d, mesh, _, service, route, target = self.labels
            child = self._retries[reason] = self._metrics.retries.labels(d, mesh, service, route, target, reason)
        return child


class Metrics:
    """Every meshd metric, in a dedicated CollectorRegistry (never the process-global one,
    so two meshds in one process, as in the tests, keep separate figures)."""

    def __init__(self, *, version: str, host: str, counters: Iterable[Callable[[], dict]] = (),
                 open_connections: Callable[[], int] = lambda: 0):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._series: dict[tuple, Series] = {}
        self.requests = Counter(
            "meshd_requests", "Requests (TCP: connections) that ended, by where they went and how.",
            [*_REQUEST, "code", "grpc_status", "response_class"], registry=r)
        self.request_duration = Histogram(
            "meshd_request_duration_seconds", "Time from a request's head to its last byte, retries included.",
            _REQUEST, buckets=DURATION_BUCKETS, registry=r)
        self.retries = Counter("meshd_retries", "Retried attempts, by what failed.", [*_ROUTE, "reason"], registry=r)
        self.timeouts = Counter("meshd_timeouts", "Requests ended by the route's (or gRPC) deadline.", _ROUTE,
                                registry=r)
        self.request_bytes = Counter("meshd_request_bytes", "Request body bytes received from downstream.", _ROUTE,
                                     registry=r)
        self.response_bytes = Counter("meshd_response_bytes", "Response body bytes sent downstream.", _ROUTE,
                                      registry=r)
        self.ejections = Counter("meshd_outlier_ejections", "Endpoints ejected by outlier detection.",
                                 ["mesh", "target_node"], registry=r)
        self.active_requests = Gauge("meshd_active_requests", "Requests in flight.",
                                     ["direction", "mesh", "target_node"], registry=r)
        self.overflows = Counter("meshd_overflows", "Requests refused by a connection-pool limit.",
                                 ["direction", "mesh", "target_node"], registry=r)
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
        self.instance_health = Gauge("meshd_instance_health", "Local instance health: 1 healthy, 0 not.",
                                     ["mesh", "virtual_node", "instance"], registry=r)
        self.spans_dropped = Counter("meshd_spans_dropped", "Trace spans dropped (export queue full or export "
                                     "failed).", registry=r)
        self.access_log_dropped = Counter("meshd_access_log_dropped", "Access log lines dropped (queue full "
                                          "or write failed).", registry=r)
        Info("meshd", "This meshd's version and host.", registry=r).info({"version": version, "host": host})
        r.register(_EngineCounters(counters, open_connections))

    def series(self, direction: str, mesh: str, source: str, service: str, route: str, target: str) -> Series:
        """The bound children for these label values (built on first use, then cached)."""
        key = (direction, mesh, source, service, route, target)
        s = self._series.get(key)
        if s is None:
            with self._lock:
                if len(self._series) >= _MAX_SERIES:
                    self._series.clear()
                s = self._series[key] = Series(self, *key)
        return s


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


__all__ = ["DIRECTIONS", "Metrics", "Series", "UNKNOWN", "response_class"]
