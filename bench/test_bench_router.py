"""pytest-benchmark suite of the router core: decide() per implementation and size.

Figures for reading, not gating: the gates (bench/gates.py) compare ratios only.
"""
from __future__ import annotations

import pytest

from _fastroute import _core, reference
from bench.gates import empty
from bench.tables import grpc_request, make_policy_router, make_router, policy_request, request

IMPLS = {"cython": _core.Router, "reference": reference.Router}


def test_empty_call(benchmark):
    args = request(10)
    benchmark(empty, *args)


@pytest.mark.parametrize("n_routes", [10, 1000])
@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("req", [request, grpc_request], ids=["http", "grpc"])
def test_decide(benchmark, impl, n_routes, req):
    r = make_router(IMPLS[impl], n_routes)
    d = benchmark(r.decide, *req(n_routes))
    assert d.reason == "routed"


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_decide_with_policies(benchmark, impl):
    """Issue 16's path: rate limit, header-gated fault draws, mirror and locality picks."""
    r = make_policy_router(IMPLS[impl])
    d = benchmark(r.decide, *policy_request())
    assert d.reason == "routed" and d.mirror == "b" and d.fault_delay_ns
