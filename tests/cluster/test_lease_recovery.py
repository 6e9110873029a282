"""What a meshd writes back after losing its host lease (meshd/lease.py), on loopback: the
partition drill's finding reduced to a deterministic reproduction."""
from __future__ import annotations

import time

import pytest

from meshd.v1 import admin_pb2 as pb

pytestmark = pytest.mark.etcd


def _setup(admin) -> pb.Instance:
    admin.stub.CreateMesh(pb.CreateMeshRequest(mesh_name="m"))
    admin.stub.CreateVirtualNode(pb.CreateVirtualNodeRequest(mesh_name="m", virtual_node_name="n", spec={}))
    admin.lease.start()
    return admin.stub.RegisterInstance(pb.RegisterInstanceRequest(
        mesh_name="m", virtual_node_name="n", instance_id="i-1", address="10.0.0.5", port=9090)).instance


def _relisted(admin, old_lease: int, timeout: float = 15.0) -> pb.Instance | None:
    """The instance once the lease loop has noticed the lost lease and written it again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if admin.lease.losses and admin.lease.current() != old_lease:
            found = admin.stub.ListInstances(pb.ListInstancesRequest(mesh_name="m")).instances
            if found:
                return found[0]
        time.sleep(0.2)
    return None


def test_instances_come_back_after_the_host_lease_is_lost(admin):
    before = _setup(admin)
    # What a partition longer than the TTL does: etcd drops the lease and its keys.
    admin.store.revoke_lease(before.lease_id)
    assert not admin.stub.ListInstances(pb.ListInstancesRequest(mesh_name="m")).instances
    after = _relisted(admin, before.lease_id)
    assert after is not None, "the instance was not registered again"
    assert (after.instance_id, after.address, after.port) == ("i-1", "10.0.0.5", 9090)


def test_reregistered_instance_names_the_lease_that_holds_it(admin):
    before = _setup(admin)
    admin.store.revoke_lease(before.lease_id)
    after = _relisted(admin, before.lease_id)
    assert after is not None
    assert after.lease_id == admin.lease.current() != before.lease_id


def test_reregistration_survives_a_refused_regrant(own_etcd):
    """The partition drill's stall: the keepalive finds the lease gone, but etcd refuses the
    new grant (or the writes under it) for a while, as right after a partition heals.

    etcd's NOSPACE alarm does that deterministically: LeaseGrant and Put are refused while
    LeaseKeepAlive is still answered. Once the alarm is cleared, the instance must come back;
    a meshd that forgot it still had instances to write renews an empty lease forever."""
    from registry import Store
    from tests.conftest import AdminHarness

    store = Store([own_etcd.url], prefix="/regrant/", timeout=1.0)
    admin = AdminHarness(store, lease_ttl=3)
    try:
        before = _setup(admin)
        store._client.create_alarm()
        try:
            admin.store.revoke_lease(before.lease_id)
            deadline = time.monotonic() + 10
            while not admin.lease.losses and time.monotonic() < deadline:
                time.sleep(0.1)
            assert admin.lease.losses, "the lease loop never noticed the revoked lease"
            time.sleep(1.5)  # several refused grants and writes
            assert not admin.stub.ListInstances(pb.ListInstancesRequest(mesh_name="m")).instances
        finally:
            store._client.disarm_alarm()
        after = _relisted(admin, before.lease_id, timeout=10)
        assert after is not None, "the instance was never written back after etcd took writes again"
        assert after.lease_id == admin.lease.current() != before.lease_id
    finally:
        admin.close()
        store.close()


def test_a_lease_loop_that_raises_is_restarted_not_lost(store, caplog):
    """An unexpected error in the lease loop (here the owner's rewrite, once) is logged and
    the loop runs again: the instance still comes back under a new lease."""
    from meshd.lease import HostLease

    rewrites = []

    def rewrite(value: bytes, lease_id: int) -> bytes:
        rewrites.append(lease_id)
        if len(rewrites) == 1:
            raise RuntimeError("rewrite failed once")
        return value

    lease = HostLease(store, ttl=3, rewrite=rewrite)
    first = lease.current()
    store.put("instances/m/n/i-1", b"v", lease=first)
    lease.hold("instances/m/n/i-1", b"v", first)
    lease.start()
    try:
        store.revoke_lease(first)
        deadline = time.monotonic() + 10
        while store.get("instances/m/n/i-1") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        item = store.get("instances/m/n/i-1")
        assert item is not None, "the loop died with its error; the instance never came back"
        assert item.lease == lease.current() != first
        assert any(r.getMessage() == "background loop failed; restarting it" for r in caplog.records)
    finally:
        lease.stop()
