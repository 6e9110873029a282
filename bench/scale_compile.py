"""The seeded estate (bench.estate) as a meshd's MeshView sees it, and the compile figures
of issue 17 measured on it: full vs incremental compile CPU, scoped vs whole tables.

The documents become one Watch snapshot, as `Resources.snapshot` sends it, without etcd
in between: what is measured is the view and the compiler, not the store.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

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


def incremental_vs_full(estate: Estate, changes: int = 7) -> dict[str, float]:
    """A full compile of the largest mesh, then `changes` one-route changes: the thread CPU
    seconds of the full compile, the median of the changes', and the longest publish of a
    change (the step that runs on the data-plane loop: adopt and swap). The collector is
    off, as a meshd keeps its loaded state out of its reach (gc.freeze in proxy.lifecycle)."""
    mesh = estate.largest
    gc.collect()
    gc.disable()
    try:
        view = MeshView()
        full = compile_cpu(view, snapshot_response(estate, [mesh]))
        incremental, publish = [], []
        for i in range(changes):
            t0 = time.thread_time()
            view.apply(route_change(estate, mesh, "r0001", "p03", 7 + i, revision=2 + i))
            prepared = view.prepare()
            t1 = time.perf_counter()
            view.publish(prepared)
            publish.append(time.perf_counter() - t1)
            incremental.append(time.thread_time() - t0)
    finally:
        gc.enable()
    return {"full_cpu_s": full, "incremental_cpu_s": statistics.median(incremental), "publish_max_s": max(publish)}


def write_snapshot(resp: admin_pb2.WatchResponse, path: Path, chunk: int = 200) -> Path:
    """`resp` as Resources.snapshot streams it (responses of `chunk` events, the last one
    marked snapshot_done), length-prefixed in a file that `held` reads back."""
    with open(path, "wb") as f:
        events = list(resp.events)
        for i in range(0, max(len(events), 1), chunk):
            part = admin_pb2.WatchResponse(revision=resp.revision, events=events[i:i + chunk], reset=i == 0,
                                           snapshot_done=i + chunk >= len(events)).SerializeToString()
            f.write(struct.pack("<I", len(part)) + part)
    return path


def _responses(path: Path):
    with open(path, "rb") as f:
        while head := f.read(4):
            resp = admin_pb2.WatchResponse()
            resp.ParseFromString(f.read(struct.unpack("<I", head)[0]))
            yield resp


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def held(path: Path, scope: str = "") -> dict:
    """In a fresh interpreter (`python -m bench.scale_compile FILE [MESH/NODE]`): a view
    (scoped to a sidecar of MESH/NODE, else whole) fed the snapshot in `path` as a meshd
    receives it, with the meshd's collector settings (its loaded state frozen). Returns the
    process RSS in MB once serving, the seconds from the first response to every mesh
    published (cold start), and the routes and endpoints held."""
    view = MeshView(scopes=sidecar_scopes(*scope.split("/")) if scope else None)
    base = _rss_mb()
    t0 = time.perf_counter()
    for resp in _responses(path):
        view.feed(resp)
    serving = time.perf_counter() - t0
    gc.collect()
    gc.freeze()
    sizes = [table_size(view, m) for m in view.meshes()]
    return {"rss_mb": round(_rss_mb(), 1), "base_mb": round(base, 1), "cold_start_s": round(serving, 3),
            "meshes": len(sizes), "routes": sum(r for r, _ in sizes), "endpoints": sum(e for _, e in sizes)}


def held_in_process(path: Path, scope: str = "") -> dict:
    """`held` in an interpreter of its own, so that its RSS is the view's alone."""
    p = subprocess.run([sys.executable, "-m", "bench.scale_compile", str(path), scope], capture_output=True,
                       text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


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


if __name__ == "__main__":
    args = argparse.ArgumentParser(description=held.__doc__)
    args.add_argument("snapshot", type=Path)
    args.add_argument("scope", nargs="?", default="", help="MESH/NODE: a sidecar of that node")
    a = args.parse_args()
    print(json.dumps(held(a.snapshot, a.scope)))
