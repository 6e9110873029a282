"""`meshctl status` against real etcd and real meshd processes: each host publishes itself
under its lease and says which config revision its data plane has applied (a frozen host
is flagged as lagging, and catches up); a killed host drops out when its lease expires."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
import yaml

from builders import create
from meshd.embedded_etcd import free_port
from meshd.security import ClusterKey
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import admin_pb2_grpc
from registry import Store

pytestmark = pytest.mark.etcd


def until(what, check, timeout: float = 30.0, every: float = 0.2):
    """Poll `check` until it returns a truthy value, bounded; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def hosts(stub) -> dict[str, pb.Host]:
    return {h.host_name: h for h in stub.ListHosts(pb.ListHostsRequest(), timeout=10).hosts}


def _meshd(etcd, prefix, tmp_path, name, *, ttl: int, config: dict | None = None):
    """`meshd run` as a real process on the test etcd, admin API on loopback plaintext."""
    admin = f"127.0.0.1:{free_port()}"
    args = [sys.executable, "-m", "meshd.cli.meshd_main", "run", "--insecure-local", "--admin", admin,
            "--etcd", etcd.url, "--etcd-prefix", prefix, "--state-dir", str(tmp_path / name),
            "--host-name", name, "--cluster-key", str(tmp_path / "cluster.key"), "--lease-ttl", str(ttl),
            "--metrics", "127.0.0.1:0"]
    if config is not None:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        args += ["--config", str(path)]
    log = open(tmp_path / f"{name}.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=log, env={**os.environ})
    log.close()
    return proc, admin


def meshctl(server: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", server, *args],
                          capture_output=True, text=True, timeout=60)


def test_status_shows_hosts_lag_instances_and_a_killed_host_vanishing(etcd, etcd_prefix, tmp_path):
    ClusterKey.generate(tmp_path / "cluster.key")
    app = {"apps": [{"mesh": "shop", "virtualNode": "web", "port": free_port(), "egress": "127.0.0.1:0"}],
           "ingress": "127.0.0.1:0", "drainSeconds": 1}
    a, a_admin = _meshd(etcd, etcd_prefix, tmp_path, "host-a", ttl=15, config=app)
    b, b_admin = _meshd(etcd, etcd_prefix, tmp_path, "host-b", ttl=3)
    channel = grpc.insecure_channel(b_admin)
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = admin_pb2_grpc.MeshAdminStub(channel)
        until("both host records", lambda: set(hosts(stub)) == {"host-a", "host-b"})
        create(stub, "Mesh", meshName="shop", spec={})
        create(stub, "VirtualNode", meshName="shop", virtualNodeName="web",
               spec={"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                     "serviceDiscovery": {"dns": {"hostname": "web.shop.local"}}})
        stub.RegisterInstance(pb.RegisterInstanceRequest(
            mesh_name="shop", virtual_node_name="web", instance_id="outside-1", address="10.1.2.3", port=8080,
            ttl_seconds=60, health="UNHEALTHY"), timeout=10)

        def in_sync():
            resp = stub.ListHosts(pb.ListHostsRequest(), timeout=10)
            a_rec = {h.host_name: h for h in resp.hosts}["host-a"]
            insts = stub.ListInstances(pb.ListInstancesRequest(mesh_name="shop"), timeout=10).instances
            return len(insts) == 2 and a_rec.applied_revision >= resp.config_revision
        until("host-a to register and apply the config", in_sync)

        out = meshctl(b_admin, "status")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        header = lines[1].split()
        assert header == ["HOST", "VERSION", "ADMIN", "METRICS", "APPLIED", "GENERATION", "UP", "STATE"]
        rows = {ln.split()[0]: ln for ln in lines[2:4]}
        assert rows["host-a"].endswith("in sync") and a_admin in rows["host-a"]
        assert rows["host-b"].endswith("no data plane") and b_admin in rows["host-b"]
        # Each host publishes where its /metrics is, and that is where its own metrics are.
        for name, h in hosts(stub).items():
            assert rows[name].split()[3] == h.metrics_address
            with urllib.request.urlopen(f"http://{h.metrics_address}/metrics", timeout=5) as page:
                assert f'meshd_info{{host="{name}"' in page.read().decode()
        assert "MESH shop  (1 unhealthy, 1 unknown)" in out.stdout
        assert any(ln.split()[:2] == ["web", "outside-1"] and ln.endswith("UNHEALTHY") for ln in lines)
        assert any(ln.split()[:2] == ["web", "host-a-web-" + str(app["apps"][0]["port"])] and "host-a" in ln
                   for ln in lines)

        # Freeze host-a: a config change it cannot apply leaves it lagging, and says so.
        os.kill(a.pid, signal.SIGSTOP)
        try:
            create(stub, "VirtualNode", meshName="shop", virtualNodeName="api",
                   spec={"listeners": [{"portMapping": {"port": 9090, "protocol": "http"}}],
                         "serviceDiscovery": {"dns": {"hostname": "api.shop.local"}}})
            doc = json.loads(meshctl(b_admin, "status", "-o", "json").stdout)
            states = {h["hostName"]: (h.get("dataPlane", False), h["state"]) for h in doc["hosts"]}
            assert states == {"host-a": (True, "LAGGING"), "host-b": (False, "no data plane")}
            assert int(doc["configRevision"]) > int(next(h for h in doc["hosts"]
                                                         if h["hostName"] == "host-a")["appliedRevision"])
        finally:
            os.kill(a.pid, signal.SIGCONT)
        until("host-a to catch up", in_sync)

        # Kill host-b outright: its record stays until its 3 s lease runs out, then goes.
        b.kill()
        b.wait(10)
        killed = time.monotonic()
        channel.close()
        channel = grpc.insecure_channel(a_admin)
        stub = admin_pb2_grpc.MeshAdminStub(channel)
        assert "host-b" in hosts(stub)
        until("host-b's record to expire", lambda: set(hosts(stub)) == {"host-a"}, timeout=15)
        assert time.monotonic() - killed >= 1.0  # it went with the lease, not with the kill
        # A clean stop revokes the lease: host-a's record goes at once.
        a.send_signal(signal.SIGTERM)
        assert a.wait(30) == 0
    finally:
        channel.close()
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait(10)
    store = Store([etcd.url], prefix=etcd_prefix)  # no meshd is left to ask
    try:
        assert store.list("hosts/").items == []
    finally:
        store.close()
