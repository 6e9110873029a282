"""meshd's start when etcd is briefly out of reach, on loopback: a drill's finding (a netns
host's meshd exited during `cluster.sh up`, its first etcd calls refused while the members
had just reported healthy) reduced to a deterministic reproduction."""
from __future__ import annotations

import threading
import time

import pytest

from meshd.app import Meshd, MeshdConfig
from meshd.embedded_etcd import EmbeddedEtcd, free_port
from meshd.security import ClusterKey

pytestmark = pytest.mark.etcd


def test_meshd_with_the_cluster_key_starts_once_etcd_answers(tmp_path):
    etcd = EmbeddedEtcd(tmp_path / "etcd", supervise=False).start()
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    cfg = MeshdConfig(admin=f"127.0.0.1:{free_port()}", etcd=[etcd.url], etcd_prefix="/startup/",
                      state_dir=str(tmp_path / "meshd"), host_name="h1", cluster_key=str(key), lease_ttl=5)
    daemon = Meshd(cfg)
    outcome: dict = {}

    def start():
        try:
            daemon.start()
            outcome["started"] = time.monotonic()
        except Exception as err:  # noqa: BLE001 - the outcome is what the test checks
            outcome["error"] = err
    etcd.pause()  # no host certificate yet: the first start has to sign one through etcd
    thread = threading.Thread(target=start, daemon=True)
    try:
        thread.start()
        time.sleep(3)
        etcd.resume()
        resumed = time.monotonic()
        thread.join(30)
        assert not thread.is_alive(), "meshd still starting 30 s after etcd came back"
        assert "error" not in outcome, f"meshd gave up while etcd was briefly away: {outcome['error']}"
        assert outcome["started"] - resumed < 5
        assert daemon.identity.credentials is not None
    finally:
        etcd.resume()
        if "started" in outcome:
            daemon.stop()
        etcd.stop()
