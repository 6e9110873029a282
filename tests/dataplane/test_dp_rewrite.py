"""Per-request rewrites by the routing hook (:path, :authority, added headers) and what the
completion hook learns of a request (bytes, response head, downstream address), on both
the HTTP/2 engine and the HTTP/1.1 relay."""
import grpc
import pytest

from meshd.dataplane import Target
from tests.dataplane.harness import EchoOrigin, RelayThread, channel, wait_for
from tests.dataplane.test_dp_h1 import Origin, conn, h1_relay

pytestmark = pytest.mark.dataplane


def _rewriting(port):
    def decide(head):
        if head.path.startswith("/public/"):
            head.rewrite_path("/echo.Echo/" + head.path[len("/public/"):])
        head.rewrite_authority("backend.internal")
        head.set_header("x-trace", "new")
        return Target("127.0.0.1", port, headers=(("x-from-target", "t"),))
    return decide


def test_h2_rewrites_path_authority_and_replaces_headers():
    origin = EchoOrigin()
    done = []
    relay = RelayThread(_rewriting(origin.port), complete=lambda head, *rest: done.append((head, rest)))
    try:
        with channel(relay.port) as ch:
            # The origin serves only /echo.Echo/*: the call succeeds only if :path was rewritten.
            got = ch.unary_unary("/public/Unary")(b"x" * 1000, metadata=(("x-trace", "old"),), timeout=5)
        assert got == b"x" * 1000
        md = origin.seen_metadata[-1]
        assert md["x-trace"] == "new" and md["x-from-target"] == "t"
        assert wait_for(lambda: done)
        head, (target, status, grpc_status, reason, duration_ns) = done[0]
        assert head.path == "/public/Unary" and head.upstream_path == "/echo.Echo/Unary"
        assert (status, grpc_status, reason) == (200, 0, "") and duration_ns > 0
        assert head.bytes_received == 1005 and head.bytes_sent == 1005  # 5-byte gRPC frame prefix
        assert head.response_headers[":status"] == "200"
        assert head.response_headers["x-initial"] == "i-"
        assert head.remote_address.startswith("127.0.0.1:")
        with pytest.raises(ValueError):
            head.set_header(":path", "/x")
    finally:
        relay.stop()
        origin.stop()


def test_h2_refused_request_has_no_response_head():
    done = []
    from meshd.dataplane import Refusal
    relay = RelayThread(lambda head: Refusal(404, reason="no_route"),
                        complete=lambda head, *rest: done.append(head))
    try:
        with channel(relay.port) as ch, pytest.raises(grpc.RpcError):
            ch.unary_unary("/a.B/C")(b"", timeout=5)
        assert wait_for(lambda: done)
        assert done[0].response_headers == {} and done[0].bytes_sent == 0
    finally:
        relay.stop()


def test_h1_rewrites_path_authority_and_replaces_headers():
    origin = Origin()
    done = []
    relay = h1_relay(_rewriting(origin.port), complete=lambda head, *rest: done.append((head, rest)))
    try:
        c = conn(relay.port)
        c.request("POST", "/public/headers", body=b"b" * 300, headers={"Host": "shop.local", "X-Trace": "old"})
        r = c.getresponse()
        body = r.read()
        c.close()
        assert r.status == 200
        method, path, headers = origin.seen[-1]
        assert path == "/echo.Echo/headers"
        seen = {k.lower(): v for k, v in headers.items()}
        assert seen["host"] == "backend.internal" and seen["x-trace"] == "new" and seen["x-from-target"] == "t"
        assert wait_for(lambda: done)
        head, (target, status, _grpc, reason, _d) = done[0]
        assert head.upstream_path == "/echo.Echo/headers" and head.path == "/public/headers"
        assert head.bytes_received == 300 and head.bytes_sent == len(body)
        assert head.response_headers[":status"] == "200"
        assert head.remote_address.startswith("127.0.0.1:")
        assert body == b"b" * 300  # the origin echoes a POST body, chunked
    finally:
        relay.stop()
        origin.stop()
