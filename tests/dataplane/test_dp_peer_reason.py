"""The retry hook sees the `x-meshd-reason` of the status it is asked about (Failure.reason),
over HTTP/2 (gRPC) and HTTP/1.1: two relays in a row, the second one's upstream dead, so the
first gets the second's synthesized 503 / UNAVAILABLE naming the connect failure, as a
meshd's egress gets its peer ingress's answer for a dead local app."""
import grpc
import pytest

from meshd.dataplane import FAILURE_RESPONSES, Target
from tests.dataplane.harness import EchoOrigin, RelayThread, channel, unary
from tests.dataplane.test_dp_h1 import conn, h1_relay
from tests.dataplane.test_dp_tcp import dead_port

pytestmark = [pytest.mark.dataplane, pytest.mark.beyond]

CONNECT_REASON = FAILURE_RESPONSES["connect_error"][2]


def _hook(seen):
    def retry(head, failure):
        seen.append((failure.kind, failure.http_status, failure.grpc_status, failure.reason))
        return None
    return retry


def test_h2_failure_carries_the_upstream_reason():
    peer = RelayThread(lambda head: Target("127.0.0.1", dead_port()))
    seen = []
    first = RelayThread(lambda head: Target("127.0.0.1", peer.port, retry_grpc=(14,)), _hook(seen))
    try:
        with channel(first.port) as ch, pytest.raises(grpc.RpcError) as info:
            unary(ch)(b"x", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert seen == [("status", 200, 14, CONNECT_REASON)]
    finally:
        first.stop()
        peer.stop()


def test_h2_failure_reason_is_empty_without_the_header():
    origin = EchoOrigin()
    seen = []
    first = RelayThread(lambda head: Target("127.0.0.1", origin.port, retry_grpc=(14,)), _hook(seen))
    try:
        with channel(first.port) as ch, pytest.raises(grpc.RpcError):
            unary(ch, "Fail")(b"UNAVAILABLE", timeout=5)
        assert seen == [("status", 200, 14, "")]
    finally:
        first.stop()
        origin.stop()


def test_h1_failure_carries_the_upstream_reason():
    peer = h1_relay(lambda head: Target("127.0.0.1", dead_port()))
    seen = []
    first = h1_relay(lambda head: Target("127.0.0.1", peer.port, retry_statuses=[503]), _hook(seen))
    try:
        c = conn(first.port)
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        c.close()
        assert r.status == 503 and r.getheader("x-meshd-reason") == CONNECT_REASON
        assert seen == [("status", 503, -1, CONNECT_REASON)]
    finally:
        first.stop()
        peer.stop()
