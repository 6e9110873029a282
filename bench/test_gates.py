"""The quick router-core gates run inside the normal test suite, so a regression fails it."""
from __future__ import annotations

import pytest

from bench.gates import gates

pytestmark = pytest.mark.fastroute


def test_quick_gates_pass(gate_figure):
    results, times = gates(quick=True)
    for name, measured, target, _ in results:
        gate_figure(name, measured, target, ">=" if name == "router_cython_vs_reference" else "<=")
    failed = [(name, round(measured, 2), target) for name, measured, target, ok in results if not ok]
    assert not failed, (failed, times)
