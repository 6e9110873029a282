"""App Mesh's timeouts through real meshds: a route's `timeout.idle` and a node listener's
`timeout.grpc.idle` end a stalled call even with `perRequest` 0, and the listener's
`perRequest` bounds what the ingress waits (issue 12, item 5)."""
from __future__ import annotations

import time

import grpc
import pytest

from mesh_harness import Origin

pytestmark = [pytest.mark.hardening, pytest.mark.dataplane, pytest.mark.etcd]

NO_DEADLINE = {"unit": "ms", "value": 0}


class StallingOrigin(Origin):
    """Answers `ping` at once; stalls on anything else for 20 s (or until the client leaves)."""

    def _say(self, request, context):
        if request != b"ping":
            t0 = time.monotonic()
            while context.is_active() and time.monotonic() - t0 < 20:
                time.sleep(0.02)
        return self.name.encode() + b":" + request


def _stalled_call(call):
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        call(b"stall", timeout=15)
    return err.value, time.monotonic() - t0


def test_a_routes_idle_timeout_ends_a_stalled_call_without_a_request_timeout(mesh_factory):
    m = mesh_factory({"api-v1": StallingOrigin("api-v1")}, targets={"api-v1": 1},
                     timeout={"perRequest": NO_DEADLINE, "idle": {"unit": "s", "value": 1}})
    call = m.client()
    m.wait_routable(call)
    err, took = _stalled_call(call)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
    assert dict(err.trailing_metadata() or ())["x-meshd-reason"] == "stream_idle_timeout"
    assert 0.8 < took < 4, took


def test_a_node_listeners_idle_timeout_applies_at_its_ingress(mesh_factory):
    listener = {"timeout": {"grpc": {"perRequest": NO_DEADLINE, "idle": {"unit": "s", "value": 1}}}}
    m = mesh_factory({"api-v1": StallingOrigin("api-v1")}, targets={"api-v1": 1}, node_listener=listener,
                     timeout={"perRequest": NO_DEADLINE, "idle": NO_DEADLINE})
    call = m.client()
    m.wait_routable(call)
    err, took = _stalled_call(call)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
    assert 0.8 < took < 4, took


def test_a_node_listeners_per_request_timeout_applies_at_its_ingress(mesh_factory):
    listener = {"timeout": {"grpc": {"perRequest": {"unit": "s", "value": 1}}}}
    m = mesh_factory({"api-v1": StallingOrigin("api-v1")}, targets={"api-v1": 1}, node_listener=listener,
                     timeout={"perRequest": NO_DEADLINE})
    call = m.client()
    m.wait_routable(call)
    err, took = _stalled_call(call)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
    assert dict(err.trailing_metadata() or ())["x-meshd-reason"] == "request_timeout"
    assert 0.8 < took < 4, took
