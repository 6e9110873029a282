"""The data-plane configuration file is read strictly: an unknown or mistyped key is an
error naming its path, and `meshd run` refuses to start on it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from meshd.proxy import ConfigError, RuntimeConfig

pytestmark = pytest.mark.hardening


def _load(tmp_path, text):
    path = tmp_path / "meshd.yaml"
    path.write_text(text)
    return RuntimeConfig.load(str(path))


def test_the_quickstart_and_cluster_configs_load():
    for path in ("deploy/quickstart/meshd.yaml", "deploy/quickstart/cluster/hosts/h1.yaml",
                 "deploy/quickstart/cluster/hosts/default.yaml"):
        assert RuntimeConfig.load(path).apps


@pytest.mark.parametrize("text, path", [
    ("ingres: 127.0.0.1:1\n", "ingres"),
    ("apps:\n  - {mesh: shop, virtualnode: web, port: 80}\n", "apps[0].virtualNode"),
    ("apps:\n  - {mesh: shop, virtualNode: web, port: 80, egres: x}\n", "apps[0].egres"),
    ("apps:\n  - {mesh: shop, virtualNode: web, port: 80, backends: [{port: 1, virtualService: a, proto: tcp}]}\n",
     "apps[0].backends[0].proto"),
    ("apps:\n  - {mesh: shop, virtualNode: web, port: 80, protocol: grpc}\n", "apps[0].protocol"),
    ("apps:\n  - {mesh: shop, virtualNode: web, port: eighty}\n", "apps[0].port"),
    ("gateways:\n  - {mesh: shop, virtualGateway: gw, adress: 0.0.0.0}\n", "gateways[0].adress"),
    ("drainSeconds: -1\n", "drainSeconds"),
    ("apps: {mesh: shop}\n", "apps"),
])
def test_unknown_and_mistyped_keys_are_refused_with_their_path(tmp_path, text, path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert err.value.path == path


def test_every_documented_key_is_read(tmp_path):
    cfg = _load(tmp_path, """
ingress: 0.0.0.0:15443
ingressHttp: 0.0.0.0:15444
advertise: 10.0.0.1:15443
drainSeconds: 2
upstreamIdleSeconds: 30
connectTimeoutSeconds: 1.5
pingSeconds: 0
handshakeTimeoutSeconds: 3
apps:
  - mesh: shop
    virtualNode: web
    port: 8080
    address: 127.0.0.2
    instanceId: web-1
    egress: 127.0.0.1:15001
    egressHttp: 127.0.0.1:15002
    protocol: http
    backends:
      - {port: 15101, virtualService: api.shop.local}
      - {port: 15432, virtualService: db.shop.local, protocol: tcp}
gateways:
  - {mesh: shop, virtualGateway: edge, address: 127.0.0.1}
observability:
  metrics: 127.0.0.1:9464
""")
    app = cfg.apps[0]
    assert (cfg.ingress_http, cfg.advertise, cfg.drain_seconds, cfg.upstream_idle_seconds,
            cfg.connect_timeout_seconds, cfg.ping_seconds, cfg.handshake_timeout_seconds) == (
        "0.0.0.0:15444", "10.0.0.1:15443", 2.0, 30.0, 1.5, 0.0, 3.0)
    assert (app.address, app.instance_id, app.egress_http, app.protocol) == ("127.0.0.2", "web-1", "127.0.0.1:15002",
                                                                            "http")
    assert [(b.port, b.protocol) for b in app.backends] == [(15101, "http2"), (15432, "tcp")]
    assert cfg.gateways[0].address == "127.0.0.1"


def test_meshd_run_refuses_a_config_with_an_unknown_key(tmp_path):
    path = tmp_path / "meshd.yaml"
    path.write_text("apps:\n  - {mesh: shop, virtualNode: web, port: 80}\nobservability:\n  tracing: {endpont: x}\n")
    out = subprocess.run([sys.executable, "-m", "meshd.cli.meshd_main", "run", "--config", str(path),
                          "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "observability.tracing.endpont: unknown key" in out.stderr
