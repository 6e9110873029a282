"""The quick router-core gates run inside the normal test suite, so a regression fails it.

They run in an interpreter of their own, as `python -m bench.gates` does: the allocation
probe (`router_zero_alloc_bytes`) counts every allocation of the process in its window, and
the suite's process carries the threads and state of a thousand tests before this one (a
fresh-clone run once read 184 bytes there, after the sidecar tests; the same build reads 0
alone, and in every other run). The bounds are the same; only the process is clean."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fastroute

REPO = Path(__file__).resolve().parents[1]


def test_quick_gates_pass(gate_figure):
    code = "import json; from bench.gates import gates; print(json.dumps(gates(quick=True)))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    results, times = json.loads(p.stdout.strip().splitlines()[-1])
    for name, measured, target, _ in results:
        gate_figure(name, measured, target, ">=" if name == "router_cython_vs_reference" else "<=")
    failed = [(name, round(measured, 2), target) for name, measured, target, ok in results if not ok]
    assert not failed, (failed, times)
