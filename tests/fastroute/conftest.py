"""Fixtures of the router-core suite: the implementation under test and its builder."""
from __future__ import annotations

import pytest

from .helpers import IMPLS, Build


@pytest.fixture(params=sorted(IMPLS), ids=sorted(IMPLS))
def Router(request):
    """Each behaviour test runs once per implementation (uvloop/asyncio style)."""
    return IMPLS[request.param]


@pytest.fixture
def build(Router):
    """The builder bound to the implementation under test."""
    return Build(Router)
