"""The compiled hot path allocates nothing but the Decision it returns (tracemalloc)."""
from __future__ import annotations

import gc
import sys
import tracemalloc

import pytest

from _fastroute import _core, reference
from bench.tables import grpc_request, make_router, request

pytestmark = pytest.mark.fastroute


def _transient_bytes(fn, args):
    """Bytes allocated by fn(*args) beyond what it still holds when it returns.

    decide() allocates its Decision first, so any other allocation, even one freed
    before returning, lifts the peak above the memory still held afterwards. Peak
    and current are read together, before the reading itself allocates.
    """
    tracemalloc.reset_peak()
    result = fn(*args)
    current, peak = tracemalloc.get_traced_memory()
    del result
    return peak - current


def _measure(fn, args, rounds=200):
    fn(*args)  # warm caches (interned strings, type slots) outside the window
    tracemalloc.start()
    try:
        return [_transient_bytes(fn, args) for _ in range(rounds)]
    finally:
        tracemalloc.stop()


def _blocks_held(fn, n=2_000):
    """Memory blocks still allocated after n calls whose results are all kept,
    less the probe's own (its loop counters), measured with a function that returns None."""
    return _raw_blocks_held(fn, n) - _raw_blocks_held(_none, n)


def _none():
    return None


def _raw_blocks_held(fn, n):
    keep = [None] * n
    fn()
    gc.collect()
    gc.disable()  # a collection mid-loop would free unrelated garbage
    try:
        before = sys.getallocatedblocks()
        for i in range(n):
            keep[i] = fn()
        return sys.getallocatedblocks() - before
    finally:
        gc.enable()


@pytest.mark.parametrize("n_routes", [10, 1000])
@pytest.mark.parametrize("req", [request, grpc_request])
def test_decide_allocates_only_the_decision(n_routes, req):
    r = make_router(_core.Router, n_routes)
    args = req(n_routes)
    d = r.decide(*args)
    assert d.reason == "routed" and d.route is not None
    decide, (p, a, port, m, s, path, h, now) = r.decide, args

    def call():  # positional arguments, as the data plane calls it (f(*args) packs them)
        return decide(p, a, port, m, s, path, h, now)

    assert _measure(call, ()) == [0] * 200  # nothing transient
    assert _blocks_held(call) == 2_000  # one block, the Decision, per call


def test_probe_sees_a_transient_allocation():
    """The probe can fail: a function that allocates and frees is caught."""
    def leaky(x):
        y = [x] * 100
        del y
        return x

    assert all(e > 0 for e in _measure(leaky, (1,), rounds=20))
    assert _blocks_held(lambda: [1]) == 4_000  # a list is two blocks: object and items


def test_reference_is_not_allocation_free():
    """Sanity: the same probe flags the plain-Python twin, which allocates freely."""
    r = make_router(reference.Router, 10)
    assert all(e > 0 for e in _measure(r.decide, request(10), rounds=20))
