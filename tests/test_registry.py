"""registry.Store against a real etcd: transactional rules, paging, watches, compaction,
leases, and behaviour while etcd is down."""
from __future__ import annotations

import threading
import time

import pytest

import registry
from registry import Store, Write

pytestmark = pytest.mark.etcd


def test_create_requires_absence_and_parents(store):
    store.commit(Write("meshes/a", b"1", expect_revision=0))
    with pytest.raises(registry.AlreadyExists) as e:
        store.commit(Write("meshes/a", b"2", expect_revision=0))
    assert e.value.path == "meshes/a"
    with pytest.raises(registry.NotFound) as e:
        store.commit(Write("nodes/b/n", b"x", expect_revision=0, require=(("meshes/b", "mesh"),)))
    assert (e.value.path, e.value.role) == ("meshes/b", "mesh")
    assert store.get("nodes/b/n") is None
    assert store.get("meshes/a").value == b"1"


def test_references_block_delete_until_released(store):
    store.commit(Write("nodes/n", b"n", expect_revision=0))
    store.commit(Write("routes/r1", b"r", expect_revision=0, refs_add=("nodes/n",), require=(("nodes/n", "reference"),)))
    store.commit(Write("routes/r2", b"r", expect_revision=0, refs_add=("nodes/n",)))
    with pytest.raises(registry.InUse) as e:
        store.commit(Write("nodes/n", None, check_referrers=True))
    assert e.value.referrers == ["routes/r1", "routes/r2"]
    store.commit(Write("routes/r1", None, refs_remove=("nodes/n",)))
    store.commit(Write("routes/r2", b"r2", refs_remove=("nodes/n",)))
    store.commit(Write("nodes/n", None, check_referrers=True))
    assert store.get("nodes/n") is None


def test_require_empty_prefix(store):
    store.commit(Write("meshes/m", b"", expect_revision=0))
    store.commit(Write("nodes/m/a", b"", expect_revision=0))
    with pytest.raises(registry.InUse) as e:
        store.commit(Write("meshes/m", None, require_empty=("nodes/m/", "routes/m/")))
    assert e.value.referrers == ["nodes/m/a"]
    # A sibling mesh whose name shares the prefix is not a child.
    store.commit(Write("nodes/m2/x", b"", expect_revision=0))
    store.commit(Write("nodes/m/a", None))
    store.commit(Write("meshes/m", None, require_empty=("nodes/m/",)))


def test_stale_revision_is_a_conflict_and_writes_nothing(store):
    store.commit(Write("k", b"v1", expect_revision=0))
    first = store.get("k")
    store.commit(Write("k", b"v2", expect_revision=first.mod_revision))
    with pytest.raises(registry.Conflict) as e:
        store.commit(Write("k", b"v3", expect_revision=first.mod_revision))
    assert e.value.expected == first.mod_revision and e.value.actual > first.mod_revision
    assert store.get("k").value == b"v2"


def test_idempotency_record_is_replayed(store):
    rec = ("idem/abc", b"fp\nresponse")
    done = store.commit(Write("k", b"v", expect_revision=0, idempotency=rec))
    assert done.replay is None
    again = store.commit(Write("k", b"v", expect_revision=0, idempotency=rec))
    assert again.replay == b"fp\nresponse"


def test_list_pages_are_key_ordered_and_complete(store):
    for i in range(25):
        store.put(f"c/{i:02d}", b"x")
    store.put("c-other/zz", b"not in c/")
    out, after = [], None
    while True:
        page = store.list("c/", after=after, limit=10)
        out += [i.path for i in page.items]
        after = page.next_after
        if after is None:
            break
    assert out == [f"c/{i:02d}" for i in range(25)]
    items, rev = store.scan("c/", page=7)
    assert len(items) == 25 and rev >= page.revision


def test_watch_from_revision_sees_puts_and_deletes_with_last_value(store):
    start = store.revision() + 1
    store.put("w/a", b"1")
    store.put("w/b", b"2")
    store.delete("w/a")
    w = store.watch("w/", start_revision=start)
    events = []
    for _rev, batch in w:
        events += batch
        if len(events) >= 3:
            break
    w.cancel()
    assert [(e.type, e.path, e.value) for e in events] == [
        ("put", "w/a", b"1"), ("put", "w/b", b"2"), ("delete", "w/a", b"1")]


def test_remove_answers_the_revision_a_watcher_sees_the_delete_at(store):
    assert store.remove("r/absent") == 0
    put_at = store.put("r/a", b"1")
    store.put("r/other", b"2")
    removed_at = store.remove("r/a")
    assert removed_at > put_at and store.get("r/a") is None
    w = store.watch("r/a", start_revision=put_at + 1)
    for _rev, batch in w:
        if batch:
            break
    w.cancel()
    assert [(e.type, e.revision) for e in batch] == [("delete", removed_at)]


def test_watch_of_compacted_revision_raises_compacted(store):
    store.put("cw/a", b"1")
    old = store.revision()
    store.put("cw/a", b"2")
    store.put("cw/a", b"3")
    now = store.revision()
    store.compact(now)
    w = store.watch("cw/", start_revision=old)
    with pytest.raises(registry.Compacted) as e:
        for _ in w:
            pass
    assert e.value.revision >= now


def test_lease_expiry_removes_keys(store):
    lease = store.grant_lease(1)
    store.put("leased/x", b"1", lease=lease)
    assert store.keepalive(lease) > 0
    deadline = time.monotonic() + 6
    while store.get("leased/x") is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.get("leased/x") is None
    assert store.keepalive(lease) == 0


def test_unavailable_while_etcd_is_down_then_recovers(own_etcd):
    store = Store([own_etcd.url], prefix="/t/", timeout=1.0)
    store.commit(Write("before", b"1", expect_revision=0))
    own_etcd.pause()
    try:
        t0 = time.monotonic()
        with pytest.raises(registry.Unavailable) as e:
            store.commit(Write("during", b"2", expect_revision=0))
        assert time.monotonic() - t0 < 5, "a write must fail fast, not hang"
        assert own_etcd.url in str(e.value)
        with pytest.raises(registry.Unavailable):
            store.get("before")
    finally:
        own_etcd.resume()
    deadline = time.monotonic() + 10
    while True:
        try:
            store.commit(Write("after", b"3", expect_revision=0))
            break
        except registry.Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert store.get("before").value == b"1"
    assert store.get("during") is None
    store.close()


def test_watch_breaks_with_unavailable_and_resumes_without_gaps(own_etcd):
    store = Store([own_etcd.url], prefix="/t/", timeout=1.0)
    start = store.revision() + 1
    store.put("r/1", b"a")
    got, errors = [], []
    w = store.watch("r/", start_revision=start)

    def consume():
        try:
            for _rev, batch in w:
                got.extend(batch)
        except registry.Unavailable as err:
            errors.append(err)

    t = threading.Thread(target=consume)
    t.start()
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    own_etcd.pause()
    t.join(10)
    assert errors, "a broken watch must surface as Unavailable"
    last = got[-1].revision
    own_etcd.resume()
    deadline = time.monotonic() + 10
    while True:
        try:
            store.put("r/2", b"b")
            break
        except registry.Unavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    w2 = store.watch("r/", start_revision=last + 1)
    for _rev, batch in w2:
        if batch:
            assert [(e.path, e.value) for e in batch] == [("r/2", b"b")]
            break
    w2.cancel()
    store.close()


def test_every_call_of_the_background_loops_gives_up_at_the_timeout():
    """A member that accepts connections and never answers (a half-dead host) must not hold
    the lease loop or the registrar: each call they make fails as Unavailable at the timeout."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes handshakes; nothing ever reads or answers
    store = Store([f"http://127.0.0.1:{silent.getsockname()[1]}"], prefix="/silent/", timeout=0.5)
    try:
        for call in (lambda: store.grant_lease(5), lambda: store.keepalive(1234), lambda: store.put("k", b"v", lease=1),
                     lambda: store.commit(Write("k", b"v", require=(("meshes/m", "mesh"),))), lambda: store.get("k")):
            t0 = time.monotonic()
            with pytest.raises(registry.Unavailable):
                call()
            assert time.monotonic() - t0 < 2.0
    finally:
        store.close()
        silent.close()
