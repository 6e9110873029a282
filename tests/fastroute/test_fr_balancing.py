"""Weighted targets, endpoint balancing, outlier detection and instance churn."""
from __future__ import annotations

from collections import Counter

import pytest

from _fastroute import constants as C
from _fastroute.errors import UnknownNode
from _fastroute.spec import Endpoint, OutlierDetection, VirtualNode

from .helpers import endpoints, http, http_route

pytestmark = pytest.mark.fastroute
MS = 1_000_000


def test_weights_converge_and_zero_is_never_chosen(build):
    r = build([http_route("w", targets=(("a", 1), ("b", 3), ("c", 0), ("d", 6)))])
    n = 20_000
    counts = Counter(http(r).target for _ in range(n))
    assert counts["c"] == 0
    for node, w in (("a", 1), ("b", 3), ("d", 6)):
        assert abs(counts[node] / n - w / 10) < 0.02, counts


def test_same_seed_same_choices_other_seed_other_choices(build):
    routes = [http_route("w", targets=(("a", 1), ("b", 1)))]
    picks = lambda seed: [http(r).target for r in [build(routes, seed=seed)] for _ in range(64)]  # noqa: E731
    assert picks(7) == picks(7)
    assert picks(7) != picks(8)


def test_round_robin_cycles_every_endpoint(build):
    r = build([http_route("x")], n_endpoints=4)
    assert [http(r).endpoint.id for _ in range(8)] == [f"a-{k}" for k in range(4)] * 2


def test_least_request_prefers_idle_endpoints(build):
    r = build([http_route("x")], nodes=(VirtualNode("a", lb="least_request"),), n_endpoints=4)
    held = [http(r) for _ in range(200)]  # never finished: active counts grow
    active = [e.active for e in r.endpoints("a")]
    assert sum(active) == 200 and max(active) - min(active) <= 6, active
    for d in held[:50]:
        r.result(d, C.RESULT_HTTP, 200, 10**12)
    assert sum(e.active for e in r.endpoints("a")) == 150


def test_instances_join_and_leave_without_rebuilding(build):
    r = build([http_route("x")], n_endpoints=2)
    r.add_endpoint("a", Endpoint("a-9", "10.9.9.9", 80))
    assert {http(r).endpoint.id for _ in range(6)} == {"a-0", "a-1", "a-9"}
    assert r.remove_endpoint("a", "a-0") and not r.remove_endpoint("a", "a-0")
    assert {http(r).endpoint.id for _ in range(6)} == {"a-1", "a-9"}
    r.set_endpoints("a", [])
    d = http(r)
    assert (d.status, d.reason, d.target) == (C.NO_ENDPOINT, "no_endpoint", "a")
    with pytest.raises(UnknownNode) as err:
        r.set_endpoints("nope", [])
    assert err.value.node == "nope"


def test_set_endpoints_keeps_state_of_staying_instances(build):
    od = OutlierDetection(max_server_errors=1, interval_ms=10_000, base_ejection_ms=30_000, max_ejection_percent=50)
    r = build([http_route("x")], nodes=(VirtualNode("a", outlier=od),), n_endpoints=2)
    d = http(r, now_ns=10**12)
    r.result(d, C.RESULT_HTTP, 500, 10**12)
    r.set_endpoints("a", endpoints("a", 2))
    assert r.ejected("a", 10**12 + 1) == 1


def test_an_instance_re_registered_elsewhere_is_routed_to_its_new_address(build):
    # Same instance id, new port (an app restarted on another port): the old address must
    # not outlive the change, and the ejection state of the old address does not follow it.
    od = OutlierDetection(max_server_errors=1, interval_ms=10_000, base_ejection_ms=30_000, max_ejection_percent=100)
    r = build([http_route("x")], nodes=(VirtualNode("a", outlier=od),), n_endpoints=1)
    (e,) = r.endpoints("a")
    d = http(r, now_ns=10**12)
    r.result(d, C.RESULT_HTTP, 500, 10**12)
    assert r.ejected("a", 10**12 + 1) == 1
    r.set_endpoints("a", [Endpoint(e.id, e.address, e.port + 1)])
    d = http(r, now_ns=10**12 + 2)
    assert (d.endpoint.id, d.endpoint.port) == (e.id, e.port + 1)
    assert r.ejected("a", 10**12 + 3) == 0


def _eject_run(r, errors, now, code=503):
    ids = []
    for _ in range(errors):
        d = http(r, now_ns=now)
        ids.append(d.endpoint.id)
        r.result(d, C.RESULT_HTTP, code, now)
    return ids


def test_outlier_ejects_after_max_server_errors_and_returns(build):
    od = OutlierDetection(max_server_errors=3, interval_ms=10_000, base_ejection_ms=30_000, max_ejection_percent=50)
    r = build([http_route("x")], nodes=(VirtualNode("a", outlier=od),), n_endpoints=1)
    r.add_endpoint("a", Endpoint("a-1", "10.0.0.1", 80))  # two endpoints; 50% = one may go
    t0 = 10**12
    # Errors on a-0 only: alternate a-0 failures with a-1 successes.
    for k in range(3):
        d = http(r, now_ns=t0)
        r.result(d, C.RESULT_HTTP, 500 if d.endpoint.id == "a-0" else 200, t0)
        d = http(r, now_ns=t0)
        r.result(d, C.RESULT_HTTP, 500 if d.endpoint.id == "a-0" else 200, t0)
    assert r.ejected("a", t0) == 1
    assert {http(r, now_ns=t0 + 1).endpoint.id for _ in range(4)} == {"a-1"}
    back = t0 + 30_000 * MS  # baseEjectionDuration x 1
    assert r.ejected("a", back) == 0
    assert "a-0" in {http(r, now_ns=back).endpoint.id for _ in range(4)}


def test_ejection_time_grows_with_times_ejected(build):
    od = OutlierDetection(max_server_errors=1, interval_ms=1_000, base_ejection_ms=10_000, max_ejection_percent=100)
    r = build([http_route("x")], nodes=(VirtualNode("a", outlier=od),), n_endpoints=1)
    t = 10**12
    _eject_run(r, 1, t)
    assert r.endpoints("a")[0].ejected_until_ns == t + 10_000 * MS
    t2 = t + 10_000 * MS
    _eject_run(r, 1, t2)
    assert r.endpoints("a")[0].ejected_until_ns == t2 + 20_000 * MS


def test_errors_outside_the_interval_do_not_add_up(build):
    od = OutlierDetection(max_server_errors=2, interval_ms=1_000, base_ejection_ms=10_000, max_ejection_percent=100)
    r = build([http_route("x")], nodes=(VirtualNode("a", outlier=od),), n_endpoints=1)
    _eject_run(r, 1, 10**12)
    _eject_run(r, 1, 10**12 + 2_000 * MS)
    assert r.ejected("a", 10**12 + 2_000 * MS) == 0
    _eject_run(r, 1, 10**12 + 2_500 * MS)
    assert r.ejected("a", 10**12 + 2_500 * MS) == 1


@pytest.mark.parametrize(("n", "percent", "most"), [(10, 30, 3), (4, 50, 2), (3, 10, 0), (5, 100, 5)])
def test_ejection_never_exceeds_max_ejection_percent(build, n, percent, most):
    od = OutlierDetection(max_server_errors=1, interval_ms=1_000, base_ejection_ms=60_000, max_ejection_percent=percent)
    r = build([http_route("x")], nodes=(VirtualNode("a", outlier=od),), n_endpoints=n)
    _eject_run(r, 4 * n, 10**12)
    assert r.ejected("a", 10**12) == most


def test_grpc_and_transport_failures_count_as_server_errors(build):
    od = OutlierDetection(max_server_errors=3, interval_ms=1_000, base_ejection_ms=60_000, max_ejection_percent=100)
    r = build([http_route("x")], nodes=(VirtualNode("a", outlier=od),), n_endpoints=1)
    t = 10**12
    for kind, code in ((C.RESULT_GRPC, 14), (C.RESULT_RESET, 0), (C.RESULT_GRPC, 5)):
        d = http(r, now_ns=t)
        r.result(d, kind, code, t)
    assert r.ejected("a", t) == 0  # NOT_FOUND (5) is no server error and resets the run
    for kind, code in ((C.RESULT_GRPC, 13), (C.RESULT_CONNECT_FAILURE, 0), (C.RESULT_TIMEOUT, 0)):
        d = http(r, now_ns=t)
        r.result(d, kind, code, t)
    assert r.ejected("a", t) == 1


def _health(r, node, failing):
    """Set `node`'s endpoints again with the ids in `failing` failing their health check."""
    r.set_endpoints(node, [Endpoint(e.id, e.address, e.port, healthy=e.id not in failing) for e in r.endpoints(node)])


@pytest.mark.parametrize("lb", ["round_robin", "least_request"])
def test_unhealthy_endpoints_are_passed_over_until_fewer_than_half_are_left(build, lb):
    r = build([http_route("x")], nodes=(VirtualNode("a", lb=lb),), n_endpoints=4)
    _health(r, "a", {"a-0", "a-1"})                     # 2 of 4 available: 50%, not fewer
    assert {http(r).endpoint.id for _ in range(40)} == {"a-2", "a-3"}
    _health(r, "a", {"a-0", "a-1", "a-2"})              # 1 of 4: panic, balance across all
    assert {http(r).endpoint.id for _ in range(40)} == {"a-0", "a-1", "a-2", "a-3"}
    _health(r, "a", {"a-0", "a-1", "a-2", "a-3"})       # none: still routed, not no_endpoint
    assert {(d.status, d.endpoint.id) for d in (http(r) for _ in range(40))} == {
        (C.ROUTED, f"a-{k}") for k in range(4)}
    _health(r, "a", {"a-3"})
    assert {http(r).endpoint.id for _ in range(40)} == {"a-0", "a-1", "a-2"}


def test_health_and_ejection_add_up_to_panic_and_back(build):
    od = OutlierDetection(max_server_errors=1, interval_ms=1_000, base_ejection_ms=10_000, max_ejection_percent=50)
    r = build([http_route("x")], nodes=(VirtualNode("a", outlier=od),), n_endpoints=4)
    _health(r, "a", {"a-3"})
    t = 10**12
    d = http(r, now_ns=t)
    assert d.endpoint.id == "a-0"
    r.result(d, C.RESULT_HTTP, 503, t)                  # a-0 ejected: a-1, a-2 left (50%)
    assert r.ejected("a", t) == 1
    assert {http(r, now_ns=t).endpoint.id for _ in range(20)} == {"a-1", "a-2"}
    d = http(r, now_ns=t)
    r.result(d, C.RESULT_HTTP, 503, t)                  # a second ejection: 1 of 4 available
    assert r.ejected("a", t) == 2
    assert {http(r, now_ns=t).endpoint.id for _ in range(20)} == {"a-0", "a-1", "a-2", "a-3"}
    later = t + 10_000 * MS                             # the ejections are over
    assert {http(r, now_ns=later).endpoint.id for _ in range(20)} == {"a-0", "a-1", "a-2"}


def test_a_health_verdict_keeps_the_endpoints_other_state(build):
    od = OutlierDetection(max_server_errors=1, interval_ms=1_000, base_ejection_ms=10_000, max_ejection_percent=50)
    r = build([http_route("x")], nodes=(VirtualNode("a", outlier=od),), n_endpoints=3)
    held = http(r)
    r.result(http(r), C.RESULT_HTTP, 503, 10**12)       # a-1 ejected
    _health(r, "a", {"a-0"})
    a0, a1, _ = r.endpoints("a")
    assert (a0.healthy, a0.active, a1.healthy, a1.times_ejected) == (False, 1, True, 1)
    assert held.endpoint is a0
    _health(r, "a", set())
    assert r.endpoints("a")[0] is a0 and a0.healthy


@pytest.mark.hardening
def test_a_new_table_generation_adopts_ejections_in_flight_counts_and_budgets(build):
    """Each configuration change builds a new router; `adopt` carries the old one's live
    state over for what still exists, so an ejected endpoint stays ejected, requests that
    finish on the old table give their counts back to the endpoints now balanced over, and
    an endpoint that changed address starts fresh."""
    od = OutlierDetection(max_server_errors=1, interval_ms=10_000, base_ejection_ms=30_000, max_ejection_percent=50)
    nodes = (VirtualNode("a", outlier=od),)
    old = build([http_route("x")], nodes=nodes, n_endpoints=4)
    t0 = 10**12
    d = http(old, now_ns=t0)
    bad = d.endpoint.id
    old.result(d, C.RESULT_HTTP, 500, t0)        # ejects `bad` for 30 s
    assert old.ejected("a", t0) == 1
    inflight = http(old, now_ns=t0)              # still running when the table changes
    assert inflight.endpoint.active == 1
    new = build([http_route("x"), http_route("y", "/y")], nodes=nodes, n_endpoints=4)
    new.adopt(old)
    assert new.ejected("a", t0 + 1) == 1
    picked = set()
    for _ in range(12):
        d = http(new, now_ns=t0 + 1)
        picked.add(d.endpoint.id)
        new.release(d)
    assert bad not in picked and len(picked) == 3
    moved = {e.id: e for e in new.endpoints("a")}[inflight.endpoint.id]
    assert moved is inflight.endpoint and moved.active == 1
    old.result(inflight, C.RESULT_HTTP, 200, t0 + 2)
    assert moved.active == 0
    # Not carried: a node's endpoint whose address changed is a new endpoint.
    other = build([http_route("x")], nodes=nodes, n_endpoints=4)
    other.set_endpoints("a", [Endpoint(e.id, "10.9.9.9", 1) for e in endpoints("a", 4)])
    other.adopt(new)
    assert other.ejected("a", t0 + 1) == 0
