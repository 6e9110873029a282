"""Incremental compilation at size (issue 17): one route change recompiles one virtual
router's routes, and a change of the mesh's nodes recompiles the routers that need it."""
from __future__ import annotations

import pytest

from bench.estate import generate
from bench.scale_compile import incremental_vs_full, resource_event, route_change, snapshot_response
from meshd.meshview import MeshView
from meshd.v1 import admin_pb2

@pytest.fixture(scope="module")
def estate():
    return generate(scale=0.05, meshes=1)


def _view(estate) -> MeshView:
    view = MeshView()
    view.feed(snapshot_response(estate, [estate.largest]))
    return view


def _routers(view, mesh) -> dict:
    return {r.name: r for r in view.live(mesh).compiled.table.routers}


@pytest.mark.scale_ci
def test_one_route_change_recompiles_only_its_router(estate):
    mesh = estate.largest
    view = _view(estate)
    before = _routers(view, mesh)
    view.feed(route_change(estate, mesh, "r0003", "p02", 41, revision=2))
    after = _routers(view, mesh)
    assert [name for name in after if after[name] is not before[name]] == ["r0003"]
    route = next(r for r in after["r0003"].routes if r.name == "p02")
    assert route.targets[0].weight == 41
    assert not view.live(mesh).compiled.problems


@pytest.mark.scale_ci
def test_a_deleted_node_recompiles_the_routers_that_target_it(estate):
    mesh = estate.largest
    view = _view(estate)
    gone = admin_pb2.ResourceEvent(type=admin_pb2.ResourceEvent.DELETE, kind="virtualNode",
                                   path=f"virtualNodes/{mesh}/n0004")
    view.feed(admin_pb2.WatchResponse(revision=2, events=[gone]))
    compiled = view.live(mesh).compiled
    # compile's own check names the node; the router's validation would name a table path
    left_out = {p.resource for p in compiled.problems if p.field == "spec" and "['n0004']" in p.reason}
    targeting = {f"routes/{mesh}/{r}/{n}" for kind, d in estate.documents if kind == "Route"
                 for r, n in [(d["virtualRouterName"], d["routeName"])]
                 if any(t["virtualNode"] == "n0004" for t in d["spec"]["httpRoute"]["action"]["weightedTargets"])}
    assert targeting and left_out == targeting
    assert all(t.node != "n0004" for r in compiled.table.routers for rt in r.routes for t in rt.targets)
    # the node back: its routes are served again
    back = resource_event("VirtualNode", next(d for kind, d in estate.documents
                                              if kind == "VirtualNode" and d["virtualNodeName"] == "n0004"))
    view.feed(admin_pb2.WatchResponse(revision=3, events=[back]))
    assert not view.live(mesh).compiled.problems


@pytest.mark.scale
def test_a_route_change_at_full_size_costs_at_most_10_ms_of_cpu():
    figures = incremental_vs_full(generate(scale=1.0, meshes=1))
    print(f"\nfull size: {figures}")
    assert figures["incremental_cpu_s"] <= 0.010, figures


@pytest.mark.scale_ci
def test_a_snapshot_in_many_responses_is_compiled_once_when_complete(estate, tmp_path):
    """Resources.snapshot streams a snapshot in responses of 200 events, only the first
    marked reset and the last snapshot_done: nothing is compiled before the last, then the
    whole mesh once (a compile per response made a cold start O(responses x mesh))."""
    from bench.scale_compile import _responses, write_snapshot
    view = MeshView()
    responses = list(_responses(write_snapshot(snapshot_response(estate), tmp_path / "snap")))
    assert len(responses) > 2
    for resp in responses[:-1]:
        view.feed(resp)
        assert not view.dirty and view.live(estate.largest) is None
    view.feed(responses[-1])
    assert view.generations == len(estate.mesh_names)
    assert sum(len(e) for e in view.live(estate.largest).compiled.endpoints.values()) == \
        estate.counts(estate.largest)["Instance"]


@pytest.mark.scale
def test_a_host_holding_the_whole_estate_starts_within_5_s_in_150_mb(tmp_path):
    from bench.scale_compile import held_in_process, write_snapshot
    estate = generate(scale=1.0)
    figures = held_in_process(write_snapshot(snapshot_response(estate), tmp_path / "estate"))
    print(f"\nwhole estate: {figures}")
    assert figures["routes"] == estate.counts()["Route"] and figures["endpoints"] == estate.counts()["Instance"]
    assert figures["rss_mb"] <= 150 and figures["cold_start_s"] <= 5.0, figures


@pytest.mark.scale
def test_a_sidecar_in_the_10000_route_mesh_is_within_10_mb_of_one_in_a_50_route_mesh(tmp_path):
    from bench.scale_compile import held_in_process, write_snapshot
    big, small = generate(scale=1.0, meshes=1), generate(scale=0.005, meshes=1)
    scope = f"{big.largest}/n0000"
    in_big = held_in_process(write_snapshot(snapshot_response(big), tmp_path / "big"), scope)
    in_small = held_in_process(write_snapshot(snapshot_response(small), tmp_path / "small"), scope)
    print(f"\nsidecar in {big.counts()['Route']} routes: {in_big}\nin {small.counts()['Route']}: {in_small}")
    assert in_big["rss_mb"] - in_small["rss_mb"] <= 10, (in_big, in_small)


@pytest.mark.scale_ci
@pytest.mark.fastroute
def test_lowering_shares_unchanged_routers_and_decides_as_a_fresh_lowering(estate):
    """spec.lower with a memo: the routers a change left alone keep their LRoutes (shared,
    not copied), and a Router built on that lowering decides every request as one built on
    the same table lowered from scratch."""
    import _fastroute as fr
    mesh = estate.largest
    view = _view(estate)
    before = view.live(mesh).compiled.lowered
    view.feed(route_change(estate, mesh, "r0003", "p02", 41, revision=2))
    live = view.live(mesh)
    after = live.compiled.lowered
    changed = {i for i, r in enumerate(after.routes) if r.router_name == "r0003"}
    assert changed and all((after.routes[i] is before.routes[i]) == (i not in changed)
                           for i in range(len(after.routes)))
    _same_decisions(fr, live)
    # A route added to an early router leaves every other router shared: nothing in a
    # router's lowering depends on its place in the table (index ids are its own).
    before = live.compiled.lowered
    added = resource_event("Route", {"meshName": mesh, "virtualRouterName": "r0001", "routeName": "p20", "spec": {
        "priority": 20, "httpRoute": {"match": {"prefix": "/p20/"},
                                      "action": {"weightedTargets": [{"virtualNode": "n0002", "weight": 1}]}}}})
    view.feed(admin_pb2.WatchResponse(revision=3, events=[added]))
    after = view.live(mesh).compiled.lowered
    kept = [name for i, name in enumerate(after.routers) if after.router_routes[i] is before.router_routes[i]]
    assert kept == [name for name in after.routers if name != "r0001"]
    routers, _ = view.live(mesh).router.shared_with(live.router)
    assert routers == set(kept)
    _same_decisions(fr, view.live(mesh))


def _same_decisions(fr, live):
    """Routers built from the table lowered from scratch and from the compile's lowering
    decide alike, and the live one (built on the generations before it) routes as they do."""
    from _fastroute.constants import PROTO_HTTP
    fresh = fr.Router(fr.spec.lower(live.compiled.table), seed=1)
    memoized = fr.Router(live.compiled.lowered, seed=1)
    for router in (fresh, memoized):
        for node, eps in live.compiled.endpoints.items():
            router.set_endpoints(node, list(eps))
    for svc in sorted({s.name for s in live.compiled.table.services}):
        for j in range(0, 21, 2):
            got = []
            for router in (fresh, memoized, live.router):
                d = router.decide(PROTO_HTTP, svc, 8080, "GET", "http", f"/p{j}/x", None, 0)
                got.append((d.status, d.route, d.target, d.endpoint.id if d.endpoint is not None else None))
                if d.endpoint is not None:
                    router.release(d)
            # the live router has a random draw and balancing state of its own: the same route
            assert got[0] == got[1] and got[2][:2] == got[0][:2], (svc, j, got)


def _instance(mesh: str, node: str, iid: str, port: int) -> admin_pb2.ResourceEvent:
    ev = admin_pb2.ResourceEvent(type=admin_pb2.ResourceEvent.PUT, kind="instance",
                                 path=f"instances/{mesh}/{node}/{iid}")
    ev.resource.instance.CopyFrom(admin_pb2.Instance(mesh_name=mesh, virtual_node_name=node, instance_id=iid,
                                                     address="10.9.0.1", port=port))
    return ev


@pytest.mark.scale_ci
def test_a_generation_shares_with_the_live_router_what_the_change_left_alone(estate):
    """A one-route change builds one virtual router's routes and shares every other router
    and every node, live endpoint state and all, with the router it replaces. A node whose
    instances changed gets a node of its own: while the mesh waited to be compiled (the
    instance is in the new generation only), and when the instance went to the live
    router first (the new generation has it too, with the same endpoint state)."""
    mesh = estate.largest
    view = _view(estate)
    live = view.live(mesh)
    routers = {r.name for r in live.compiled.table.routers}
    nodes = {n.name for n in live.compiled.table.nodes}
    view.feed(route_change(estate, mesh, "r0003", "p02", 41, revision=2))
    assert view.live(mesh).router.shared_with(live.router) == (routers - {"r0003"}, nodes)
    # a route change and an instance in one response: the mesh is dirty, so the instance
    # reaches only the new generation
    live = view.live(mesh)
    change = route_change(estate, mesh, "r0004", "p01", 42, revision=3)
    change.events.append(_instance(mesh, "n0001", "dirty-1", 7001))
    view.feed(change)
    new = view.live(mesh)
    assert "dirty-1" in {e.id for e in new.router.endpoints("n0001")}
    assert "dirty-1" not in {e.id for e in live.router.endpoints("n0001")}
    assert new.router.shared_with(live.router) == (routers - {"r0004"}, nodes - {"n0001"})
    # an instance alone goes to the live router in place; the next change's generation
    # builds that node anew, and adopt carries the very endpoint states over
    view.feed(admin_pb2.WatchResponse(revision=4, events=[_instance(mesh, "n0002", "live-1", 7002)]))
    assert view.live(mesh) is new and "live-1" in {e.id for e in new.router.endpoints("n0002")}
    view.feed(route_change(estate, mesh, "r0005", "p01", 43, revision=5))
    latest = view.live(mesh)
    assert latest.router.shared_with(new.router) == (routers - {"r0005"}, nodes - {"n0002"})
    assert [id(e) for e in latest.router.endpoints("n0002")] == [id(e) for e in new.router.endpoints("n0002")]
    _same_decisions(__import__("_fastroute"), latest)


@pytest.mark.scale_ci
def test_a_replaced_generation_is_freed_by_the_config_side_not_the_loop(estate):
    """Dropping a generation frees its whole router and tables (about 5 ms at 10,000
    routes): publish, on the loop, keeps the one it replaced until the next prepare."""
    import weakref
    mesh = estate.largest
    view = _view(estate)
    replaced = weakref.ref(view.live(mesh))
    view.apply(route_change(estate, mesh, "r0003", "p02", 41, revision=2))
    view.publish(view.prepare())
    assert replaced() is not None
    view.prepare()
    assert replaced() is None


@pytest.mark.scale_ci
def test_dns_targets_from_a_cache_follow_node_changes(estate):
    """The loop reads the DNS-discovered nodes of each published mesh; with its cache a
    publish reads only nodes whose message changed, and the answer is the uncached one."""
    from meshd.proxy.discovery import targets
    mesh = estate.largest
    view = _view(estate)
    cache: dict = {}
    first = targets(view.snapshot(mesh), cache)
    assert first and first == targets(view.snapshot(mesh))
    node = next(d for kind, d in estate.documents if kind == "VirtualNode" and d["virtualNodeName"] == "n0001")
    changed = {**node, "spec": {**node["spec"], "serviceDiscovery": {"dns": {"hostname": "moved.example"}}}}
    view.feed(admin_pb2.WatchResponse(revision=2, events=[resource_event("VirtualNode", changed)]))
    again = targets(view.snapshot(mesh), cache)
    assert again == targets(view.snapshot(mesh))
    assert again["n0001"].hostname == "moved.example" and again["n0002"] is first["n0002"]
