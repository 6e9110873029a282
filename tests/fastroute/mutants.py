"""Planted bugs in the reference router, to show the differential test catches them.

Run by hand, never in CI (pytest collects only test_*.py):

    python -m tests.fastroute.mutants [--examples 120] [--seeds 10] [NAME ...]

Each mutant patches `_fastroute.reference` while it is measured and restores it after.
For each mutant and each differential test this runs the CI examples (the test's own
derandomized settings, shrinking off) and `--seeds` random runs, counting examples to
the first failure. The unmutated control must pass everywhere, or the numbers mean
nothing. Exit status 1 when the control fails or a mutant passes both CI tests.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys

from hypothesis import Phase, Verbosity, given, seed, settings

from _fastroute import constants as C
from _fastroute import reference as ref

from .differential import routing_scenarios, scenarios
from .test_fr_differential import test_identical_decisions, test_identical_routing


@contextlib.contextmanager
def _patched(owner, name, value):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def header_exact_prefix():
    """Header exact match compares as a prefix ("v1" matches "v10")."""
    orig = ref._header_ok

    def bad(h, headers):
        if h.kind == C.HM_EXACT:
            v = ref._as_str(headers.get(h.name)) if headers else None
            return (v is not None and v.startswith(h.value)) != h.invert
        return orig(h, headers)

    return _patched(ref, "_header_ok", bad)


def header_exact_casefold():
    """Header exact match ignores case ("V1" matches "v1")."""
    orig = ref._header_ok

    def bad(h, headers):
        if h.kind == C.HM_EXACT:
            v = ref._as_str(headers.get(h.name)) if headers else None
            return (v is not None and v.lower() == h.value.lower()) != h.invert
        return orig(h, headers)

    return _patched(ref, "_header_ok", bad)


def _outlier_threshold(delta):
    orig = ref.Router._outlier

    def bad(self, ns, ep, server_error, now_ns):
        low = ns.low
        if low.max_errors + delta < 1:  # would disable detection: a different bug
            return orig(self, ns, ep, server_error, now_ns)
        low.max_errors += delta
        try:
            orig(self, ns, ep, server_error, now_ns)
        finally:
            low.max_errors -= delta

    return _patched(ref.Router, "_outlier", bad)


def outlier_threshold_late():
    """Ejects after max_server_errors + 1 consecutive errors."""
    return _outlier_threshold(+1)


def outlier_threshold_early():
    """Ejects after max_server_errors - 1 consecutive errors."""
    return _outlier_threshold(-1)


def retry_budget_disabled():
    """The retry budget always allows one more retry."""
    return _patched(ref.Budget, "allows_retry", lambda self, now_ns: True)


def round_robin_skips():
    """Round robin advances its cursor one endpoint too far after each pick."""
    orig = ref.Router._pick

    def bad(self, ns, now_ns, avoid):
        e = orig(self, ns, now_ns, avoid)
        if ns.low.lb == C.LB_ROUND_ROBIN and len(ns.endpoints) > 1:
            ns.rr += 1
        return e

    return _patched(ref.Router, "_pick", bad)


def panic_at_half():
    """Panic mode starts at 50% available instead of below it."""
    def bad(ns, now_ns):
        available = sum(1 for e in ns.endpoints if e.healthy and e.ejected_until_ns <= now_ns)
        return available * 100 <= C.PANIC_THRESHOLD_PERCENT * len(ns.endpoints)

    return _patched(ref, "_panic", bad)


def range_end_inclusive():
    """Extra: a header range match includes its end."""
    orig = ref._header_ok

    def bad(h, headers):
        if h.kind == C.HM_RANGE:
            v = ref._as_str(headers.get(h.name)) if headers else None
            n = None if v is None else ref._parse_int(v)
            return (n is not None and h.lo <= n <= h.hi) != h.invert
        return orig(h, headers)

    return _patched(ref, "_header_ok", bad)


def query_value_ignored():
    """Extra: a query match with a value accepts any value of the parameter."""
    orig = ref._query_ok
    return _patched(ref, "_query_ok", lambda name, exact, path, q: orig(name, None, path, q))


def bucket_partial_fill():
    """A route's token bucket refills in proportion to the time passed, not by whole intervals."""
    orig = ref.TokenBucket.take

    def bad(self, now_ns):
        if self.last_fill_ns >= 0 and now_ns > self.last_fill_ns:
            got = (now_ns - self.last_fill_ns) * self.tokens_per_fill // self.fill_interval_ns
            if got:
                self.tokens = min(self.max_tokens, self.tokens + got)
                self.last_fill_ns = now_ns
        return orig(self, now_ns)

    return _patched(ref.TokenBucket, "take", bad)


def fault_ignores_headers():
    """A fault applies to every request of its route, whatever its header conditions."""
    orig = ref.Router._fault

    def bad(self, route, headers):
        kept = route.fault_headers
        route.fault_headers = ()
        try:
            return orig(self, route, headers)
        finally:
            route.fault_headers = kept

    return _patched(ref.Router, "_fault", bad)


def locality_no_overprovisioning():
    """Priority health leaves out the overprovisioning factor (spills at the first loss)."""
    orig = ref.Router._pick_priority

    def bad(self, ns, now_ns, avoid):
        kept = ns.low.overprovisioning
        ns.low.overprovisioning = 100
        try:
            return orig(self, ns, now_ns, avoid)
        finally:
            ns.low.overprovisioning = kept

    return _patched(ref.Router, "_pick_priority", bad)


def locality_retry_stays():
    """A retry's tried endpoints still count as available to their priorities."""
    orig = ref.Router._pick_priority

    def bad(self, ns, now_ns, avoid):
        # Undo the counts they are taken off (while no ejection makes the pick count afresh).
        if avoid is None or ns.ejected_until_ns > now_ns:
            return orig(self, ns, now_ns, avoid)
        back = [e.priority for e in ns.endpoints if e.healthy and ref._was_tried(avoid, e)]
        for p in back:
            ns.healthy_per_priority[p] += 1
        try:
            return orig(self, ns, now_ns, avoid)
        finally:
            for p in back:
                ns.healthy_per_priority[p] -= 1

    return _patched(ref.Router, "_pick_priority", bad)


def retry_avoids_last_only():
    """A retry avoids only the endpoint of the attempt that just failed, not every one tried."""
    orig = ref.Router._pick
    return _patched(ref.Router, "_pick",
                    lambda self, ns, now_ns, avoid: orig(self, ns, now_ns, None if avoid is None else avoid[-1:]))


def mirror_takes_active():
    """A mirrored copy takes an active count on its endpoint, as a real request does."""
    orig = ref.Router.decide

    def bad(self, *args):
        d = orig(self, *args)
        if d.mirror_endpoint is not None:
            d.mirror_endpoint.active += 1
        return d

    return _patched(ref.Router, "decide", bad)


MUTANTS = {
    "header-exact-prefix": header_exact_prefix,
    "header-exact-casefold": header_exact_casefold,
    "outlier-threshold-late": outlier_threshold_late,
    "outlier-threshold-early": outlier_threshold_early,
    "retry-budget-disabled": retry_budget_disabled,
    "round-robin-skips": round_robin_skips,
    "panic-at-half": panic_at_half,
    "range-end-inclusive": range_end_inclusive,
    "query-value-ignored": query_value_ignored,
    "bucket-partial-fill": bucket_partial_fill,
    "fault-ignores-headers": fault_ignores_headers,
    "locality-no-overprovisioning": locality_no_overprovisioning,
    "locality-retry-stays": locality_retry_stays,
    "retry-avoids-last-only": retry_avoids_last_only,
    "mirror-takes-active": mirror_takes_active,
}


# The differential properties: (strategy, CI test) pairs.
PROPERTIES = {
    "routing": (routing_scenarios, test_identical_routing),
    "decisions": (scenarios, test_identical_decisions),
}


def examples_to_failure(strategy, test, **overrides):
    """Examples a property runs before its first failure, or None if it never fails.

    With no overrides these are the CI test's own settings (derandomized), only
    without shrinking, so it runs exactly the examples CI runs, in order.
    """
    count = 0

    def counted(sc):
        nonlocal count
        count += 1
        test.hypothesis.inner_test(sc)

    ci = test._hypothesis_internal_use_settings
    prop = given(strategy())(settings(ci, phases=[Phase.generate], verbosity=Verbosity.quiet, **overrides)(counted))
    try:
        prop()
    except AssertionError:
        return count
    return None


def seeded(strategy, test, run_seed, max_examples):
    """`examples_to_failure` of one random run (not derandomized) of `max_examples`."""
    return seed(run_seed)(lambda: examples_to_failure(
        strategy, test, derandomize=False, database=None, max_examples=max_examples))()


def measure(seeds, max_examples):
    """Per property: (examples to failure in the CI run, [same for each seeded run])."""
    return {name: (examples_to_failure(strategy, test),
                   [seeded(strategy, test, s, max_examples) for s in seeds])
            for name, (strategy, test) in PROPERTIES.items()}


def _line(label, got, max_examples):
    cells = []
    for name, (ci, runs) in got.items():
        hits = sorted(n for n in runs if n is not None)
        spread = f", median {statistics.median(hits)} max {hits[-1]}" if hits else ""
        ci_text = "pass" if ci is None else f"FAIL@{ci}"
        cells.append(f"{name}: CI {ci_text:9} seeded {len(hits)}/{len(runs)}{spread:20}")
    return f"{label:24} " + " | ".join(cells)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=[], metavar="NAME", help=", ".join(MUTANTS))
    ap.add_argument("--examples", type=int, default=100, help="examples per seeded run")
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args(argv)
    names = args.names or list(MUTANTS)
    seeds = range(1, args.seeds + 1)
    print("FAIL@k: the CI test fails at its k-th example; seeded h/n: n random runs of "
          f"{args.examples} examples, h failed (median/max examples to the first failure)")
    control = measure(seeds, args.examples)
    print(_line("control (no mutant)", control, args.examples))
    bad = any(ci is not None or any(runs) for ci, runs in control.values())
    for name in names:
        with MUTANTS[name]():
            got = measure(seeds, args.examples)
        print(_line(name, got, args.examples))
        bad |= all(ci is None for ci, _ in got.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
