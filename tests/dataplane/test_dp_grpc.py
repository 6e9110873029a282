"""gRPC through the relay: the four call shapes, metadata, trailers and status details intact."""
import hashlib
import struct

import grpc
import pytest

from tests.dataplane.harness import counters, unary

pytestmark = pytest.mark.dataplane


def test_unary_metadata_and_trailers_pass_through(relay, origin, ch):
    before = counters()["requests"]
    resp, call = unary(ch).with_call(b"hello", metadata=(("x-echo", "abc"),), timeout=10)
    assert resp == b"hello"
    assert ("x-initial", "i-abc") in call.initial_metadata()
    trailers = dict(call.trailing_metadata())
    assert trailers["x-trailer"] == "t-abc"
    assert trailers["x-trailer-bin"] == b"\x00\xffbin"
    assert call.code() == grpc.StatusCode.OK
    assert origin.seen_metadata[-1]["x-echo"] == "abc"
    assert counters()["requests"] == before + 1


def test_status_and_details_pass_through(ch):
    with pytest.raises(grpc.RpcError) as info:
        unary(ch, "Fail")(b"INVALID_ARGUMENT", timeout=10)
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "failing as asked: INVALID_ARGUMENT"
    trailers = dict(err.trailing_metadata())
    assert trailers["x-why"] == "asked"
    assert trailers["x-detail-bin"] == b"\x01\x02"


def test_client_streaming(ch):
    msgs = [bytes([i % 256]) * (i * 37 % 5000) for i in range(300)]
    want = hashlib.sha256(b"".join(struct.pack(">I", len(m)) + m for m in msgs)).hexdigest()
    resp = ch.stream_unary("/echo.Echo/ClientStream")(iter(msgs), timeout=20)
    assert resp == b"300:" + want.encode()


def test_server_streaming(ch):
    got = list(ch.unary_stream("/echo.Echo/ServerStream")(struct.pack(">II", 500, 1024), timeout=20))
    assert len(got) == 500
    assert all(m == struct.pack(">I", i) * 256 for i, m in enumerate(got))


def test_bidi_ten_thousand_small_messages_byte_exact(ch):
    msgs = [struct.pack(">I", i) + bytes([i % 251]) * (i % 23) for i in range(10_000)]
    got = list(ch.stream_stream("/echo.Echo/Bidi")(iter(msgs), timeout=60))
    assert len(got) == len(msgs)
    assert got == msgs


def test_16_mib_both_ways(ch):
    payload = bytes(range(256)) * (16 * 4096) + b"tail"   # 16 MiB + 4 bytes
    resp = unary(ch)(payload, timeout=60)
    assert len(resp) == len(payload)
    assert hashlib.sha256(resp).digest() == hashlib.sha256(payload).digest()


def test_many_concurrent_calls_share_one_upstream_connection(relay, origin, ch):
    futs = [unary(ch).future(b"m%d" % i, timeout=20) for i in range(50)]
    assert [f.result() for f in futs] == [b"m%d" % i for i in range(50)]
    pools = list(relay.call(relay.engine.upstream_connections).values())
    assert len(pools) == 1 and len(pools[0]) == 1
