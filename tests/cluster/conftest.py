"""Fixtures of the cluster drills: a fresh 3-host netns cluster per scenario, always torn
down (namespaces, links, processes) even when the scenario fails, and a drill report that
the terminal summary prints (retries, failures, timings per scenario)."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from .harness import MeshClient, NetnsCluster, free_subnet
from .ledger import Ledger
from .traffic import APPS_DIR, Traffic

# meshd's default. Shorter would make host-death drills quicker, but docs/cluster.md asks for
# more than three etcd request timeouts (3 s): a survivor whose etcd client sits on a cut
# member waits that long for one keepalive, and with 4 s its own lease (and instances) went.
LEASE_TTL = int(os.environ.get("MESHD_DRILL_LEASE_TTL", "10"))
REPORT: dict[str, dict] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _sweep_orphans(tmp_path) -> None:
    """Tear down clusters of earlier runs whose pytest process is gone (killed before its
    finalizers ran). A cluster's prefix is mc<pid of the pytest that made it>."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    for pid in sorted({m.group(1) for m in re.finditer(r"^mc(\d+)-(?:h\d+|net)\b", out, re.M)}):
        if int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            NetnsCluster(tmp_path / f"orphan-{pid}", prefix=f"mc{pid}", subnet="10.213.0.0/24", lease_ttl=1).down()


@pytest.fixture
def cluster(request, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the cluster drills need root (network namespaces); CI runs as root")
    _sweep_orphans(tmp_path)
    c = NetnsCluster(tmp_path / "netns", prefix=f"mc{os.getpid()}", subnet=free_subnet(),
                     lease_ttl=LEASE_TTL, apps=APPS_DIR)
    try:
        c.up(3)
        yield c
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            print(c.log_tails())  # shown in the failure report
        c.down()


@pytest.fixture
def report(request):
    """A dict for this scenario's figures, printed in the terminal summary."""
    entry = REPORT.setdefault(request.node.name, {})
    return entry


@pytest.fixture
def client(cluster):
    return MeshClient(cluster, sorted(cluster.hosts))


@pytest.fixture
def traffic(cluster):
    """The sample services and mesh (deploy/quickstart/cluster), routable from every host."""
    return Traffic(cluster).start()


@pytest.fixture
def ledger(client):
    return Ledger(client)


def pytest_terminal_summary(terminalreporter):
    if not REPORT:
        return
    terminalreporter.section("cluster drills")
    for name, figures in REPORT.items():
        terminalreporter.write_line(name)
        for key, value in figures.items():
            terminalreporter.write_line(f"    {key}: {value}")
