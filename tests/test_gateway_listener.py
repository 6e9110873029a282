"""The gateway listener's local config and listener TLS, without traffic."""
from __future__ import annotations

import pytest

from meshd.api.validate import parse_json
from meshd.proxy import GatewayConfig, ListenerTlsError, listener_ssl
from meshd.proxy import RuntimeConfig
from meshd.security import spiffe
from meshd.v1 import admin_pb2 as pb


def test_runtime_config_reads_gateways(tmp_path):
    path = tmp_path / "meshd.yaml"
    path.write_text("gateways:\n"
                    "  - {mesh: shop, virtualGateway: edge}\n"
                    "  - {mesh: shop, virtualGateway: admin, address: 127.0.0.1}\n")
    cfg = RuntimeConfig.load(str(path))
    assert cfg.apps == [] and cfg.gateways == [GatewayConfig("shop", "edge", "0.0.0.0"),
                                               GatewayConfig("shop", "admin", "127.0.0.1")]
    assert cfg.gateways[0].principal == (spiffe.GATEWAY, "edge")


def _listener(tls: dict | None):
    doc = {"meshName": "shop", "virtualGatewayName": "edge",
           "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}}
    if tls is not None:
        doc["spec"]["listeners"][0]["tls"] = tls
    return parse_json(pb.CreateVirtualGatewayRequest, doc).spec.listeners[0]


def test_listener_tls_modes():
    assert listener_ssl(_listener(None), "http") is None
    assert listener_ssl(_listener({"mode": "DISABLED", "certificate": {"file": {
        "certificateChain": "/nonexistent.crt", "privateKey": "/nonexistent.key"}}}), "http") is None
    with pytest.raises(ListenerTlsError) as err:
        listener_ssl(_listener({"mode": "STRICT", "certificate": {"sds": {"secretName": "edge"}}}), "http")
    assert err.value.field == "tls.certificate"
    with pytest.raises(OSError):  # a file source that does not exist: the listener stays closed
        listener_ssl(_listener({"mode": "STRICT", "certificate": {"file": {
            "certificateChain": "/nonexistent.crt", "privateKey": "/nonexistent.key"}}}), "http")
