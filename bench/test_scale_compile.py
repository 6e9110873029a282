"""Compile at size (issue 17), CI size: same-run ratios gated, figures printed.

- a one-route change costs a fraction of a full compile of the same mesh (thread CPU);
- a sidecar scoped to one node of 5 backends holds at most 5% of the mesh's routes, and
  its RSS grows with the mesh far less than a whole-mesh view's (each view in an
  interpreter of its own, fed the snapshot as Resources.snapshot streams it).

Full size: `pytest -m scale tests/scale/test_compile_scale.py tests/scale/test_scoping.py`
and `python -m bench.scale_compile` (see bench/RESULTS.md).
"""
from __future__ import annotations

import pytest

from bench.estate import generate
from bench.scale_compile import held_in_process, incremental_vs_full, snapshot_response, write_snapshot

pytestmark = pytest.mark.scale_ci

CI_SCALE = 0.25  # m00: 125 routers, 2,500 routes, 125 nodes, 500 instances


@pytest.fixture(scope="module")
def estate():
    return generate(scale=CI_SCALE, meshes=1)


def test_incremental_compile_is_a_fraction_of_a_full_compile(estate, gate_figure):
    figures = incremental_vs_full(estate)
    ratio = figures["incremental_cpu_s"] / figures["full_cpu_s"]
    print(f"\ncompile at {estate.counts(estate.largest)['Route']} routes: {figures}")
    gate_figure("scale_incremental_vs_full_compile_cpu", ratio, 0.5)
    assert ratio <= 0.5, figures


def test_a_sidecar_holds_a_small_part_and_grows_little_with_the_mesh(estate, tmp_path, gate_figure):
    mesh = estate.largest
    big = write_snapshot(snapshot_response(estate, [mesh]), tmp_path / "big")
    small_estate = generate(scale=0.005, meshes=1)
    small = write_snapshot(snapshot_response(small_estate, [mesh]), tmp_path / "small")
    whole, sidecar = held_in_process(big), held_in_process(big, f"{mesh}/n0000")
    sidecar_small = held_in_process(small, f"{mesh}/n0000")
    print(f"\nwhole {whole}\nsidecar {sidecar}\nsidecar in a {small_estate.counts(mesh)['Route']}-route mesh "
          f"{sidecar_small}")
    share = sidecar["routes"] / whole["routes"]
    growth = (sidecar["rss_mb"] - sidecar_small["rss_mb"]) / max(whole["rss_mb"] - sidecar_small["rss_mb"], 0.1)
    gate_figure("scale_sidecar_route_share", share, 0.05)
    gate_figure("scale_sidecar_vs_whole_rss_growth", growth, 0.5)
    assert share <= 0.05 and growth <= 0.5, (whole, sidecar, sidecar_small)
