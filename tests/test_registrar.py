"""The registrar of a meshd whose app names a mesh that does not exist (yet): it retries with
a backoff instead of hitting etcd every half second, and registers at once when the mesh
and virtual node are applied."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from mesh_harness import start_meshd
from meshd.api import kinds as K
from meshd.embedded_etcd import free_port
from meshd.proxy import REGISTER_RETRY_FIRST_S, REGISTER_RETRY_MAX_S, LocalApp
from meshd.security import ClusterKey
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.dataplane, pytest.mark.etcd]


class _Attempts(logging.Handler):
    """The registrar's failed attempts ("instance not registered yet" records), as they happen."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.times: list[float] = []
        self._seen = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "instance not registered yet":
            with self._seen:
                self.times.append(record.created)
                self._seen.notify_all()

    def wait_for(self, n: int, timeout: float) -> list[float]:
        """The first `n` attempts' times, or AssertionError after `timeout` s without them."""
        with self._seen:
            self._seen.wait_for(lambda: len(self.times) >= n, timeout)
            assert len(self.times) >= n, f"{len(self.times)} attempts in {timeout:.0f} s, expected {n}: {self.times}"
            return self.times[:n]


def _backoff() -> list[float]:
    """The registrar's waits up to and including the first capped one: 0.5, 1, 2, 4, 5 s."""
    waits = [REGISTER_RETRY_FIRST_S]
    while waits[-1] < REGISTER_RETRY_MAX_S:
        waits.append(min(waits[-1] * 2, REGISTER_RETRY_MAX_S))
    return waits


@pytest.mark.hardening
def test_registration_of_a_missing_node_backs_off_and_resumes_when_it_is_applied(etcd, etcd_prefix, tmp_path):
    # Each bound below is one the registrar's waits cannot cross, whatever the machine's
    # load: threading.Event.wait(timeout) returns no sooner than `timeout` unless the event
    # is set, and only a configuration change sets it. Timing noise only lengthens gaps,
    # and the deadlines are generous, so the test waits on events, never for a fixed time.
    attempts = _Attempts()
    logger = logging.getLogger("meshd.proxy")  # its modules' loggers propagate here too
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(attempts)
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    app = LocalApp(mesh="ghost", virtual_node="api", port=free_port(), instance_id="api-1")
    meshd = start_meshd(etcd, etcd_prefix, tmp_path, "host-a", [app], key)
    try:
        waits = _backoff()
        # One attempt at start, then one after each wait.
        tries = attempts.wait_for(len(waits) + 1, timeout=sum(waits) + 30)
        gaps = [b - a for a, b in zip(tries, tries[1:])]
        # At least each backoff apart: a fixed half-second retry fails at the second gap.
        assert all(gap >= wait for gap, wait in zip(gaps, waits)), (gaps, waits)
        # The doubling stops at the cap: uncapped, the last wait would be twice the one before.
        assert gaps[-1] < 2 * waits[-2], (gaps, waits)
        # Applied now, right after an attempt: the backoff alone would try again no sooner than
        # REGISTER_RETRY_MAX_S from that attempt, so a registration before then was woken by
        # the configuration change.
        r = meshd.resources
        r.create(K.MESH, pb.CreateMeshRequest(mesh_name="ghost"))
        r.create(K.VIRTUAL_NODE, pb.CreateVirtualNodeRequest(mesh_name="ghost", virtual_node_name="api", spec={}))
        backoff_retry = tries[-1] + REGISTER_RETRY_MAX_S
        deadline = time.monotonic() + 30
        while not r.list_instances(pb.ListInstancesRequest(mesh_name="ghost")).instances:
            assert time.monotonic() < deadline, "not registered 30 s after the node was applied"
            time.sleep(0.05)
        seen = time.time()  # no earlier than the registration itself
        assert seen < backoff_retry, f"registered {seen - tries[-1]:.1f} s after the last attempt: not woken"
    finally:
        logger.removeHandler(attempts)
        logger.setLevel(level)
        meshd.stop()
