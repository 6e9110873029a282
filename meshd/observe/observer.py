"""The data plane's one observation point: the runtime's hooks hand each request here at
its start, when it is routed, on a retry and when it ends; from there it goes to metrics,
to the tracer (when tracing is on) and to the local node's access log (when it has one)."""
from __future__ import annotations

import logging
import time
from bisect import bisect_left

from meshd.observe.accesslog import GATEWAY_KEY
from meshd.observe.metrics import DURATION_BUCKETS, UNKNOWN, Metrics
from meshd.observe.watch import written_at
from meshd.proxy.outcomes import AUTHZ, COUNTERS, OVERFLOWS, TIMEOUTS

log = logging.getLogger("meshd.observe")

EGRESS, INGRESS, GATEWAY, TCP = "egress", "ingress", "gateway", "tcp"


class Exchange:
    """What is known of one request (or TCP connection) between its start and its end: the
    head's `context` from `Observer.begin` on. The runtime keeps its routing state for the
    request here too (`decision`, `binding`, `fed`; the observer never reads them), so a
    request costs one record and no table keyed by its head."""

    __slots__ = ("direction", "mesh", "source", "local", "series", "target_node", "instance", "retries", "trace",
                 "log", "counted", "done", "decision", "binding", "fed", "waiting", "injected")

    def __init__(self, direction: str, mesh: str, source: str, local: str, counted: bool):
        self.counted = counted    # False: logged only (the other end counts it)
        self.direction = direction
        self.mesh = mesh
        self.source = source      # the caller's virtual node (the local app's on egress)
        self.local = local        # the local virtual node whose access log records it
        self.series = None        # bound metric children, once the request is routed
        self.target_node = ""
        self.instance = ""        # the chosen endpoint's instance id
        self.retries = 0
        self.trace = None         # the tracer's per-request state, when tracing is on
        self.log = None           # the local node's access log, when it has one
        self.done = False         # its end was recorded
        self.decision = self.binding = None  # the runtime's: the router's Decision, and what it led to
        self.fed = False          # the runtime's: the router has the result of the last attempt
        self.waiting = None       # the runtime's: queued for a connection (a Deferred), or None
        self.injected = ""        # "delay" or "abort" when the route's fault injection chose it


class Observer:
    """Metrics always; a tracer and access logs when configured.

    The runtime calls, per request: `begin` when the head arrives (the Exchange becomes
    the head's `context`), `routed` (or `bound`, with the series already looked up) once
    the virtual service, route and target node are known, `retried` per retry, and `end`
    (the engines' completion hook) once. Everything on that path is attribute access and
    a few integer increments (the data-plane loop is the only writer; the registry reads
    them at scrape time); tracing costs one `is None` check when it is off.
    """

    def __init__(self, metrics: Metrics, *, tracer=None, access_logs=None):
        self.metrics = metrics
        self.tracer = tracer
        self.access_logs = access_logs
        # Route name -> meshd.rollout.stats.RouteCounter, for the routes under a rollout: one
        # lookup per routed request, kept by the rollout statistics publisher.
        self.rollout_routes: dict = {}

    def begin(self, head, direction: str, mesh: str = "", local: str = "", *, counted: bool = True) -> Exchange:
        """A request's head arrived at a listener of `local` (on egress also its caller).
        `counted=False`: only logged, as a TCP connection the calling meshd counts."""
        x = Exchange(direction, mesh, local if direction != INGRESS else "", local, counted)
        head.context = x
        if self.tracer is not None and counted and direction != TCP:
            x.trace = self.tracer.begin(head, direction)
        if self.access_logs is not None and local:
            x.log = self.access_logs.get(mesh, GATEWAY_KEY + local if direction == GATEWAY else local)
        return x

    def routed(self, x: Exchange, service: str | None, route: str | None, target: str | None,
               instance: str = "") -> None:
        """The request has a virtual service, route, target node and instance (names from
        the compiled configuration; None where the table had none)."""
        self.bound(x, self.series(x, service, route, target), target, instance)

    def series(self, x: Exchange, service: str | None, route: str | None, target: str | None):
        """The metric series requests like `x` to (service, route, target) count in, for a
        caller that keeps it (`bound`)."""
        return self.metrics.series(x.direction, x.mesh, x.source or UNKNOWN, service or UNKNOWN, route or "",
                                   target or "")

    def bound(self, x: Exchange, series, target: str | None, instance: str) -> None:
        """`routed`, with the series (`series`) the caller kept for this outcome."""
        x.target_node = target or ""
        x.instance = instance
        x.series = series
        series.active.n += 1
        if self.access_logs is not None and x.log is None and x.local:
            x.log = self.access_logs.get(x.mesh, x.local)

    def retried(self, x: Exchange, reason: str) -> None:
        """The runtime answered a failed attempt of `x` with another one."""
        x.retries += 1
        if x.series is not None:
            r = x.series.retries
            r[reason] = r.get(reason, 0) + 1

    def injected(self, x: Exchange, kind: str, service: str | None, route: str | None) -> None:
        """The route's fault injection delays ("delay") or aborts ("abort") `x`: labelled in
        the access log (flags DI, FI) and counted apart from what the upstream did."""
        if x.injected != "delay":  # a delayed abort keeps "delay": its log line shows DI and FI
            x.injected = kind
        self.metrics.fault_injected.labels(x.direction, x.mesh, service or UNKNOWN, route or "", kind).inc()

    def mirrored(self, mesh: str, route: str, node: str, result: str) -> None:
        """A copy of a request of `route` was sent to mirror `node` and ended with `result`
        (a status class, or the failure's kind); its answer was discarded."""
        self.metrics.mirror_requests.labels(mesh, route, node, result).inc()

    def mirror_dropped(self, mesh: str, route: str, node: str, reason: str) -> None:
        """A copy was not sent: too many outstanding (`in_flight`), too large (`body`) or its
        endpoint gone (`no_endpoint`)."""
        self.metrics.mirror_dropped.labels(mesh, route, node, reason).inc()

    def ejected(self, mesh: str, target: str) -> None:
        """Outlier detection ejected an endpoint of `target`."""
        self.metrics.ejections.labels(mesh, target).inc()

    def end(self, head, target, status: int, grpc_status: int, reason: str, duration_ns: int) -> None:
        """The completion hook of every engine: the request's outcome, recorded once."""
        x = head.context
        if x is None or x.done:
            return
        x.done = True
        if not x.counted:
            if x.log is not None:
                x.log.write(x, head, target, status, grpc_status, reason, duration_ns)
            return
        s = x.series
        if s is None:  # refused before routing: the names the mesh could not resolve
            s = self.metrics.series(x.direction, x.mesh, x.source or UNKNOWN, UNKNOWN, "", "")
        else:
            s.active.n -= 1
        key = (status, grpc_status)
        r = s.requests
        r[key] = r.get(key, 0) + 1
        seconds = duration_ns / 1e9
        s.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1  # Prometheus `le`: bound inclusive
        s.duration_sum += seconds
        s.request_bytes += head.bytes_received
        s.response_bytes += head.bytes_sent
        if reason:
            self._count_reason(x, s, reason)
        d = x.decision
        if d is not None:
            rollout = self.rollout_routes.get(d.route)
            if rollout is not None:
                rollout.count(x.mesh, d, status, grpc_status, reason, duration_ns)
        if x.trace is not None:
            self.tracer.end(x, head, target, status, grpc_status, reason, duration_ns)
        if x.log is not None:
            x.log.write(x, head, target, status, grpc_status, reason, duration_ns)

    def _count_reason(self, x: Exchange, s, reason: str) -> None:
        # Which counter besides the request itself: the outcomes table says (meshd.proxy.outcomes).
        counter = COUNTERS.get(reason)
        if counter is None:
            return
        m = self.metrics
        if counter is TIMEOUTS:
            s.timeouts += 1
        elif counter is OVERFLOWS:
            m.overflows.labels(x.direction, x.mesh, x.target_node).inc()
        elif counter is AUTHZ:
            m.authz_denials.labels(x.direction, x.mesh, reason).inc()

    def applied(self, resp, published, view) -> None:
        """The data plane applied a WatchResponse; `published` are the route tables (LiveMesh)
        it made live. Called on the data-plane loop."""
        m = self.metrics
        for live in published:
            m.config_generation.labels(live.name).set(live.generation)
            m.config_apply.observe(live.apply_seconds)
        t = written_at(resp)
        if t is not None:
            m.watch_lag.set(max(0.0, time.time() - t))
        if published and self.access_logs is not None:
            self.access_logs.configure(view)

    def instance_health(self, mesh: str, node: str, instance: str, healthy: bool) -> None:
        self.metrics.instance_health.labels(mesh, node, instance).set(1 if healthy else 0)

    def close(self) -> None:
        """Flush and stop the tracer's exporter and the access log writers."""
        if self.tracer is not None:
            self.tracer.close()
        if self.access_logs is not None:
            self.access_logs.close()


__all__ = ["EGRESS", "Exchange", "GATEWAY", "INGRESS", "Observer", "TCP"]
