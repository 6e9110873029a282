"""SPIFFE ID forms and SAN patterns: round trips and the one-segment wildcard, by property."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshd.security import spiffe
from meshd.security.errors import InvalidIdentity

pytestmark = pytest.mark.identity

segment = st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}", fullmatch=True)
domain = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True)


@given(domain, segment, segment)
def test_workload_id_round_trips(td, mesh, node):
    sid = spiffe.workload_id(td, mesh, node)
    assert sid.uri == f"spiffe://{td}/mesh/{mesh}/virtualNode/{node}"
    assert spiffe.parse(sid.uri) == sid


@given(domain, segment)
def test_host_and_user_ids_round_trip(td, name):
    for make in (spiffe.host_id, spiffe.user_id):
        assert spiffe.parse(make(td, name).uri) == make(td, name)


@given(segment, segment, segment)
def test_star_matches_exactly_one_segment(mesh, node, extra):
    pattern = f"spiffe://meshd.local/mesh/{mesh}/virtualNode/*"
    assert spiffe.matches(f"spiffe://meshd.local/mesh/{mesh}/virtualNode/{node}", [pattern])
    assert not spiffe.matches(f"spiffe://meshd.local/mesh/{mesh}/virtualNode/{node}/{extra}", [pattern])
    assert not spiffe.matches(f"spiffe://meshd.local/mesh/{mesh}x/virtualNode/{node}", [pattern])


@pytest.mark.parametrize("bad", [
    "http://meshd.local/host/a", "spiffe://Meshd.local/host/a", "spiffe://meshd.local/host/a/b",
    "spiffe://meshd.local/mesh/m/virtualNode/..", "spiffe://meshd.local/mesh/m/virtualService/x",
    "spiffe://meshd.local/host/", "spiffe://meshd.local", "spiffe:///host/a",
])
def test_malformed_ids_are_refused(bad):
    with pytest.raises(InvalidIdentity):
        spiffe.parse(bad)


def test_regex_metacharacters_in_patterns_are_literal():
    assert not spiffe.matches("spiffe://meshdXlocal/host/a", ["spiffe://meshd.local/host/a"])
