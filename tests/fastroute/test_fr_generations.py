"""Router generations built on the one before (`Router(..., base=old)`): what a change left
alone is shared with `base`, not built again, and the result decides exactly as a router
built from scratch that adopted the old one's state, and as the reference model.

Hypothesis draws a table of two virtual routers, then a run of generations, each changing
one thing the way meshd's compile does (one router's routes, one node's instances, the
node order, the defaults) while the unchanged parts stay the very same objects. Between
generations, requests and attempt results move balancing, outlier and budget state, and
instance changes reach the live router as the data-plane loop sends them."""
from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fastroute import _core, reference
from _fastroute import constants as C
from _fastroute.spec import (LowerMemo, OutlierDetection, RateLimit, Table, Timeouts, VirtualNode, VirtualRouter,
                             VirtualService, lower)

from .differential import (NODES, T0, _endpoints, _guard, _retry_view, _state, results, route_requests, small_steps,
                           tables)
from .helpers import endpoints, http, http_route, summary

pytestmark = pytest.mark.fastroute

SETTINGS = settings(deadline=None, derandomize=True, database=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


def _two_routers(first: Table, second: Table) -> Table:
    """`first` with a second virtual router "q" (the routes of `second`) behind q.local."""
    q = VirtualRouter("q", second.routers[0].routes)
    return dataclasses.replace(first, routers=first.routers + (q,), services=first.services + (
        VirtualService("q.local", router="q", ports=(80,), local_ports=(15003,)),))


def _to_q(req):
    """A request drawn for router "r"'s service, sent to q.local instead."""
    proto, authority, port, method, scheme, path, headers = req
    authority = authority.replace("svc", "q").replace("SVC", "q") if authority else authority
    return proto, authority, 15003 if port == 15001 else port, method, scheme, path, headers


@st.composite
def generations(draw):
    """(first table, [(kind, table, changed node or None, its endpoint count, failing
    mask)], a script of calls per generation, a seed)."""
    first = table = _two_routers(draw(tables()), draw(tables()))
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["route", "route", "append", "instances", "instances", "none", "order",
                                     "defaults"]))
        node = None
        if kind in ("route", "append"):
            r, q = table.routers
            fresh = draw(tables()).routers[0].routes[0]
            if kind == "route":
                i = draw(st.integers(0, len(q.routes) - 1))
                routes = q.routes[:i] + (dataclasses.replace(fresh, name=q.routes[i].name),) + q.routes[i + 1:]
            else:
                routes = (dataclasses.replace(fresh, name="added"),) + tuple(x for x in q.routes if x.name != "added")
            table = dataclasses.replace(table, routers=(r, VirtualRouter("q", routes)))
        elif kind == "instances":
            node = draw(st.sampled_from(NODES))
        elif kind == "order":
            table = dataclasses.replace(table, nodes=table.nodes[1:] + table.nodes[:1])
        elif kind == "defaults":
            ms = 700 if table.default_timeouts.per_request_ms != 700 else 900
            table = dataclasses.replace(table, default_timeouts=Timeouts(ms, 0))
        steps.append((kind, table, node, draw(st.integers(0, 5)), draw(st.integers(0, 31))))
    reqs = st.one_of(route_requests(dataclasses.replace(table, routers=table.routers[:1])),
                     route_requests(dataclasses.replace(table, routers=table.routers[1:])).map(_to_q))
    calls = st.lists(st.tuples(reqs, st.lists(results, min_size=1, max_size=3).map(tuple), small_steps,
                               st.sampled_from([1, 3, 12])), min_size=2, max_size=6)
    scripts = [draw(calls) for _ in range(len(steps) + 1)]
    return first, steps, scripts, draw(st.integers(0, 2**64 - 1))


class Generations:
    """Three lines of routers fed the same calls: built on their base (the subject), built
    from scratch and adopting the old one's state, and the reference model likewise."""

    def __init__(self, first: Table, seed: int):
        self.memo = LowerMemo()
        self.eps = {n: tuple(_endpoints(n, 3)) for n in NODES}
        self.now, self.seed = T0, seed
        self.routers = [self._build(first, None, based=True), self._build(first, None), self._build(first, None,
                                                                                                      model=True)]

    def _build(self, table, old, *, based=False, model=False):
        if based:
            return _core.Router(lower(table, self.memo), seed=self.seed, base=old, endpoints=self.eps)
        cls = reference.Router if model else _core.Router
        return cls(lower(table), seed=self.seed, endpoints=self.eps)

    def next(self, table):
        old = self.routers
        new = [self._build(table, old[0], based=True), self._build(table, old[1]),
               self._build(table, old[2], model=True)]
        for r, o in zip(new, old):
            r.adopt(o)
        self.routers = new
        return old[0]

    def same(self, what, views):
        for v in views[1:]:
            assert v == views[0], f"{what} differs\n  based:   {views[0]!r}\n  other:   {v!r}"

    def play(self, script):
        for req, outcomes, step, repeat in script:
            for _ in range(repeat):
                self.now += step
                ds = [r.decide(*req, self.now) for r in self.routers]
                self.same("decide", [summary(d) for d in ds])
                if ds[0].status != C.ROUTED:
                    continue
                for kind, code in itertools.islice(itertools.cycle(outcomes), 12):
                    views = [_guard(r.result, d, kind, code, self.now) for r, d in zip(self.routers, ds)]
                    self.same("result", [v if isinstance(v, tuple) else _retry_view(v, d) for v, d in zip(views, ds)])
                    if ds[0].state == C.ST_DONE or isinstance(views[0], tuple):
                        break
                    self.now += step
        self.same("endpoint state", [_state(r, self.now) for r in self.routers])


@SETTINGS
@given(generations())
def test_a_generation_built_on_its_base_decides_as_one_built_from_scratch(gens):
    first, steps, scripts, seed = gens
    g = Generations(first, seed)
    g.play(scripts[0])
    for (kind, table, node, count, failing), script in zip(steps, scripts[1:]):
        if node is not None:
            # An instance change reaches the live routers first (the loop), and the next
            # compile hands out a new endpoints object for that node.
            for r in g.routers:
                r.set_endpoints(node, _endpoints(node, count, failing))
            g.eps = {**g.eps, node: tuple(_endpoints(node, count, failing))}
        old = g.next(table)
        routers, nodes = g.routers[0].shared_with(old)
        if kind in ("route", "append"):
            assert "r" in routers and "q" not in routers
        elif kind in ("none", "instances"):
            assert routers == {"r", "q"}
            assert nodes == set(NODES) - {node}, "a node is shared unless its instances changed"
        elif kind in ("order", "defaults"):
            assert not routers, "routes name nodes by index and hold the defaults: none shared"
        g.play(script)


def test_base_is_left_as_it_was_and_state_continues():
    """Building on a base changes nothing of it; a shared node keeps its ejection; a route
    change builds its router anew and adopt carries that router's retry budget over."""
    memo = LowerMemo()
    routes_r = (http_route("a", "/a", targets=(("n0", 1),)),)
    routes_q = (http_route("b", "/b", targets=(("n1", 1),)), http_route("c", "/c", targets=(("n0", 1),)))
    nodes = tuple(_core_node(n) for n in ("n0", "n1"))
    services = (VirtualService("r.local", router="r", ports=(80,)), VirtualService("q.local", router="q", ports=(80,)))
    t1 = Table(services=services, routers=(VirtualRouter("r", routes_r), VirtualRouter("q", routes_q)), nodes=nodes)
    eps = {n: tuple(endpoints(n, 2)) for n in ("n0", "n1")}
    old = _core.Router(lower(t1, memo), seed=5, endpoints=eps)
    now = _eject_n0_0(old, "/a")
    assert old.ejected("n0", now) == 1
    before = [summary(http(old, p, authority=a, now_ns=now)) for p, a in (("/a", "r.local"), ("/b", "q.local"))]
    # q's route c changes; r and both nodes are untouched.
    t2 = dataclasses.replace(t1, routers=(t1.routers[0], VirtualRouter("q", (routes_q[0], http_route(
        "c", "/z", targets=(("n1", 1),))))))
    new = _core.Router(lower(t2, memo), seed=5, base=old, endpoints=eps)
    assert new.shared_with(old) == ({"r"}, {"n0", "n1"})
    assert summary(http(old, "/c", authority="q.local", now_ns=now))[4] == "c", "the base still routes as before"
    assert http(old, "/z", authority="q.local", now_ns=now).status == C.NO_ROUTE
    new.adopt(old)
    assert new.ejected("n0", now) == 1, "the shared node keeps its ejection"
    assert summary(http(new, "/z", authority="q.local", now_ns=now))[4:6] == ("c", "n1")
    assert [summary(http(new, p, authority=a, now_ns=now))[:7] for p, a in (("/a", "r.local"), ("/b", "q.local"))] \
        == [b[:7] for b in before]
    # An instance change (a new endpoints object) gives its node a node of its own; the
    # base's keeps its endpoints.
    changed = {**eps, "n1": tuple(endpoints("n1", 3))}
    third = _core.Router(lower(t2, memo), seed=5, base=new, endpoints=changed)
    assert third.shared_with(new) == ({"r", "q"}, {"n0"})
    assert len(new.endpoints("n1")) == 2 and len(third.endpoints("n1")) == 3
    third.adopt(new)
    assert [e.id for e in third.endpoints("n1")][:2] == [e.id for e in new.endpoints("n1")]
    assert all(a is b for a, b in zip(third.endpoints("n1"), new.endpoints("n1"))), "states carried over"


def test_a_base_of_another_locality_is_refused():
    t = Table(services=(VirtualService("r.local", router="r", ports=(80,)),),
              routers=(VirtualRouter("r", (http_route("a", "/"),)),), nodes=(_core_node("a"),))
    old = _core.Router(lower(t), locality=("r1", "z1", ""))
    with pytest.raises(ValueError, match="locality"):
        _core.Router(lower(t), locality=("r1", "z2", ""), base=old)


def test_adopting_a_router_that_is_not_the_base_visits_everything():
    """adopt(old) where old is not the base (an older generation) still carries every
    node's and route's state: the shortcut is taken only for the base itself."""
    memo = LowerMemo()
    limited = dataclasses.replace(http_route("a", "/", targets=(("n0", 1),)), rate_limit=RateLimit(25, 1, 60_000))
    t = Table(services=(VirtualService("r.local", router="r", ports=(80,)),),
              routers=(VirtualRouter("r", (limited,)),), nodes=(_core_node("n0"),))
    eps = {"n0": tuple(endpoints("n0", 2))}
    first = _core.Router(lower(t, memo), seed=1, endpoints=eps)
    now = _eject_n0_0(first, "/")
    unrelated = _core.Router(lower(t, memo), seed=1, endpoints=eps)  # the same lowering, another router
    based = _core.Router(lower(t, memo), seed=1, base=unrelated, endpoints=eps)
    assert based.shared_with(unrelated) == ({"r"}, {"n0"}) and based.shared_with(first) == (set(), set())
    based.adopt(first)
    assert based.ejected("n0", now) == 1
    # first spent 20 of the route's 25 tokens: the route's bucket is first's, not unrelated's
    assert [http(based, "/", authority="r.local", now_ns=now).status for _ in range(6)] == [C.ROUTED] * 5 + [
        C.RATE_LIMITED]


def _eject_n0_0(router, path: str) -> int:
    """20 calls to r.local, n0-0 answering 503 (five in a row eject it, as the nodes'
    outlier detection says); returns the time after them."""
    now = 10**12
    for _ in range(20):
        d = http(router, path, authority="r.local", now_ns=now)
        router.result(d, C.RESULT_HTTP, 503 if d.endpoint.id == "n0-0" else 200, now)
        now += 1_000
    return now


def _core_node(name):
    return VirtualNode(name, outlier=OutlierDetection(5, 10_000, 30_000, 50))
