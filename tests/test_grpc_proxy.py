"""meshd behind `etcd grpc-proxy` (docs/scale.md, issue 17): the host lease, the instances
under it and the watch all work through the proxy, not only the watch.

Renewing with one LeaseKeepAlive stream per renewal, half-closed after its request, failed
through etcd 3.4's proxy with "context canceled" on every try, so the host lease and its
instances expired every TTL; this runs a real etcd, a real proxy and a real admin server.
"""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from bench.test_scale_watchers import GrpcProxy
from conftest import AdminHarness
from meshd.v1 import admin_pb2 as pb
from registry import Store, Unavailable

pytestmark = [pytest.mark.etcd, pytest.mark.scale_ci]

TTL = 2
# Three TTLs and one more: a lease renewed by nothing would be gone twice over by then.
HOLD_S = 4 * TTL


@pytest.fixture
def proxy(etcd, tmp_path):
    p = GrpcProxy(f"127.0.0.1:{etcd.client_port}", tmp_path / "proxy.log")
    yield p
    p.stop()


@pytest.fixture
def behind_proxy(proxy, etcd_prefix):
    store = Store([proxy.url], prefix=etcd_prefix, timeout=2.0)
    harness = AdminHarness(store, lease_ttl=TTL)
    yield harness
    harness.close()
    store.close()


def test_host_lease_instances_and_watch_hold_through_the_proxy(behind_proxy, etcd, etcd_prefix):
    admin = behind_proxy
    s = admin.stub
    s.CreateMesh(pb.CreateMeshRequest(mesh_name="m"))
    s.CreateVirtualNode(pb.CreateVirtualNodeRequest(mesh_name="m", virtual_node_name="n", spec={}))
    admin.lease.start()
    s.RegisterInstance(pb.RegisterInstanceRequest(
        mesh_name="m", virtual_node_name="n", instance_id="i-1", address="10.0.0.5", port=9090))
    lease = admin.lease.current()

    seen: list[str] = []
    stream = s.Watch(pb.WatchRequest(mesh_name="m"))

    def watch() -> None:
        try:
            for resp in stream:
                seen.extend(e.path for e in resp.events if not resp.reset)
        except grpc.RpcError:
            pass  # cancelled at the end of the test; an early break shows as events never seen

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        time.sleep(HOLD_S)
        # The same lease, renewed all along: never lost, never granted again.
        assert (admin.lease.losses, admin.lease.grants) == (0, 1)
        assert admin.lease.current() == lease
        assert admin.lease.renewals >= HOLD_S // TTL, admin.lease.renewals
        found = s.ListInstances(pb.ListInstancesRequest(mesh_name="m")).instances
        assert [i.instance_id for i in found] == ["i-1"]
        # etcd itself, asked directly, holds the instance under that lease.
        direct = Store([etcd.url], prefix=etcd_prefix, timeout=2.0)
        try:
            held = [item.path for item in direct.scan("instances/")[0] if item.lease == lease]
            assert held, "no instance key under the host lease in etcd"
        finally:
            direct.close()

        s.RegisterInstance(pb.RegisterInstanceRequest(
            mesh_name="m", virtual_node_name="n", instance_id="i-2", address="10.0.0.6", port=9090))
        deadline = time.monotonic() + 10
        while not any("i-2" in p for p in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("i-2" in p for p in seen), seen
    finally:
        stream.cancel()
        watcher.join(5)


def test_keepalive_stream_opens_again_after_etcd_behind_the_proxy_stalls(own_etcd, tmp_path):
    """A renewal that gets no answer drops its stream; once etcd answers again, the next
    renewal opens a new stream through the proxy and the same lease is still there."""
    proxy = GrpcProxy(f"127.0.0.1:{own_etcd.client_port}", tmp_path / "proxy.log")
    store = Store([proxy.url], prefix="/stall/", timeout=1.0)
    try:
        lease = store.grant_lease(30)
        assert store.keepalive(lease) == 30
        own_etcd.pause()
        try:
            t0 = time.monotonic()
            with pytest.raises(Unavailable):
                store.keepalive(lease)
            assert time.monotonic() - t0 < 3.0
        finally:
            own_etcd.resume()
        deadline = time.monotonic() + 15
        while True:
            try:
                assert store.keepalive(lease) == 30
                break
            except Unavailable:
                assert time.monotonic() < deadline, "keepalive never worked again after etcd resumed"
                time.sleep(0.2)
    finally:
        store.close()
        proxy.stop()
