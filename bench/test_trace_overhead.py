"""Gate: tracing every request costs at most 15% more meshd CPU per request than tracing off,
measured in the same run (the quick variant of `python -m bench.trace_overhead`: both paths
loaded together for nine 3 s runs, CPU per request over all of them). Target from issue 6,
never loosened; the figures are in bench/RESULTS.md, "Tracing overhead"."""
import pytest

from bench.trace_overhead import GATE, measure

pytestmark = [pytest.mark.dataplane, pytest.mark.observability, pytest.mark.slow]


def test_tracing_at_100_percent_costs_at_most_15_percent_cpu(benchmark, gate_figure):
    # A shared 2-core machine can tip one measurement (single 3 s runs spread from 0.98 to
    # 1.23 around about 1.10): a failing measurement is taken once more, whole, and must
    # pass then; a real regression fails both.
    r = benchmark.pedantic(measure, kwargs={"seconds": 3, "runs": 9}, rounds=1, iterations=1)
    if r["ratio"] > GATE:
        gate_figure("tracing_100pct_cpu_vs_off (first measurement)", r["ratio"], GATE)
        r = measure(seconds=3, runs=9)
    gate_figure("tracing_100pct_cpu_vs_off", r["ratio"], GATE)
    benchmark.extra_info.update({"ratio": round(r["ratio"], 3), "cpu_us": r["cpu_us"]})
    # Two spans per traced request reached the collector, but for each meshd's last partial
    # batch (up to 512 spans, exported on the exporter thread's 5 s schedule).
    assert r["spans"] >= 2 * r["requests"]["on"] - 2 * 512, r
    assert r["ratio"] <= GATE, f"tracing costs {r['ratio']:.2f}x CPU per request (target {GATE}): {r}"
