"""The quick router-core gates run inside the normal test suite, so a regression fails it."""
from __future__ import annotations

import pytest

from bench.gates import gates

pytestmark = pytest.mark.fastroute


def test_quick_gates_pass():
    results, times = gates(quick=True)
    failed = [(name, round(measured, 2), target) for name, measured, target, ok in results if not ok]
    assert not failed, (failed, times)
