"""Fault injection (RoutePolicy.fault) through real meshds: gRPC calls from an app through
host A's egress to origins behind host B's ingress, with the policy written through the
admin API into the real etcd and compiled from the watch like any route change."""
from __future__ import annotations

import math
import time

import grpc
import pytest

from beyond.harness import (REASON, ROUTE, Http1Mesh, access_log, fresh_log, log_entries, percentile, put_policy,
                            run_load, sample, wait_policy)
from builders import node_spec, route_spec, router_spec
from mesh_harness import Origin
from meshd.api.validate import parse_json
from meshd.compile import MeshSnapshot, compile_mesh
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.beyond]

# Outlier detection that a few consecutive server errors would trip: were injected aborts
# fed to it, some endpoint would be ejected within the run.
OUTLIER = {"outlierDetection": {"maxServerErrors": 3, "interval": {"unit": "s", "value": 10},
                                "baseEjectionDuration": {"unit": "s", "value": 30}, "maxEjectionPercent": 100}}


@pytest.fixture
def mesh(mesh_factory):
    origins = {"o1": Origin("o1"), "o2": Origin("o2")}
    m = mesh_factory(origins, nodes={"o1": "api-v1", "o2": "api-v1"}, targets={"api-v1": 100},
                     node_listener=OUTLIER)
    m.wait_routable(m.client())
    return m


@pytest.mark.dataplane
@pytest.mark.etcd
def test_abort_share_and_outlier_detection_untouched(mesh, tmp_path):
    calls, share = 5000, 0.10
    log = tmp_path / "web.log"
    access_log(mesh.a.resources, "web", log)
    fresh_log(log, lambda: mesh.client()(b"warm", timeout=5))
    put_policy(mesh.a.resources, "RoutePolicy", "chaos", {
        "route": ROUTE, "fault": {"abort": {"percentage": share * 100, "grpcStatus": 13}}})
    wait_policy(mesh.a, "shop", "api-router", "api", "fault")
    served_before = sum(o.calls for o in mesh.origins.values())

    load = run_load(mesh.client(), calls)

    assert len(load.outcomes) == calls
    aborted = load.count(grpc.StatusCode.INTERNAL, "fault_abort")
    # The bound: the aborted share within 2 points of the policy's, over 5,000 calls
    # (4.7 standard deviations of a binomial draw at 10%: a correct router never misses it).
    assert abs(aborted - share * calls) <= 0.02 * calls, aborted
    assert 4.7 * math.sqrt(calls * share * (1 - share)) <= 0.02 * calls
    assert load.count(grpc.StatusCode.OK) == calls - aborted, "every call not aborted reached an origin"
    assert sum(o.calls for o in mesh.origins.values()) - served_before == calls - aborted
    # Labelled as injected, and never fed to outlier detection.
    assert sample(mesh.a, "meshd_fault_injected_total", kind="abort", route="api") == aborted
    flags = [e["flags"] for e in log_entries(log, calls)]
    assert len(flags) == calls and flags.count("FI") == aborted and flags.count("-") == calls - aborted
    assert sample(mesh.a, "meshd_outlier_ejections_total") == 0
    router = mesh.a.runtime.view.live("shop").router
    assert all(ep.times_ejected == 0 for ep in router.endpoints("api-v1"))


@pytest.mark.dataplane
@pytest.mark.etcd
def test_delay_shows_in_p50_of_matching_calls_only(mesh, tmp_path):
    delay_ms = 150
    log = tmp_path / "web.log"
    access_log(mesh.a.resources, "web", log)
    fresh_log(log, lambda: mesh.client()(b"warm", timeout=5))
    put_policy(mesh.a.resources, "RoutePolicy", "chaos", {
        "route": ROUTE, "fault": {"delay": {"percentage": 100, "fixedDelay": {"unit": "ms", "value": delay_ms}},
                                  "match": [{"name": "x-chaos", "match": {"exact": "on"}}]}})
    wait_policy(mesh.a, "shop", "api-router", "api", "fault")
    call, n = mesh.client(), 200

    delayed = run_load(call, n, metadata=(("x-chaos", "on"),))
    plain = run_load(call, n)

    assert delayed.count(grpc.StatusCode.OK) == plain.count(grpc.StatusCode.OK) == n
    p50_delayed, p50_plain = percentile(delayed.latencies(), 50), percentile(plain.latencies(), 50)
    assert p50_delayed >= delay_ms / 1000, p50_delayed
    assert p50_plain < delay_ms / 1000 / 2, p50_plain
    assert sample(mesh.a, "meshd_fault_injected_total", kind="delay", route="api") == n
    flags = sorted(e["flags"] for e in log_entries(log, 2 * n))
    assert flags == ["-"] * n + ["DI"] * n
    assert sample(mesh.a, "meshd_outlier_ejections_total") == 0


@pytest.mark.dataplane
@pytest.mark.etcd
def test_http1_delayed_aborts_and_delayed_calls(etcd, etcd_prefix, tmp_path):
    """Through the HTTP/1.1 egress: every matching call waits the delay, half of them are then
    answered 418 by the abort (never reaching the app), the others go on; others are untouched."""
    mesh = Http1Mesh(etcd, etcd_prefix, tmp_path)
    try:
        delay_s, n = 0.15, 20
        put_policy(mesh.a.resources, "RoutePolicy", "chaos", {"route": ROUTE, "fault": {
            "delay": {"percentage": 100, "fixedDelay": {"unit": "ms", "value": int(delay_s * 1000)}},
            "abort": {"percentage": 50, "httpStatus": 418}, "match": [{"name": "x-chaos", "match": {"exact": "on"}}]}})
        wait_policy(mesh.a, "shop", "api-router", "api", "fault")
        answers = []
        for i in range(n):
            t0 = time.monotonic()
            status, headers, _ = mesh.post(f"/chaos/{i}", headers={"x-chaos": "on"})
            answers.append((status, headers.get(REASON), time.monotonic() - t0))
        t0 = time.monotonic()
        plain = mesh.post("/plain")
        plain_s = time.monotonic() - t0

        assert {(s, r) for s, r, _ in answers} == {(200, None), (418, "fault_abort")}, answers
        assert min(t for _, _, t in answers) >= delay_s
        assert sorted(p for p in mesh.api.bodies if p.startswith("/chaos/")) == sorted(
            f"/chaos/{i}" for i, (s, _, _) in enumerate(answers) if s == 200), "an aborted call reached the app"
        assert plain[0] == 200 and plain_s < delay_s
    finally:
        mesh.close()


def test_a_policy_the_router_refuses_is_left_out_and_its_route_serves():
    """What the admin API lets through but the router's ranges do not (here an HTTP status
    past 599) costs the policy, reported under its own name, never the route."""
    def data(cls, **doc):
        return parse_json(cls, doc)
    snap = MeshSnapshot("shop")
    snap.nodes["api-v1"] = data(pb.VirtualNodeData, meshName="shop", virtualNodeName="api-v1", spec=node_spec())
    snap.routers["api-router"] = data(pb.VirtualRouterData, meshName="shop", virtualRouterName="api-router",
                                      spec=router_spec())
    snap.routes[("api-router", "api")] = data(pb.RouteData, meshName="shop", virtualRouterName="api-router",
                                              routeName="api", spec=route_spec({"api-v1": 100}))
    snap.route_policies["chaos"] = data(pb.RoutePolicyData, meshName="shop", routePolicyName="chaos", spec={
        "route": ROUTE, "fault": {"abort": {"percentage": 10, "httpStatus": 700}},
        "mirror": {"virtualNode": "api-v1", "percentage": 5}})

    compiled = compile_mesh(snap)

    [route] = compiled.table.routers[0].routes
    assert route.name == "api" and (route.fault, route.mirror, route.rate_limit) == (None, None, None)
    assert [(p.resource, p.field) for p in compiled.problems] == [
        ("routePolicies/shop/chaos", "routers[0].routes[0].fault.abort.http_status")]
    assert compiled.mirrors == {}


def test_an_injected_delay_is_never_served_short():
    """An injected delay is served in full, measured on the process clock: the egress's
    timer checks the clock when it fires and sets itself again for what is left. uvloop's
    (libuv's) timers count whole milliseconds from a cached loop time, and an injected
    150 ms delay once measured 149.94 ms from the caller (tests/beyond/test_fault.py's
    HTTP/1.1 test, in a loaded run); plain timers fired late in isolation here, so this
    checks the guarantee over timers set at every tenth of a millisecond."""
    import uvloop

    from meshd.proxy.egress import _at_least

    loop = uvloop.new_event_loop()
    early = {"egress": []}

    def schedule(k: int) -> None:
        if k == 40:
            loop.stop()
            return
        # start at a different place within a millisecond each time
        start = time.monotonic()
        while time.monotonic() < start + (k % 10) * 0.0001:
            pass
        due = time.monotonic() + 0.005
        _at_least(loop, due, lambda: (early["egress"].append(due - time.monotonic()), schedule(k + 1)))

    loop.call_soon(schedule, 0)
    try:
        loop.run_forever()
    finally:
        loop.close()
    assert len(early["egress"]) == 40 and max(early["egress"]) <= 0, max(early["egress"])
