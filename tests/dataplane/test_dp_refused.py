"""A stream the upstream refused (RST_STREAM REFUSED_STREAM, RFC 9113 §8.7: not processed,
safe to send again) is resent by the engine whatever the route's retry policy says, as a
gRPC client's transparent retry does (gRFC A6): once before the retry hook is asked, so a
policy that retries only `unavailable` or connection errors no longer turns a lone refusal
into a failed call. A second refusal is the retry hook's to decide, as any failure."""
from __future__ import annotations

import pytest

from meshd.dataplane import Target
from tests.dataplane.h2client import H2Client, H2Origin
from tests.dataplane.harness import RelayThread, counters

pytestmark = pytest.mark.dataplane


@pytest.fixture
def h2origin():
    o = H2Origin()
    yield o
    o.stop()


class Declining:
    """A retry hook that retries nothing and records what it was asked about."""

    def __init__(self):
        self.asked = []

    def __call__(self, head, failure):
        self.asked.append(failure.kind)
        return None


def _call(relay: RelayThread, body: bytes = b"abc"):
    c = H2Client(relay.port)
    try:
        sid = c.request("/x", body=body)
        assert c.pump(lambda: c.streams[sid].done, timeout=10)
        return c.streams[sid]
    finally:
        c.close()


@pytest.mark.parametrize("hook", [False, True], ids=["no-retry-hook", "declining-retry-hook"])
def test_one_refused_stream_is_resent_whatever_the_retry_policy(h2origin, hook):
    retry = Declining() if hook else None
    relay = RelayThread(lambda head: Target("127.0.0.1", h2origin.port), retry)
    try:
        h2origin.refuse = 1
        refused = counters()["refused_from_upstream"]
        st = _call(relay)
        assert (st.status, bytes(st.body)) == (200, b"3")
        assert (h2origin.refused, h2origin.answered) == (1, 1)
        assert counters()["refused_from_upstream"] - refused == 1
        # The resend is transparent: the policy was not asked about an unprocessed attempt.
        assert retry is None or retry.asked == []
    finally:
        relay.stop()


def test_a_second_refusal_is_the_retry_hooks_to_decide(h2origin):
    retry = Declining()
    relay = RelayThread(lambda head: Target("127.0.0.1", h2origin.port), retry)
    try:
        h2origin.refuse = 2
        st = _call(relay)
        assert st.status == 503 and st.headers.get("x-meshd-reason") == "upstream_refused_stream"
        assert retry.asked == ["refused_stream"]
        assert (h2origin.refused, h2origin.answered) == (2, 0)
    finally:
        relay.stop()
