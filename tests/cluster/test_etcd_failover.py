"""Failover between etcd endpoints in `registry.Store`, on loopback: the drills' findings
reduced to deterministic reproductions. Each is marked with the bug it shows; when the bug is
fixed, the strict xfail turned into a failure, and the marker was dropped: these now guard the fixes."""
from __future__ import annotations

import time

import pytest

import registry
from meshd.embedded_etcd import EmbeddedEtcd, free_port
from tests.tcp_listener import Blackhole

pytestmark = pytest.mark.etcd



def _store_on(bad: str, good: str, prefix: str) -> registry.Store:
    store = registry.Store([bad, good], prefix=prefix, timeout=1.0)
    # python-etcd3 starts on a random endpoint; start this one on the bad endpoint.
    store._client._current_endpoint_label = bad.split("://")[1]
    return store


def _calls_after_failover(store: registry.Store, n: int = 3, spacing: float = 1.0) -> list[str]:
    outcomes = []
    for _ in range(n):
        try:
            store.get("probe")
            outcomes.append("ok")
        except registry.Unavailable as err:
            outcomes.append(type(err.__cause__).__name__)
        time.sleep(spacing)  # calls spaced like the host lease's keepalives (ttl / 3)
    return outcomes


def test_calls_move_off_a_dead_member(etcd, etcd_prefix):
    store = _store_on(f"http://127.0.0.1:{free_port()}", etcd.url, etcd_prefix)
    try:
        outcomes = _calls_after_failover(store)
        # The first call may fail (it finds the member dead); later ones must not.
        assert outcomes[1:] == ["ok", "ok"], outcomes
    finally:
        store.close()


def test_calls_move_off_a_partitioned_member(etcd, etcd_prefix):
    hole = Blackhole()
    store = _store_on(f"http://127.0.0.1:{hole.port}", etcd.url, etcd_prefix)
    try:
        outcomes = _calls_after_failover(store)
        assert outcomes[1:] == ["ok", "ok"], outcomes
    finally:
        store.close()
        hole.close()


def test_store_reconnects_soon_after_an_outage(tmp_path):
    own = EmbeddedEtcd(tmp_path / "etcd", supervise=False).start()
    store = registry.Store([own.url], prefix="/reconnect/", timeout=1.0)
    try:
        store.put("a", b"1")
        own.pause()
        # Ten seconds down, with calls going on as meshd's lease and watch loops make them.
        down_until = time.monotonic() + 10
        while time.monotonic() < down_until:
            with pytest.raises(registry.Unavailable):
                store.get("a")
            time.sleep(0.5)
        own.resume()
        back = time.monotonic()
        took = None
        while time.monotonic() - back < 30:
            try:
                store.get("a")
                took = time.monotonic() - back
                break
            except registry.Unavailable:
                time.sleep(0.1)
        assert took is not None and took < 2.0, f"the store needed {took} s after etcd was back"
    finally:
        store.close()
        own.stop()
