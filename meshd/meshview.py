"""A meshd's live view of the mesh: Watch responses in, compiled routers out.

Two threads share it, each with its own side:
- the *config* side (`apply`, `prepare`) folds Watch responses into working snapshots and
  compiles changed meshes into new `_fastroute.Router`s, off the data-plane loop;
- the *loop* side (`publish`, `push_endpoints`, and every read: `live`, `snapshot`) swaps a
  prepared generation in, after it adopted the old router's live state (ejections, in-flight
  counts, budgets), and applies instance changes to the live routers with no rebuild. The
  generation it replaced is freed by the config side's next `prepare`, not on the loop.

A request holds the router it started with, so in-flight requests finish on the old table.
Readers on the loop see a published snapshot: a copy frozen with its router (only its
instances change, on the loop), never the working one the config side is changing.
`flush` does both sides in one thread (tests, tools).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

import _fastroute as fr
from meshd.compile import (DEFAULT_TRUST_DOMAIN, Compiled, MeshSnapshot, RouteCache, Scope, cloud_map_service,
                           compile_mesh, live_endpoints, node_instances, routed_instances, scoped, sharing_cloud_map)
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
    snapshot: MeshSnapshot | None = None  # the resources it was compiled from (loop-owned copy)


class MeshView:
    """Applies WatchResponses; publishes a new LiveMesh per configuration change."""

    def __init__(self, *, trust_domain: str = DEFAULT_TRUST_DOMAIN, seed: int = 1,
                 locality: tuple[str, str, str] = ("", "", ""),
                 on_publish: Callable[[LiveMesh], None] = lambda live: None,
                 scopes: dict[str, Scope] | None = None):
        """`locality` is this meshd's own (region, zone, sub_zone): its routers keep traffic
        near it (NodePolicy locality balancing). `scopes` (mesh → Scope) makes the view a
        sidecar's: it keeps only the meshes named, and compiles and publishes of each only
        what the Scope reaches (`meshd.compile.scoped`); None keeps and compiles every mesh."""
        self.scopes = scopes
        self.trust_domain = trust_domain
        self.seed = seed
        self.locality = locality
        self.on_publish = on_publish
        self._snaps: dict[str, MeshSnapshot] = {}   # working snapshots (config side)
        self._live: dict[str, LiveMesh] = {}        # published generations (loop side)
        self._dirty: set[str] = set()
        self._route_caches: dict[str, RouteCache] = {}  # config side: per mesh, across compiles
        # config side: the router last prepared for each mesh, which the next is built on
        self._routers: dict[str, object] = {}
        # config side: per mesh, the route groups (MeshSnapshot.route_groups) the working
        # snapshot has made since it was last frozen; the others are shared with a frozen
        # copy and replaced, not changed, when an event reaches them
        self._own_groups: dict[str, set[str]] = {}
        # loop side: instances this meshd found itself (DNS service discovery), mesh → node →
        # {instance id: Instance}; merged into the live snapshots' instances, never in etcd
        self._discovered: dict[str, dict[str, dict]] = {}
        # loop side: generations replaced by `publish`, dropped by the config side (`prepare`):
        # freeing a 10,000-route generation took about 5 ms, on the loop when it was dropped there
        self._retired: list[LiveMesh] = []
        self._lock = threading.Lock()
        # Between a snapshot's first response (reset) and its last (snapshot_done): a
        # compile then would build tables from part of the mesh, once per response.
        self._loading = False
        self.revision = 0
        self.generations = 0
        self.last_apply_seconds = 0.0

    # -- reads (the loop) ------------------------------------------------------------
    def live(self, mesh: str) -> LiveMesh | None:
        return self._live.get(mesh)

    def meshes(self) -> list[str]:
        return sorted(self._live)

    def snapshot(self, mesh: str) -> MeshSnapshot | None:
        """The resources of `mesh` as its live router was compiled from, with current instances."""
        live = self._live.get(mesh)
        return live.snapshot if live is not None else None

    # -- the config side -------------------------------------------------------------
    def apply(self, resp: admin_pb2.WatchResponse) -> list[tuple[str, str, dict]]:
        """Fold one WatchResponse in: configuration changes mark meshes dirty (`prepare`
        compiles them); returns the instance changes of meshes that are not dirty, as (mesh,
        node, instances), for `push_endpoints` on the loop. A dirty mesh's next generation
        has them. A mesh that is not dirty is either live, or compiled with its publish
        still queued on the loop ahead of this push, which then reaches the new router."""
        with self._lock:
            if resp.reset:
                self._snaps.clear()
                self._own_groups.clear()
                self._dirty.update(self._live)  # meshes that vanished must be unpublished
                self._loading = True
            endpoint_changes: set[tuple[str, str]] = set()
            for ev in resp.events:
                self._event(ev, endpoint_changes)
            self.revision = max(self.revision, resp.revision)
            if resp.snapshot_done:
                self._loading = False
            if self._loading:
                return []  # wait for the whole snapshot (reset ... snapshot_done) before compiling anything
            out = []
            for mesh, node in sorted(endpoint_changes):
                snap = self._snaps.get(mesh)
                if mesh not in self._dirty and snap is not None:
                    out.append((mesh, node, dict(snap.instances.get(node, {}))))
            return out

    @property
    def dirty(self) -> bool:
        """A configuration change waits to be compiled (and no snapshot is half received)."""
        return bool(self._dirty) and not self._loading

    def _event(self, ev: admin_pb2.ResourceEvent, endpoint_changes: set) -> None:
        parts = ev.path.split("/")
        coll, mesh = parts[0], parts[1] if len(parts) > 1 else ""
        if self.scopes is not None and mesh not in self.scopes:
            return  # a mesh this meshd serves no app of: neither held nor compiled
        snap = self._snaps.get(mesh)
        if snap is None:
            # A scoped view compiles a few routers, grouped from its scoped copy's routes.
            snap = self._snaps[mesh] = MeshSnapshot(mesh, route_groups={} if self.scopes is None else None)
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
                 "routes": (snap.routes, lambda: r.route.SerializeToString(),
                            lambda: (parts[2], parts[3])),
                 "virtualGateways": (snap.gateways, lambda: r.virtual_gateway, lambda: parts[2]),
                 "gatewayRoutes": (snap.gateway_routes, lambda: r.gateway_route, lambda: (parts[2], parts[3])),
                 "routePolicies": (snap.route_policies, lambda: r.route_policy, lambda: parts[2]),
                 "nodePolicies": (snap.node_policies, lambda: r.node_policy, lambda: parts[2]),
                 }.get(coll)
        if coll == "meshes":
            if put:
                snap.mesh = r.mesh
            else:
                self._snaps.pop(mesh, None)
            self._dirty.add(mesh)
            return
        if table is None:
            return
        store, value, key = table
        k = key()
        if put:
            store[k] = v = value()
        else:
            store.pop(k, None)
        if coll == "routes" and snap.route_groups is not None:
            self._group_route(mesh, snap, k, v if put else None)
        self._dirty.add(mesh)

    def _group_route(self, mesh: str, snap: MeshSnapshot, key: tuple[str, str], data) -> None:
        """The route `key` in the snapshot's route groups too (None: deleted). A group a frozen
        copy shares is copied first: what a compile saw never changes under it."""
        router, name = key
        owned = self._own_groups.setdefault(mesh, set())
        group = snap.route_groups.get(router)
        if router not in owned:
            group = snap.route_groups[router] = dict(group) if group else {}
            owned.add(router)
        if data is not None:
            group[name] = data
        else:
            group.pop(name, None)
            if not group:
                del snap.route_groups[router]
                owned.discard(router)

    def prepare(self) -> list[tuple[str, LiveMesh | None]]:
        """Compile every dirty mesh (any thread but the loop's): (mesh, new generation or
        None when the mesh is gone), to hand to `publish`."""
        self._retired = []  # the last generations replaced are freed here, off the loop
        with self._lock:
            if self._loading:
                return []
            dirty, self._dirty = self._dirty, set()
            snaps = {m: self._frozen(m) for m in dirty}
            revision = self.revision
        prepared = []
        for mesh, snap in sorted(snaps.items()):
            if snap is None:
                self._route_caches.pop(mesh, None)
                self._routers.pop(mesh, None)
                prepared.append((mesh, None))
                continue
            t0 = time.perf_counter()
            compiled = compile_mesh(snap, self.trust_domain, self._route_caches.setdefault(mesh, RouteCache()))
            # The egress looks up the instance behind an endpoint among its node's instances.
            snap.instances.update({n: routed_instances(snap, n) for n, data in snap.nodes.items()
                                   if cloud_map_service(data) is not None})
            # Built on the last router prepared for the mesh: what the change left alone (the
            # other virtual routers, the nodes whose instances stayed) is that router's own.
            router = fr.Router(compiled.lowered, seed=self.seed, locality=self.locality,
                               base=self._routers.get(mesh), endpoints=compiled.endpoints)
            self._routers[mesh] = router
            self.generations += 1
            prepared.append((mesh, LiveMesh(mesh, router, compiled, revision, self.generations, time.time(),
                                            time.perf_counter() - t0, snap)))
        return prepared

    def _frozen(self, mesh: str) -> MeshSnapshot | None:
        """What `prepare` compiles of a working snapshot, copied so that later events do not
        change it: the part its Scope reaches, when the view has scopes."""
        snap = self._snaps.get(mesh)
        if snap is None or self.scopes is None:
            self._own_groups.pop(mesh, None)  # from now on shared with the copy
            return _frozen(snap)
        return scoped(snap, self.scopes[mesh])

    # -- the loop side ---------------------------------------------------------------
    def publish(self, prepared: list[tuple[str, LiveMesh | None]]) -> list[LiveMesh]:
        """Swap prepared generations in (on the loop): each new router first adopts the live
        state of the one it replaces."""
        published = []
        for mesh, live in prepared:
            old = self._live.get(mesh)
            if old is not None:
                self._retired.append(old)
            if live is None:
                self._live.pop(mesh, None)
                continue
            for node, found in self._discovered.get(mesh, {}).items():
                self._set_instances(live, node, {**live.snapshot.instances.get(node, {}), **found})
            if old is not None:
                live.router.adopt(old.router)
            self._live[mesh] = live  # the atomic swap: one dict store
            self.last_apply_seconds = live.apply_seconds
            published.append(live)
            self.on_publish(live)
            log.info("route table published", extra={"mesh": mesh, "revision": live.revision,
                                                      "generation": live.generation,
                                                      "problems": len(live.compiled.problems),
                                                      "compile_ms": round(live.apply_seconds * 1000, 2)})
        return published

    def push_endpoints(self, changes: list[tuple[str, str, dict]]) -> None:
        """Instance changes from `apply`, on the loop: the live router's endpoints and the
        published snapshot's instances, with no rebuild."""
        for mesh, node, insts in changes:
            live = self._live.get(mesh)
            if live is None:
                continue  # the next generation has them
            self._set_instances(live, node, {**insts, **self._discovered.get(mesh, {}).get(node, {})})

    def set_discovered(self, mesh: str, node: str, found: dict) -> None:
        """On the loop: the instances this meshd discovered for `node` (meshd.proxy.discovery),
        in place of the ones it discovered before; they join the registered ones, no rebuild."""
        nodes = self._discovered.setdefault(mesh, {})
        before = nodes.pop(node, {})
        if found:
            nodes[node] = dict(found)
        elif not nodes:
            self._discovered.pop(mesh, None)
        live = self._live.get(mesh)
        if live is not None:
            registered = {k: v for k, v in live.snapshot.instances.get(node, {}).items() if k not in before}
            self._set_instances(live, node, {**registered, **found})

    @staticmethod
    def _set_instances(live: LiveMesh, node: str, insts: dict) -> None:
        snap = live.snapshot
        snap.instances[node] = insts
        # With awsCloudMap discovery, every node naming the same service routes to them anew.
        routed = {each: routed_instances(snap, each) for each in sharing_cloud_map(snap, node)}
        snap.instances.update(routed)
        for each in routed:
            try:
                live.router.set_endpoints(each, live_endpoints(node_instances(snap, each)))
            except fr.UnknownNode:
                pass  # instances of a node the table does not know yet; the next compile has them

    def flush(self) -> list[LiveMesh]:
        """`prepare` and `publish` in this thread (when one thread owns the view)."""
        published = self.publish(self.prepare())
        self._retired = []
        return published

    def feed(self, resp: admin_pb2.WatchResponse) -> list[LiveMesh]:
        """`apply`, `push_endpoints` and `flush` in this thread: one owner, no loop."""
        self.push_endpoints(self.apply(resp))
        return self.flush()


def _frozen(snap: MeshSnapshot | None) -> MeshSnapshot | None:
    """A copy of a working snapshot that later events do not change (values are replaced,
    never mutated, so copying the dicts is enough)."""
    if snap is None:
        return None
    return replace(snap, nodes=dict(snap.nodes), services=dict(snap.services), routers=dict(snap.routers),
                   routes=dict(snap.routes), gateways=dict(snap.gateways), gateway_routes=dict(snap.gateway_routes),
                   route_groups=None if snap.route_groups is None else dict(snap.route_groups),
                   route_policies=dict(snap.route_policies), node_policies=dict(snap.node_policies),
                   instances={n: dict(i) for n, i in snap.instances.items()})
