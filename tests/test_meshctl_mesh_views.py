"""meshctl top and graph over real meshds carrying real gRPC traffic: host A's app `web` calls
api.shop.local, split over api-v1 (which fails every 5th call with INTERNAL, a status no
retry policy retries) and api-v2 on host B. Both hosts export metrics; each call must be
counted once, at web's egress, never again at B's ingress."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import grpc
import pytest
import yaml

from mesh_harness import Mesh, Origin, shop_config
from meshd.api import kinds as K
from meshd.cli.meshctl_views import graph_edges, metrics_url, scrape, top_rows, window
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.observability, pytest.mark.dataplane, pytest.mark.etcd]


@pytest.fixture
def mesh(etcd, etcd_prefix, tmp_path):
    v1, v2 = Origin("api-v1"), Origin("api-v2")
    v1.fail_every, v1.fail_code = 5, grpc.StatusCode.INTERNAL
    m = Mesh(etcd, etcd_prefix, tmp_path, {"api-v1": v1, "api-v2": v2})
    shop_config(m.a.resources, K, pb, targets={"api-v1": 1, "api-v2": 1})
    m.wait_routable(m.client())
    yield m
    m.close()


def _urls(m: Mesh) -> list[str]:
    return [metrics_url(m.a.metrics_address), metrics_url(m.b.metrics_address)]


def _call(call, n: int) -> int:
    """n sequential calls; returns how many failed."""
    failed = 0
    for i in range(n):
        try:
            call(b"%d" % i, timeout=10)
        except grpc.RpcError:
            failed += 1
    return failed


def test_each_call_is_counted_once_with_its_route_target_and_outcome(mesh):
    call = mesh.client()
    seen = {k: o.calls for k, o in mesh.origins.items()}
    before = [scrape(u) for u in _urls(mesh)]
    failed = _call(call, 60)
    after = [scrape(u) for u in _urls(mesh)]
    got = {k: o.calls - seen[k] for k, o in mesh.origins.items()}
    assert sum(got.values()) == 60 and got["api-v1"] and got["api-v2"]  # both targets were used
    rows = {(r["virtual_service"], r["route"], r["target_node"]): r for r in top_rows(window(before, after))}
    assert set(rows) == {("api.shop.local", "api", "api-v1"), ("api.shop.local", "api", "api-v2")}
    v1, v2 = rows[("api.shop.local", "api", "api-v1")], rows[("api.shop.local", "api", "api-v2")]
    assert (v1["requests"], v2["requests"]) == (got["api-v1"], got["api-v2"])
    assert v2["success_rate"] == 1.0
    assert v1["success_rate"] == pytest.approx((got["api-v1"] - failed) / got["api-v1"], abs=1e-4)
    assert failed and v1["p50_ms"] > 0 and v1["p99_ms"] >= v1["p50_ms"]
    edges = graph_edges(window(before, after))
    assert [(e["source_node"], e["target_node"], e["virtual_service"], e["requests"]) for e in edges] == [
        ("web", "api-v1", "api.shop.local", got["api-v1"]), ("web", "api-v2", "api.shop.local", got["api-v2"])]


def meshctl(config, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--context", "host-a", *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "MESHCTL_CONFIG": str(config)})


def test_meshctl_finds_the_hosts_metrics_and_shows_routes_and_edges(mesh, tmp_path):
    # The hosts publish their metrics addresses; meshctl finds both through ListHosts.
    listed = {h.host_name: h.metrics_address for h in
              mesh.a.resources.list_hosts(pb.ListHostsRequest()).hosts}
    assert listed == {"host-a": mesh.a.metrics_address, "host-b": mesh.b.metrics_address}
    # meshctl reaches host A's mTLS admin API with host A's own certificate (hosts may read).
    ident = tmp_path / "host-a" / "identity"
    config = tmp_path / "meshctl.yaml"
    config.write_text(yaml.safe_dump({"contexts": {"host-a": {
        "server": mesh.a.admin.address, "ca": str(ident / "bundle.pem"), "cert": str(ident / "host.crt"),
        "key": str(ident / "host.key")}}}))
    call, stop = mesh.client(), threading.Event()

    def traffic():
        deadline = time.monotonic() + 60  # bounded even if the test body fails early
        while not stop.is_set() and time.monotonic() < deadline:
            _call(call, 5)
            time.sleep(0.02)
    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        top = meshctl(config, "top", "--once", "--json", "--interval", "2")
        dot = meshctl(config, "graph", "--dot", "--interval", "1", "--mesh", "shop")
    finally:
        stop.set()
        t.join(15)
    assert top.returncode == 0, top.stderr
    doc = json.loads(top.stdout)
    assert sorted(doc["sources"]) == sorted(_urls(mesh))
    rows = {(r["route"], r["target_node"]): r for r in doc["routes"]}
    # Only web's egress rows: B's ingress saw the same calls and must not add a second row.
    assert set(rows) == {("api", "api-v1"), ("api", "api-v2")}, doc["routes"]
    assert all(r["requests_per_second"] > 0 and r["virtual_service"] == "api.shop.local" for r in rows.values())
    assert rows[("api", "api-v2")]["success_rate"] == 1.0
    assert 0.6 <= rows[("api", "api-v1")]["success_rate"] <= 0.95  # every 5th of its calls fails
    assert dot.returncode == 0, dot.stderr
    assert '"shop/web" -> "shop/api-v1" [label="api.shop.local\\n' in dot.stdout
    assert '"shop/web" -> "shop/api-v2" [label="api.shop.local\\n' in dot.stdout
    assert dot.stdout.count(" -> ") == 2
