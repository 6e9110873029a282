"""The registrar of a meshd whose app names a mesh that does not exist (yet): it retries with
a backoff instead of hitting etcd every half second, and registers at once when the mesh
and virtual node are applied."""
from __future__ import annotations

import logging
import time

import pytest

from mesh_harness import start_meshd
from meshd.api import kinds as K
from meshd.embedded_etcd import free_port
from meshd.proxy import REGISTER_RETRY_MAX_S, LocalApp
from meshd.security import ClusterKey
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.dataplane, pytest.mark.etcd]


def _attempts(caplog) -> list[float]:
    return [r.created for r in caplog.records if r.getMessage() == "instance not registered yet"]


def test_registration_of_a_missing_node_backs_off_and_resumes_when_it_is_applied(etcd, etcd_prefix, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="meshd.proxy")
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    app = LocalApp(mesh="ghost", virtual_node="api", port=free_port(), instance_id="api-1")
    meshd = start_meshd(etcd, etcd_prefix, tmp_path, "host-a", [app], key)
    try:
        time.sleep(8.0)
        tries = _attempts(caplog)
        # A fixed half-second retry makes about 16 attempts in 8 s; 0.5, 1, 2, 4 s makes 5.
        assert 3 <= len(tries) <= 6, tries
        gaps = [b - a for a, b in zip(tries, tries[1:])]
        assert gaps[-1] > 1.5 and max(gaps) <= REGISTER_RETRY_MAX_S + 1, gaps
        r = meshd.resources
        r.create(K.MESH, pb.CreateMeshRequest(mesh_name="ghost"))
        r.create(K.VIRTUAL_NODE, pb.CreateVirtualNodeRequest(mesh_name="ghost", virtual_node_name="api"))
        t0 = time.monotonic()
        deadline = t0 + 10
        while time.monotonic() < deadline:
            if r.list_instances(pb.ListInstancesRequest(mesh_name="ghost")).instances:
                break
            time.sleep(0.05)
        took = time.monotonic() - t0
        # The applied configuration wakes the registrar; the backoff alone could wait 5 s.
        assert took < 2.0, f"registered {took:.1f} s after the node was applied"
    finally:
        meshd.stop()
