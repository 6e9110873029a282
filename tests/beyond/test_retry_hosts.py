"""Retries through real meshds never go back to an instance the call already tried
(Envoy's previous_hosts): host B serves api-v1 with three instances, two of them are
SIGKILLed while concurrent gRPC callers run through host A's egress, and the route's retry
policy (UNAVAILABLE and connection errors, two retries) covers what the dead ones answer."""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from beyond.harness import run_load
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
