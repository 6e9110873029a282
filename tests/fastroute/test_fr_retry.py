"""Retry decisions: event classes, limits, deadline, backoff, budget, state table."""
from __future__ import annotations

import pytest

from _fastroute import constants as C
from _fastroute.errors import BadResult, InvalidTransition
from _fastroute.spec import NO_RETRY, HttpMatch, RetryPolicy, Route, Target, Timeouts

from .helpers import http

pytestmark = pytest.mark.fastroute
MS = 1_000_000
T0 = 10**12


def route_with(retry, timeouts=None, protocol="http"):
    return Route("r", protocol, HttpMatch(prefix="/"), (Target("a", 1),), retry=retry, timeouts=timeouts)


def first_result(build, retry, kind, code, **kw):
    r = build([route_with(retry)], **kw)
    return r.result(http(r, now_ns=T0), kind, code, T0)


SERVER = RetryPolicy(3, 1_000, http_events=("server-error",))
GATEWAY = RetryPolicy(3, 1_000, http_events=("gateway-error",))
CLIENT = RetryPolicy(3, 1_000, http_events=("client-error",))
STREAM = RetryPolicy(3, 1_000, http_events=("stream-error",))
GRPC_ALL = RetryPolicy(3, 1_000, grpc_events=("cancelled", "deadline-exceeded", "internal", "resource-exhausted",
                                              "unavailable"))
TCP = RetryPolicy(3, 1_000, tcp_events=("connection-error",))


@pytest.mark.parametrize(("policy", "kind", "codes", "retryable"), [
    (SERVER, C.RESULT_HTTP, [*range(500, 509), 510, 511], True),
    (SERVER, C.RESULT_HTTP, [509, 499, 200, 404, 599], False),
    (GATEWAY, C.RESULT_HTTP, [502, 503, 504], True),
    (GATEWAY, C.RESULT_HTTP, [500, 501, 505], False),
    (CLIENT, C.RESULT_HTTP, [409], True),
    (CLIENT, C.RESULT_HTTP, [400, 404, 429, 500], False),
    (STREAM, C.RESULT_REFUSED_STREAM, [0], True),
    (STREAM, C.RESULT_RESET, [0], False),
    (SERVER, C.RESULT_RESET, [0], True),
    (GATEWAY, C.RESULT_TIMEOUT, [0], True),
    (GRPC_ALL, C.RESULT_GRPC, [1, 4, 13, 8, 14], True),
    (GRPC_ALL, C.RESULT_GRPC, [0, 2, 3, 5, 12, 16], False),
    (TCP, C.RESULT_CONNECT_FAILURE, [0], True),
    (TCP, C.RESULT_RESET, [0], False),
    (NO_RETRY, C.RESULT_HTTP, [503], False),
])
def test_event_classes(build, policy, kind, codes, retryable):
    for code in codes:
        got = first_result(build, policy, kind, code)
        assert (got.action == C.ACT_RETRY) == retryable, code


def test_default_policy_is_app_mesh_hidden_default(build):
    retried = lambda kind, code: first_result(build, None, kind, code).action == C.ACT_RETRY  # noqa: E731
    assert retried(C.RESULT_HTTP, 503) and retried(C.RESULT_GRPC, 14) and retried(C.RESULT_CONNECT_FAILURE, 0)
    assert not retried(C.RESULT_HTTP, 502) and not retried(C.RESULT_GRPC, 13) and not retried(C.RESULT_RESET, 0)


def test_finish_and_give_up(build):
    ok = first_result(build, SERVER, C.RESULT_HTTP, 200)
    assert (ok.action, ok.why) == (C.ACT_FINISH, C.WHY_SUCCESS)
    bad = first_result(build, NO_RETRY, C.RESULT_HTTP, 500)
    assert (bad.action, bad.why) == (C.ACT_GIVE_UP, C.WHY_NOT_RETRYABLE)


def test_max_retries_then_give_up_and_done_is_final(build):
    r = build([route_with(SERVER)])
    d = http(r, now_ns=T0)
    actions = [r.result(d, C.RESULT_HTTP, 500, T0 + k).action for k in range(4)]
    assert actions == [C.ACT_RETRY] * 3 + [C.ACT_GIVE_UP]
    assert d.attempt == 3 and d.state == C.ST_DONE
    with pytest.raises(InvalidTransition) as err:
        r.result(d, C.RESULT_HTTP, 200, T0)
    assert err.value.state == C.ST_DONE
    with pytest.raises(BadResult):
        r.result(http(r), 99, 0, T0)
    with pytest.raises(InvalidTransition):
        r.result(http(r, "/", authority="nope"), C.RESULT_HTTP, 200, T0)


def test_retry_prefers_a_different_endpoint(build):
    r = build([route_with(SERVER)], n_endpoints=3)
    d = http(r, now_ns=T0)
    seen = [d.endpoint.id]
    for _ in range(3):
        rd = r.result(d, C.RESULT_HTTP, 503, T0)
        assert rd.endpoint is d.endpoint and d.pool_key == (d.endpoint.id, "")
        seen.append(d.endpoint.id)
    assert all(a != b for a, b in zip(seen, seen[1:])), seen
    single = build([route_with(SERVER)], n_endpoints=1)
    d = http(single, now_ns=T0)
    assert single.result(d, C.RESULT_HTTP, 503, T0).endpoint.id == "a-0"  # the only one


def test_backoff_is_jittered_exponential_within_envoy_bounds(build):
    for seed in range(40):
        r = build([route_with(RetryPolicy(6, 1_000, http_events=("server-error",)))], seed=seed)
        d = http(r, now_ns=T0)
        for n in range(1, 7):
            rd = r.result(d, C.RESULT_HTTP, 500, T0)
            assert 0 <= rd.backoff_ns < min((2**n - 1) * 25 * MS, 250 * MS)
    # Jitter: different seeds give different waits.
    waits = {first_result(build, SERVER, C.RESULT_HTTP, 500, seed=s).backoff_ns for s in range(20)}
    assert len(waits) > 10


def test_per_try_timeout_and_overall_deadline(build):
    r = build([route_with(RetryPolicy(5, 400, http_events=("server-error",)), Timeouts(per_request_ms=1_000))])
    d = http(r, now_ns=T0)
    assert d.per_try_timeout_ns == 400 * MS and d.deadline_ns == T0 + 1_000 * MS
    rd = r.result(d, C.RESULT_TIMEOUT, 0, T0 + 400 * MS)
    assert rd.action == C.ACT_RETRY and rd.per_try_timeout_ns == 400 * MS
    rd = r.result(d, C.RESULT_TIMEOUT, 0, T0 + 850 * MS)
    if rd.action == C.ACT_RETRY:  # only when the drawn backoff leaves time
        assert rd.per_try_timeout_ns == 150 * MS - rd.backoff_ns
    rd = r.result(d, C.RESULT_TIMEOUT, 0, T0 + 1_000 * MS) if d.state == C.ST_IN_FLIGHT else rd
    assert (rd.action, rd.why) == (C.ACT_GIVE_UP, C.WHY_DEADLINE)


def test_retry_budget_caps_retries_at_20_percent_plus_10_per_second(build):
    r = build([route_with(RetryPolicy(1, 1_000, http_events=("server-error",)))])
    granted = 0
    # 2,000 requests within one second, every one failing: the window allows
    # 20% of 2,000 + 10/s x 10 s = 500 retries.
    for k in range(2_000):
        d = http(r, now_ns=T0 + k)
    for k in range(2_000):
        d = http(r, now_ns=T0 + 10**6 + k)
        if r.result(d, C.RESULT_HTTP, 500, T0 + 10**6 + k).action == C.ACT_RETRY:
            granted += 1
    assert granted == (20 * 4_000 + 100 * 10 * 10) // 100
    d = http(r, now_ns=T0 + 20 * 10**9)  # the window has moved on: fresh budget
    assert r.result(d, C.RESULT_HTTP, 500, T0 + 20 * 10**9).action == C.ACT_RETRY


@pytest.mark.hardening
def test_release_ends_a_decision_without_touching_outlier_detection_or_the_budget(build):
    """A client cancel or a local refusal: `release`, never `result`. Four of them on one
    endpoint of a node with maxServerErrors 2 eject nothing, spend no retry budget and give
    the endpoint's active count back."""
    from _fastroute.spec import OutlierDetection, VirtualNode

    od = OutlierDetection(max_server_errors=2, interval_ms=10_000, base_ejection_ms=30_000, max_ejection_percent=100)
    r = build([route_with(RetryPolicy(1, 1_000, http_events=("server-error",)))],
              nodes=(VirtualNode("a", outlier=od),), n_endpoints=2)
    for k in range(4):
        d = http(r, now_ns=T0 + k)
        assert d.endpoint.active == 1
        r.release(d)
        assert d.state == C.ST_DONE and d.endpoint.active == 0
        with pytest.raises(InvalidTransition):
            r.release(d)
        with pytest.raises(InvalidTransition):
            r.result(d, C.RESULT_HTTP, 200, T0)
    assert r.ejected("a", T0 + 10) == 0
    # The consecutive-error count survives a release: two real server errors still eject.
    d = http(r, now_ns=T0)
    first = d.endpoint.id
    r.result(d, C.RESULT_HTTP, 500, T0)  # retried onto the other endpoint
    r.release(d)
    d = http(r, now_ns=T0)
    while d.endpoint.id != first:
        r.release(d)
        d = http(r, now_ns=T0)
    r.release(d)
    d = http(r, now_ns=T0)
    while d.endpoint.id != first:
        r.release(d)
        d = http(r, now_ns=T0)
    r.result(d, C.RESULT_HTTP, 500, T0)
    assert r.ejected("a", T0 + 1) == 1


@pytest.mark.hardening
def test_unprocessed_attempts_retry_within_max_retries_without_spending_the_budget(build):
    """Connect failures and refused streams never reached the upstream's application: their
    retries are bounded by maxRetries alone. A spent budget still stops processed retries."""
    policy = RetryPolicy(2, 1_000, http_events=("server-error",), tcp_events=("connection-error",),
                         grpc_events=())
    r = build([route_with(policy)], n_endpoints=3)
    # Spend the whole budget: 500 failing requests in one second, each retried once.
    spent = 0
    for k in range(2_000):
        d = http(r, now_ns=T0 + k)
        if r.result(d, C.RESULT_HTTP, 500, T0 + k).action == C.ACT_RETRY:
            spent += 1
            r.result(d, C.RESULT_HTTP, 200, T0 + k)
    d = http(r, now_ns=T0 + 5_000)
    assert (r.result(d, C.RESULT_HTTP, 500, T0 + 5_000).why) == C.WHY_BUDGET
    # Connect failures still retry, onto another endpoint, and stop at maxRetries.
    d = http(r, now_ns=T0 + 6_000)
    seen = [d.endpoint.id]
    for attempt in range(2):
        rd = r.result(d, C.RESULT_CONNECT_FAILURE, 0, T0 + 6_000)
        assert rd.action == C.ACT_RETRY, rd
        assert d.endpoint.id != seen[-1]
        seen.append(d.endpoint.id)
    rd = r.result(d, C.RESULT_CONNECT_FAILURE, 0, T0 + 6_000)
    assert (rd.action, rd.why) == (C.ACT_GIVE_UP, C.WHY_RETRIES_EXHAUSTED)
    # They spent nothing: a processed failure is still refused by the same budget.
    d = http(r, now_ns=T0 + 7_000)
    assert r.result(d, C.RESULT_HTTP, 500, T0 + 7_000).why == C.WHY_BUDGET
