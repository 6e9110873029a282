"""Hostile input on the listener: garbage, a SETTINGS flood, oversized headers, slowloris."""
import os
import socket
import struct
import time

import grpc
import pytest

from tests.dataplane.harness import RelayThread, channel, counters, to, unary

pytestmark = pytest.mark.dataplane

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(ftype, flags=0, sid=0, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def closed_by_peer(sock, timeout=5.0):
    """Read until the relay closes the connection; True if it did within timeout."""
    sock.settimeout(0.2)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if sock.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def still_serving(port):
    with channel(port) as ch:
        return unary(ch)(b"ok?", timeout=5) == b"ok?"


@pytest.fixture
def guarded(origin):
    r = RelayThread(to(origin.port), header_timeout=0.5)
    yield r
    r.stop()


def test_garbage_is_dropped_and_others_are_served(guarded):
    before = counters()["protocol_errors"]
    s = socket.create_connection(("127.0.0.1", guarded.port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4096))
    assert closed_by_peer(s)
    s.close()
    assert counters()["protocol_errors"] > before
    assert still_serving(guarded.port)


def test_settings_flood_is_cut_off(guarded):
    before = counters()["protocol_errors"]
    s = socket.create_connection(("127.0.0.1", guarded.port))
    flood = PREFACE + h2_frame(4) * 30_000       # each SETTINGS asks for an ACK we are never read
    try:
        s.sendall(flood)
    except OSError:
        pass                                      # the relay may already have closed
    assert closed_by_peer(s)
    s.close()
    assert counters()["protocol_errors"] > before
    assert still_serving(guarded.port)


def test_oversized_headers_are_refused_without_reaching_the_origin(guarded, origin):
    with channel(guarded.port) as ch:
        with pytest.raises(grpc.RpcError):
            unary(ch)(b"", metadata=(("x-big", "a" * 200_000),), timeout=5)
        assert origin.calls == 0
        assert unary(ch)(b"after", timeout=5) == b"after"


def test_slowloris_preface_is_closed(guarded):
    before = counters()["slow_closed"]
    s = socket.create_connection(("127.0.0.1", guarded.port))
    t0 = time.monotonic()
    closed = False
    for b in PREFACE:
        try:
            s.send(bytes([b]))
        except OSError:
            closed = True
            break
        time.sleep(0.1)
    assert closed or closed_by_peer(s, timeout=2.0)
    assert time.monotonic() - t0 < 3.0
    s.close()
    assert counters()["slow_closed"] > before
    assert still_serving(guarded.port)


def test_slow_header_block_is_closed(guarded):
    before = counters()["slow_closed"]
    s = socket.create_connection(("127.0.0.1", guarded.port))
    # A HEADERS frame without END_HEADERS: the block is never finished (RFC 9113 §6.10).
    s.sendall(PREFACE + h2_frame(4) + h2_frame(1, flags=0, sid=1, payload=b"\x82\x86"))
    t0 = time.monotonic()
    assert closed_by_peer(s, timeout=3.0)
    assert time.monotonic() - t0 < 2.5
    s.close()
    assert counters()["slow_closed"] > before
    assert still_serving(guarded.port)


def test_many_hostile_connections_at_once_do_not_stop_service(guarded):
    socks = []
    for i in range(50):
        s = socket.create_connection(("127.0.0.1", guarded.port))
        s.sendall(PREFACE[: i % len(PREFACE)])
        socks.append(s)
    assert still_serving(guarded.port)
    time.sleep(1.5)
    assert all(closed_by_peer(s, timeout=1.0) for s in socks)
    for s in socks:
        s.close()
    assert still_serving(guarded.port)
