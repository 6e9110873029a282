"""Two builds of meshd, side by side: what a change costs per request, against HAProxy.

    python -m bench.ab_builds --base ../meshd-base [--rounds 3]

`--base` is another checkout of meshd with its own `.venv` (`scripts/setup.sh` made it), at
the commit to compare against; this checkout is the candidate. Each round runs
`bench.mesh_compare --quick` once in each tree, in alternating order, so both builds see
the same stretch of a noisy machine. A single meshd figure from two runs is not
comparable (the machine's state moves it by ±10%), so each run's own same-run ratio to
HAProxy is what is compared: per gate, the median over rounds of candidate ÷ base. That
is the "no change may cost more than 5% CPU per request" check of issue 12; it is a
report, not a CI gate (it needs a second build).
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
GATE_LINE = re.compile(r"^GATE (\S+) ([0-9.]+) <= ([0-9.]+) (PASS|FAIL)$", re.M)


def gates_of(tree: Path) -> dict[str, float]:
    """One `mesh_compare --quick` run in `tree` with its own interpreter: {gate: ratio}."""
    python = tree / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing: run scripts/setup.sh in {tree} first")
    out = subprocess.run([str(python), "-m", "bench.mesh_compare", "--quick"], cwd=tree, capture_output=True,
                         text=True, timeout=900)
    found = {m.group(1): float(m.group(2)) for m in GATE_LINE.finditer(out.stdout)}
    if not found:
        raise SystemExit(f"no GATE lines from {tree} (rc {out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, type=Path, help="the other checkout (with .venv) to compare against")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each build (default 3)")
    args = ap.parse_args()
    trees = {"base": args.base.resolve(), "candidate": HERE}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    for i in range(args.rounds):
        order = ("base", "candidate") if i % 2 == 0 else ("candidate", "base")
        for name in order:
            runs[name].append(gates_of(trees[name]))
            print(f"# round {i + 1} {name}: " + ", ".join(f"{g} {v:.2f}" for g, v in sorted(runs[name][-1].items())),
                  flush=True)
    for gate in sorted(set(runs["base"][0]) & set(runs["candidate"][0])):
        base = [r[gate] for r in runs["base"]]
        cand = [r[gate] for r in runs["candidate"]]
        change = [c / b for c, b in zip(cand, base)]
        print(f"AB {gate}: base {statistics.median(base):.2f}, candidate {statistics.median(cand):.2f}, "
              f"candidate/base per round {', '.join(f'{x:.3f}' for x in change)}, "
              f"median {statistics.median(change):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
