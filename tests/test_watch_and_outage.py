"""The Watch RPC (snapshot, changes, resume across a meshd restart, resync after compaction)
and the admin API while etcd is down, with real meshd processes and a real etcd."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from builders import create, node_spec, shop
from conftest import AdminHarness
from meshd.embedded_etcd import free_port
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import admin_pb2_grpc
from registry import Store

pytestmark = pytest.mark.etcd


def _next(stream, timeout=10.0):
    """The next WatchResponse, failing the test instead of blocking forever."""
    box = []
    t = threading.Thread(target=lambda: box.append(next(stream)), daemon=True)
    t.start()
    t.join(timeout)
    assert box, f"no watch response within {timeout}s"
    return box[0]


def _events_until(stream, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        resp = _next(stream, deadline - time.monotonic())
        seen.append(resp)
        if predicate(resp):
            return seen
    raise AssertionError("condition not met")


def test_watch_snapshot_then_changes(admin):
    s = admin.stub
    shop(s)
    stream = s.Watch(pb.WatchRequest(mesh_name="shop"))
    first = _next(stream)
    assert first.reset and first.snapshot_done
    paths = sorted(e.path for e in first.events)
    assert paths == sorted([
        "meshes/shop", "virtualNodes/shop/web", "virtualNodes/shop/api-v1", "virtualNodes/shop/api-v2",
        "virtualRouters/shop/api-router", "routes/shop/api-router/api",
        "virtualServices/shop/api.shop.local", "virtualServices/shop/web.shop.local"])
    create(s, "VirtualNode", meshName="shop", virtualNodeName="api-v3", spec=node_spec())
    got = _events_until(stream, lambda r: any(e.path == "virtualNodes/shop/api-v3" for e in r.events))
    ev = [e for r in got for e in r.events if e.path == "virtualNodes/shop/api-v3"][0]
    assert ev.type == pb.ResourceEvent.PUT and ev.kind == "virtualNode"
    assert ev.resource.virtual_node.metadata.version == 1
    s.DeleteVirtualNode(pb.DeleteVirtualNodeRequest(mesh_name="shop", virtual_node_name="api-v3"))
    got = _events_until(stream, lambda r: any(e.type == pb.ResourceEvent.DELETE for e in r.events))
    ev = [e for r in got for e in r.events if e.type == pb.ResourceEvent.DELETE][0]
    assert ev.path == "virtualNodes/shop/api-v3" and ev.resource.virtual_node.virtual_node_name == "api-v3"
    # Internal keys (reference index, tags, idempotency records) never leak into the stream.
    assert all(not e.path.startswith(("refs/", "tags/", "idem/")) for r in got for e in r.events)
    stream.cancel()


def test_watch_filters_by_mesh(admin):
    s = admin.stub
    create(s, "Mesh", meshName="a", spec={})
    create(s, "Mesh", meshName="ab", spec={})
    stream = s.Watch(pb.WatchRequest(mesh_name="a"))
    assert [e.path for e in _next(stream).events] == ["meshes/a"]
    create(s, "VirtualNode", meshName="ab", virtualNodeName="x", spec=node_spec())
    create(s, "VirtualNode", meshName="a", virtualNodeName="y", spec=node_spec())
    got = _events_until(stream, lambda r: bool(r.events))
    assert [e.path for r in got for e in r.events] == ["virtualNodes/a/y"]
    stream.cancel()


class MeshdProcess:
    """`meshd run` as a real child process against a given etcd and key prefix."""

    def __init__(self, etcd_url: str, prefix: str, tmp_path):
        self.port = free_port()
        self.args = [sys.executable, "-m", "meshd.cli.meshd_main", "run", "--insecure-local", "--etcd", etcd_url,
                     "--admin", f"127.0.0.1:{self.port}", "--etcd-prefix", prefix,
                     "--host-name", "proc-host", "--state-dir", str(tmp_path)]
        self.log = open(tmp_path / f"meshd-{self.port}.log", "ab")
        self.proc = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log)
        channel = grpc.insecure_channel(self.address)
        grpc.channel_ready_future(channel).result(timeout=20)
        return channel

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
        return self.proc.returncode


def test_watch_resumes_after_meshd_restart(etcd, etcd_prefix, tmp_path):
    daemon = MeshdProcess(etcd.url, etcd_prefix, tmp_path)
    channel = daemon.start()
    stub = admin_pb2_grpc.MeshAdminStub(channel)
    create(stub, "Mesh", meshName="shop", spec={})
    stream = stub.Watch(pb.WatchRequest())
    snap = _next(stream)
    assert [e.path for e in snap.events] == ["meshes/shop"]
    seen_revision = snap.revision
    assert daemon.stop() == 0  # SIGTERM: a clean exit
    channel.close()
    # Writes while the watching client's meshd is down, through another writer.
    other = Store([etcd.url], prefix=etcd_prefix)
    harness = AdminHarness(other)
    try:
        create(harness.stub, "VirtualNode", meshName="shop", virtualNodeName="while-down", spec=node_spec())
        harness.stub.DeleteMesh  # noqa: B018 - the other meshd stays up for the next write
    finally:
        harness.close()
        other.close()
    channel = daemon.start()
    try:
        stub = admin_pb2_grpc.MeshAdminStub(channel)
        stream = stub.Watch(pb.WatchRequest(resume_revision=seen_revision))
        resp = _events_until(stream, lambda r: bool(r.events))[-1]
        assert not resp.reset, "a resumable revision must not trigger a snapshot"
        assert [e.path for e in resp.events] == ["virtualNodes/shop/while-down"]
        assert resp.revision > seen_revision
        stream.cancel()
    finally:
        channel.close()
        daemon.stop()


def test_watch_after_compaction_resyncs_and_says_so(admin):
    s = admin.stub
    create(s, "Mesh", meshName="c", spec={})
    old = admin.store.revision()
    create(s, "VirtualNode", meshName="c", virtualNodeName="n1", spec=node_spec())
    create(s, "VirtualNode", meshName="c", virtualNodeName="n2", spec=node_spec())
    s.DeleteVirtualNode(pb.DeleteVirtualNodeRequest(mesh_name="c", virtual_node_name="n1"))
    admin.store.compact(admin.store.revision())
    stream = s.Watch(pb.WatchRequest(mesh_name="c", resume_revision=old))
    resp = _next(stream)
    assert resp.reset and resp.snapshot_done and resp.compacted_revision > old
    assert sorted(e.path for e in resp.events) == ["meshes/c", "virtualNodes/c/n2"]
    # ...and the stream carries on with changes after the snapshot.
    create(s, "VirtualNode", meshName="c", virtualNodeName="n3", spec=node_spec())
    got = _events_until(stream, lambda r: bool(r.events))
    assert [e.path for e in got[-1].events] == ["virtualNodes/c/n3"]
    stream.cancel()


def test_admin_api_unavailable_while_etcd_down_and_recovers(own_etcd):
    store = Store([own_etcd.url], prefix="/outage/", timeout=1.0)
    harness = AdminHarness(store)
    s = harness.stub
    try:
        shop(s)
        stream = s.Watch(pb.WatchRequest(mesh_name="shop"))
        snap = _next(stream)
        assert snap.reset
        own_etcd.pause()
        for call in (lambda: create(s, "VirtualNode", meshName="shop", virtualNodeName="lost", spec=node_spec()),
                     lambda: s.DescribeMesh(pb.DescribeMeshRequest(mesh_name="shop"), timeout=5),
                     lambda: s.ListVirtualNodes(pb.ListVirtualNodesRequest(mesh_name="shop"), timeout=5)):
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "etcd is unavailable" in e.value.details()
            assert time.monotonic() - t0 < 5
        # The daemon is still serving: health answers while etcd is down.
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        health = health_pb2_grpc.HealthStub(harness.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        own_etcd.resume()
        deadline = time.monotonic() + 15
        while True:
            try:
                create(s, "VirtualNode", meshName="shop", virtualNodeName="after", spec=node_spec())
                break
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() < deadline
                time.sleep(0.3)
        # The write refused during the outage was not applied; the one after it was, and the
        # watch opened before the outage delivers it without a gap or a reset.
        names = [r.virtual_node_name for r in s.ListVirtualNodes(pb.ListVirtualNodesRequest(mesh_name="shop")).virtual_nodes]
        assert "lost" not in names and "after" in names
        got = _events_until(stream, lambda r: any(e.path == "virtualNodes/shop/after" for e in r.events), timeout=15)
        assert not any(r.reset for r in got)
        stream.cancel()
    finally:
        harness.close()
        store.close()
