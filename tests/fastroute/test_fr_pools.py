"""Connection/TLS-session pool bookkeeping: limits, circuit open, idle expiry, LRU."""
from __future__ import annotations

import pytest

from _fastroute import constants as C
from _fastroute.errors import UnknownHandle
from _fastroute.spec import ConnectionPool, VirtualNode

from .helpers import POOLS, http, http_route

pytestmark = pytest.mark.fastroute
S = 10**9


def setup(build, n_endpoints=1, **pool):
    r = build([http_route("x")], nodes=(VirtualNode("a", pool=ConnectionPool(**pool), identity="id-a"),),
              n_endpoints=n_endpoints)
    return r, POOLS[build.Router](r, max_idle=2, idle_timeout_ms=60_000)


def test_connect_then_reuse_and_keyed_by_endpoint_and_identity(build):
    r, p = setup(build, n_endpoints=2)
    d0, d1 = http(r), http(r)
    assert d0.pool_key == ("a-0", "id-a") and d1.pool_key == ("a-1", "id-a")
    assert p.checkout(d0, 0).action == C.POOL_CONNECT
    p.opened(d0, "h0", 1, 0)
    p.release("h0", 1)
    assert p.checkout(d1, 2).action == C.POOL_CONNECT  # another endpoint, another pool
    got = p.checkout(http(r), 3)  # round robin is back on a-0
    assert (got.action, got.handle) == (C.POOL_REUSE, "h0")


def test_multiplexed_connection_is_shared_up_to_max_streams(build):
    r, p = setup(build)
    d = http(r)
    p.checkout(d, 0)
    p.opened(d, "h2", 2, 0)
    assert p.checkout(d, 1).handle == "h2"
    assert p.checkout(d, 1).action == C.POOL_CONNECT  # both streams busy
    assert p.stats("a") == (2, 0, 3)


def test_limits_open_the_circuit(build):
    r, p = setup(build, max_connections=1, max_pending_requests=1, max_requests=3)
    d = http(r)
    assert p.checkout(d, 0).action == C.POOL_CONNECT
    p.opened(d, "h", 1, 0)
    assert p.checkout(d, 0).action == C.POOL_QUEUE  # the one connection is busy
    full = p.checkout(d, 0)
    assert (full.action, full.limit) == (C.POOL_CIRCUIT_OPEN, C.LIMIT_MAX_PENDING)
    assert p.release("h", 1) is True  # someone is waiting
    p.unqueue(d)
    assert p.checkout(d, 2).handle == "h"
    p.closed("h")
    assert p.stats("a") == (0, 0, 0)
    r2, p2 = setup(build, max_requests=1)
    d2 = http(r2)
    p2.checkout(d2, 0)
    p2.opened(d2, "x", 100, 0)
    over = p2.checkout(d2, 0)
    assert (over.action, over.limit) == (C.POOL_CIRCUIT_OPEN, C.LIMIT_MAX_REQUESTS)
    p2.connect_failed(d2)
    assert p2.stats("a")[2] == 0


def test_idle_expiry_and_lru_cap(build):
    r, p = setup(build, n_endpoints=4)
    for k in range(4):
        d = http(r)
        p.checkout(d, 0)
        p.opened(d, f"h{k}", 1, 0)
        p.release(f"h{k}", k * S)  # h0 idle longest
    assert p.expire(10 * S) == ["h0", "h1"]  # max_idle=2 keeps the two most recent
    assert p.expire(10 * S) == []
    assert p.expire(62 * S) == ["h2"]  # idle for 60 s
    with pytest.raises(UnknownHandle) as err:
        p.release("h0", 0)
    assert err.value.handle == "h0"


def test_tls_session_slot_for_resumption(build):
    r, p = setup(build, n_endpoints=3)
    keys = [http(r).pool_key for _ in range(3)]
    for k in keys:
        p.store_session(k, f"ticket-{k[0]}")
    assert p.session(keys[0]) is None  # LRU cap of 2 dropped the oldest
    assert p.session(keys[2]) == "ticket-a-2"
    d = http(r)  # a-0 again
    d = http(r)  # a-1
    got = p.checkout(d, 0)
    assert (got.action, got.tls_session) == (C.POOL_CONNECT, "ticket-a-1")
