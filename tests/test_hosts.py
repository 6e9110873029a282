"""Host records and ListHosts against real etcd: records page like every List, are written
only when they change, carry the revision a host applied next to etcd's newest config
change, and are readable only with a cluster-wide read permission."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import grpc
import pytest

from meshd.app import Meshd, MeshdConfig
from meshd.embedded_etcd import free_port
from meshd.hostrecord import HostRecord
from meshd.security import ClusterKey, Roles, Tokens
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import admin_pb2_grpc

pytestmark = pytest.mark.etcd


def hosts(stub) -> dict[str, pb.Host]:
    return {h.host_name: h for h in stub.ListHosts(pb.ListHostsRequest(), timeout=10).hosts}


def test_host_records_page_and_only_write_on_change(admin):
    applied = {"rev": 0, "gen": 0}
    records = [HostRecord(admin.store, admin.lease, host_name=f"h{i}", admin_address=f"127.0.0.1:{7000 + i}",
                          applied=lambda: (applied["rev"], applied["gen"]), interval=3600)
               for i in range(3)]
    assert all(r.publish() for r in records)
    assert not records[0].publish()  # nothing changed: no etcd write
    first = admin.stub.ListHosts(pb.ListHostsRequest(limit=2))
    assert [h.host_name for h in first.hosts] == ["h0", "h1"] and first.next_token
    rest = admin.stub.ListHosts(pb.ListHostsRequest(limit=2, next_token=first.next_token))
    assert [h.host_name for h in rest.hosts] == ["h2"] and not rest.next_token
    h0 = first.hosts[0]
    assert h0.admin_address == "127.0.0.1:7000" and h0.version and h0.lease_id == admin.lease.current()
    assert h0.started_at.seconds > 0 and h0.applied_revision == 0
    # A config write moves config_revision to its revision; a host that applied it says so.
    mesh = admin.stub.CreateMesh(pb.CreateMeshRequest(mesh_name="shop"))
    now = admin.stub.ListHosts(pb.ListHostsRequest())
    assert now.config_revision >= now.hosts[0].applied_revision
    assert now.config_revision == admin.store.get("meshes/shop").mod_revision
    assert mesh.mesh.mesh_name == "shop" and now.revision >= now.config_revision
    applied.update(rev=now.config_revision, gen=1)
    assert records[0].publish()
    h0 = hosts(admin.stub)["h0"]
    assert (h0.applied_revision, h0.config_generation) == (now.config_revision, 1)
    with pytest.raises(grpc.RpcError) as err:
        admin.stub.ListHosts(pb.ListHostsRequest(limit=101))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_hosts_needs_cluster_wide_read(etcd, etcd_prefix, tmp_path):
    """A viewer of one mesh does not see the hosts; a cluster-wide viewer does."""
    ClusterKey.generate(tmp_path / "cluster.key")
    daemon = Meshd(MeshdConfig(admin=f"127.0.0.1:{free_port()}", admin_token=f"127.0.0.1:{free_port()}",
                               etcd=[etcd.url], etcd_prefix=etcd_prefix, state_dir=str(tmp_path / "h1"),
                               host_name="h1", cluster_key=str(tmp_path / "cluster.key"), lease_ttl=5)).start()
    try:
        bundle = (tmp_path / "h1" / "identity" / "bundle.pem").read_bytes()
        roles, tokens = Roles(daemon.store), Tokens(daemon.store)
        roles.grant("mesh-viewer", "viewer", "shop")
        roles.grant("cluster-viewer", "viewer", "*")

        def list_as(principal: str):
            creds = grpc.composite_channel_credentials(
                grpc.ssl_channel_credentials(bundle),
                grpc.access_token_call_credentials(tokens.create_api_token(principal).token))
            with grpc.secure_channel(daemon.admin.addresses["token"], creds) as ch:
                return admin_pb2_grpc.MeshAdminStub(ch).ListHosts(pb.ListHostsRequest(), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            list_as("mesh-viewer")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        got = list_as("cluster-viewer").hosts
        assert [h.host_name for h in got] == ["h1"] and got[0].admin_address == daemon.admin.address
        assert got[0].applied_revision == 0 and not got[0].data_plane  # this host runs no apps
    finally:
        daemon.stop()


def test_a_lost_lease_takes_the_record_and_the_next_tick_brings_it_back(admin):
    record = HostRecord(admin.store, admin.lease, host_name="h0", admin_address="127.0.0.1:7000", interval=3600)
    assert record.publish()
    admin.lease.start()  # the keeper notices a lost lease at its next keepalive
    admin.store.revoke_lease(admin.lease.current())  # as etcd does when the TTL runs out
    assert hosts(admin.stub) == {}
    deadline = time.monotonic() + 15
    while admin.lease.losses == 0:
        assert time.monotonic() < deadline, "the host lease was not re-granted"
        time.sleep(0.1)
    assert record.publish()
    assert hosts(admin.stub)["h0"].lease_id == admin.lease.current()


def test_a_data_plane_that_applied_nothing_yet_is_lagging_not_absent(admin):
    admin.stub.CreateMesh(pb.CreateMeshRequest(mesh_name="shop"))
    HostRecord(admin.store, admin.lease, host_name="fresh", admin_address="127.0.0.1:7000", data_plane=True,
               interval=3600).publish()
    HostRecord(admin.store, admin.lease, host_name="control", admin_address="127.0.0.1:7001",
               interval=3600).publish()
    out = subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", admin.address, "status", "-o", "json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert {h["hostName"]: (h.get("dataPlane", False), h["state"]) for h in doc["hosts"]} == {
        "fresh": (True, "LAGGING"), "control": (False, "no data plane")}
