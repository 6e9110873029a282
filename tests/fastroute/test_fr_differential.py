"""Hypothesis: the Cython core and the reference make identical decisions, seeded alike."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fastroute import _core, reference
from _fastroute import constants as C

from .differential import play, routing_scenarios, scenarios
from .helpers import summary

pytestmark = pytest.mark.fastroute

# Derandomized: CI runs the same examples every time, so a red run is reproducible.
# `mutants.py` (run by hand) shows both tests failing on planted reference bugs.
DIFFERENTIAL = settings(deadline=None, derandomize=True, database=None,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                               HealthCheck.large_base_example])


@settings(DIFFERENTIAL, max_examples=40)
@given(routing_scenarios())
def test_identical_routing(sc):
    """Runs of requests that meet, or just miss, a route's conditions route alike."""
    play(sc)


@settings(DIFFERENTIAL, max_examples=60)
@given(scenarios())
def test_identical_decisions(sc):
    """Requests, failures, storms and churn: every answer and endpoint state agree."""
    play(sc)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3), st.one_of(st.text(max_size=40), st.binary(max_size=40), st.none(), st.integers()),
       st.one_of(st.integers(-2, 70_000), st.text(max_size=3)), st.one_of(st.text(max_size=8), st.binary(max_size=8)),
       st.text(max_size=6), st.one_of(st.text(max_size=300), st.binary(max_size=300)),
       st.one_of(st.none(), st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=50), st.binary(max_size=50),
                                                                          st.integers()), max_size=6)))
def test_fuzz_random_requests_never_crash_and_agree(protocol, authority, port, method, scheme, path, headers):
    """Random values of every shape: each gets a decision, the same from both."""
    from bench.tables import make_router

    got = []
    for cls in (_core.Router, reference.Router):
        r = make_router(cls, 30, seed=3)
        got.append(summary(r.decide(protocol, authority, port, method, scheme, path, headers, 10**12)))
    assert got[0] == got[1]
    assert got[0][0] in (C.ROUTED, C.NO_SERVICE, C.NO_ROUTE, C.NO_ENDPOINT, C.BAD_REQUEST)
