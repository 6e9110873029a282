"""`meshd run` as a real process on its embedded default: it starts and supervises its own
etcd, logs JSON lines, on SIGTERM/SIGINT exits cleanly, stopping that etcd, and when killed
outright takes that etcd with it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from meshd.embedded_etcd import EmbeddedEtcd, free_port
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import admin_pb2_grpc

pytestmark = pytest.mark.etcd


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_embedded_default_starts_etcd_and_stops_it_on_signal(tmp_path, sig):
    admin_port, etcd_port, peer_port = free_port(), free_port(), free_port()
    log = tmp_path / "meshd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshd.cli.meshd_main", "run", "--insecure-local", "--admin", f"127.0.0.1:{admin_port}",
             "--state-dir", str(tmp_path / "state"), "--etcd-port", str(etcd_port),
             "--etcd-peer-port", str(peer_port), "--host-name", "h1"],
            stdout=out, stderr=out)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{admin_port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = admin_pb2_grpc.MeshAdminStub(channel)
        stub.CreateMesh(pb.CreateMeshRequest(mesh_name="embedded"), timeout=10)
        etcd_children = [c for c in _children(proc.pid) if "etcd" in _cmdline(c)]
        assert len(etcd_children) == 1, "meshd must run exactly one etcd child"
        assert f"127.0.0.1:{etcd_port}" in _cmdline(etcd_children[0])
        assert (tmp_path / "state" / "etcd" / "member-data").is_dir()
        channel.close()
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{etcd_children[0]}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{etcd_children[0]}"), "embedded etcd outlived meshd"
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    msgs = [entry["msg"] for entry in lines]
    assert "meshd started" in msgs and "meshd stopped" in msgs
    started = next(e for e in lines if e["msg"] == "meshd started")
    assert started["admin"] == f"127.0.0.1:{admin_port}" and started["host"] == "h1"
    assert all({"ts", "level", "logger", "msg"} <= set(e) for e in lines)


def test_state_survives_a_restart_of_the_embedded_default(tmp_path):
    """Data written through one run is there in the next (the embedded etcd keeps its dir)."""
    ports = [free_port(), free_port(), free_port()]
    args = [sys.executable, "-m", "meshd.cli.meshd_main", "run", "--insecure-local", "--admin", f"127.0.0.1:{ports[0]}",
            "--state-dir", str(tmp_path / "state"), "--etcd-port", str(ports[1]), "--etcd-peer-port", str(ports[2])]
    for round_ in range(2):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{ports[0]}")
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = admin_pb2_grpc.MeshAdminStub(channel)
            if round_ == 0:
                stub.CreateMesh(pb.CreateMeshRequest(mesh_name="durable"), timeout=10)
            else:
                assert stub.DescribeMesh(pb.DescribeMeshRequest(mesh_name="durable"), timeout=10).mesh.metadata.version == 1
            channel.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0


def test_unreachable_external_etcd_is_reported_not_fatal(tmp_path):
    """With --etcd pointing nowhere, meshd still serves and answers UNAVAILABLE clearly."""
    admin_port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "meshd.cli.meshd_main", "run", "--insecure-local", "--admin", f"127.0.0.1:{admin_port}",
                             "--etcd", f"http://127.0.0.1:{free_port()}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{admin_port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = admin_pb2_grpc.MeshAdminStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateMesh(pb.CreateMeshRequest(mesh_name="x"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "etcd is unavailable" in err.value.details()
        assert proc.poll() is None
        channel.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _gone(pid: int, within: float) -> bool:
    """True once `pid` is no longer a live process (a zombie counts as gone), polling until `within` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@pytest.mark.hardening
def test_embedded_etcd_dies_with_a_sigkilled_meshd(tmp_path):
    """SIGKILL leaves meshd no chance to stop its etcd: the kernel has to (PR_SET_PDEATHSIG)."""
    admin_port, etcd_port, peer_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshd.cli.meshd_main", "run", "--insecure-local", "--admin", f"127.0.0.1:{admin_port}",
         "--state-dir", str(tmp_path / "state"), "--etcd-port", str(etcd_port),
         "--etcd-peer-port", str(peer_port), "--host-name", "h1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    etcd_pid = None
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{admin_port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        admin_pb2_grpc.MeshAdminStub(channel).CreateMesh(pb.CreateMeshRequest(mesh_name="doomed"), timeout=10)
        channel.close()
        etcd_children = [c for c in _children(proc.pid) if f"127.0.0.1:{etcd_port}" in _cmdline(c)]
        assert len(etcd_children) == 1, "meshd must run exactly one etcd child"
        etcd_pid = etcd_children[0]
        proc.kill()
        assert proc.wait(10) == -signal.SIGKILL
        assert _gone(etcd_pid, within=5), f"embedded etcd {etcd_pid} outlived its SIGKILLed meshd: {_cmdline(etcd_pid)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if etcd_pid is not None and not _gone(etcd_pid, within=0):
            os.kill(etcd_pid, signal.SIGKILL)  # the test's own leak, left by a failure above


@pytest.mark.hardening
def test_embedded_etcd_outlives_the_thread_that_started_it(tmp_path):
    """PR_SET_PDEATHSIG fires when the forking *thread* ends: an etcd started from a thread
    that then returns must keep running while its process does."""
    server = EmbeddedEtcd(tmp_path / "etcd", supervise=False)
    starter = threading.Thread(target=server.start)
    starter.start()
    starter.join(30)
    try:
        assert server.pid is not None
        assert not _gone(server.pid, within=2), "etcd died with the thread that started it"
        server.wait_ready(timeout=5)
    finally:
        server.stop()


@pytest.mark.hardening
def test_children_spawned_while_grpc_threads_are_busy_reach_exec():
    """meshd restarts etcd while its admin API serves calls. A child that runs Python between
    fork and exec in such a process can die before exec (gRPC's fork handlers: SIGABRT or
    SIGSEGV), and an etcd restart after an outage then fails. Spawn under gRPC load, bounded
    in count and time, and every child must run the program it was given."""
    from concurrent import futures

    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from meshd.embedded_etcd import _spawner

    server = grpc.server(futures.ThreadPoolExecutor(8))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()

    def hammer():
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not stop.is_set():
                stub.Check(health_pb2.HealthCheckRequest(), timeout=5)

    callers = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
    for t in callers:
        t.start()
    codes: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 12
        spawned = 0
        while spawned < 1500 and time.monotonic() < deadline:
            child = _spawner.popen(["/bin/sh", "-c", "exit 7"], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            code = child.wait(10)
            codes[code] = codes.get(code, 0) + 1
            spawned += 1
    finally:
        stop.set()
        for t in callers:
            t.join(10)
        server.stop(None)
    assert spawned >= 200, f"only {spawned} spawns in the time bound"
    assert codes == {7: spawned}, f"exit codes of {spawned} children: {codes}"
