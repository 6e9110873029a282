"""Scoping (issue 17): a sidecar meshd holds only what its local apps reach, follows its
node's backends when they change, and keeps nothing of a mesh it serves no app of."""
from __future__ import annotations

import time

import pytest

from bench.estate import SCOPED_BACKENDS, SCOPED_NODE, generate
from bench.scale_compile import resource_event, sidecar_scopes, snapshot_response, table_size
from _fastroute.constants import PROTO_HTTP
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.app import Meshd, MeshdConfig
from meshd.compile import services_reaching
from meshd.embedded_etcd import free_port
from meshd.meshview import MeshView
from meshd.proxy import LocalApp, RuntimeConfig
from meshd.security import ClusterKey
from meshd.v1 import admin_pb2

CI_SCALE = 0.25  # 125 routers of 2,500 routes in m00: the sidecar's 5 routers are 4%


def _node_doc(estate, mesh, node):
    return next(doc for kind, doc in estate.documents
                if kind == "VirtualNode" and (doc["meshName"], doc["virtualNodeName"]) == (mesh, node))


def _routers_behind(doc) -> set[str]:
    # bench.estate: router r<i> provides svc<i>.<mesh>.local
    return {f"r{b['virtualService']['virtualServiceName'][3:7]}" for b in doc["spec"]["backends"]}


def _sidecar(estate, mesh):
    view = MeshView(scopes=sidecar_scopes(mesh))
    view.feed(snapshot_response(estate, list(estate.mesh_names[:2])))
    return view


def _held_routers(view, mesh) -> set[str]:
    return {r.name for r in view.live(mesh).compiled.table.routers}


def _check_reach(estate, scale):
    mesh = estate.largest
    view = _sidecar(estate, mesh)
    whole = MeshView()
    whole.feed(snapshot_response(estate, [mesh]))
    expected = _routers_behind(_node_doc(estate, mesh, SCOPED_NODE))
    assert len(expected) == SCOPED_BACKENDS
    assert _held_routers(view, mesh) == expected
    routes, endpoints = table_size(view, mesh)
    all_routes, all_endpoints = table_size(whole, mesh)
    assert routes == sum(len(r.routes) for r in whole.live(mesh).compiled.table.routers if r.name in expected)
    # every node the held routes target has its endpoints, and no other node does
    targets = {t.node for r in view.live(mesh).compiled.table.routers for rt in r.routes for t in rt.targets}
    assert set(view.live(mesh).compiled.endpoints) == targets | {SCOPED_NODE}
    return routes / all_routes, (routes + endpoints) / (all_routes + all_endpoints)


@pytest.mark.scale_ci
def test_sidecar_compiles_only_its_backends_routers():
    route_share, _ = _check_reach(generate(scale=CI_SCALE, meshes=2), CI_SCALE)
    assert route_share <= 0.05


@pytest.mark.scale
def test_sidecar_holds_at_most_5_percent_of_the_full_table():
    route_share, table_share = _check_reach(generate(scale=1.0, meshes=2), 1.0)
    assert route_share <= 0.05 and table_share <= 0.05, (route_share, table_share)


@pytest.mark.scale_ci
def test_a_mesh_served_by_no_local_app_is_neither_held_nor_compiled():
    estate = generate(scale=0.05, meshes=2)
    view = _sidecar(estate, estate.largest)
    other = estate.mesh_names[1]
    assert view.meshes() == [estate.largest]
    assert view.live(other) is None and other not in view._snaps


@pytest.mark.scale_ci
def test_the_scope_follows_the_nodes_backends():
    estate = generate(scale=CI_SCALE, meshes=1)
    mesh = estate.largest
    view = _sidecar(estate, mesh)
    before = _held_routers(view, mesh)
    doc = _node_doc(estate, mesh, SCOPED_NODE)
    gone = sorted(before)[0]
    added = next(f"r{i:04d}" for i in range(125) if f"r{i:04d}" not in before)
    backends = [b for b in doc["spec"]["backends"] if _routers_behind({"spec": {"backends": [b]}}) != {gone}]
    backends.append({"virtualService": {"virtualServiceName": f"svc{added[1:]}.{mesh}.local"}})
    changed = {**doc, "spec": {**doc["spec"], "backends": backends}}
    view.feed(admin_pb2.WatchResponse(revision=2, events=[resource_event("VirtualNode", changed)]))
    assert _held_routers(view, mesh) == before - {gone} | {added}
    router = view.live(mesh).router
    decision = router.decide(PROTO_HTTP, f"svc{added[1:]}.{mesh}.local", 8080, "GET", "http", "/p1/x", None, 0)
    assert (decision.status, decision.route) == (0, "p01")
    router.release(decision)


@pytest.mark.scale_ci
def test_under_drop_all_the_ingress_still_knows_every_caller():
    estate = generate(scale=CI_SCALE, meshes=1)
    mesh = estate.largest
    resp = snapshot_response(estate, [mesh])
    resp.events[0].resource.mesh.spec.egress_filter.type = "DROP_ALL"
    view, whole = MeshView(scopes=sidecar_scopes(mesh)), MeshView()
    view.feed(resp)
    whole.feed(resp)
    full, part = whole.snapshot(mesh), view.snapshot(mesh)
    reaching = services_reaching(full, SCOPED_NODE)
    assert reaching and services_reaching(part, SCOPED_NODE) == reaching
    callers = {n for n, d in full.nodes.items()
               if {b.virtual_service.virtual_service_name for b in d.spec.backends} & reaching}
    assert callers and callers <= set(part.nodes)
    # The ingress of a whole-mesh view asks the compiled table (its routes held serialized
    # in the snapshot are not parsed for it): the same services for every node.
    table = whole.live(mesh).compiled.table
    for node in sorted(full.nodes):
        assert services_reaching(full, node, table) == services_reaching(full, node), node


def _wait(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("not reached within the timeout")


@pytest.mark.scale_ci
@pytest.mark.etcd
def test_a_scoped_meshd_watches_its_mesh_and_follows_its_nodes_backends(etcd, etcd_prefix, tmp_path):
    """A meshd run with `scoped` through real etcd: it holds only the router behind its app's
    backend, nothing of another mesh, and the other router once the backend changes."""
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    web = LocalApp(mesh="shop", virtual_node="web", port=free_port(), egress="127.0.0.1:0")
    cfg = MeshdConfig(admin=f"127.0.0.1:{free_port()}", etcd=[etcd.url], etcd_prefix=etcd_prefix,
                      state_dir=str(tmp_path / "a"), host_name="host-a", cluster_key=str(key), lease_ttl=5,
                      runtime=RuntimeConfig(apps=[web], ingress="127.0.0.1:0", drain_seconds=1.0), scoped=True)
    meshd = Meshd(cfg).start()
    try:
        res = meshd.resources

        def put(kind, title, doc, verb="create"):
            getattr(res, verb)(kind, parse_json(getattr(admin_pb2, f"{verb.title()}{title}Request"), doc))

        def web_node(service, verb="create"):
            put(K.VIRTUAL_NODE, "VirtualNode", {"meshName": "shop", "virtualNodeName": "web", "spec": {
                "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                "serviceDiscovery": {"dns": {"hostname": "web.shop.local"}},
                "backends": [{"virtualService": {"virtualServiceName": service}}]}}, verb)
        for mesh in ("shop", "other"):
            put(K.MESH, "Mesh", {"meshName": mesh, "spec": {}})
            for x in ("a", "b"):
                put(K.VIRTUAL_NODE, "VirtualNode", {"meshName": mesh, "virtualNodeName": f"v{x}", "spec": {
                    "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                    "serviceDiscovery": {"dns": {"hostname": f"v{x}.{mesh}.local"}}}})
                put(K.VIRTUAL_ROUTER, "VirtualRouter", {"meshName": mesh, "virtualRouterName": f"r{x}", "spec": {
                    "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}})
                put(K.ROUTE, "Route", {"meshName": mesh, "virtualRouterName": f"r{x}", "routeName": "all",
                                       "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {
                                           "weightedTargets": [{"virtualNode": f"v{x}", "weight": 1}]}}}})
                put(K.VIRTUAL_SERVICE, "VirtualService", {"meshName": mesh, "virtualServiceName": f"{x}.{mesh}.local",
                                                          "spec": {"provider": {"virtualRouter": {
                                                              "virtualRouterName": f"r{x}"}}}})
        web_node("a.shop.local")
        view = meshd.runtime.view

        def held():
            live = view.live("shop")
            return {r.name for r in live.compiled.table.routers} if live is not None else set()
        _wait(lambda: held() == {"ra"})
        assert view.meshes() == ["shop"] and "other" not in view._snaps
        web_node("b.shop.local", verb="update")
        _wait(lambda: held() == {"rb"})
        assert set(view.live("shop").compiled.endpoints) <= {"web", "vb"}
    finally:
        meshd.stop()
