"""Builders for valid App Mesh requests, so tests state only what they vary."""
from __future__ import annotations

from meshd.api.validate import parse_json
from meshd.v1 import admin_pb2 as pb


def node_spec(port: int = 8080, protocol: str = "http", backends=()) -> dict:
    spec = {"listeners": [{"portMapping": {"port": port, "protocol": protocol}}],
            "serviceDiscovery": {"dns": {"hostname": "web.shop.local"}}}
    if backends:
        spec["backends"] = [{"virtualService": {"virtualServiceName": b}} for b in backends]
    return spec


def route_spec(targets: dict[str, int], prefix: str = "/", priority: int | None = None) -> dict:
    spec = {"httpRoute": {"match": {"prefix": prefix},
                          "action": {"weightedTargets": [{"virtualNode": n, "weight": w} for n, w in targets.items()]}}}
    if priority is not None:
        spec["priority"] = priority
    return spec


def router_spec(port: int = 8080) -> dict:
    return {"listeners": [{"portMapping": {"port": port, "protocol": "http"}}]}


def gateway_spec(port: int = 9080) -> dict:
    return {"listeners": [{"portMapping": {"port": port, "protocol": "http"}}]}


def gateway_route_spec(service: str, prefix: str = "/") -> dict:
    return {"httpRoute": {"match": {"prefix": prefix},
                          "action": {"target": {"virtualService": {"virtualServiceName": service}}}}}


def create(stub, kind_title: str, **doc):
    """Create from an App Mesh CLI-input style document: create(stub, "VirtualNode", meshName=...)."""
    req = parse_json(getattr(pb, f"Create{kind_title}Request"), doc)
    return getattr(stub, f"Create{kind_title}")(req, timeout=10)


def update(stub, kind_title: str, expected_version=None, **doc):
    req = parse_json(getattr(pb, f"Update{kind_title}Request"), doc)
    if expected_version is not None:
        req.expected_version = expected_version
    return getattr(stub, f"Update{kind_title}")(req, timeout=10)


def shop(stub, mesh: str = "shop") -> None:
    """A small valid mesh: nodes web, api-v1, api-v2; router api-router with a route; services."""
    create(stub, "Mesh", meshName=mesh, spec={"egressFilter": {"type": "DROP_ALL"}})
    for n in ("web", "api-v1", "api-v2"):
        create(stub, "VirtualNode", meshName=mesh, virtualNodeName=n, spec=node_spec())
    create(stub, "VirtualRouter", meshName=mesh, virtualRouterName="api-router", spec=router_spec())
    create(stub, "Route", meshName=mesh, virtualRouterName="api-router", routeName="api",
           spec=route_spec({"api-v1": 90, "api-v2": 10}))
    create(stub, "VirtualService", meshName=mesh, virtualServiceName="api.shop.local",
           spec={"provider": {"virtualRouter": {"virtualRouterName": "api-router"}}})
    create(stub, "VirtualService", meshName=mesh, virtualServiceName="web.shop.local",
           spec={"provider": {"virtualNode": {"virtualNodeName": "web"}}})
