"""Local rate limiting through real meshds: a route's token bucket (RoutePolicy.rateLimit,
at the caller's egress) and a virtual node listener's (NodePolicy.listenerRateLimits, at
the serving meshd's ingress, before the app sees the call). 300 calls a second are offered
for a bounded time against a bucket of 100 a second: 100 a second get through, give or
take 5, and the rest are refused with RESOURCE_EXHAUSTED and x-meshd-reason rate_limited."""
from __future__ import annotations

import grpc
import pytest

from beyond.harness import REASON, ROUTE, h2_get, put_policy, run_load, wait_policy, wait_until
from mesh_harness import Origin
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.beyond, pytest.mark.dataplane, pytest.mark.etcd]

# 100 requests a second, granted 10 every 100 ms, with a burst of at most 10.
MAX_TOKENS, PER_FILL, FILL_MS = 10, 10, 100
ALLOWED_RPS = PER_FILL * 1000 // FILL_MS
OFFERED_RPS, SECONDS, TOLERANCE_RPS = 3 * ALLOWED_RPS, 5, 5
BUCKET = {"maxTokens": MAX_TOKENS, "tokensPerFill": PER_FILL, "fillInterval": {"unit": "ms", "value": FILL_MS}}


def _live_limit(meshd, node: str, port: int) -> bool:
    live = meshd.runtime.view.live("shop")
    return live is not None and (node, port) in live.compiled.listener_limits


@pytest.mark.parametrize("scope", ["route", "listener"])
def test_offered_three_times_the_limit(mesh_factory, scope):
    origin = Origin("o1")
    mesh = mesh_factory({"o1": origin}, nodes={"o1": "api-v1"}, targets={"api-v1": 100})
    call = mesh.client()
    mesh.wait_routable(call)
    if scope == "route":
        put_policy(mesh.a.resources, "RoutePolicy", "limit", {"route": ROUTE, "rateLimit": BUCKET})
        wait_policy(mesh.a, "shop", "api-router", "api", "rate_limit")
    else:
        put_policy(mesh.a.resources, "NodePolicy", "limit", {
            "virtualNodeName": "api-v1", "listenerRateLimits": [{"port": 9090, "rateLimit": BUCKET}]})
        wait_until("host B has the listener's bucket", lambda: _live_limit(mesh.b, "api-v1", 9090))
    served_before = origin.calls

    load = run_load(call, OFFERED_RPS * SECONDS, rate=OFFERED_RPS, concurrency=64, budget=SECONDS * 3)

    window = load.last_sent - load.started
    assert window <= SECONDS * 1.5, f"the client could not offer {OFFERED_RPS}/s: {window:.1f}s"
    ok = load.count(grpc.StatusCode.OK)
    limited = load.count(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited")
    assert ok + limited == len(load.outcomes), "every call either passed or was refused by the bucket"
    # What the bucket grants over the window: its first burst, then PER_FILL per whole interval.
    granted = MAX_TOKENS + ALLOWED_RPS * window
    assert abs(ok - granted) <= TOLERANCE_RPS * window, (ok, granted, window)
    assert abs(ok / window - ALLOWED_RPS) <= TOLERANCE_RPS + MAX_TOKENS / window, ok / window
    assert origin.calls - served_before == ok, "a refused call never reached the app"


def test_plain_http_is_answered_429_with_the_reason(mesh_factory):
    """A plain HTTP/2 route (not gRPC) with a bucket of one token and no refill within the
    test: the first request takes the token and goes on, the next ones are answered 429."""
    mesh = mesh_factory({"o1": Origin("o1")}, nodes={"o1": "api-v1"}, targets={"api-v1": 100})
    mesh.a.resources.create(K.ROUTE, parse_json(pb.CreateRouteRequest, {
        "meshName": "shop", "virtualRouterName": "api-router", "routeName": "plain", "spec": {"http2Route": {
            "match": {"prefix": "/plain"}, "action": {"weightedTargets": [{"virtualNode": "api-v1", "weight": 1}]}}}}))
    put_policy(mesh.a.resources, "RoutePolicy", "one", {
        "route": {"virtualRouterName": "api-router", "routeName": "plain"},
        "rateLimit": {"maxTokens": 1, "tokensPerFill": 1, "fillInterval": {"unit": "s", "value": 3600}}})
    wait_policy(mesh.a, "shop", "api-router", "plain", "rate_limit")

    first = h2_get(mesh.egress, "api.shop.local:9090", "/plain/1")
    refused = [h2_get(mesh.egress, "api.shop.local:9090", f"/plain/{i}") for i in (2, 3)]

    # The gRPC origin resets a plain request: what matters is that the bucket let it through.
    assert first[":status"] != "429" and first.get(REASON) != "rate_limited", first
    for r in refused:
        assert (r[":status"], r.get(REASON)) == ("429", "rate_limited"), r
