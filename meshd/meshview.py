"""A meshd's live view of the mesh: Watch responses in, compiled routers out.

The view keeps the latest resources of every mesh it is told about, recompiles a mesh's
route table when its configuration changes (debounced, off the request path) and swaps
the new `_fastroute.Router` in atomically: a request holds the router it started with, so
in-flight requests finish on the old table. Instance changes only update endpoint lists
of the live router (`set_endpoints`), with no rebuild.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import _fastroute as fr
from meshd.compile import DEFAULT_TRUST_DOMAIN, Compiled, MeshSnapshot, compile_mesh, live_endpoints
from meshd.v1 import admin_pb2

log = logging.getLogger("meshd.meshview")


@dataclass(frozen=True)
class LiveMesh:
    """One compiled generation of a mesh: immutable once published."""

    name: str
    router: object  # _fastroute.Router
    compiled: Compiled
    revision: int  # store revision the generation reflects
    generation: int
    compiled_at: float
    apply_seconds: float = 0.0  # compile and router build time of this generation


class MeshView:
    """Applies WatchResponses; publishes a new LiveMesh per configuration change."""

    def __init__(self, *, trust_domain: str = DEFAULT_TRUST_DOMAIN, seed: int = 1,
                 on_publish: Callable[[LiveMesh], None] = lambda live: None):
        self.trust_domain = trust_domain
        self.seed = seed
        self.on_publish = on_publish
        self._snaps: dict[str, MeshSnapshot] = {}
        self._live: dict[str, LiveMesh] = {}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self.revision = 0
        self.generations = 0
        self.last_apply_seconds = 0.0

    # -- reads (any thread) ----------------------------------------------------------
    def live(self, mesh: str) -> LiveMesh | None:
        return self._live.get(mesh)

    def meshes(self) -> list[str]:
        return sorted(self._live)

    def snapshot(self, mesh: str) -> MeshSnapshot | None:
        """The latest resources of `mesh` (read on the thread that applies responses)."""
        return self._snaps.get(mesh)

    # -- writes (the watch thread) ---------------------------------------------------
    def apply(self, resp: admin_pb2.WatchResponse) -> None:
        """Fold one WatchResponse in; config changes mark meshes dirty, instances apply now."""
        with self._lock:
            if resp.reset:
                self._snaps.clear()
                self._dirty.update(self._live)  # meshes that vanished must be unpublished
            endpoint_changes: set[tuple[str, str]] = set()
            for ev in resp.events:
                self._event(ev, endpoint_changes)
            self.revision = max(self.revision, resp.revision)
            if resp.reset and not resp.snapshot_done:
                return  # wait for the whole snapshot before compiling anything
            for mesh, node in endpoint_changes:
                live = self._live.get(mesh)
                if live is not None and mesh not in self._dirty:
                    self._push_endpoints(live, self._snaps.get(mesh), node)

    def _event(self, ev: admin_pb2.ResourceEvent, endpoint_changes: set) -> None:
        parts = ev.path.split("/")
        coll, mesh = parts[0], parts[1] if len(parts) > 1 else ""
        snap = self._snaps.setdefault(mesh, MeshSnapshot(mesh))
        put = ev.type == admin_pb2.ResourceEvent.PUT
        r = ev.resource
        if coll == "instances":
            node, iid = parts[2], parts[3]
            insts = snap.instances.setdefault(node, {})
            if put:
                insts[iid] = r.instance
            else:
                insts.pop(iid, None)
            endpoint_changes.add((mesh, node))
            return
        table = {"virtualNodes": (snap.nodes, lambda: r.virtual_node, lambda: parts[2]),
                 "virtualServices": (snap.services, lambda: r.virtual_service, lambda: parts[2]),
                 "virtualRouters": (snap.routers, lambda: r.virtual_router, lambda: parts[2]),
                 "routes": (snap.routes, lambda: r.route, lambda: (parts[2], parts[3]))}.get(coll)
        if coll == "meshes":
            if put:
                snap.mesh = r.mesh
            else:
                self._snaps.pop(mesh, None)
            self._dirty.add(mesh)
            return
        if table is None:
            return  # gateways and gateway routes are compiled by the gateway listener
        store, value, key = table
        if put:
            store[key()] = value()
        else:
            store.pop(key(), None)
        self._dirty.add(mesh)

    def _push_endpoints(self, live: LiveMesh, snap: MeshSnapshot | None, node: str) -> None:
        router = live.router
        insts = (snap.instances.get(node, {}) if snap else {})
        eps = live_endpoints(insts)
        try:
            router.set_endpoints(node, eps)
        except fr.UnknownNode:
            pass  # instances of a node the table does not know yet; the next compile has them

    def flush(self) -> list[LiveMesh]:
        """Compile every dirty mesh and publish the results (the debounced step)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            snaps = {m: self._snaps.get(m) for m in dirty}
            revision = self.revision
        published = []
        for mesh, snap in sorted(snaps.items()):
            if snap is None:
                with self._lock:
                    self._live.pop(mesh, None)
                continue
            t0 = time.perf_counter()
            compiled = compile_mesh(snap, self.trust_domain)
            router = fr.Router(compiled.table, seed=self.seed)
            for node, eps in compiled.endpoints.items():
                router.set_endpoints(node, list(eps))
            self.generations += 1
            live = LiveMesh(mesh, router, compiled, revision, self.generations, time.time(),
                            time.perf_counter() - t0)
            with self._lock:
                self._live[mesh] = live  # the atomic swap: one dict store
            self.last_apply_seconds = live.apply_seconds
            published.append(live)
            self.on_publish(live)
            log.info("route table published", extra={"mesh": mesh, "revision": revision,
                                                      "generation": live.generation,
                                                      "problems": len(compiled.problems),
                                                      "compile_ms": round(self.last_apply_seconds * 1000, 2)})
        return published

