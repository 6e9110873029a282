"""Path and header regexes in the router core: RE2 semantics (Envoy's safe_regex), in linear time."""
from __future__ import annotations

import time

import pytest

from _fastroute import TableError
from _fastroute.spec import HeaderMatch

from .helpers import http, http_route

pytestmark = pytest.mark.fastroute

# Python's backtracking `re` needs time exponential in the run of a's to refuse this path
# (0.115 s at 23 characters, doubling with each one); RE2 needs time linear in it.
EVIL = "/(a+)+$"
TEN_KIB_MISS = "/" + "a" * (10 * 1024 - 2) + "!"


def _best_of(n, fn):
    """The fastest of n timed calls, in seconds: the run least disturbed by the shared machine."""
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.hardening
@pytest.mark.timeout(30)
def test_a_backtracking_path_regex_is_refused_in_linear_time(build):
    r = build([http_route("evil", path_regex=EVIL), http_route("all", "/")])
    assert len(TEN_KIB_MISS) == 10 * 1024
    assert http(r, TEN_KIB_MISS).route == "all"
    assert http(r, TEN_KIB_MISS[:-1]).route == "evil"
    # Under 1 ms for a 10 KiB path; the backtracking engine did not finish at all.
    assert _best_of(5, lambda: http(r, TEN_KIB_MISS)) < 1e-3


@pytest.mark.hardening
@pytest.mark.timeout(30)
def test_a_backtracking_header_regex_is_refused_in_linear_time(build):
    r = build([http_route("evil", "/", headers=(HeaderMatch("x-h", regex="(a+)+$"),)), http_route("x", "/x")])
    value = TEN_KIB_MISS[1:]
    assert http(r, "/", {"x-h": value}).reason == "no_route"
    assert http(r, "/", {"x-h": value[:-1]}).route == "evil"
    assert _best_of(5, lambda: http(r, "/", {"x-h": value})) < 1e-3


def test_a_path_regex_matches_the_whole_path_without_its_query(build):
    # Envoy's safe_regex matches the whole :path, less the query string; an alternation
    # is anchored as a whole, not only its first and last branches.
    r = build([http_route("alt", path_regex="/x|/y"), http_route("all", "/")])
    assert http(r, "/x").route == "alt"
    assert http(r, "/y").route == "alt"
    assert http(r, "/y?q=1").route == "alt"
    for miss in ("/yz", "/xy", "/x/", "/a/x", "/"):
        assert http(r, miss).route == "all", miss


def test_a_path_regex_sees_characters_not_bytes(build):
    # `.` is one code point in any str kind (latin-1, UCS-2, UCS-4), before and after a query.
    r = build([http_route("one", path_regex="/.x"), http_route("all", "/")])
    for path in ("/ax", "/éx", "/€x", "/😀x", "/😀x?é=1"):
        assert http(r, path).route == "one", path
    for path in ("/x", "/ééx", "/😀😀x"):
        assert http(r, path).route == "all", path


def test_re2_syntax_and_its_refusals(build):
    # RE2 has no backreferences or lookaround (they need backtracking); those tables are refused.
    for bad in (r"/(a)\1", "/(?=a)a", "/(?!b).*", "/(?<=a)b", "/(unclosed"):
        with pytest.raises(TableError) as info:
            build([http_route("bad", path_regex=bad)])
        assert (info.value.path, info.value.reason) == ("routers[0].routes[0].match.path_regex", "bad_regex"), bad
        with pytest.raises(TableError) as info:
            build([http_route("bad", "/", headers=(HeaderMatch("h", regex=bad),))])
        assert info.value.path == "routers[0].routes[0].match.headers[0].regex", bad
    # What RE2 shares with Perl/Python syntax works: classes, counted repetition, named groups, flags.
    r = build([http_route("ok", path_regex=r"(?i)/v(?P<n>\d{1,3})/[a-z_]+"), http_route("all", "/")])
    assert http(r, "/V12/items").route == "ok"
    assert http(r, "/v1234/items").route == "all"
