"""App Mesh's connection-pool limits beyond maxRequests, through real meshds: http
`maxConnections` with `maxPendingRequests` (requests wait for a connection, then overflow),
and tcp `maxConnections` (issue 12, item 8)."""
from __future__ import annotations

import http.client
import socket
import time
from concurrent import futures

import pytest

from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.v1 import admin_pb2 as pb
from test_mesh_h1_tcp import _until, h1_tcp_mesh  # noqa: F401 - the fixture

pytestmark = [pytest.mark.hardening, pytest.mark.dataplane, pytest.mark.etcd]


def _set_pool(a, node, port, protocol, pool):
    a.resources.update(K.VIRTUAL_NODE, parse_json(pb.UpdateVirtualNodeRequest, {
        "meshName": "shop", "virtualNodeName": node, "spec": {
            "listeners": [{"portMapping": {"port": port, "protocol": protocol}, "connectionPool": {protocol: pool}}],
            "serviceDiscovery": {"dns": {"hostname": f"{node}.shop.local"}}}}))
    time.sleep(0.5)  # published everywhere (compiled within 100 ms of the write)


def _get(a, path):
    host, port = a.runtime.addresses["egress_http:web"].rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request("GET", path, headers={"Host": "api.shop.local"})
        r = c.getresponse()
        return r.status, r.getheader("x-meshd-reason"), r.read()
    finally:
        c.close()


def test_http_max_connections_queues_up_to_max_pending_then_overflows(h1_tcp_mesh):
    a, _, _ = h1_tcp_mesh
    _until(lambda: _get(a, "/warm")[0] == 200 or (_ for _ in ()).throw(AssertionError()))
    _set_pool(a, "web-api", 8080, "http", {"maxConnections": 1, "maxPendingRequests": 2})
    t0 = time.monotonic()
    with futures.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda i: (_get(a, "/slow"), time.monotonic() - t0), range(5)))
    served = sorted(t for (status, _, _), t in results if status == 200)
    refused = [(status, reason, t) for (status, reason, _), t in results if status != 200]
    # One in flight and two queued are served, one after another (0.6 s each); the other two
    # find the queue full and are refused at once.
    assert len(served) == 3, results
    assert served[-1] > 1.6, served
    assert [(s, r) for s, r, _ in refused] == [(503, "pool_overflow")] * 2, refused
    assert all(t < 0.5 for _, _, t in refused), refused
    assert a.runtime.in_flight().get("shop/web-api", 0) == 0


def test_tcp_max_connections_refuses_the_connection_over_the_limit(h1_tcp_mesh):
    a, _, tcp_local = h1_tcp_mesh

    def echo(conn, data):
        conn.sendall(data)
        return conn.recv(100)

    def routable():
        with socket.create_connection(("127.0.0.1", tcp_local), timeout=5) as c:
            assert echo(c, b"hi") == b"hi"
    _until(routable)
    _set_pool(a, "db", 5432, "tcp", {"maxConnections": 1})
    held = socket.create_connection(("127.0.0.1", tcp_local), timeout=5)
    assert echo(held, b"one") == b"one"
    over = socket.create_connection(("127.0.0.1", tcp_local), timeout=5)
    over.sendall(b"two")
    assert over.recv(100) == b"", "the connection over maxConnections is closed unanswered"
    over.close()
    held.close()
    time.sleep(0.3)
    again = socket.create_connection(("127.0.0.1", tcp_local), timeout=5)
    assert echo(again, b"three") == b"three"
    again.close()
