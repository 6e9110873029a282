"""The analysis of one rollout step: from the summed counts of its window (and optionally a
Prometheus query), whether the step fails, passes or must wait.

The rule, as Flagger and Argo Rollouts apply theirs: a step *fails* as soon as a check is
broken while the window holds at least `min_requests_to_fail` canary requests (fewer say
too little to roll back on); it *passes* once it has lasted `min_duration`, seen
`min_requests` canary requests and every check holds; otherwise it waits.
"""
from __future__ import annotations

import json
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable

from meshd.compile import duration_ms
from meshd.rollout.stats import Figures

# RolloutSpec's documented defaults (proto/meshd/v1/spec.proto).
DEFAULT_INTERVAL_MS = 5_000
DEFAULT_MIN_DURATION_MS = 60_000
DEFAULT_MIN_REQUESTS = 100
DEFAULT_MIN_REQUESTS_TO_FAIL = 20
PROMETHEUS_TIMEOUT = 5.0

PASS, FAIL, WAIT = "PASS", "FAIL", "WAIT"


class PrometheusError(Exception):
    """The query could not be answered (unreachable, an error, no sample): no verdict."""


@dataclass(frozen=True)
class Verdict:
    """What the analysis decided, why, and the figures it decided on."""

    outcome: str  # PASS, FAIL or WAIT
    reason: str
    canary: Figures
    stable: Figures


def interval_ms(spec) -> int:
    return duration_ms(spec.analysis.interval if spec.analysis.HasField("interval") else None, DEFAULT_INTERVAL_MS)


def query_prometheus(check) -> float:
    """The first sample of `check.query`, an instant query against `check.address`
    (Prometheus HTTP API, GET /api/v1/query)."""
    url = check.address.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": check.query})
    try:
        with urllib.request.urlopen(url, timeout=PROMETHEUS_TIMEOUT) as resp:
            doc = json.load(resp)
    except (OSError, ValueError) as err:
        raise PrometheusError(f"query failed: {err}") from err
    data = doc.get("data") or {}
    result = data.get("result")
    if doc.get("status") != "success" or not result:
        raise PrometheusError(f"no sample: {doc.get('error') or 'empty result'}")
    try:
        sample = result[1] if data.get("resultType") in ("scalar", "string") else result[0]["value"][1]
        return float(sample)
    except (LookupError, TypeError, ValueError) as err:
        raise PrometheusError(f"unreadable sample: {err}") from err


def _broken(spec, canary: Figures, stable: Figures, min_to_fail: int,
            prometheus: Callable[[object], float]) -> tuple[list[str], str]:
    """(the checks the figures break, why a check could not be made)."""
    a = spec.analysis
    broken = []
    if a.HasField("min_success_rate") and canary.success_rate < a.min_success_rate:
        broken.append(f"success rate {canary.success_rate:.2f}% < {a.min_success_rate:g}%")
    p99 = canary.p99_ms
    if a.HasField("max_latency_p99"):
        limit = duration_ms(a.max_latency_p99, 0)
        if p99 > limit:
            broken.append(f"p99 {p99:.1f} ms > {limit} ms")
    # The ratio compares like with like: only when the stable target has as many requests
    # in the same window as a failure verdict needs of the canary.
    if a.HasField("max_latency_p99_ratio") and stable.requests >= min_to_fail:
        if p99 > a.max_latency_p99_ratio * stable.p99_ms:
            broken.append(f"p99 {p99:.1f} ms > {a.max_latency_p99_ratio:g} x stable p99 {stable.p99_ms:.1f} ms")
    unknown = ""
    if a.HasField("prometheus") and a.prometheus.query:
        check = a.prometheus
        try:
            value = prometheus(check)
        except PrometheusError as err:
            unknown = f"prometheus: {err}"
        else:
            if check.HasField("min") and value < check.min:
                broken.append(f"prometheus {value:g} < {check.min:g}")
            if check.HasField("max") and value > check.max:
                broken.append(f"prometheus {value:g} > {check.max:g}")
    return broken, unknown


def judge(spec, step: int, figures: dict[str, Figures], elapsed_ms: int,
          prometheus: Callable[[object], float] = query_prometheus) -> Verdict:
    """The verdict on step `step` of a RolloutSpec after `elapsed_ms`, from the window's
    figures per target node."""
    canary = figures.get(spec.canary.virtual_node) or Figures()
    stable = figures.get(spec.stable.virtual_node) or Figures()
    a, s = spec.analysis, spec.steps[step]
    min_to_fail = a.min_requests_to_fail if a.HasField("min_requests_to_fail") else DEFAULT_MIN_REQUESTS_TO_FAIL
    broken, unknown = _broken(spec, canary, stable, min_to_fail, prometheus)
    if broken and canary.requests >= min_to_fail:
        return Verdict(FAIL, "; ".join(broken), canary, stable)
    min_ms = duration_ms(s.min_duration if s.HasField("min_duration") else None, DEFAULT_MIN_DURATION_MS)
    min_requests = s.min_requests if s.HasField("min_requests") else DEFAULT_MIN_REQUESTS
    waiting = []
    if elapsed_ms < min_ms:
        waiting.append(f"{elapsed_ms / 1000:.1f}/{min_ms / 1000:g} s")
    if canary.requests < min_requests:
        waiting.append(f"{canary.requests}/{min_requests} canary requests")
    if broken:
        waiting.append(f"{'; '.join(broken)} (under {min_to_fail} requests)")
    if unknown:
        waiting.append(unknown)
    if waiting:
        return Verdict(WAIT, ", ".join(waiting), canary, stable)
    return Verdict(PASS, "all checks hold", canary, stable)
