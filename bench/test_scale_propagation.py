"""Propagation benchmark at issue 17's size: the figures of tests/scale/harness.py (route
flips followed by every meshd's traffic, instance churn timed by a canary, loop stalls) on a
private etcd, printed as a bench/RESULTS.md row with the gate table's margins.

    pytest bench/test_scale_propagation.py -m scale -s                  # full estate, 3 meshds
    MESHD_SCALE=0.05 pytest bench/test_scale_propagation.py -m scale -s  # the CI estate
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from meshd.embedded_etcd import EmbeddedEtcd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scale.harness import percentile, run, scale_from_env  # noqa: E402

pytestmark = [pytest.mark.scale, pytest.mark.etcd, pytest.mark.dataplane]

P99_BOUND = 1.0


def test_propagation_figures(tmp_path, gate_figure):
    etcd = EmbeddedEtcd(tmp_path / "etcd", supervise=False).start()
    try:
        figures = run(etcd.url, "/meshd/v1/", tmp_path, scale=scale_from_env(1.0), flips=200, churn_seconds=30.0)
    finally:
        etcd.stop()
    print(figures.summary())
    gate_figure("propagation: route flip p99 s, write acknowledged to every meshd's traffic",
                percentile(figures.flips, 99), P99_BOUND)
    gate_figure("propagation: canary instance p99 s under 100 registrations/s",
                percentile(figures.canaries, 99), P99_BOUND)
    gate_figure("propagation: table rebuilds during instance churn", figures.rebuilds_during_churn, 0)
    stalls = sum(n for phase in figures.stalls.values() for n in phase.values())
    gate_figure("propagation: data-plane loop stalls over 5 ms", stalls, 0)
