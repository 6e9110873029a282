"""A seeded App Mesh estate at issue 17's size, for the control-plane scale benchmarks and tests.

    from bench.estate import generate
    estate = generate(scale=0.05)          # seed 17 unless given; scale 1.0 is full size
    estate.documents                       # [(kind title, App Mesh CLI-input doc)], apply order
    estate.instances                       # [Instance(mesh, node, instance_id, address, port)]
    estate.write(tmp_path / "estate")      # JSON files that `meshctl apply -f DIR` takes
    estate.counts(estate.largest)          # {"Route": 500, "VirtualNode": 25, ...}

Shape. `meshes` meshes (20 by default). The largest, `m00`, has size factor 1.0:

    500 virtual nodes (n0000...), each with 4 instances  -> 2,000 instances
    500 virtual routers (r0000...), each with 20 routes  -> 10,000 routes
    500 virtual services (svc0000.m00.local), one per router, the router its provider
    10 virtual gateways (gw00...), each with 10 gateway routes to virtual services

Every other mesh has a factor drawn from the seed in [0.005, 0.05], so the whole estate is
about 1.5x the largest mesh (18,279 documents and 3,120 instances at scale 1.0). `scale`
multiplies every factor (CI uses 0.05: 25 routers of 500 routes in m00); every count is at
least 1. Routers listen on HTTP 8080 and every route is an HTTP prefix route `/p<j>/` of
priority j to one or two nodes with integer weights.

Scoping has something to scope: each node has 1-5 backends (virtual services), and the first
node of every mesh (`n0000`) has exactly 5 (`SCOPED_NODE`), so a sidecar of that node
reaches 5 routers: 100 of m00's 10,000 routes at full size, 1%. Everything is a function of
(seed, scale, meshes): the same arguments give the same documents, byte for byte.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

# The size of a mesh of factor 1.0 (issue 17's largest mesh).
NODES, INSTANCES_PER_NODE, ROUTERS, ROUTES_PER_ROUTER, GATEWAYS, GATEWAY_ROUTES_PER_GATEWAY = 500, 4, 500, 20, 10, 10
# The node of every mesh that has exactly this many backends, for scoping measurements.
SCOPED_NODE, SCOPED_BACKENDS = "n0000", 5
PORT = 8080
# Kinds in the order `meshctl apply` writes them (what a document names exists before it).
KIND_ORDER = ("Mesh", "VirtualNode", "VirtualRouter", "Route", "VirtualService", "VirtualGateway", "GatewayRoute")


class Instance(NamedTuple):
    """One instance registration (RegisterInstance's fields)."""

    mesh: str
    node: str
    instance_id: str
    address: str
    port: int


@dataclass(frozen=True)
class Estate:
    """The generated estate: documents in apply order, and the instances to register."""

    documents: tuple[tuple[str, dict], ...]
    instances: tuple[Instance, ...]
    mesh_names: tuple[str, ...]

    @property
    def largest(self) -> str:
        return self.mesh_names[0]

    def counts(self, mesh: str | None = None) -> dict[str, int]:
        """Resources per kind title (plus "Instance"), of one mesh or of the whole estate."""
        c = Counter(kind for kind, doc in self.documents if mesh is None or doc["meshName"] == mesh)
        c["Instance"] = sum(1 for i in self.instances if mesh is None or i.mesh == mesh)
        return dict(c)

    def mesh_documents(self, mesh: str) -> list[tuple[str, dict]]:
        return [(kind, doc) for kind, doc in self.documents if doc["meshName"] == mesh]

    def write(self, directory: Path | str) -> Path:
        """Write the documents as JSON files, one array per (kind, mesh), named so that a
        sorted listing is in apply order; `meshctl apply -f directory` takes them."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        groups: dict[tuple[str, str], list[dict]] = {}
        for kind, doc in self.documents:
            groups.setdefault((kind, doc["meshName"]), []).append(doc)
        for (kind, mesh), docs in groups.items():
            (d / f"{KIND_ORDER.index(kind)}-{kind}-{mesh}.json").write_text(json.dumps(docs))
        return d


def _count(base: int, factor: float) -> int:
    return max(1, round(base * factor))


def _mesh(rng: random.Random, mesh: str, factor: float, octet: int) -> tuple[list[tuple[str, dict]], list[Instance]]:
    n_nodes, n_routers = _count(NODES, factor), _count(ROUTERS, factor)
    n_gateways = _count(GATEWAYS, factor)
    nodes = [f"n{i:04d}" for i in range(n_nodes)]
    services = [f"svc{i:04d}.{mesh}.local" for i in range(n_routers)]  # router r{i} provides svc{i}
    docs: list[tuple[str, dict]] = [("Mesh", {"meshName": mesh, "spec": {}})]
    instances = []
    for i, node in enumerate(nodes):
        wanted = SCOPED_BACKENDS if node == SCOPED_NODE else rng.randint(1, SCOPED_BACKENDS)
        backends = sorted(rng.sample(services, min(wanted, len(services))))
        docs.append(("VirtualNode", {"meshName": mesh, "virtualNodeName": node, "spec": {
            "listeners": [{"portMapping": {"port": PORT, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": f"{node}.{mesh}.local"}},
            "backends": [{"virtualService": {"virtualServiceName": s}} for s in backends]}}))
        for k in range(INSTANCES_PER_NODE):
            n = i * INSTANCES_PER_NODE + k
            instances.append(Instance(mesh, node, f"{node}-{k}", f"10.{octet}.{n // 250}.{n % 250 + 1}", PORT))
    for r in range(n_routers):
        docs.append(("VirtualRouter", {"meshName": mesh, "virtualRouterName": f"r{r:04d}", "spec": {
            "listeners": [{"portMapping": {"port": PORT, "protocol": "http"}}]}}))
    for r in range(n_routers):
        for j in range(ROUTES_PER_ROUTER):
            first = nodes[(r + j) % n_nodes]
            targets = [{"virtualNode": first, "weight": rng.randint(1, 50)}]  # App Mesh: weights total <= 100
            second = nodes[(r + j + 1) % n_nodes]
            if second != first and rng.random() < 0.5:
                targets.append({"virtualNode": second, "weight": rng.randint(1, 50)})
            docs.append(("Route", {"meshName": mesh, "virtualRouterName": f"r{r:04d}", "routeName": f"p{j:02d}",
                                   "spec": {"priority": j, "httpRoute": {"match": {"prefix": f"/p{j}/"},
                                                                         "action": {"weightedTargets": targets}}}}))
    for r, svc in enumerate(services):
        docs.append(("VirtualService", {"meshName": mesh, "virtualServiceName": svc, "spec": {
            "provider": {"virtualRouter": {"virtualRouterName": f"r{r:04d}"}}}}))
    for g in range(n_gateways):
        docs.append(("VirtualGateway", {"meshName": mesh, "virtualGatewayName": f"gw{g:02d}", "spec": {
            "listeners": [{"portMapping": {"port": 9080, "protocol": "http"}}]}}))
    for g in range(n_gateways):
        for j in range(GATEWAY_ROUTES_PER_GATEWAY):
            svc = services[rng.randrange(len(services))]
            docs.append(("GatewayRoute", {"meshName": mesh, "virtualGatewayName": f"gw{g:02d}",
                                          "gatewayRouteName": f"g{j:02d}", "spec": {"httpRoute": {
                                              "match": {"prefix": f"/g{j}/"},
                                              "action": {"target": {"virtualService": {"virtualServiceName": svc}}}}}}))
    return docs, instances


def generate(seed: int = 17, scale: float = 1.0, meshes: int = 20) -> Estate:
    """The estate of `meshes` meshes for `seed`, every mesh's size multiplied by `scale`."""
    if not 0 < scale <= 1.0 or not 1 <= meshes <= 250:
        raise ValueError(f"scale must be in (0, 1] and meshes in 1..250, got {scale}, {meshes}")
    rng = random.Random(seed)
    names = tuple(f"m{i:02d}" for i in range(meshes))
    factors = [1.0] + [rng.uniform(0.005, 0.05) for _ in names[1:]]
    per_mesh = [_mesh(rng, name, factor * scale, octet) for octet, (name, factor) in enumerate(zip(names, factors))]
    docs = [d for mesh_docs, _ in per_mesh for d in mesh_docs]
    # Apply order across meshes: every mesh first, then every node, and so on.
    docs.sort(key=lambda kd: KIND_ORDER.index(kd[0]))
    return Estate(tuple(docs), tuple(i for _, insts in per_mesh for i in insts), names)
