"""Traffic mirroring (RoutePolicy.mirror) through real meshds: host A's egress copies a share
of the route's calls to the virtual node api-mirror, whose instance sits behind host B's
ingress like the route's own target; the copies' answers are discarded. A slow mirror
costs the originals nothing (copies beyond maxInFlight are dropped and counted), and a dead
one fails none of them."""
from __future__ import annotations

import math
import threading
import time

import grpc
import pytest

from beyond.harness import ROUTE, Http1Mesh, percentile, put_policy, run_load, sample, wait_policy, wait_until
from mesh_harness import Origin
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.beyond, pytest.mark.dataplane, pytest.mark.etcd]


@pytest.fixture
def mesh(mesh_factory):
    origins = {"o1": Origin("o1"), "m1": Origin("m1")}
    m = mesh_factory(origins, nodes={"o1": "api-v1", "m1": "api-mirror"}, targets={"api-v1": 100},
                     extra_nodes=("api-mirror",))
    m.wait_routable(m.client())
    return m


def mirror(mesh, percentage: float, **limits) -> None:
    put_policy(mesh.a.resources, "RoutePolicy", "shadow", {
        "route": ROUTE, "mirror": {"virtualNode": "api-mirror", "percentage": percentage, **limits}})
    wait_policy(mesh.a, "shop", "api-router", "api", "mirror")


def copies(mesh, result: str | None = None) -> float:
    """Copies that ended (answered or failed), by result when given."""
    labels = {"result": result} if result else {}
    return sample(mesh.a, "meshd_mirror_requests_total", route="api", **labels)


def dropped(mesh, reason: str | None = None) -> float:
    labels = {"reason": reason} if reason else {}
    return sample(mesh.a, "meshd_mirror_dropped_total", route="api", **labels)


def settled(read, timeout: float = 30.0):
    """Until `read()` gives the same value twice, 0.5 s apart (the copies in flight ended)."""
    previous = [read()]

    def same():
        time.sleep(0.5)
        now = read()
        stable, previous[0] = now == previous[0], now
        return stable
    wait_until("the mirror's figures settled", same, timeout)
    return previous[0]


def test_mirror_receives_its_share(mesh):
    calls, share = 5000, 0.25
    mirrored = mesh.origins["m1"]
    mirror(mesh, share * 100, maxInFlight=calls)

    load = run_load(mesh.client(), calls)

    assert load.count(grpc.StatusCode.OK) == calls
    settled(lambda: (copies(mesh), mirrored.calls))
    # The bound, 2 points over 5,000 calls: more than 3.2 standard deviations.
    assert abs(mirrored.calls - share * calls) <= 0.02 * calls, mirrored.calls
    assert 0.02 * calls >= 3.2 * math.sqrt(calls * share * (1 - share))
    assert copies(mesh, "2xx") == mirrored.calls
    assert dropped(mesh) == 0
    assert sample(mesh.a, "meshd_outlier_ejections_total") == 0


def test_slow_mirror_leaves_the_originals_p99_alone(mesh):
    """Calls on the mirrored route and on an unmirrored one run side by side, in the same
    conditions; the mirror stalls every copy, so most copies are dropped at maxInFlight."""
    slow = mesh.origins["m1"]
    slow.delay_first, slow.delay_calls = 0.3, 10**9
    mesh.a.resources.create(K.ROUTE, parse_json(pb.CreateRouteRequest, {
        "meshName": "shop", "virtualRouterName": "api-router", "routeName": "plain", "spec": {
            "priority": 0, "grpcRoute": {
                "match": {"serviceName": "echo.Echo", "metadata": [{"name": "x-plain", "match": {"exact": "1"}}]},
                "action": {"weightedTargets": [{"virtualNode": "api-v1", "weight": 100}]}}}}))
    in_flight = 8
    mirror(mesh, 100, maxInFlight=in_flight)
    wait_until("the unmirrored route is live", lambda: any(
        r.name == "plain" for vr in mesh.a.runtime.view.live("shop").compiled.table.routers for r in vr.routes))
    calls, results = 3000, {}

    def run(name, metadata):
        results[name] = run_load(mesh.client(), calls, concurrency=4, metadata=metadata)
    threads = [threading.Thread(target=run, args=("mirrored", ())),
               threading.Thread(target=run, args=("plain", (("x-plain", "1"),)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)

    for name in ("mirrored", "plain"):
        assert results[name].count(grpc.StatusCode.OK) == calls, name
    p99 = {name: percentile(r.latencies(), 99) for name, r in results.items()}
    assert p99["mirrored"] <= 1.10 * p99["plain"], p99
    # Every copy was either dropped or sent; a mirror this slow has most of them dropped.
    wait_until("every copy ended or was dropped", lambda: copies(mesh) + dropped(mesh) == calls, timeout=30)
    assert dropped(mesh, "in_flight") > calls / 2
    assert slow.calls == copies(mesh) == calls - dropped(mesh)


def test_dead_mirror_fails_no_original(mesh):
    calls = 1000
    mesh.origins["m1"].stop()
    mirror(mesh, 100, maxInFlight=calls)

    load = run_load(mesh.client(), calls)

    assert load.count(grpc.StatusCode.OK) == calls, {o.code for o in load.outcomes}
    # Each copy was sent and failed (its meshd's ingress could not reach the instance), or
    # was dropped: none is left hanging, and none cost an original anything.
    wait_until("every copy ended or was dropped", lambda: copies(mesh) + dropped(mesh) == calls, timeout=30)


@pytest.fixture
def http1(etcd, etcd_prefix, tmp_path):
    h = Http1Mesh(etcd, etcd_prefix, tmp_path, mirror=True)
    yield h
    h.close()


def test_http1_copies_carry_the_body_up_to_the_limit(http1):
    a, api, shadow, post = http1.a, http1.api, http1.shadow, http1.post
    limit = 1000
    put_policy(a.resources, "RoutePolicy", "shadow", {
        "route": ROUTE, "mirror": {"virtualNode": "api-mirror", "percentage": 100, "maxBodyBytes": limit}})
    wait_policy(a, "shop", "api-router", "api", "mirror")
    small, large = bytes(range(256)) * 3, bytes(range(256)) * 8  # under and over the limit

    assert post("/small", small)[::2] == (200, b"api saw /small")
    assert post("/large", large)[::2] == (200, b"api saw /large")

    wait_until("the small request's copy arrived", lambda: "/small" in shadow.bodies)
    assert shadow.bodies["/small"] == small == api.bodies["/small"]
    wait_until("the large request's copy was dropped",
               lambda: sample(a, "meshd_mirror_dropped_total", reason="body") == 1)
    assert "/large" not in shadow.bodies and api.bodies["/large"] == large
