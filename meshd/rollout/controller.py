"""The rollout controller: on every meshd, a thread that drives the rollouts it is elected
for through their steps, off the data-plane loop.

Election: one key per rollout, `rolloutctl/<mesh>/<rollout>`, created (if absent) under the
meshd's host lease. A controller that dies loses the key with its lease, and the next meshd
to look creates it and carries on from the rollout's stored status.

Nothing is skipped or repeated across such a change because every transition is:
1. the route-weight write, through the admin API's `Resources.update` with the route's
   expected version and audited as the API gate audits, and skipped when the route already
   has the weights (so a controller that died after it writes nothing again); then
2. one status write, a compare-and-swap on the rollout's version: a controller that lost
   the race, or read a stale status, changes nothing.

The phases and what moves them are one table, `TRANSITIONS` (STYLE.md §9).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable

from google.protobuf import timestamp_pb2
from prometheus_client.core import GaugeMetricFamily

import registry
from meshd.api import kinds as K
from meshd.api.auth import Caller
from meshd.api.errors import VersionConflict, to_status
from meshd.loops import supervised
from meshd.rollout.analysis import FAIL, PASS, Verdict, interval_ms, judge, query_prometheus
from meshd.rollout.state import ABORTED, FINISHED, PAUSED, PROGRESSING, PROMOTED, ROLLED_BACK
from meshd.rollout.stats import read_window, window_id
from meshd.v1 import admin_pb2, spec_pb2

log = logging.getLogger("meshd.rollout")

ELECTION = "rolloutctl"
TICK = 0.25
PHASES = (PROGRESSING, PAUSED, PROMOTED, ROLLED_BACK, ABORTED)

# Inputs, from the spec's intents (in this order of precedence) and the step's analysis.
ABORT, PROMOTE, PAUSE, RESUME, START, FAILED, PASSED, WAITING = (
    "abort", "promote", "pause", "resume", "start", "fail", "pass", "wait")
# Weights a transition writes: the stable target only, the canary only, the first or next
# step's, or none.
STABLE, CANARY, FIRST, NEXT, HOLD = "stable", "canary", "first", "next", "hold"
# (phase, input) -> (weights, next phase). NEXT after the last step promotes. A pair not
# here changes nothing: a finished rollout stays as it is.
TRANSITIONS: dict[tuple[str, str], tuple[str, str]] = {
    (PROGRESSING, ABORT): (STABLE, ABORTED),
    (PAUSED, ABORT): (STABLE, ABORTED),
    (PROGRESSING, PROMOTE): (CANARY, PROMOTED),
    (PAUSED, PROMOTE): (CANARY, PROMOTED),
    (PROGRESSING, PAUSE): (HOLD, PAUSED),
    (PAUSED, RESUME): (HOLD, PROGRESSING),
    (PROGRESSING, START): (FIRST, PROGRESSING),
    (PROGRESSING, FAILED): (STABLE, ROLLED_BACK),
    (PROGRESSING, PASSED): (NEXT, PROGRESSING),
    (PROGRESSING, WAITING): (HOLD, PROGRESSING),
}
# The result a step's history record gets when an input ends it.
STEP_RESULTS = {ABORT: "ABORTED", PROMOTE: "PROMOTED", FAILED: "FAILED", PASSED: "PASSED"}


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def _start_step(st, step: int, weight: int, now) -> None:
    """Open step `step`'s analysis window at `now` (a new window id: fresh figures)."""
    st.step = step
    st.step_started_at.CopyFrom(now)
    st.current.Clear()
    st.current.step, st.current.weight, st.current.result = step, weight, "RUNNING"
    st.current.started_at.CopyFrom(now)


def intent(r) -> str | None:
    """The input the spec's intents give a rollout, before any analysis."""
    spec, phase = r.spec, r.status.phase
    if spec.abort:
        return ABORT
    if spec.promote:
        return PROMOTE
    if spec.paused:
        return PAUSE if phase == PROGRESSING else None
    if phase == PAUSED:
        return RESUME
    if r.status.step < 0:
        return START
    return None


def _targets(spec) -> list:
    """The weighted targets of a RouteSpec, whichever of its route kinds it is."""
    kind = spec.WhichOneof("route")
    return getattr(spec, kind).action.weighted_targets if kind else []


def _matches(t, want) -> bool:
    return t.virtual_node == want.virtual_node and (not want.HasField("port") or t.port == want.port)


def with_weights(route_spec, rollout_spec, canary_weight: int) -> bool:
    """Give the rollout's canary `canary_weight` percent of the route and its stable target
    the rest, in place; False when the route already had exactly these weights."""
    changed = False
    for want, weight in ((rollout_spec.stable, 100 - canary_weight), (rollout_spec.canary, canary_weight)):
        targets = _targets(route_spec)
        found = [t for t in targets if _matches(t, want)]
        if not found:
            # The route lost the target since the rollout was created: it comes back.
            t = targets.add(virtual_node=want.virtual_node)
            if want.HasField("port"):
                t.port = want.port
            found = [t]
        for t in found:
            if not t.HasField("weight") or t.weight != weight:
                t.weight = weight
                changed = True
    return changed


class Controller:
    """Elects itself for rollouts, analyses their steps and moves them on."""

    def __init__(self, resources, store: registry.Store, lease, rollouts, host: str,
                 audit: Callable[[str, object, str], None], *, tick: float = TICK,
                 prometheus: Callable[[object], float] = query_prometheus):
        self.resources = resources
        self.store = store
        self.lease = lease
        self.rollouts = rollouts  # a RolloutCache
        self.host = host
        self.audit = audit        # audit(method, request, result): as the API gate records writes
        self.tick = tick
        self.prometheus = prometheus
        self._changed = rollouts.subscribe()
        self._leading: set[tuple[str, str]] = set()
        self._analysed: dict[tuple[str, str], float] = {}  # monotonic time of the last analysis
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> "Controller":
        self._thread = supervised("rollout-controller", self._run, self._stop, pause=1.0)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.store.timeout * 4 + 2)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(self.tick)
            self._changed.clear()
            try:
                self.step_all()
            except registry.Unavailable as err:
                log.warning("rollouts not driven: etcd unavailable", extra={"error": str(err)})
                self._stop.wait(self.tick * 4)

    def step_all(self) -> None:
        """One pass over every rollout: lead the unfinished ones nobody leads, drive those led
        here, and give up the lead of finished or deleted ones."""
        live = set()
        for r in self.rollouts.all():
            key = (r.mesh_name, r.rollout_name)
            if r.status.phase in FINISHED:
                continue
            live.add(key)
            if self._lead(key):
                try:
                    self.drive(r)
                except (VersionConflict, registry.Conflict):
                    pass  # someone wrote it meanwhile: the watch brings the new version
                except (registry.NotFound, registry.InUse, ValueError) as err:
                    log.warning("rollout not driven", extra={"rollout": "/".join(key), "error": str(err)})
        for key in self._leading - live:
            self._resign(key)

    # -- election --------------------------------------------------------------------------
    def _lead(self, key: tuple[str, str]) -> bool:
        path = f"{ELECTION}/{key[0]}/{key[1]}"
        lease = self.lease.current()
        item = self.store.get(path)
        if item is None:
            try:
                self.store.commit(registry.Write(path, self.host.encode(), expect_revision=0, lease=lease))
            except registry.AlreadyExists:
                return False
            self._leading.add(key)
            log.info("rollout controller elected", extra={"rollout": "/".join(key), "host": self.host})
            return True
        mine = item.value == self.host.encode() and item.lease == lease
        if mine:
            self._leading.add(key)
        else:
            self._leading.discard(key)
        return mine

    def _resign(self, key: tuple[str, str]) -> None:
        """The rollout finished or is gone: its election key goes (each publisher deletes its
        own statistics record when the window closes)."""
        path = f"{ELECTION}/{key[0]}/{key[1]}"
        item = self.store.get(path)
        if item is not None and item.value == self.host.encode():
            self.store.commit(registry.Write(path, None, expect_revision=item.mod_revision))
        self._leading.discard(key)
        self._analysed.pop(key, None)

    # -- transitions -----------------------------------------------------------------------
    def drive(self, r) -> None:
        """Apply the one transition the rollout's intents, or its analysis when one is due,
        call for."""
        key = (r.mesh_name, r.rollout_name)
        inp, verdict = intent(r), None
        if inp is None and r.status.phase == PROGRESSING:
            now = time.monotonic()
            if now - self._analysed.get(key, 0.0) < interval_ms(r.spec) / 1000:
                if r.status.controller != self.host:
                    inp = WAITING  # a new controller says so at once
                else:
                    return
            else:
                self._analysed[key] = now
                verdict = self.analyse(r)
                inp = {FAIL: FAILED, PASS: PASSED}.get(verdict.outcome, WAITING)
        entry = TRANSITIONS.get((r.status.phase, inp)) if inp else None
        if entry is None:
            return
        weights, phase = entry
        status, weight = self._next(r, inp, weights, phase, verdict)
        if status is None:
            return
        if weight is not None:
            self.set_weights(r, weight)
        data = self.resources.update_status(K.ROLLOUT, key, status, expected_version=r.metadata.version)
        self.rollouts.offer(data)
        if inp != WAITING or r.status.controller != self.host:
            log.info("rollout controller took over" if inp == WAITING else "rollout transition", extra={
                "rollout": "/".join(key), "input": inp, "phase": status.phase, "step": status.step,
                "canary_weight": status.canary_weight, "message": status.message, "controller": self.host})

    def analyse(self, r) -> Verdict:
        figures = read_window(self.store, r.mesh_name, r.rollout_name, window_id(r.status))
        elapsed = int(time.time() * 1000) - r.status.step_started_at.ToMilliseconds()
        return judge(r.spec, r.status.step, figures, elapsed, self.prometheus)

    def _next(self, r, inp: str, weights: str, phase: str, verdict: Verdict | None):
        """(the new status, the canary weight to write first or None); (None, None) when
        nothing would change."""
        old, spec, now = r.status, r.spec, _now()
        st = spec_pb2.RolloutStatus()
        st.CopyFrom(old)
        st.controller = self.host
        if verdict is not None:
            self._figures(st.current, verdict)
        if inp == WAITING:
            if verdict is not None:
                st.message = f"step {old.step + 1}/{len(spec.steps)} waiting: {verdict.reason}"
            return (None, None) if st == old else (st, None)
        if inp in STEP_RESULTS and old.step >= 0:
            done = st.history.add()
            done.CopyFrom(st.current)
            done.ended_at.CopyFrom(now)
            done.result = STEP_RESULTS[inp]
            done.reason = verdict.reason if verdict is not None else f"{inp} requested in the spec"
        st.phase = phase
        weight = None
        if inp == RESUME:
            # The step is analysed afresh from here: its window restarts, so the time spent
            # paused counts towards neither its minimum duration nor its figures.
            _start_step(st, old.step, old.canary_weight, now)
        if weights == STABLE:
            weight = 0
        elif weights == CANARY:
            weight = 100
        elif weights in (FIRST, NEXT):
            step = 0 if weights == FIRST else old.step + 1
            if step >= len(spec.steps):
                st.phase, weight = PROMOTED, 100
            else:
                weight = spec.steps[step].weight
                _start_step(st, step, weight, now)
        if weight is not None:
            st.canary_weight = weight
        st.message = self._message(st, spec, inp, verdict)
        return st, weight

    @staticmethod
    def _message(st, spec, inp: str, verdict: Verdict | None) -> str:
        if st.phase == ROLLED_BACK:
            return f"rolled back at step {st.step + 1}: {verdict.reason if verdict else inp}"
        if st.phase == ABORTED:
            return f"aborted at step {st.step + 1}; all traffic on {spec.stable.virtual_node}"
        if st.phase == PROMOTED:
            return f"promoted: all traffic on {spec.canary.virtual_node}"
        if st.phase == PAUSED:
            return f"paused at step {st.step + 1}"
        return f"step {st.step + 1}/{len(spec.steps)}: {st.canary_weight}% on {spec.canary.virtual_node}"

    @staticmethod
    def _figures(rec, v: Verdict) -> None:
        rec.canary_requests, rec.stable_requests = v.canary.requests, v.stable.requests
        rec.canary_success_rate = round(v.canary.success_rate, 3)
        rec.canary_p99_ms = round(v.canary.p99_ms, 3)
        rec.stable_p99_ms = round(v.stable.p99_ms, 3)

    # -- the route ---------------------------------------------------------------------------
    def set_weights(self, r, canary_weight: int, attempts: int = 8) -> bool:
        """Write the route with the canary at `canary_weight` percent, as an ordinary audited
        route update with the version just read; True if written, False if it had them."""
        ref = r.spec.route
        ids = dict(mesh_name=r.mesh_name, virtual_router_name=ref.virtual_router_name, route_name=ref.route_name)
        for _ in range(attempts):
            route = self.resources.describe(K.ROUTE, admin_pb2.DescribeRouteRequest(**ids)).route
            spec = spec_pb2.RouteSpec()
            spec.CopyFrom(route.spec)
            if not with_weights(spec, r.spec, canary_weight):
                return False
            req = admin_pb2.UpdateRouteRequest(**ids, spec=spec, expected_version=route.metadata.version)
            try:
                self.resources.update(K.ROUTE, req)
            except VersionConflict as err:
                self.audit("UpdateRoute", req, to_status(err)[0].name)
                continue  # the route changed under us: read it again
            except Exception as err:
                self.audit("UpdateRoute", req, to_status(err)[0].name)
                raise
            self.audit("UpdateRoute", req, "OK")
            log.info("rollout route weights written", extra={
                "rollout": f"{r.mesh_name}/{r.rollout_name}", "route": f"{ref.virtual_router_name}/{ref.route_name}",
                "canary_weight": canary_weight, "version": route.metadata.version + 1})
            return True
        raise registry.Conflict(K.ROUTE.path(tuple(ids.values())), 0, -1)

    # -- metrics -----------------------------------------------------------------------------
    def collect(self):
        """Prometheus collector: the rollouts this meshd controls (or controlled last)."""
        labels = ["mesh", "rollout"]
        phase = GaugeMetricFamily("meshd_rollout_phase", "1 for the rollout's current phase", labels=[*labels, "phase"])
        step = GaugeMetricFamily("meshd_rollout_step", "The rollout's current step, from 0 (-1 before the first)",
                                 labels=labels)
        weight = GaugeMetricFamily("meshd_rollout_canary_weight", "Percent of the route on the canary", labels=labels)
        success = GaugeMetricFamily("meshd_rollout_success_rate",
                                    "The canary's success rate in percent at the last analysis", labels=labels)
        p99 = GaugeMetricFamily("meshd_rollout_p99_ms", "The canary's p99 latency at the last analysis",
                                labels=labels)
        for r in self.rollouts.all():
            if r.status.controller != self.host:
                continue
            ids = [r.mesh_name, r.rollout_name]
            for p in PHASES:
                phase.add_metric([*ids, p], 1.0 if r.status.phase == p else 0.0)
            step.add_metric(ids, r.status.step)
            weight.add_metric(ids, r.status.canary_weight)
            last = r.status.history[-1] if r.status.phase in FINISHED and r.status.history else r.status.current
            success.add_metric(ids, last.canary_success_rate)
            p99.add_metric(ids, last.canary_p99_ms)
        return [phase, step, weight, success, p99]

    def describe(self):
        """The collector protocol's fixed descriptions: none, the series follow the rollouts."""
        return []


def host_audit(access, subject: str) -> Callable[[str, object, str], None]:
    """audit(method, request, result) recording a write of this meshd's own, with its host
    identity as the caller, through the same rule table and log as the API gate."""
    caller = Caller(subject, "mtls")

    def audit(method: str, request, result: str) -> None:
        full = f"/meshd.v1.MeshAdmin/{method}"
        access.audit(caller, full, access.rules[full], request, result, f"rollout-{uuid.uuid4().hex}")
    return audit
