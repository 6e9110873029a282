"""Fixtures for the data-plane tests: an echo origin, and a relay pointed at it."""
import pytest

from tests.dataplane.harness import EchoOrigin, RelayThread, channel, to


@pytest.fixture
def origin():
    o = EchoOrigin()
    yield o
    o.stop()


@pytest.fixture
def relay(origin):
    r = RelayThread(to(origin.port))
    yield r
    r.stop()


@pytest.fixture
def ch(relay):
    c = channel(relay.port)
    yield c
    c.close()
