"""Retries go to endpoints the request has not tried (Envoy's previous_hosts predicate),
in both implementations. A dead endpoint answers every attempt with a connect failure; no
outlier detection runs, so only the retry pick can keep a call off the dead endpoints."""
from __future__ import annotations

import pytest

from _fastroute import constants as C
from _fastroute.spec import Endpoint, LocalityLb, RetryPolicy, VirtualNode

from .test_fr_beyond import HERE, PLACES, T0, route, table

pytestmark = [pytest.mark.fastroute, pytest.mark.beyond]
LBS = ["round_robin", "least_request"]


def connect_retries(n):
    return RetryPolicy(n, 1_000, tcp_events=("connection-error",))


def router(Router, lb, endpoints, max_retries, locality=("", "", "")):
    nodes = (VirtualNode("a", lb=lb, locality=LocalityLb()), VirtualNode("m"))
    r = Router(table([route(retry=connect_retries(max_retries))], nodes), seed=11, locality=locality)
    r.set_endpoints("a", endpoints)
    return r


def call(r, dead):
    """One request fed a connect failure per attempt on a dead endpoint and a success
    elsewhere: (the endpoint ids of its attempts, the final RetryDecision)."""
    d = r.decide(C.PROTO_HTTP, "svc.local", 80, "GET", "http", "/", {}, T0)
    tried = [d.endpoint.id]
    while True:
        rd = r.result(d, *((C.RESULT_CONNECT_FAILURE, 0) if d.endpoint.id in dead else (C.RESULT_HTTP, 200)), T0)
        if rd.action != C.ACT_RETRY:
            return tried, rd
        tried.append(rd.endpoint.id)


@pytest.mark.parametrize("lb", LBS)
def test_three_dead_of_four_never_fail_with_three_retries(Router, lb):
    """Every attempt takes an endpoint not yet tried, so the fourth at the latest is the
    live one. Avoiding only the last endpoint, a least-request retry went back to the
    first dead one and the call failed."""
    r = router(Router, lb, [Endpoint(f"e{k}", f"10.0.0.{k}", 8080) for k in range(4)], 3)
    dead = {"e0", "e1", "e2"}
    for _ in range(2_000):
        tried, rd = call(r, dead)
        assert rd.why == C.WHY_SUCCESS, tried
        assert len(set(tried)) == len(tried) <= 4


@pytest.mark.parametrize("lb", LBS)
def test_dead_zone_fails_over_within_two_retries(Router, lb):
    """Two dead endpoints in the caller's zone, two live ones in another: after both local
    ones failed, the zone has no untried endpoint left, so its priority takes no load
    and the second retry leaves it. Counting only the last one as unavailable, the zone
    kept 70% of that retry and sent it back to the first dead endpoint."""
    eps = [Endpoint(f"in-{k}", f"10.0.0.{k}", 8080, locality=HERE) for k in range(2)]
    eps += [Endpoint(f"out-{k}", f"10.0.1.{k}", 8080, locality=PLACES[2]) for k in range(2)]
    r = router(Router, lb, eps, 2, locality=HERE)
    failed = 0
    for _ in range(3_000):
        tried, rd = call(r, {"in-0", "in-1"})
        failed += rd.why != C.WHY_SUCCESS
        assert tried[0].startswith("in-")  # the zone is healthy by its checks: it is tried first
    assert failed == 0


@pytest.mark.parametrize("lb", LBS)
def test_every_endpoint_failing_still_gives_up_after_max_retries(Router, lb):
    """With all endpoints dead the retries stay bounded by maxRetries: the first four
    attempts take the four endpoints, the rest fall back to endpoints already tried."""
    r = router(Router, lb, [Endpoint(f"e{k}", f"10.0.0.{k}", 8080) for k in range(4)], 6)
    for _ in range(300):
        tried, rd = call(r, {"e0", "e1", "e2", "e3"})
        assert (rd.action, rd.why) == (C.ACT_GIVE_UP, C.WHY_RETRIES_EXHAUSTED)
        assert len(tried) == 7 and len(set(tried[:4])) == 4
    assert all(e.active == 0 for e in r.endpoints("a"))


def test_the_oldest_tried_endpoint_is_forgotten_after_max_tried(Router):
    """A decision remembers its last MAX_TRIED endpoints, in a fixed array: among twelve
    dead ones, any MAX_TRIED consecutive attempts of thirty-one are distinct."""
    n = C.MAX_TRIED + 4
    r = router(Router, "least_request", [Endpoint(f"e{k}", f"10.0.0.{k}", 8080) for k in range(n)], 30)
    for _ in range(200):
        tried, rd = call(r, {f"e{k}" for k in range(n)})
        assert rd.why == C.WHY_RETRIES_EXHAUSTED and len(tried) == 31
        for i in range(len(tried) - C.MAX_TRIED + 1):
            assert len(set(tried[i:i + C.MAX_TRIED])) == C.MAX_TRIED, tried
