"""Router-core performance gates: ratios measured in one run, one GATE line per gate.

Usage: ``python -m bench.gates [--quick]``. Prints ``GATE <name> <measured> <target>
PASS|FAIL`` per gate and exits 1 if any gate fails. Never compares absolute times:
every figure is a ratio of two loops timed side by side, interleaved, best of N
(timeit's rule: the minimum is the run least disturbed by the shared machine).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from contextlib import contextmanager

from _fastroute import _core, reference
from bench.tables import grpc_request, make_router, request


def empty(protocol, authority, port, method, scheme, path, headers, now_ns):
    """The floor: an empty Python function taking decide()'s eight arguments."""


def _loop(fn, args, number):
    """Time `number` calls of fn(*args) with positional arguments, as timeit would."""
    p, a, port, m, s, path, h, now = args
    t0 = time.perf_counter_ns()
    for _ in range(number):
        fn(p, a, port, m, s, path, h, now)
    return (time.perf_counter_ns() - t0) / number


def measure(quick: bool = False) -> dict[str, float]:
    """ns per call of each case, each the best of several interleaved repeats.

    A "decision" is the mean of an HTTP request matched by prefix, method and two
    headers and a gRPC service/method request: lookup, match, weighted pick and
    endpoint pick on a table mixing prefix, header and gRPC routes.
    """
    number, repeat = (3_000, 5) if quick else (20_000, 9)
    routers = {(impl, n): make_router(cls, n) for impl, cls in (("cy", _core.Router), ("ref", reference.Router))
               for n in (10, 1000)}
    cases = {"empty": (empty, [request(10)])}
    for (impl, n), r in routers.items():
        cases[f"{impl}{n}"] = (r.decide, [request(n), grpc_request(n)])
    for fn, reqs in cases.values():
        for args in reqs:
            assert fn is empty or fn(*args).reason == "routed"
    best = {name: float("inf") for name in cases}
    gc.disable()
    try:
        for _ in range(repeat):
            for name, (fn, reqs) in cases.items():
                # The reference is ~10x slower: fewer calls keep each repeat short.
                k = number // 8 if name.startswith("ref") else number
                t = sum(_loop(fn, args, k) for args in reqs) / len(reqs)
                best[name] = min(best[name], t)
    finally:
        gc.enable()
    return best


class Window:
    """What this_thread_only() can promise about the window it kept."""
    held = False  # True: no other thread can have run inside it


@contextmanager
def this_thread_only(interval_s: float = 0.25):
    """Keep the GIL through a short measurement window. tracemalloc and
    sys.getallocatedblocks count the whole process: another thread's Python (a pool thread
    finishing, a log writer) would allocate or free inside the window, and the figure would
    be that thread's. With a long switch interval no other thread takes the GIL from this
    one within the window, which must not block (a blocking call still releases it).

    That holds only while the window is shorter than the interval: a thread waiting for the
    GIL asks for it once it has waited that long, and an OS that deschedules this process
    (a loaded CI machine) stretches the window past it. The yielded Window says whether the
    window stayed shorter; a caller that needs the promise measures again when it did not.
    """
    old = sys.getswitchinterval()
    sys.setswitchinterval(interval_s)
    # A thread already waiting for the GIL waits on the interval it read when it began, and
    # asks for the GIL when that short wait runs out (a release wakes only one waiter).
    # Sleeping past the old interval lets every such wait end; after it, every waiter
    # waits the long one.
    time.sleep(old * 1.5)
    window = Window()
    start = time.perf_counter()
    try:
        yield window
    finally:
        window.held = time.perf_counter() - start < interval_s
        sys.setswitchinterval(old)


def held_window(measure, attempts: int = 20):
    """measure() run inside this_thread_only() until a window is held (bounded)."""
    for _ in range(attempts):
        with this_thread_only() as window:
            result = measure()
        if window.held:
            return result
    raise RuntimeError(f"no measurement window of {attempts} stayed undisturbed")


def transient_allocation(fn, args) -> int:
    """Bytes fn(*args) allocated beyond what it still holds when it returns (tracemalloc on).

    decide() allocates its Decision first, so any other allocation, even one freed before
    returning, lifts the peak above the memory still held afterwards. Peak and current are
    read together, before the reading itself allocates.
    """
    tracemalloc.reset_peak()
    result = fn(*args)
    current, peak = tracemalloc.get_traced_memory()
    del result
    return peak - current


def transient_bytes(rounds: int = 100) -> int:
    """The most bytes one compiled decide() allocated besides its Decision (0 = none)."""
    r = make_router(_core.Router, 1000)
    worst = 0
    for args in (request(1000), grpc_request(1000)):
        p, a, port, m, s, path, h, now = args
        decide = r.decide
        decide(p, a, port, m, s, path, h, now)
        tracemalloc.start()
        try:
            def call():  # positional arguments, as the data plane calls it (f(*args) packs them)
                return decide(p, a, port, m, s, path, h, now)
            worst = max(worst, *held_window(lambda: [transient_allocation(call, ()) for _ in range(rounds)]))
        finally:
            tracemalloc.stop()
    return worst


def gates(quick: bool = False):
    """([(name, measured, target, passed)] for every router-core gate, ns per case)."""
    t = measure(quick)
    near_floor = t["cy1000"] / t["empty"]
    scaling = t["cy1000"] / t["cy10"]
    pays = t["ref1000"] / t["cy1000"]
    alloc = transient_bytes(30 if quick else 200)
    return [
        ("router_near_floor", near_floor, 8.0, near_floor <= 8.0),
        ("router_scaling_1000_vs_10", scaling, 1.5, scaling <= 1.5),
        ("router_cython_vs_reference", pays, 4.0, pays >= 4.0),
        ("router_zero_alloc_bytes", float(alloc), 0.0, alloc == 0),
    ], t


def main(argv=None) -> int:
    """Run every gate, print one GATE line each; exit status 1 if any fails."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repeats (CI)")
    opts = ap.parse_args(argv)
    results, times = gates(opts.quick)
    for name, ns in times.items():
        print(f"# {name} {ns:.0f} ns/call")
    for name, measured, target, ok in results:
        print(f"GATE {name} {measured:.2f} {target:.2f} {'PASS' if ok else 'FAIL'}")
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
