"""Short coverage-guided fuzzing runs of every harness in fuzz/ (issue 12): a crash, hang or leak fails."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fuzz

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "fuzz"
# About 18 s each (plus a few of start-up) keeps the four runs under two minutes on a two-core machine.
SECONDS = int(os.environ.get("MESHD_FUZZ_SECONDS", "18"))


@pytest.mark.parametrize("name", ["h2", "h1", "tls", "admin_json"])
def test_short_fuzz_run_finds_nothing(name, tmp_path):
    corpus, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    artifacts.mkdir()
    subprocess.run([sys.executable, str(FUZZ / "seeds.py"), name, str(corpus)], check=True,
                   capture_output=True, timeout=60)
    run = subprocess.run(
        [sys.executable, str(FUZZ / f"fuzz_{name}.py"), str(corpus),
         f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=2048", "-max_len=4096",
         f"-artifact_prefix={artifacts}/", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=SECONDS + 90, cwd=tmp_path)
    found = sorted(p.name for p in artifacts.iterdir())
    # libFuzzer prints the failing input (base64) and the traceback: keep them in the report.
    assert run.returncode == 0 and not found, (
        f"fuzz_{name}.py: exit {run.returncode}, artifacts {found}\n{run.stderr[-8000:]}")
    assert "Done " in run.stderr, run.stderr[-2000:]
