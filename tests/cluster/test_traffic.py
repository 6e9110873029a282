"""Routing across hosts (issue 7): a caller on h1 reaches api-v1 and api-v2 instances on h2
and h3 through its own meshd and the other hosts' ingresses (mTLS), and the route's weights
hold over more than a thousand calls, before and after a live weight change."""
from __future__ import annotations

import json
import math

import pytest

from .traffic import SAMPLE

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]


def within(share: float, expected: float, n: int, sigmas: float = 4.0) -> bool:
    """A binomial share within `sigmas` standard deviations of the weight it should follow."""
    return abs(share - expected) <= sigmas * math.sqrt(expected * (1 - expected) / n)


def route_with_weights(tmp_path, v1: int, v2: int):
    doc = json.loads((SAMPLE / "mesh" / "30-route-api.json").read_text())
    doc["spec"]["grpcRoute"]["action"]["weightedTargets"] = [
        {"virtualNode": "api-v1", "weight": v1}, {"virtualNode": "api-v2", "weight": v2}]
    path = tmp_path / f"route-{v1}-{v2}.json"
    path.write_text(json.dumps(doc))
    return path


def test_calls_from_h1_reach_h2_and_h3_with_the_route_weights(cluster, traffic, report, tmp_path):
    # The sample route: api-v1 80, api-v2 20; each node has one instance on h2 and one on h3.
    calls = traffic.load("h1", rps=200, seconds=5.5).stop(signal_it=False)
    report["80/20 from h1"] = f"{calls.brief()}; answers {calls.summary['by']}"
    calls.check()
    by, n = calls.summary["by"], calls.summary["ok"]
    assert n >= 1000
    assert set(by) == {"h2/api-v1", "h3/api-v1", "h2/api-v2", "h3/api-v2"}, by  # h1 has no api instance
    v2 = (by["h2/api-v2"] + by["h3/api-v2"]) / n
    assert within(v2, 0.2, n), f"api-v2 answered {v2:.3f} of {n} calls, weight 20%"
    on_h3 = (by["h3/api-v1"] + by["h3/api-v2"]) / n
    assert within(on_h3, 0.5, n), f"h3 answered {on_h3:.3f} of {n} calls; each node balances over two hosts"

    # Shift to 50/50 through h3's admin API; h1's meshd follows.
    traffic.meshctl("apply", "-f", str(route_with_weights(tmp_path, 50, 50)), context="h3")
    traffic.wait_routable("h1")
    calls = traffic.load("h1", rps=200, seconds=5.5).stop(signal_it=False)
    report["50/50 from h1"] = f"{calls.brief()}; answers {calls.summary['by']}"
    calls.check()
    by, n = calls.summary["by"], calls.summary["ok"]
    v2 = (by.get("h2/api-v2", 0) + by.get("h3/api-v2", 0)) / n
    assert n >= 1000 and within(v2, 0.5, n), f"api-v2 answered {v2:.3f} of {n} calls, weight 50%"
