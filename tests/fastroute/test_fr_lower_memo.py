"""`lower(table, memo)`: a table lowered with the memo of the tables before it is the table
lowered from scratch, field for field, whatever the tables share; unchanged Route objects
are taken from the memo, and a changed lowering context (node order, defaults) retires it."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fastroute import _core, reference
from _fastroute._re2 import Regex
from _fastroute.spec import (HttpMatch, LHeader, LIndex, LNode, LowerMemo, LRetry, LRoute, Route, Table, Target,
                             Timeouts, VirtualNode, VirtualRouter, VirtualService, lower)

from .differential import tables
from .helpers import endpoints, http, summary

pytestmark = pytest.mark.fastroute

SETTINGS = settings(deadline=None, derandomize=True, database=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _plain(v):
    """Lowered values compare by content: a compiled Regex by its pattern, a policy by its fields."""
    if isinstance(v, Regex):
        return ("regex", v.pattern)
    if isinstance(v, (LRetry, LHeader)):
        return _slots(v, type(v))
    if isinstance(v, (tuple, list)):
        return tuple(_plain(x) for x in v)
    return v


def _slots(obj, cls) -> tuple:
    return tuple((f, _plain(getattr(obj, f, "<unset>"))) for f in cls.__slots__)


def view(low) -> tuple:
    """Everything a router reads from a Lowered, as comparable values."""
    return (
        [_slots(r, LRoute) for r in low.routes],
        [_slots(n, LNode) for n in low.nodes],
        [[_slots(ix, LIndex) for ix in per_router] for per_router in low.indexes],
        low.services, low.service_router, low.service_node, low.authority, low.ports, low.routers,
        low.node_by_name, _plain(low.default_retry),
        low.default_per_request_ns, low.default_idle_ns,
    )


@SETTINGS
@given(tables(), tables(), st.lists(st.booleans(), min_size=12, max_size=12), st.booleans(), st.booleans())
def test_a_memo_lowers_every_table_as_from_scratch(first, second, keep, reorder, new_timeouts):
    """The second table keeps some of the first's Route objects (by `keep`; its own routes of
    the same names give way), maybe lists its nodes in another order (every node index
    moves) or changes the default timeouts; it keeps the first's default retry policy."""
    mixed = tuple(r for r, k in zip(first.routers[0].routes, keep) if k)
    mixed += tuple(r for r in second.routers[0].routes if r.name not in {m.name for m in mixed})
    second = dataclasses.replace(
        second, routers=(VirtualRouter("r", mixed),),
        nodes=second.nodes[1:] + second.nodes[:1] if reorder else second.nodes,
        default_retry=first.default_retry,
        default_timeouts=Timeouts(1234, 5678) if new_timeouts else first.default_timeouts)
    memo, made = LowerMemo(), []
    for table in (first, first, second, second):
        low = lower(table, memo)
        assert view(low) == view(lower(table))
        made.append((low, view(low)))
    for low, seen in made:
        assert view(low) == seen, "a later lowering changed an earlier table's routes"


def test_unchanged_routes_come_from_the_memo_until_the_context_changes():
    routes = tuple(Route(f"r{i}", "http", HttpMatch(prefix=f"/p{i}"), (Target("a" if i % 2 else "b", 1),))
                   for i in range(10))
    nodes = (VirtualNode("a"), VirtualNode("b"))
    t = Table(services=(VirtualService("svc.local", router="r", ports=(80,)),),
              routers=(VirtualRouter("r", routes),), nodes=nodes)
    memo = LowerMemo()
    lower(t, memo)
    assert memo.hits == 0
    lower(t, memo)
    assert memo.hits == 10, "every route object was seen by the last call"
    changed = dataclasses.replace(t, routers=(VirtualRouter("r", routes[:3] + (
        Route("r3", "http", HttpMatch(prefix="/elsewhere"), (Target("a", 1),)),) + routes[4:]),))
    low = lower(changed, memo)
    assert memo.hits == 9
    assert {r.name: r.path for r in low.routes}["r3"] == "/elsewhere"
    # Node b moves to index 0: a route kept from the memo would still point at index 1 (a).
    swapped = dataclasses.replace(changed, nodes=(VirtualNode("b"), VirtualNode("a")))
    low = lower(swapped, memo)
    assert memo.hits == 0, "a new node order retires the memo"
    for impl in (_core.Router, reference.Router):
        router = impl(low)
        for n in ("a", "b"):
            router.set_endpoints(n, endpoints(n, 1))
        assert summary(http(router, "/p0"))[5] == "b"
        assert summary(http(router, "/p1"))[5] == "a"
    # A route the last call did not see is forgotten: the memo never outgrows the table.
    small = dataclasses.replace(swapped, routers=(VirtualRouter("r", routes[:2]),))
    lower(small, memo)
    lower(swapped, memo)
    assert memo.hits == 2
