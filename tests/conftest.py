"""Shared fixtures: a real etcd server started by the suite itself, store/meshd builders,
and a check that the session leaves no process of its own behind."""
from __future__ import annotations

import itertools
import os
import re
import sys
import time

import pytest

from meshd.embedded_etcd import EmbeddedEtcd
from registry import Store

_counter = itertools.count()
_TICKS = os.sysconf("SC_CLK_TCK")
# Another session's temporary directory (pytest's default basetemp); its processes are not ours.
_SESSION_TMP = re.compile(r"/pytest-of-[^/]+/pytest-\d+/")


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time in clock ticks since boot) of a live process, from
    /proc/<pid>/stat (proc(5)); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name, in (), may hold spaces
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _left_behind(since_ticks: int, basetemp: str) -> dict[int, str]:
    """Live processes of this session, {pid: why it counts plus its command line}:
    descendants of this pytest, any process started since the session began whose command
    line names the session's temporary directory, and orphaned embedded etcds started since
    (the leak seen before: `--name meshd-embedded` with parent 1). Zombies are not counted:
    they hold nothing but a pid, and go with this process."""
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None and st[1] != "Z":
            procs[int(entry)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}

    def with_descendants(root: int, why: str) -> None:
        todo = [root]
        while todo:
            pid = todo.pop()
            found.setdefault(pid, why)
            todo.extend(children.get(pid, ()))
    for pid in children.get(os.getpid(), ()):
        with_descendants(pid, "child of this pytest")
    for pid, (ppid, _, started) in procs.items():
        if pid in found or pid == os.getpid() or started < since_ticks:
            continue
        cmd = _cmdline(pid)
        if basetemp in cmd:
            with_descendants(pid, "names this session's temporary directory, or is its child")
        elif "meshd-embedded" in cmd and ppid == 1 and not _SESSION_TMP.search(cmd):
            # Only orphans, and only outside another session's temporary directory: an
            # embedded etcd with a live parent belongs to that meshd (and dies with it), and
            # engineers or CI jobs may run their own meshds beside this session.
            found[pid] = "orphaned embedded etcd"
    return {pid: f"{why}: {_cmdline(pid)}" for pid, why in found.items()}


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(tmp_path_factory):
    """Fails the session when any of its processes is still running at its end.

    Autouse and session-scoped, so pytest sets it up before any other session fixture (the
    session etcd) and so tears it down after them: those are stopped by their own
    finalizers before this looks. Processes are given a few seconds to go, since some end
    by a signal after their parent (an embedded etcd after a SIGKILLed meshd).
    """
    with open("/proc/uptime") as f:
        since = int(float(f.read().split()[0]) * _TICKS) - 1
    basetemp = str(tmp_path_factory.getbasetemp()) + os.sep
    yield
    deadline = time.monotonic() + 5
    while (left := _left_behind(since, basetemp)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        pytest.fail("the test session left processes running:\n" +
                    "\n".join(f"  pid {pid}: {what}" for pid, what in sorted(left.items())), pytrace=False)


@pytest.fixture(scope="session")
def etcd(tmp_path_factory):
    """One etcd member for the session, on free loopback ports and a temporary data dir.

    A missing etcd binary is an error here, never a skip: the test setup installs it.
    """
    server = EmbeddedEtcd(tmp_path_factory.mktemp("etcd"), supervise=False,
                          extra_args=("--auto-compaction-retention", "0"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_etcd(tmp_path):
    """A private etcd the test may stop, start or raise alarms on."""
    server = EmbeddedEtcd(tmp_path / "etcd", supervise=False).start()
    yield server
    server.stop()


@pytest.fixture
def etcd_prefix():
    """A fresh key prefix per test, so tests sharing the session etcd never see each other."""
    return f"/meshd-test/{os.getpid()}-{next(_counter)}/v1/"


@pytest.fixture
def store(etcd, etcd_prefix):
    s = Store([etcd.url], prefix=etcd_prefix, timeout=2.0)
    yield s
    s.close()


class AdminHarness:
    """A real admin gRPC server (in this process) on a free port, and a stub for it."""

    def __init__(self, store, host_name="test-host", lease_ttl=5):
        import grpc

        from meshd.api.resources import Resources
        from meshd.api.server import AdminServer
        from meshd.app import instance_on_lease
        from meshd.lease import HostLease
        from meshd.v1 import admin_pb2_grpc

        self.store = store
        self.lease = HostLease(store, ttl=lease_ttl, rewrite=instance_on_lease)
        self.resources = Resources(store, host=host_name, host_lease=self.lease)
        self.server = AdminServer(self.resources, "127.0.0.1:0")
        self.server.start()
        self.address = self.server.address
        self.channel = grpc.insecure_channel(self.address)
        self.stub = admin_pb2_grpc.MeshAdminStub(self.channel)

    def close(self):
        self.channel.close()
        self.server.stop(grace=1)
        self.lease.stop(revoke=True)


@pytest.fixture
def admin(store):
    h = AdminHarness(store)
    yield h
    h.close()


@pytest.fixture
def mesh_factory(etcd, etcd_prefix, tmp_path):
    """Two in-process meshds (mesh_harness.Mesh) around the given origins, configured by
    mesh_harness.shop_config; closed after the test."""
    from mesh_harness import Mesh, shop_config  # noqa: PLC0415
    from meshd.api import kinds as K  # noqa: PLC0415
    from meshd.v1 import admin_pb2 as pb  # noqa: PLC0415

    made = []

    def make(origins, nodes=None, **config):
        m = Mesh(etcd, etcd_prefix, tmp_path, origins, nodes)
        made.append(m)
        shop_config(m.a.resources, K, pb, **config)
        return m
    yield make
    for m in made:
        m.close()
