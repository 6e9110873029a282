"""The data plane's proxy logic between the engines and the mesh's configuration: config,
the outcomes table, egress, ingress, gateways, TLS and the lifecycle that wires them.

Submodules are imported on first use (PEP 562), so leaf modules such as `outcomes` can be
read by meshd.observe without pulling in the whole data plane.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "BackendPort": "config", "ConfigError": "config", "GatewayConfig": "config", "LocalApp": "config",
    "RuntimeConfig": "config", "INSTANCE_HEADER": "config", "SERVICE_HEADER": "config",
    "INGRESS_HTTP_ATTRIBUTE": "config", "INGRESS_TCP_ATTRIBUTE": "config",
    "REFUSALS": "outcomes", "OUTCOMES": "outcomes",
    "MeshRuntime": "lifecycle", "REGISTER_RETRY_FIRST_S": "lifecycle", "REGISTER_RETRY_MAX_S": "lifecycle",
    "WorkloadCerts": "tls", "ProxyTls": "tls",
    "GatewayListeners": "gateway", "ListenerTlsError": "gateway", "listener_ssl": "gateway",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'meshd.proxy' has no attribute {name!r}")
    return getattr(importlib.import_module(f"meshd.proxy.{module}"), name)
