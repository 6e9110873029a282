"""Route policies and locality in the router core: rate limits, fault injection, mirroring,
locality-aware balancing (issue 16). Every test runs on both implementations; percentages
are checked over many seeded decisions against binomial bounds (5 standard deviations:
a false alarm about once in 3.5 million runs)."""
from __future__ import annotations

import math

import pytest

from _fastroute import _core, reference
from _fastroute import constants as C
from _fastroute.errors import InvalidTransition, TableError
from _fastroute.spec import (
    NO_RETRY, Endpoint, Fault, FaultAbort, FaultDelay, HeaderMatch, HttpMatch, LocalityLb, Mirror, RateLimit,
    RetryPolicy, Route, Table, Target, TcpMatch, Timeouts, VirtualNode, VirtualRouter, VirtualService, lower,
)

from .helpers import http, summary

pytestmark = [pytest.mark.fastroute, pytest.mark.beyond]
MS = 1_000_000
S = 1_000 * MS
T0 = 10**12
N = 100_000
HERE = ("eu-west-1", "eu-west-1a", "host-a")


def within(count, n, per_million):
    """`count` successes of `n` draws is within 5 standard deviations of per_million."""
    p = per_million / C.PER_MILLION
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1


def route(name="r", *, protocol="http", match=None, targets=(("a", 1),), **policy):
    return Route(name, protocol, match or HttpMatch(prefix="/"), tuple(Target(n, w) for n, w in targets), **policy)


def table(routes, nodes=None):
    names = sorted({t.node for r in routes for t in r.targets} | {"a", "m"})
    return Table(services=(VirtualService("svc.local", router="rt", ports=(80,)),),
                 routers=(VirtualRouter("rt", tuple(routes)),), nodes=nodes or tuple(VirtualNode(n) for n in names))


def make(Router, routes, *, nodes=None, n_endpoints=3, seed=1, locality=("", "", "")):
    r = Router(table(routes, nodes), seed=seed, locality=locality)
    for n in table(routes, nodes).nodes:
        r.set_endpoints(n.name, [Endpoint(f"{n.name}-{k}", f"10.0.0.{k}", 8080) for k in range(n_endpoints)])
    return r


# ---------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(("policy", "path", "reason"), [
    ({"fault": Fault()}, "fault", "missing"),
    ({"fault": Fault(delay=FaultDelay(1_000_001, 1))}, "fault.delay.per_million", "bad_value"),
    ({"fault": Fault(delay=FaultDelay(-1, 1))}, "fault.delay.per_million", "bad_value"),
    ({"fault": Fault(delay=FaultDelay(10, -1))}, "fault.delay.fixed_ms", "bad_value"),
    ({"fault": Fault(delay=FaultDelay(10, 1, jitter_ms=1.5))}, "fault.delay.jitter_ms", "bad_type"),
    ({"fault": Fault(abort=FaultAbort(10))}, "fault.abort.http_status", "missing"),
    ({"fault": Fault(abort=FaultAbort(10, http_status=503, grpc_status=14))}, "fault.abort.http_status", "conflict"),
    ({"fault": Fault(abort=FaultAbort(10, http_status=199))}, "fault.abort.http_status", "bad_value"),
    ({"fault": Fault(abort=FaultAbort(10, http_status=600))}, "fault.abort.http_status", "bad_value"),
    ({"fault": Fault(abort=FaultAbort(10, grpc_status=0))}, "fault.abort.grpc_status", "bad_value"),
    ({"fault": Fault(abort=FaultAbort(10, grpc_status=17))}, "fault.abort.grpc_status", "bad_value"),
    ({"fault": Fault(abort=FaultAbort(10, http_status=503), headers=(HeaderMatch("x", regex="("),))},
     "fault.headers[0].regex", "bad_regex"),
    ({"fault": Fault(abort=FaultAbort(10, http_status=503), headers=[HeaderMatch("x")])}, "fault.headers", "bad_type"),
    ({"mirror": Mirror("nowhere", 10)}, "mirror.node", "unknown_node"),
    ({"mirror": Mirror("m", 1_000_001)}, "mirror.per_million", "bad_value"),
    ({"mirror": Mirror("m", 10, port=0)}, "mirror.port", "bad_value"),
    ({"mirror": "m"}, "mirror", "bad_type"),
    ({"rate_limit": RateLimit(0, 1, 1)}, "rate_limit.max_tokens", "bad_value"),
    ({"rate_limit": RateLimit(1, 0, 1)}, "rate_limit.tokens_per_fill", "bad_value"),
    ({"rate_limit": RateLimit(1, 1, 0)}, "rate_limit.fill_interval_ms", "bad_value"),
])
def test_bad_route_policies_name_their_field(policy, path, reason):
    with pytest.raises(TableError) as e:
        lower(table([route(**policy)]))
    assert (e.value.path, e.value.reason) == (f"routers[0].routes[0].{path}", reason)


@pytest.mark.parametrize("policy", [
    {"fault": Fault(abort=FaultAbort(10, http_status=503))},
    {"fault": Fault(delay=FaultDelay(10, 1), headers=(HeaderMatch("x"),))},
    {"mirror": Mirror("m", 10)},
])
def test_tcp_routes_take_no_abort_headers_or_mirror(policy):
    with pytest.raises(TableError) as e:
        lower(table([route(protocol="tcp", match=TcpMatch(), **policy)]))
    assert e.value.reason == "bad_value"
    lower(table([route(protocol="tcp", match=TcpMatch(), fault=Fault(delay=FaultDelay(10, 1)),
                       rate_limit=RateLimit(1, 1, 1))]))  # a delay and a limit are fine


@pytest.mark.parametrize(("locality", "path", "reason"), [
    (LocalityLb(overprovisioning_percent=99), "nodes[0].locality.overprovisioning_percent", "bad_value"),
    (LocalityLb(overprovisioning_percent=1001), "nodes[0].locality.overprovisioning_percent", "bad_value"),
    (LocalityLb(enabled=1), "nodes[0].locality.enabled", "bad_type"),
    (None, "nodes[0].locality", "bad_type"),
])
def test_bad_locality_policy(locality, path, reason):
    with pytest.raises(TableError) as e:
        lower(table([route()], nodes=(VirtualNode("a", locality=locality), VirtualNode("m"))))
    assert (e.value.path, e.value.reason) == (path, reason)


@pytest.mark.parametrize("Router", [_core.Router, reference.Router])
def test_bad_localities(Router):
    with pytest.raises(TableError):
        Router(table([route()]), locality=("eu", "eu-1"))
    r = Router(table([route()]), locality=HERE)
    with pytest.raises(TableError):
        r.set_endpoints("a", [Endpoint("e", "10.0.0.1", 80, locality=["eu", "", ""])])


# ---------------------------------------------------------------------------------
# Rate limits


@pytest.mark.parametrize("Bucket", [_core.TokenBucket, reference.TokenBucket])
def test_token_bucket_is_envoys(Bucket):
    b = Bucket(5, 2, 100)
    assert [b.take(T0) for _ in range(6)] == [True] * 5 + [False]  # starts full
    assert not b.take(T0 + 99 * MS)  # no partial interval
    assert [b.take(T0 + 100 * MS) for _ in range(3)] == [True, True, False]
    assert [b.take(T0 + 250 * MS) for _ in range(3)] == [True, True, False]  # grid stays on T0
    assert b.take(T0 + 299 * MS) is False
    assert b.take(T0 + 300 * MS) is True  # fills fall every 100 ms from the first take
    assert [b.take(T0 + 10 * S) for _ in range(6)] == [True] * 5 + [False]  # never above max
    with pytest.raises(TableError):
        Bucket(1, 1, 0)
    big = Bucket(2**40, 2**40, 1)  # k fills times a huge fill must not overflow
    big.take(0)
    assert big.take(2**62) and big.tokens == 2**40 - 1


@pytest.mark.parametrize("Bucket", [_core.TokenBucket, reference.TokenBucket])
def test_rate_limit_is_exact_over_simulated_time(Bucket):
    """100 per second allowed, 300 per second offered for 10 s: the first 100 and then
    100 per whole second, 1,000 in all, and never more than 100 in any second."""
    b = Bucket(100, 100, 1_000)
    per_second = [0] * 10
    for i in range(3_000):
        now = T0 + i * (S // 300)
        if b.take(now):
            per_second[(now - T0) // S] += 1
    assert per_second == [100] * 10


def test_route_rate_limit_refuses_without_an_endpoint(Router):
    r = make(Router, [route(rate_limit=RateLimit(3, 1, 1_000))])
    got = [http(r, now_ns=T0) for _ in range(4)]
    assert [d.reason for d in got] == ["routed"] * 3 + ["rate_limited"]
    d = got[-1]
    assert (d.status, d.state, d.endpoint, d.target, d.route, d.router) == (C.RATE_LIMITED, C.ST_DONE, None,
                                                                            None, "r", "rt")
    with pytest.raises(InvalidTransition):
        r.release(d)  # nothing to release, nothing to feed
    assert sum(e.active for e in r.endpoints("a")) == 3
    assert http(r, now_ns=T0 + S).reason == "routed"


def test_rate_limit_outlives_a_table_generation_unless_changed(Router):
    old = make(Router, [route(rate_limit=RateLimit(2, 1, 1_000))])
    assert [http(old, now_ns=T0).reason for _ in range(2)] == ["routed"] * 2
    same = make(Router, [route(rate_limit=RateLimit(2, 1, 1_000))])
    same.adopt(old)
    assert http(same, now_ns=T0).reason == "rate_limited"
    changed = make(Router, [route(rate_limit=RateLimit(3, 1, 1_000))])
    changed.adopt(old)
    assert http(changed, now_ns=T0).reason == "routed"  # a new limit starts full


# ---------------------------------------------------------------------------------
# Fault injection


def count(decisions, pred):
    return sum(1 for d in decisions if pred(d))


def test_fault_percentages_and_independence(Router):
    f = Fault(delay=FaultDelay(500_000, 10, jitter_ms=5), abort=FaultAbort(100_000, http_status=503))
    r = make(Router, [route(fault=f, timeouts=Timeouts(1_000, 0))])
    got = [http(r, now_ns=T0) for _ in range(N)]
    aborted = count(got, lambda d: d.status == C.FAULT_ABORT)
    delayed = count(got, lambda d: d.fault_delay_ns)
    assert within(aborted, N, 100_000) and within(delayed, N, 500_000), (aborted, delayed)
    assert within(count(got, lambda d: d.fault_delay_ns and d.status == C.FAULT_ABORT), N, 50_000)
    delays = [d.fault_delay_ns for d in got if d.fault_delay_ns]
    assert 10 * MS <= min(delays) and max(delays) < 15 * MS
    assert within(count(delays, lambda x: x < 12_500_000), len(delays), 500_000)  # jitter is uniform
    for d in got:
        if d.status == C.FAULT_ABORT:
            assert (d.reason, d.state, d.endpoint, d.fault_http_status, d.fault_grpc_status) == (
                "fault_abort", C.ST_DONE, None, 503, -1)
        else:
            assert d.reason == "routed" and d.deadline_ns == T0 + d.fault_delay_ns + 1_000 * MS
            assert d.fault_http_status == 0 and d.fault_grpc_status == -1
    # Aborted calls took nothing: the routed ones hold every active count.
    assert sum(e.active for e in r.endpoints("a")) == N - aborted


def test_grpc_abort(Router):
    r = make(Router, [route(fault=Fault(abort=FaultAbort(1_000_000, grpc_status=14)))])
    d = http(r)
    assert (d.status, d.fault_http_status, d.fault_grpc_status, d.fault_delay_ns) == (C.FAULT_ABORT, 0, 14, 0)


def test_header_gated_fault(Router):
    f = Fault(abort=FaultAbort(1_000_000, http_status=500), headers=(HeaderMatch("x-fault", exact="on"),))
    r = make(Router, [route(fault=f)])
    assert http(r, headers={"x-fault": "on"}).reason == "fault_abort"
    assert all(http(r, headers=h).reason == "routed" for h in ({}, {"x-fault": "off"}, {"x-fault": "onn"}))


def test_no_draw_without_a_fault(Router):
    """A fault whose headers do not hold draws no random number, so least-request picks
    (which do) come out exactly as on a route without a fault."""
    nodes = (VirtualNode("a", lb="least_request"), VirtualNode("m"))
    gated = Fault(abort=FaultAbort(500_000, http_status=500), headers=(HeaderMatch("x-fault"),))
    with_fault = make(Router, [route(fault=gated)], nodes=nodes, n_endpoints=5)
    without = make(Router, [route()], nodes=nodes, n_endpoints=5)
    a = [http(with_fault).endpoint.id for _ in range(300)]
    b = [http(without).endpoint.id for _ in range(300)]
    assert a == b and len(set(a)) == 5


def test_injected_abort_feeds_no_outlier_detection_or_budget(Router):
    """Hundreds of injected 503s: no endpoint is ejected and retries of real failures still
    have their budget (the aborts are not requests the budget counts either way)."""
    from _fastroute.spec import OutlierDetection

    nodes = (VirtualNode("a", outlier=OutlierDetection(1, 10_000, 30_000, 100)), VirtualNode("m"))
    f = Fault(abort=FaultAbort(900_000, http_status=503))
    r = make(Router, [route(fault=f, retry=RetryPolicy(1, 1_000, http_events=("server-error",)))], nodes=nodes)
    got = [http(r, now_ns=T0) for _ in range(500)]
    assert r.ejected("a", T0) == 0
    aborted = [d for d in got if d.status == C.FAULT_ABORT]
    with pytest.raises(InvalidTransition):
        r.result(aborted[0], C.RESULT_HTTP, 503, T0)  # an injected answer is no attempt's result
    routed = [d for d in got if d.status == C.ROUTED]
    assert routed and all(r.result(d, C.RESULT_HTTP, 200, T0).action == C.ACT_FINISH for d in routed)
    assert r.ejected("a", T0) == 0


# ---------------------------------------------------------------------------------
# Mirroring


def test_mirror_percentage_and_no_side_effects(Router):
    r = make(Router, [route(mirror=Mirror("m", 300_000, port=9000))], n_endpoints=4)
    got = [http(r) for _ in range(N)]
    mirrored = [d for d in got if d.mirror is not None]
    assert within(len(mirrored), N, 300_000), len(mirrored)
    assert all(d.mirror == "m" and d.mirror_port == 9000 and d.mirror_endpoint.id.startswith("m-") for d in mirrored)
    assert {d.mirror_endpoint.id for d in mirrored} == {f"m-{k}" for k in range(4)}
    assert all(d.mirror_endpoint is None and d.mirror_port == -1 for d in got if d.mirror is None)
    assert all(e.active == 0 for e in r.endpoints("m"))  # copies take no active count
    assert sum(e.active for e in r.endpoints("a")) == N


def test_mirror_without_endpoints_or_port(Router):
    r = make(Router, [route(mirror=Mirror("m", 1_000_000))])
    d = http(r)
    assert (d.mirror, d.mirror_port) == ("m", -1)
    r.set_endpoints("m", [])
    d = http(r)
    assert (d.reason, d.mirror, d.mirror_endpoint) == ("routed", None, None)


def test_refusals_are_not_mirrored(Router):
    r = make(Router, [route(mirror=Mirror("m", 1_000_000), fault=Fault(abort=FaultAbort(1_000_000, http_status=500)))])
    d = http(r)
    assert (d.reason, d.mirror) == ("fault_abort", None)


# ---------------------------------------------------------------------------------
# Locality-aware balancing

# Three endpoints at each distance from HERE: same host, same zone, same region, elsewhere.
PLACES = (HERE, ("eu-west-1", "eu-west-1a", "host-b"), ("eu-west-1", "eu-west-1b", "host-c"),
          ("us-east-1", "us-east-1a", "host-d"))


def placed(per_place=3, unhealthy=()):
    return [Endpoint(f"p{p}-{k}", f"10.0.{p}.{k}", 8080, healthy=f"p{p}-{k}" not in unhealthy, locality=loc)
            for p, loc in enumerate(PLACES) for k in range(per_place)]


def spread(r, n=20_000, **kw):
    """Share of decisions per priority, by the endpoint ids' place."""
    got = [0] * 4
    for _ in range(n):
        got[int(http(r, **kw).endpoint.id[1])] += 1
    return got


def local(Router, lb="round_robin", over=140, **kw):
    nodes = (VirtualNode("a", lb=lb, locality=LocalityLb(overprovisioning_percent=over)), VirtualNode("m"))
    r = Router(table([route()], nodes), seed=7, locality=HERE)
    r.set_endpoints("a", placed(**kw))
    return r


def test_priorities_by_distance(Router):
    r = local(Router)
    assert [e.priority for e in r.endpoints("a")] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    r.set_endpoints("a", [Endpoint("x", "10.1.0.1", 80)])  # no locality: priority 0
    assert r.endpoints("a")[0].priority == 0
    bare = Router(table([route()]))
    bare.set_endpoints("a", placed())
    assert {e.priority for e in bare.endpoints("a")} == {0}  # a router without locality


@pytest.mark.parametrize("lb", ["round_robin", "least_request"])
def test_stays_local_while_healthy(Router, lb):
    r = local(Router, lb)
    assert spread(r, 3_000) == [3_000, 0, 0, 0]


@pytest.mark.parametrize("lb", ["round_robin", "least_request"])
@pytest.mark.parametrize(("unhealthy", "loads"), [
    # health_0 = min(100, 140 x 2/3) = 93: 7% spills to priority 1.
    (("p0-0",), [93, 7, 0, 0]),
    # health_0 = 46, health_1 = 140 -> priority 1 takes the other 54.
    (("p0-0", "p0-1"), [46, 54, 0, 0]),
    # the host is gone: priority 1 takes it all; then the zone is: priority 2.
    (("p0-0", "p0-1", "p0-2"), [0, 100, 0, 0]),
    (("p0-0", "p0-1", "p0-2", "p1-0", "p1-1", "p1-2"), [0, 0, 100, 0]),
    # 2/3 left at the host, 1/3 in the zone: 93 + min(7, 46).
    (("p0-0", "p1-0", "p1-1"), [93, 7, 0, 0]),
])
def test_spill_follows_envoys_priority_load(Router, lb, unhealthy, loads):
    r = local(Router, lb, unhealthy=unhealthy)
    n = 40_000
    got = spread(r, n)
    for share, want in zip(got, loads):
        assert within(share, n, want * 10_000), (got, loads)
    assert not any(e.id in unhealthy for e in r.endpoints("a") if e.active)


def test_spill_on_ejection_and_return(Router):
    """Outlier ejections count as unavailable too; traffic returns when they end."""
    from _fastroute.spec import OutlierDetection

    nodes = (VirtualNode("a", outlier=OutlierDetection(1, 10_000, 1_000, 100), locality=LocalityLb()),
             VirtualNode("m"))
    r = Router(table([route(retry=NO_RETRY)], nodes), seed=3, locality=HERE)
    r.set_endpoints("a", placed())
    for _ in range(1_000):  # eject the three local endpoints
        d = http(r, now_ns=T0)
        r.result(d, C.RESULT_HTTP, 500 if d.endpoint.priority == 0 else 200, T0)
        if r.ejected("a", T0) == 3:
            break
    assert spread(r, 3_000, now_ns=T0) == [0, 3_000, 0, 0]
    assert spread(r, 3_000, now_ns=T0 + 2 * S) == [3_000, 0, 0, 0]


def test_normalized_total_health(Router):
    """Healths summing below 100 are scaled up (Envoy's normalized total health): 60% of
    20 at priority 0 and 25% of 4 at priority 1, overprovisioning 1.0: loads 70.6 : 29.4,
    in integer percent 70 + the rounding rest 1 : 29."""
    nodes = (VirtualNode("a", locality=LocalityLb(overprovisioning_percent=100)), VirtualNode("m"))
    r = Router(table([route()], nodes), seed=5, locality=HERE)
    eps = [Endpoint(f"p0-{k}", "10.0.0.1", 80 + k, healthy=k < 12, locality=PLACES[0]) for k in range(20)]
    eps += [Endpoint(f"p1-{k}", "10.0.1.1", 80 + k, healthy=k < 1, locality=PLACES[1]) for k in range(4)]
    r.set_endpoints("a", eps)
    n = 40_000
    got = spread(r, n)
    assert within(got[0], n, 710_000) and within(got[1], n, 290_000), got


def test_panic_balances_over_every_priority(Router):
    """Fewer than half of the node's endpoints available: Envoy's panic mode, as without
    locality: all twelve, whatever their distance or health."""
    r = local(Router, unhealthy=[f"p{p}-{k}" for p in range(3) for k in range(3)])
    got = spread(r, 12_000)
    assert got == [3_000] * 4


def test_disabled_or_single_priority_takes_the_plain_path(Router):
    """Locality balancing off, or every endpoint at one distance: exactly the decisions of
    a router that has no locality at all."""
    off = (VirtualNode("a", lb="least_request", locality=LocalityLb(enabled=False)), VirtualNode("m"))
    r = Router(table([route()], off), seed=9, locality=HERE)
    plain = Router(table([route()], off), seed=9)
    r.set_endpoints("a", placed())
    plain.set_endpoints("a", placed())
    assert [summary(http(r)) for _ in range(500)] == [summary(http(plain)) for _ in range(500)]


def test_retry_leaves_a_priority_whose_only_endpoint_failed(Router):
    nodes = (VirtualNode("a", locality=LocalityLb()), VirtualNode("m"))
    r = Router(table([route(retry=RetryPolicy(2, 1_000, http_events=("server-error",)))], nodes), seed=1,
               locality=HERE)
    r.set_endpoints("a", placed(per_place=1))
    d = http(r)
    assert d.endpoint.id == "p0-0"
    rd = r.result(d, C.RESULT_HTTP, 503, T0)
    assert rd.action == C.ACT_RETRY and rd.endpoint.id == "p1-0"


def test_locality_pick_carries_across_adopt(Router):
    old = local(Router)
    new = local(Router)
    new.set_endpoints("a", placed(unhealthy=("p0-0", "p0-1", "p0-2")))
    new.adopt(old)
    assert spread(new, 300) == [0, 300, 0, 0]
    assert new.endpoints("a")[0] is old.endpoints("a")[0]


@pytest.mark.parametrize("lb", ["round_robin", "least_request"])
def test_retry_on_a_replaced_generation_after_priorities_moved(Router, lb):
    """A router that gave its endpoint states to the next generation still picks for the
    retries of its own requests, after the next one moved those states to another
    priority: it picks from what the states say now (before: a division by zero in the
    reference, a crash in the core)."""
    nodes = (VirtualNode("a", lb=lb, locality=LocalityLb()), VirtualNode("m"))
    t = table([route(retry=RetryPolicy(2, 1_000, http_events=("server-error",)))], nodes)
    old = Router(t, seed=1, locality=HERE)
    old.set_endpoints("a", placed(per_place=2))
    d = http(old)
    new = Router(t, seed=1, locality=HERE)
    new.set_endpoints("a", placed(per_place=2))
    new.adopt(old)
    moved = [Endpoint(e.id, e.address, e.port, locality=PLACES[3]) for e in placed(per_place=2)]
    new.set_endpoints("a", moved)  # every shared state now at priority 3
    assert {e.priority for e in old.endpoints("a")} == {3}
    first = d.endpoint
    rd = old.result(d, C.RESULT_HTTP, 503, T0)
    assert rd.action == C.ACT_RETRY and rd.endpoint in old.endpoints("a") and rd.endpoint is not first
    assert http(new).endpoint.priority == 3


def test_a_fault_header_condition_makes_decide_need_the_headers(Router):
    """The egress passes decide the headers only when `matches_headers` says so: a fault
    gated on a header is such a condition too, or it would never match."""
    gated = Fault(abort=FaultAbort(1_000_000, http_status=500), headers=(HeaderMatch("x-fault"),))
    assert make(Router, [route(fault=gated)]).matches_headers
    assert not make(Router, [route(fault=Fault(abort=FaultAbort(1_000_000, http_status=500)))]).matches_headers
