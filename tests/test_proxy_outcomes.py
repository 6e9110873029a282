"""What the router learns from each outcome, through real meshds: a client that cancels and
a request this host refuses say nothing about the upstream endpoint, so they never reach
outlier detection, the retry budget or the endpoint's active count (issue 12, item 2)."""
from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest

from mesh_harness import Origin
from test_mesh_h1_tcp import h1_tcp_mesh  # noqa: F401 - the fixture

pytestmark = [pytest.mark.hardening, pytest.mark.dataplane, pytest.mark.etcd]

OUTLIER = {"outlierDetection": {"maxServerErrors": 2, "interval": {"unit": "s", "value": 30},
                                "baseEjectionDuration": {"unit": "s", "value": 30}, "maxEjectionPercent": 100}}


class SlowOrigin(Origin):
    """An origin whose `/echo.Echo/Say` waits up to 5 s and records the calls whose client
    went away meanwhile (grpcio marks the context inactive when the stream is reset)."""

    def __init__(self, name):
        self.cancelled = []
        self.hold = threading.Event()
        super().__init__(name)

    def _say(self, request, context):
        if request == b"ping":
            return self.name.encode() + b":ping"
        t0 = time.monotonic()
        while context.is_active() and time.monotonic() - t0 < 5 and not self.hold.is_set():
            time.sleep(0.01)
        if not context.is_active():
            self.cancelled.append(time.monotonic() - t0)
        return self.name.encode() + b":" + request


def _endpoints(m, node):
    return m.a.runtime.view.live("shop").router.endpoints(node)


def _settle(m, node, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(e.active == 0 for e in _endpoints(m, node)) and not any(m.a.runtime.in_flight().values()):
            return
        time.sleep(0.05)


def test_client_cancels_never_eject_a_healthy_endpoint_and_reach_the_origin(mesh_factory):
    a, b = SlowOrigin("a"), SlowOrigin("b")
    m = mesh_factory({"i-a": a, "i-b": b}, {"i-a": "api-v1", "i-b": "api-v1"}, targets={"api-v1": 1}, node_listener=OUTLIER)
    call = m.client()
    m.wait_routable(call)
    m.wait_routable(call)  # both endpoints answered once
    # Eight impatient clients: each call cancelled by its client after 0.2 s (RST_STREAM CANCEL).
    calls = [call.future(b"slow") for _ in range(8)]
    time.sleep(0.3)
    for f in calls:
        f.cancel()
    time.sleep(0.5)
    _settle(m, "api-v1")
    now = time.monotonic_ns()
    eps = _endpoints(m, "api-v1")
    assert m.a.runtime.view.live("shop").router.ejected("api-v1", now) == 0, \
        [(e.id, e.times_ejected) for e in eps]
    assert [e.active for e in eps] == [0, 0]
    assert m.a.runtime.in_flight().get("shop/api-v1", 0) == 0
    # The cancel went upstream at once, through both meshds, to the origin.
    assert len(a.cancelled) + len(b.cancelled) == 8, (a.cancelled, b.cancelled)
    assert max(a.cancelled + b.cancelled) < 1.0
    # Both endpoints still take traffic.
    answers = {call(b"ping", timeout=5).split(b":")[0] for _ in range(6)}
    assert answers == {b"a", b"b"}


def test_local_refusals_give_the_endpoint_back_and_eject_nothing(mesh_factory):
    slow = SlowOrigin("a")
    m = mesh_factory({"i-a": slow}, {"i-a": "api-v1"}, targets={"api-v1": 1},
             node_listener={"connectionPool": {"grpc": {"maxRequests": 1}}, **OUTLIER},
             retry={"maxRetries": 2, "perRetryTimeout": {"unit": "s", "value": 5},
                    "grpcRetryEvents": ["unavailable"], "httpRetryEvents": ["gateway-error"]})
    call = m.client()
    m.wait_routable(call)
    with futures.ThreadPoolExecutor(8) as pool:
        first = pool.submit(call, b"first", timeout=10)
        time.sleep(0.3)
        refused = []
        for _ in range(6):  # each one over maxRequests: refused here, never sent
            try:
                call(b"more", timeout=5)
            except grpc.RpcError as err:
                refused.append(dict(err.trailing_metadata() or ()).get("x-meshd-reason"))
        slow.hold.set()
        assert first.result() == b"a:first"
    assert refused == ["pool_overflow"] * 6
    _settle(m, "api-v1")
    eps = _endpoints(m, "api-v1")
    assert [e.active for e in eps] == [0]
    assert m.a.runtime.view.live("shop").router.ejected("api-v1", time.monotonic_ns()) == 0
    assert eps[0].times_ejected == 0
    slow.hold.clear()
    assert call(b"ping", timeout=5) == b"a:ping"


def test_the_outcomes_table_covers_every_reason_the_engines_answer_with():
    from meshd.dataplane import FAILURE_RESPONSES
    from meshd.proxy import outcomes as O

    for kind, (http, grpc_code, reason) in FAILURE_RESPONSES.items():
        row = O.FAILURES[kind]
        assert (row.reason, row.http_status, row.grpc_status) == (reason, http, grpc_code)
        assert O.OUTCOMES[reason].feedback == row.feedback  # one reason, one verdict
    for reason, refusal in O.REFUSALS.items():
        row = O.OUTCOMES[reason]
        assert (refusal.http_status, refusal.grpc_status, refusal.reason) == (row.http_status, row.grpc_status, reason)
    # What the caller or this host did is never fed to the router as the upstream's doing.
    for reason in ("reset", "pool_overflow", "not_a_backend", "identity_refused", "no_endpoint", "draining",
                   "stream_idle_timeout"):
        assert O.FEEDBACK[reason] == O.RELEASE, reason


def test_an_http1_client_that_goes_away_closes_the_upstream_connection_at_once(h1_tcp_mesh):
    """HTTP/1.1 has no stream reset: a client that leaves mid-request closes its connection,
    and meshd closes the upstream one at once, through both meshds, so the origin stops."""
    import socket  # noqa: PLC0415

    from test_mesh_h1_tcp import Echo, _until  # noqa: PLC0415

    a, _, _ = h1_tcp_mesh
    host, port = a.runtime.addresses["egress_http:web"].rsplit(":", 1)

    def warm():
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"GET /warm HTTP/1.1\r\nHost: api.shop.local\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
    _until(warm)
    Echo.hold_closed.clear()
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"GET /hold HTTP/1.1\r\nHost: api.shop.local\r\n\r\n")
    time.sleep(0.5)
    s.close()
    deadline = time.monotonic() + 3
    while not Echo.hold_closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Echo.hold_closed and Echo.hold_closed[0] < 1.5, Echo.hold_closed
    assert a.runtime.in_flight().get("shop/web-api", 0) == 0
