"""The admin API at size (issue 17): a `meshd run` process on a given etcd, the seeded estate
applied through it with `meshctl apply`, and etcd's own transaction rate with the same client.

    with AdminMeshd(etcd.url, prefix, tmp) as meshd:
        seconds, out = apply_estate(meshd.address, estate, tmp / "estate", parallel=32)
        register_instances(meshd.address, estate)
        status_seconds(meshd.address)

The figures compare like with like: the apply rate beside `etcd_txn_rate`, which commits
transactions shaped as a create's (the path must not exist, the parent must) with the
registry's own client and the same number in flight, so the ratio says how much of etcd's
rate meshd and meshctl leave unused.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import registry
from bench.estate import Estate
from meshd.embedded_etcd import free_port
from meshd.v1 import admin_pb2, admin_pb2_grpc


def cpu_seconds(pid: int) -> float:
    """User plus system CPU a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class AdminMeshd:
    """`meshd run --insecure-local` on `etcd_url` under `prefix`, its admin API on loopback."""

    def __init__(self, etcd_url: str, prefix: str, tmp: Path, name: str = "admin-host"):
        self.address = f"127.0.0.1:{free_port()}"
        tmp.mkdir(parents=True, exist_ok=True)
        self.log = tmp / f"{name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "meshd.cli.meshd_main", "run", "--insecure-local", "--admin", self.address,
                 "--etcd", etcd_url, "--etcd-prefix", prefix, "--state-dir", str(tmp / name), "--host-name", name,
                 "--cluster-key", str(tmp / "cluster.key"), "--metrics", "127.0.0.1:0"],
                stdout=log, stderr=log)
        self.channel = grpc.insecure_channel(self.address)
        self.stub = admin_pb2_grpc.MeshAdminStub(self.channel)
        try:
            health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=60,
                                                           wait_for_ready=True)
        except grpc.RpcError:
            self.stop()
            raise RuntimeError(f"meshd did not start:\n{self.log.read_text()[-2000:]}") from None

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __enter__(self) -> "AdminMeshd":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def meshctl(address: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", address, *args],
                          capture_output=True, text=True, timeout=timeout)


def apply_estate(address: str, estate: Estate, directory: Path, *, parallel: int = 32,
                 timeout: float = 600) -> tuple[float, subprocess.CompletedProcess]:
    """(wall seconds, the process) of `meshctl apply -f` of the whole estate."""
    estate.write(directory)
    start = time.monotonic()
    out = meshctl(address, "apply", "-f", str(directory), "--parallel", str(parallel), timeout=timeout)
    return time.monotonic() - start, out


def register_instances(address: str, estate: Estate, parallel: int = 16) -> float:
    """Register every instance of the estate (under the meshd's host lease); wall seconds."""
    with grpc.insecure_channel(address) as channel:
        stub = admin_pb2_grpc.MeshAdminStub(channel)

        def one(i):
            stub.RegisterInstance(admin_pb2.RegisterInstanceRequest(
                mesh_name=i.mesh, virtual_node_name=i.node, instance_id=i.instance_id, address=i.address,
                port=i.port), timeout=30)
        start = time.monotonic()
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, estate.instances))
        return time.monotonic() - start


def status_seconds(address: str) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of `meshctl status` (process start to exit), and the process."""
    start = time.monotonic()
    out = meshctl(address, "status", timeout=120)
    return time.monotonic() - start, out


def etcd_txn_rate(etcd_url: str, prefix: str, count: int, parallel: int = 32) -> float:
    """Create-shaped transactions per second committed straight to etcd by registry.Store
    (the python etcd3 client meshd uses), `parallel` in flight: each puts a new key on the
    conditions that it does not exist and its parent does."""
    store = registry.Store([etcd_url], prefix=prefix, timeout=30)
    try:
        store.commit(registry.Write("parent", b"p", expect_revision=0))
        value = b"x" * 300  # about a stored route's size

        def one(n: int) -> None:
            store.commit(registry.Write(f"txn/{n:08d}", value, expect_revision=0,
                                        require=(("parent", "parent"),)))
        start = time.monotonic()
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, range(count)))
        return count / (time.monotonic() - start)
    finally:
        store.close()
