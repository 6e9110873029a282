"""Bulk apply and admin reads at size (issue 17), through one `meshd run` on a single-member etcd.

    pytest bench/test_scale_admin.py -s                      # CI estate (scale 0.05), gated
    MESHD_SCALE=1.0 pytest bench/test_scale_admin.py -s -m scale   # the full estate, reported

The gate is a same-run ratio: `meshctl apply` with 32 requests in flight against the same
apply one by one (--parallel 1), each into a fresh meshd and prefix of the same etcd. Beside
the apply rate the run prints etcd's own rate for create-shaped transactions from the same
client with as many in flight, and the CPU seconds meshd, etcd and meshctl spent, which
say what limits the apply.
"""
from __future__ import annotations

import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.admin_scale import AdminMeshd, apply_estate, cpu_seconds, etcd_txn_rate
from bench.estate import generate
from meshd.embedded_etcd import EmbeddedEtcd, free_port
from meshd.v1 import admin_pb2

CI_SCALE = 0.05
PIPELINE_GAIN = 1.5  # pipelined apply at least this many times the one-by-one rate
READS = 2000


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _apply(etcd, tmp: Path, estate, parallel: int, tag: str) -> dict:
    with AdminMeshd(etcd.url, f"/bench-admin/{tag}/v1/", tmp / tag) as meshd:
        cpu = (meshd.cpu(), cpu_seconds(etcd.pid), _children_cpu())
        seconds, out = apply_estate(meshd.address, estate, tmp / f"{tag}-estate", parallel=parallel, timeout=1800)
        assert out.returncode == 0, out.stderr[-3000:]
        figures = {"rate": len(estate.documents) / seconds, "seconds": seconds, "meshd_cpu": meshd.cpu() - cpu[0],
                   "etcd_cpu": cpu_seconds(etcd.pid) - cpu[1], "meshctl_cpu": _children_cpu() - cpu[2]}
        if parallel > 1:
            figures["read_ms"] = _read_cost(meshd, estate)
        return figures


def _read_cost(meshd: AdminMeshd, estate) -> float:
    """meshd CPU milliseconds per DescribeRoute (the loopback admin, 16 in flight)."""
    routes = [d for kind, d in estate.documents if kind == "Route"][:READS]
    before = meshd.cpu()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda d: meshd.stub.DescribeRoute(admin_pb2.DescribeRouteRequest(
            mesh_name=d["meshName"], virtual_router_name=d["virtualRouterName"], route_name=d["routeName"]),
            timeout=30), routes))
    return (meshd.cpu() - before) * 1000 / len(routes)


def _report(label: str, n: int, f: dict) -> None:
    print(f"{label}: {n} documents in {f['seconds']:.1f} s = {f['rate']:.0f}/s; CPU s meshd {f['meshd_cpu']:.1f}, "
          f"etcd {f['etcd_cpu']:.1f}, meshctl {f['meshctl_cpu']:.1f}"
          + (f"; DescribeRoute {f['read_ms']:.2f} ms meshd CPU" if "read_ms" in f else ""))


@pytest.fixture
def own_etcd_member(tmp_path):
    """A private single-member etcd: the rates are this run's alone."""
    etcd = EmbeddedEtcd(tmp_path / "etcd", client_port=free_port(), peer_port=free_port(), supervise=False).start()
    yield etcd
    etcd.stop()


def _run(etcd, tmp: Path, scale: float, gate_figure) -> tuple[dict, dict, float]:
    estate = generate(scale=scale)
    one = _apply(etcd, tmp, estate, 1, "sequential")
    piped = _apply(etcd, tmp, estate, 32, "pipelined")
    start = time.monotonic()
    txn = etcd_txn_rate(etcd.url, "/bench-admin/txn/", count=min(5000, len(estate.documents)), parallel=32)
    n = len(estate.documents)
    _report("apply --parallel 1 ", n, one)
    _report("apply --parallel 32", n, piped)
    print(f"etcd create-shaped txns/s (registry.Store, 32 in flight): {txn:.0f} "
          f"({time.monotonic() - start:.1f} s); apply uses {piped['rate'] / txn:.0%} of it")
    gate_figure("pipelined / sequential apply", piped["rate"] / one["rate"], PIPELINE_GAIN, ">=")
    return one, piped, txn


@pytest.mark.scale_ci
@pytest.mark.etcd
def test_pipelined_apply_beats_one_by_one(own_etcd_member, tmp_path, gate_figure):
    one, piped, _ = _run(own_etcd_member, tmp_path, float(os.environ.get("MESHD_SCALE", CI_SCALE)), gate_figure)
    assert piped["rate"] >= PIPELINE_GAIN * one["rate"]


@pytest.mark.scale
@pytest.mark.etcd
def test_full_estate_apply_rate_beside_etcd(own_etcd_member, tmp_path, gate_figure):
    _, piped, _ = _run(own_etcd_member, tmp_path, float(os.environ.get("MESHD_SCALE", 1.0)), gate_figure)
    gate_figure("full-estate apply, resources/s", piped["rate"], 500, ">=")
    assert piped["rate"] >= 500
