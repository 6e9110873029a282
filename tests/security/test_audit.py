"""The audit log on real etcd: entries as written, newest first, filters, a bounded size."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from meshd.security.audit import AuditFilter, AuditLog

from .helpers import real_now

pytestmark = [pytest.mark.identity, pytest.mark.etcd]


def test_entries_read_back_as_written_newest_first(store):
    log = AuditLog(store)
    now = real_now()
    log.record("alice", "CreateMesh", "meshes/m1", "OK", "req-1", now=now)
    log.record("bob", "DeleteVirtualNode", "virtualNodes/m1/web", "PERMISSION_DENIED", "req-2",
               detail={"permission": "delete"}, now=now + timedelta(seconds=1))
    got = log.query()
    assert [(e.seq, e.who, e.action, e.resource, e.result, e.request_id) for e in got] == [
        (2, "bob", "DeleteVirtualNode", "virtualNodes/m1/web", "PERMISSION_DENIED", "req-2"),
        (1, "alice", "CreateMesh", "meshes/m1", "OK", "req-1"),
    ]
    assert got[0].detail == {"permission": "delete"} and got[1].time == now


def test_filters_and_paging(store):
    log = AuditLog(store)
    t0 = real_now()
    for i in range(30):
        log.record(("alice", "bob", "carol")[i % 3], "UpdateRoute" if i % 2 else "CreateRoute",
                   f"routes/m{i % 2}/r/{i}", "OK" if i % 5 else "CONFLICT", f"req-{i}",
                   now=t0 + timedelta(seconds=i))
    assert [e.request_id for e in log.query(AuditFilter(who="bob"), limit=3)] == ["req-28", "req-25", "req-22"]
    assert {e.result for e in log.query(AuditFilter(result="CONFLICT"))} == {"CONFLICT"}
    assert len(log.query(AuditFilter(result="CONFLICT"))) == 6
    assert all(e.resource.startswith("routes/m1/") for e in log.query(AuditFilter(resource_prefix="routes/m1/")))
    window = log.query(AuditFilter(since=t0 + timedelta(seconds=10), until=t0 + timedelta(seconds=13)))
    assert [e.request_id for e in window] == ["req-12", "req-11", "req-10"]
    page1 = log.query(limit=10)
    page2 = log.query(limit=10, before_seq=page1[-1].seq)
    assert [e.seq for e in page1 + page2] == list(range(30, 10, -1))
    assert log.query(AuditFilter(request_id="req-7"))[0].who == "bob"


def test_size_is_bounded_in_the_same_transaction(store):
    log = AuditLog(store, max_entries=25)
    for i in range(60):
        log.record("w", "CreateMesh", f"meshes/m{i}", "OK", f"req-{i}")
        assert log.count() == min(i + 1, 25)
    got = log.query(limit=100)
    assert [e.request_id for e in got] == [f"req-{i}" for i in range(59, 34, -1)]


def test_lowering_the_bound_then_trimming(store):
    big = AuditLog(store, max_entries=50)
    for i in range(40):
        big.record("w", "A", "r", "OK", str(i))
    small = AuditLog(store, max_entries=10)
    assert small.trim() == 30
    assert small.count() == 10
    assert [e.request_id for e in small.query(limit=100)] == [str(i) for i in range(39, 29, -1)]


def test_concurrent_recorders_get_dense_unique_sequence_numbers(store):
    log = AuditLog(store, max_entries=1000)
    per, n = 15, 4
    barrier = threading.Barrier(n)
    errors = []

    def writer(w):
        barrier.wait()
        try:
            for i in range(per):
                AuditLog(store, max_entries=1000).record(f"w{w}", "X", "r", "OK", f"{w}-{i}")
        except Exception as err:  # noqa: BLE001 — any failure is the test's failure
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    got = log.query(limit=1000)
    assert sorted(e.seq for e in got) == list(range(1, per * n + 1))
    assert {e.request_id for e in got} == {f"{w}-{i}" for w in range(n) for i in range(per)}
