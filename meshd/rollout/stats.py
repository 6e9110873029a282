"""Rollout statistics: what every meshd counts at its egress for a route under rollout, and
how the controller reads it back.

Each meshd counts the final outcome and latency of every request a rolling-out route sends
to its stable or canary target, per rollout *window* (one run of one step, named by the
step and when it started, `window_id`), and publishes the counts under its host lease at
`rolloutstats/<mesh>/<rollout>/<window>/<host>.<incarnation>`. The controller sums every
record of the current window (`Figures.merge`). A step that changes starts new records, and
a meshd that restarts writes a record of its own beside its previous life's (which goes
with that life's lease): windows never mix and no counts are lost.

Latency is a fixed-bucket histogram: bucket bounds grow by 10%, so a p99 read at the
geometric middle of its bucket is within about 5% of the true value.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import uuid
from bisect import bisect_left
from dataclasses import dataclass, field

import registry
from _fastroute.constants import GRPC_SERVER_ERRORS
from meshd.loops import supervised

log = logging.getLogger("meshd.rollout")

STATS = "rolloutstats"
# 100 µs, growing by 10% per bucket, to past 120 s; the last bucket holds what is longer.
_FIRST_NS, _GROWTH, _LAST_NS = 100_000, 1.1, 120_000_000_000
BOUNDS_NS: tuple[int, ...] = tuple(
    round(_FIRST_NS * _GROWTH ** i) for i in range(math.ceil(math.log(_LAST_NS / _FIRST_NS, _GROWTH)) + 1))
# The completion reason of a request whose caller gave up on it (meshd.proxy.outcomes'
# DOWNSTREAM_RESET): for a canary, a call its user saw fail.
DOWNSTREAM_RESET = "reset"
PUBLISH_INTERVAL = 1.0


def window_id(status) -> str:
    """The window a RolloutStatus is in: its step and the millisecond the step started, so a
    rollout restarted from its first step never reads the previous run's counts."""
    return f"{status.step}-{status.step_started_at.ToMilliseconds()}"


def window_prefix(mesh: str, rollout: str, window: str) -> str:
    return f"{STATS}/{mesh}/{rollout}/{window}/"


class Counts:
    """One target's requests in one window on this meshd: plain integers only the data-plane
    loop writes (the publisher reads them between two requests)."""

    __slots__ = ("requests", "failures", "buckets")

    def __init__(self):
        self.requests = 0
        self.failures = 0
        self.buckets = [0] * (len(BOUNDS_NS) + 1)

    def add(self, status: int, grpc_status: int, reason: str, duration_ns: int) -> None:
        self.requests += 1
        # The gRPC codes outlier detection counts: a canary fails on what would eject it.
        if status >= 500 or grpc_status in GRPC_SERVER_ERRORS or reason == DOWNSTREAM_RESET:
            self.failures += 1
        self.buckets[bisect_left(BOUNDS_NS, duration_ns)] += 1

    def record(self) -> dict:
        """The JSON-able form published to etcd: the histogram as sparse [index, count] pairs."""
        return {"requests": self.requests, "failures": self.failures,
                "buckets": [[i, n] for i, n in enumerate(self.buckets) if n]}


class RouteCounter:
    """The Counts of one route name's rollouts, by (mesh, virtual router, target node): route
    names are unique only within a router."""

    __slots__ = ("targets",)

    def __init__(self, targets: dict[tuple[str, str, str], Counts]):
        self.targets = targets

    def count(self, mesh: str, decision, status: int, grpc_status: int, reason: str, duration_ns: int) -> None:
        c = self.targets.get((mesh, decision.router, decision.target))
        if c is not None:
            c.add(status, grpc_status, reason, duration_ns)


@dataclass
class Figures:
    """One target's counts summed over every meshd's record of a window."""

    requests: int = 0
    failures: int = 0
    buckets: dict[int, int] = field(default_factory=dict)

    def merge(self, record: dict) -> None:
        self.requests += int(record.get("requests", 0))
        self.failures += int(record.get("failures", 0))
        for i, n in record.get("buckets", ()):
            self.buckets[int(i)] = self.buckets.get(int(i), 0) + int(n)

    @property
    def success_rate(self) -> float:
        """Percent of requests that did not fail; 100 with no requests."""
        return 100.0 * (self.requests - self.failures) / self.requests if self.requests else 100.0

    def quantile_ms(self, q: float) -> float:
        """The q-quantile latency in milliseconds, at the geometric middle of its bucket
        (0 with no requests)."""
        total = sum(self.buckets.values())
        if not total:
            return 0.0
        rank = math.ceil(q * total)
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                if i == 0:
                    return BOUNDS_NS[0] / 2e6
                if i >= len(BOUNDS_NS):
                    return BOUNDS_NS[-1] / 1e6
                return math.sqrt(BOUNDS_NS[i - 1] * BOUNDS_NS[i]) / 1e6
        return BOUNDS_NS[-1] / 1e6

    @property
    def p99_ms(self) -> float:
        return self.quantile_ms(0.99)


def read_window(store: registry.Store, mesh: str, rollout: str, window: str) -> dict[str, Figures]:
    """Every meshd's published counts of one window, summed per target node."""
    out: dict[str, Figures] = {}
    items, _ = store.scan(window_prefix(mesh, rollout, window))
    for item in items:
        try:
            doc = json.loads(item.value)
        except ValueError:
            log.warning("rollout statistics record unreadable; skipped", extra={"key": item.path})
            continue
        for node, record in doc.get("targets", {}).items():
            out.setdefault(node, Figures()).merge(record)
    return out


@dataclass(frozen=True)
class _Tracked:
    """A rollout whose route this meshd counts, in its current window."""

    mesh: str
    name: str
    router: str
    route: str
    window: str
    nodes: tuple[str, ...]  # stable, canary


class RolloutStats:
    """The data-plane side of rollouts on one meshd: `routes` (route name -> RouteCounter) is
    what the observer looks each routed request up in, and a publisher thread keeps it in
    step with the rollouts' windows and puts this meshd's counts in etcd, one put per
    rollout and only when they changed."""

    def __init__(self, store: registry.Store, lease, rollouts, host: str, interval: float = PUBLISH_INTERVAL):
        self.store = store
        self.lease = lease      # the HostLease: records vanish with this meshd
        self.rollouts = rollouts  # a RolloutCache
        self.host = host
        # This process's records are its own: a restarted meshd's do not overwrite its
        # previous life's counts of the same window.
        self.record_name = f"{host}.{uuid.uuid4().hex[:8]}"
        self.interval = interval
        # Read by the data-plane loop, one lookup per request; replaced entry by entry here.
        self.routes: dict[str, RouteCounter] = {}
        self._tracked: dict[tuple[str, str], tuple[_Tracked, dict[str, Counts]]] = {}
        self._published: dict[tuple[str, str], tuple[str, int]] = {}  # key -> (record, lease)
        self._changed = rollouts.subscribe()
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> "RolloutStats":
        self._thread = supervised("rollout-stats", self._run, self._stop, pause=self.interval)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.store.timeout + 2)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(self.interval)
            self._changed.clear()
            try:
                self.follow()
                self.publish()
            except registry.Unavailable as err:
                log.warning("rollout statistics not published: etcd unavailable", extra={"error": str(err)})
                self._stop.wait(self.interval)

    def follow(self) -> None:
        """Count the routes of the rollouts in progress, each in its current window."""
        wanted: dict[tuple[str, str], _Tracked] = {}
        for r in self.rollouts.in_progress():
            if r.status.step < 0:
                continue  # not started: all its traffic still goes to the stable target
            s = r.spec
            wanted[(r.mesh_name, r.rollout_name)] = _Tracked(
                r.mesh_name, r.rollout_name, s.route.virtual_router_name, s.route.route_name, window_id(r.status),
                (s.stable.virtual_node, s.canary.virtual_node))
        if all(k in self._tracked and self._tracked[k][0] == t for k, t in wanted.items()) and \
                len(wanted) == len(self._tracked):
            return
        tracked = {}
        for key, t in wanted.items():
            old = self._tracked.get(key)
            tracked[key] = old if old is not None and old[0] == t else (t, {n: Counts() for n in t.nodes})
        for key, (old, _) in self._tracked.items():
            if key not in tracked or tracked[key][0].window != old.window:
                self._forget(key, old)
        by_route: dict[str, dict] = {}
        for t, counts in tracked.values():
            targets = by_route.setdefault(t.route, {})
            for node, c in counts.items():
                targets[(t.mesh, t.router, node)] = c
        self._tracked = tracked
        for route, targets in by_route.items():
            self.routes[route] = RouteCounter(targets)
        for route in [r for r in self.routes if r not in by_route]:
            del self.routes[route]
        log.info("rollout statistics windows", extra={
            "windows": ",".join(f"{t.mesh}/{t.name}@{t.window}" for t, _ in tracked.values()) or "-"})

    def _forget(self, key: tuple[str, str], t: _Tracked) -> None:
        """The window is over (a new step, or the rollout finished): its record goes, its
        counts were read by the controller when it decided."""
        if self._published.pop(key, None) is not None:
            self.store.delete(window_prefix(t.mesh, t.name, t.window) + self.record_name)

    def publish(self) -> None:
        lease = self.lease.current()
        for key, (t, counts) in self._tracked.items():
            if not any(c.requests for c in counts.values()):
                continue
            record = json.dumps({"host": self.host, "targets": {n: c.record() for n, c in counts.items()}},
                                sort_keys=True)
            if self._published.get(key) == (record, lease):
                continue
            self.store.put(window_prefix(t.mesh, t.name, t.window) + self.record_name, record.encode(), lease=lease)
            self._published[key] = (record, lease)
