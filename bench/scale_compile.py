"""The seeded estate (bench.estate) as a meshd's MeshView sees it, and the compile figures
of issue 17 measured on it: full vs incremental compile CPU, scoped vs whole tables.

The documents become one Watch snapshot, as `Resources.snapshot` sends it, without etcd
in between: what is measured is the view and the compiler, not the store.
"""
from __future__ import annotations

import time

from bench.estate import SCOPED_NODE, Estate
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.compile import Scope
from meshd.meshview import MeshView
from meshd.v1 import admin_pb2


def _path(kind: K.Kind, data) -> str:
    ids = [getattr(data, f) for f in kind.parents + (kind.name_field,)]
    return "/".join([kind.collection, *ids])


def resource_event(kind_title: str, doc: dict) -> admin_pb2.ResourceEvent:
    """One estate document as the PUT event a Watch would carry."""
    kind = K.BY_TITLE[kind_title]
    ev = admin_pb2.ResourceEvent(type=admin_pb2.ResourceEvent.PUT, kind=kind.name)
    data = getattr(ev.resource, kind.field)
    data.CopyFrom(parse_json(kind.data_cls, doc))
    ev.path = _path(kind, data)
    return ev


def snapshot_response(estate: Estate, meshes: list[str] | None = None, revision: int = 1) -> admin_pb2.WatchResponse:
    """The estate (or its `meshes`) as one complete Watch snapshot, instances included."""
    keep = set(meshes) if meshes is not None else set(estate.mesh_names)
    events = [resource_event(kind, doc) for kind, doc in estate.documents if doc["meshName"] in keep]
    for i in estate.instances:
        if i.mesh in keep:
            ev = admin_pb2.ResourceEvent(type=admin_pb2.ResourceEvent.PUT, kind="instance",
                                         path=f"instances/{i.mesh}/{i.node}/{i.instance_id}")
            ev.resource.instance.CopyFrom(admin_pb2.Instance(mesh_name=i.mesh, virtual_node_name=i.node,
                                                             instance_id=i.instance_id, address=i.address,
                                                             port=i.port))
            events.append(ev)
    return admin_pb2.WatchResponse(revision=revision, events=events, reset=True, snapshot_done=True)


def route_change(estate: Estate, mesh: str, router: str, route: str, weight: int,
                 revision: int) -> admin_pb2.WatchResponse:
    """A Watch response carrying one route rewritten with its first target's weight set."""
    for kind, doc in estate.documents:
        if kind == "Route" and (doc["meshName"], doc["virtualRouterName"], doc["routeName"]) == (mesh, router, route):
            ev = resource_event(kind, doc)
            ev.resource.route.spec.http_route.action.weighted_targets[0].weight = weight
            return admin_pb2.WatchResponse(revision=revision, events=[ev])
    raise KeyError((mesh, router, route))


def sidecar_scopes(mesh: str, node: str = SCOPED_NODE) -> dict[str, Scope]:
    """The scopes of a sidecar meshd serving one app of `node` in `mesh`."""
    return {mesh: Scope(nodes=frozenset({node}))}


def table_size(view: MeshView, mesh: str) -> tuple[int, int]:
    """(routes, endpoints) in the live router of `mesh`."""
    compiled = view.live(mesh).compiled
    return (sum(len(r.routes) for r in compiled.table.routers),
            sum(len(eps) for eps in compiled.endpoints.values()))


def compile_cpu(view: MeshView, resp: admin_pb2.WatchResponse) -> float:
    """Thread CPU seconds of applying `resp` and compiling what it changed (`prepare`),
    the work a meshd's config thread does per change; the result is then published."""
    t0 = time.thread_time()
    view.apply(resp)
    prepared = view.prepare()
    spent = time.thread_time() - t0
    view.publish(prepared)
    return spent
