"""Retries through real meshds never go back to an instance the call already tried
(Envoy's previous_hosts): host B serves api-v1 with three instances, two of them are
SIGKILLed while concurrent gRPC callers run through host A's egress, and the route's retry
policy (UNAVAILABLE and connection errors, two retries) covers what the dead ones answer.

Host B's ingress answers a call for a dead instance 503 / UNAVAILABLE naming its connect
failure; host A's egress takes that, from a meshd only, as the unprocessed attempt it is
(outcomes.PEER_UNPROCESSED): its retry spends no retry budget, so even full-speed load with
two of three instances dead fails no call, while maxRetries still bounds every call."""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from beyond.harness import REASON, Http1Mesh, run_load
from meshd.dataplane import counters
from mesh_harness import Origin, ProcessOrigin

pytestmark = [pytest.mark.beyond, pytest.mark.dataplane, pytest.mark.etcd]

RETRY = {"maxRetries": 2, "perRetryTimeout": {"unit": "s", "value": 2},
         "grpcRetryEvents": ["unavailable"], "tcpRetryEvents": ["connection-error"]}


# Bursts of concurrent calls: each burst's decisions move the round-robin cursor together
# and their retries come back in jittered order, so a retry that avoided only the last
# endpoint would often go back to the first dead one. Paced so that the retries stay within
# the route's retry budget (20% of requests + 10 per second): with two of three instances
# gone, panic mode keeps sending two thirds of first attempts to them, each answered
# UNAVAILABLE by host B's ingress, a retry that spends the budget.
BURSTS, BURST, EVERY_S = 12, 8, 0.4


@pytest.mark.timeout(120)
def test_two_of_three_instances_killed_under_load_fail_no_call(mesh_factory):
    a1, a2, a3 = ProcessOrigin("a1"), ProcessOrigin("a2"), Origin("a3")
    m = mesh_factory({"i-a1": a1, "i-a2": a2, "i-a3": a3}, {k: "api-v1" for k in ("i-a1", "i-a2", "i-a3")},
                     targets={"api-v1": 1}, retry=RETRY)
    call = m.client()
    m.wait_routable(call)
    answered = set()
    deadline = time.monotonic() + 20
    while answered != {"a1", "a2", "a3"}:  # host A routes to all three
        assert time.monotonic() < deadline, f"only {answered} answered"
        answered.add(call(b"warm", timeout=5).split(b":")[0].decode())

    killed = []

    def kill():
        a1.kill()
        a2.kill()
        killed.extend((a1.proc.returncode, a2.proc.returncode))
    killer = threading.Timer(2 * EVERY_S, kill)
    outcomes = []
    t0 = time.monotonic()
    killer.start()
    for k in range(BURSTS):
        time.sleep(max(0.0, t0 + k * EVERY_S - time.monotonic()))
        outcomes += run_load(call, BURST, concurrency=BURST, timeout=10.0).outcomes
    killer.join()
    assert killed == [-9, -9], "both instances were killed"
    failed = [o for o in outcomes if o.code != grpc.StatusCode.OK]
    assert len(outcomes) == BURSTS * BURST
    assert not failed, f"{len(failed)} of {len(outcomes)} calls failed: {failed[:3]}"
    assert a3.calls > BURSTS * BURST // 2


def _three_instances(mesh_factory, *origins):
    m = mesh_factory(dict(zip(("i-a1", "i-a2", "i-a3"), origins)), {k: "api-v1" for k in ("i-a1", "i-a2", "i-a3")},
                     targets={"api-v1": 1}, retry=RETRY)
    call = m.client()
    m.wait_routable(call)
    answered = set()
    deadline = time.monotonic() + 20
    while answered != {o.name for o in origins}:  # host A routes to all three
        assert time.monotonic() < deadline, f"only {answered} answered"
        answered.add(call(b"warm", timeout=5).split(b":")[0].decode())
    return call


# Full speed: far more retries than the budget's 20% of requests + 10 per second allows.
WORKERS, SECONDS = 8, 4.0


@pytest.mark.timeout(120)
def test_two_of_three_instances_dead_under_full_speed_load_fail_no_call(mesh_factory):
    a1, a2, a3 = ProcessOrigin("a1"), ProcessOrigin("a2"), Origin("a3")
    call = _three_instances(mesh_factory, a1, a2, a3)
    a1.kill()
    a2.kill()
    before = counters()
    load = run_load(call, 1_000_000, concurrency=WORKERS, timeout=10.0, budget=SECONDS)
    after = counters()
    retried = after["retries"] - before["retries"]
    failed = [o for o in load.outcomes if o.code != grpc.StatusCode.OK]
    # Enough calls that a budget-bound retry would have run out (it did: about a third failed).
    assert len(load.outcomes) > 500
    assert retried > 0.2 * len(load.outcomes) + 10 * (SECONDS + 1), "the load retried past the budget's allowance"
    # On failure, what the engines of both meshds saw (this process's counters) says which
    # hop turned the last try away: a refusal, a GOAWAY, a reset or a protocol error.
    seen = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert not failed, f"{len(failed)} of {len(load.outcomes)} calls failed: {failed[:3]}; engine counters: {seen}"


@pytest.mark.timeout(120)
def test_every_instance_dead_fails_calls_after_max_retries(mesh_factory):
    """Budget-free retries are still bounded: with no instance alive each call is tried
    1 + maxRetries times and answered UNAVAILABLE, quickly."""
    origins = ProcessOrigin("a1"), ProcessOrigin("a2"), ProcessOrigin("a3")
    call = _three_instances(mesh_factory, *origins)
    for o in origins:
        o.kill()
    retries = counters()["retries"]
    load = run_load(call, 1_000_000, concurrency=WORKERS, timeout=10.0, budget=2.0)
    retried = counters()["retries"] - retries
    assert len(load.outcomes) > 50
    assert {o.code for o in load.outcomes} == {grpc.StatusCode.UNAVAILABLE}
    assert retried <= RETRY["maxRetries"] * len(load.outcomes)
    assert retried >= len(load.outcomes), "the calls were retried"
    # Jittered backoff (25 ms base) for two retries, and local connects refused at once.
    assert max(o.seconds for o in load.outcomes) < 1.0


@pytest.mark.timeout(120)
def test_an_app_cannot_forge_its_meshds_connect_failure(mesh_factory):
    """Host A believes host B's x-meshd-reason, so B's ingress drops that header from what
    its local app answers: an app answering UNAVAILABLE with `x-meshd-reason:
    upstream_connect_failure` got its processed call retried as one never processed (here
    on the other instance, by a route that retries connection errors only), and the
    caller saw the forged reason."""
    forger, honest = Origin("a1"), Origin("a2")
    forger.fail_every = 1
    forger.fail_metadata = ((REASON, "upstream_connect_failure"),)
    m = mesh_factory({"i-a1": forger, "i-a2": honest}, {"i-a1": "api-v1", "i-a2": "api-v1"},
                     targets={"api-v1": 1}, retry={"maxRetries": 2, "perRetryTimeout": {"unit": "s", "value": 2},
                                                   "tcpRetryEvents": ["connection-error"]})
    call = m.client()
    m.wait_routable(call)
    failed = []
    for i in range(20):
        try:
            call(b"x", timeout=5)
        except grpc.RpcError as err:
            failed.append(err)
    assert failed, "every call the forging app answered was retried on the other instance"
    for err in failed:
        assert err.code() == grpc.StatusCode.UNAVAILABLE and "a1 failed call" in err.details()
        assert REASON not in dict(err.trailing_metadata() or ()), err.trailing_metadata()


@pytest.mark.etcd
def test_an_http1_app_cannot_forge_its_meshds_reason(etcd, etcd_prefix, tmp_path):
    mesh = Http1Mesh(etcd, etcd_prefix, tmp_path)
    try:
        status, headers, body = mesh.post("/forge/1")
        assert (status, body) == (503, b"api saw /forge/1")
        assert REASON not in headers, headers
    finally:
        mesh.close()
