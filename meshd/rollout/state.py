"""Every rollout of the cluster as one meshd knows it: a full read of the `rollouts/`
collection, then an etcd watch from that revision, so that the statistics publisher and
the controller see a new step within milliseconds of its write without polling etcd."""
from __future__ import annotations

import logging
import threading

import registry
from meshd.api import kinds as K
from meshd.loops import supervised
from meshd.v1 import admin_pb2

log = logging.getLogger("meshd.rollout")

ROLLOUTS = "rollouts"
# Phases (RolloutStatus.phase). A rollout is created PROGRESSING at step -1: no step yet.
PROGRESSING, PAUSED = "PROGRESSING", "PAUSED"
PROMOTED, ROLLED_BACK, ABORTED = "PROMOTED", "ROLLED_BACK", "ABORTED"
FINISHED = frozenset(K.FINISHED_PHASES)  # a finished rollout releases its route (kinds' claims)


def parse(value: bytes) -> admin_pb2.RolloutData:
    data = admin_pb2.RolloutData()
    data.ParseFromString(value)
    return data


class RolloutCache:
    """path -> RolloutData for every stored rollout, kept by a watch; subscribers' events are
    set on every change."""

    def __init__(self, store: registry.Store, retry: float = 0.5):
        self.store = store
        self.retry = retry
        self._rollouts: dict[str, admin_pb2.RolloutData] = {}
        self._lock = threading.Lock()
        self._subscribers: list[threading.Event] = []
        self._stop = threading.Event()
        self._watch = None
        self._thread = None
        self.ready = threading.Event()

    def subscribe(self) -> threading.Event:
        """An event set whenever a rollout changes (the subscriber clears it)."""
        ev = threading.Event()
        self._subscribers.append(ev)
        return ev

    def start(self) -> "RolloutCache":
        self._thread = supervised("rollout-cache", self._run, self._stop, pause=self.retry)
        return self

    def stop(self) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.cancel()
        if self._thread is not None:
            self._thread.join(timeout=self.store.timeout + 2)

    def all(self) -> list[admin_pb2.RolloutData]:
        with self._lock:
            return list(self._rollouts.values())

    def in_progress(self) -> list[admin_pb2.RolloutData]:
        """The rollouts whose route is being analysed: started and not finished."""
        return [r for r in self.all() if r.status.phase in (PROGRESSING, PAUSED)]

    def get(self, mesh: str, name: str) -> admin_pb2.RolloutData | None:
        with self._lock:
            return self._rollouts.get(f"{ROLLOUTS}/{mesh}/{name}")

    def offer(self, data: admin_pb2.RolloutData) -> None:
        """A version this meshd just wrote: kept unless the watch brought a newer one."""
        path = f"{ROLLOUTS}/{data.mesh_name}/{data.rollout_name}"
        with self._lock:
            cur = self._rollouts.get(path)
            if cur is None or cur.metadata.version < data.metadata.version:
                self._rollouts[path] = data
        self._notify()

    def _notify(self) -> None:
        for ev in self._subscribers:
            ev.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items, revision = self.store.scan(f"{ROLLOUTS}/")
                with self._lock:
                    self._rollouts = {i.path: parse(i.value) for i in items}
                self._notify()
                self.ready.set()
                self._follow(revision)
            except (registry.Unavailable, registry.Compacted) as err:
                log.warning("rollout watch interrupted; reading again", extra={"error": str(err)})
                self._stop.wait(self.retry)

    def _follow(self, revision: int) -> None:
        self._watch = w = self.store.watch(f"{ROLLOUTS}/", start_revision=revision + 1)
        try:
            for _, events in w:
                if not events:
                    continue
                with self._lock:
                    for ev in events:
                        if ev.type == "put":
                            self._rollouts[ev.path] = parse(ev.value)
                        else:
                            self._rollouts.pop(ev.path, None)
                self._notify()
                if self._stop.is_set():
                    return
        finally:
            w.cancel()
