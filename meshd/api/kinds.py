"""The resource kinds of App Mesh's model: their messages, store paths and references.

This one table is the only place that knows how a kind is named, where it lives in the
store, what must exist before it can be written, and what it refers to. The admin service
is written once against it.

Store layout (relative to the registry prefix, `/meshd/v1/` by default); every kind has a
collection of its own so a List is one key-ordered range:

    meshes/<mesh>
    virtualNodes/<mesh>/<node>          virtualServices/<mesh>/<service>
    virtualRouters/<mesh>/<router>      routes/<mesh>/<router>/<route>
    virtualGateways/<mesh>/<gateway>    gatewayRoutes/<mesh>/<gateway>/<gatewayRoute>
    routePolicies/<mesh>/<policy>       nodePolicies/<mesh>/<policy>      (meshd.v1 beyond App Mesh)
    rollouts/<mesh>/<rollout>
    instances/<mesh>/<node>/<instanceId>
    hosts/<hostName>                    (each meshd's own record, under its host lease)
    tags/<resource path>                refs/<target path>|<referrer path>
    claims/<collection>/<target path>|<claimant path>   (one claimant per target and kind)
    cluster/aws-identity                (the partition, region and account of every ARN)

ARNs are App Mesh's, computed from a resource's ids whenever it is read:

    arn:<partition>:appmesh:<region>:<account>:mesh/<mesh>/virtualRouter/<router>/route/<route>

The kinds meshd adds beyond App Mesh's model (RoutePolicy, NodePolicy, Rollout) follow the
same conventions, with ARNs of the same form (mesh/<mesh>/routePolicy/<policy>). App Mesh
has no such kinds, so its REST API, CloudFormation and controller exports leave them out
(`APPMESH_KINDS`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

from meshd.v1 import admin_pb2, spec_pb2


@dataclass(frozen=True)
class Kind:
    """One resource kind: names, protobuf classes and store rules."""

    name: str  # App Mesh's camelCase kind, e.g. "virtualNode"
    title: str  # "VirtualNode", as in CreateVirtualNode
    plural_title: str  # "VirtualNodes", as in ListVirtualNodes
    collection: str  # store collection, e.g. "virtualNodes"
    field: str  # snake_case field holding the data in responses, e.g. "virtual_node"
    list_field: str  # e.g. "virtual_nodes"
    parents: tuple[str, ...]  # snake_case id fields above the name, e.g. ("mesh_name",)
    name_field: str  # e.g. "virtual_node_name"
    data_cls: type
    ref_cls: type
    spec_cls: type
    status_cls: type
    arn_segment: str  # App Mesh ARN segment, e.g. "virtualNode"
    # App Mesh's Create and Update inputs require a spec for every kind but the mesh.
    spec_required: bool = True
    # Store paths of the resources this resource's spec refers to.
    references: Callable[[str, object], list[str]] = field(default=lambda mesh, spec: [])
    # Store paths this resource holds exclusively among its kind (RoutePolicy: its route),
    # from (mesh, data): a Rollout holds its route only while it is not finished.
    claims: Callable[[str, object], list[str]] = field(default=lambda mesh, data: [])

    @property
    def id_fields(self) -> tuple[str, ...]:
        return (*self.parents, self.name_field)

    def ids(self, msg) -> tuple[str, ...]:
        return tuple(getattr(msg, f) for f in self.id_fields)

    def path(self, ids: Iterable[str]) -> str:
        return "/".join((self.collection, *ids))

    def list_prefix(self, parent_ids: Iterable[str]) -> str:
        return "/".join((self.collection, *parent_ids, ""))

    def parent_paths(self, ids: tuple[str, ...]) -> list[tuple[str, str]]:
        """Paths that must exist before this resource can be written."""
        if not self.parents:
            return []
        needs = [(f"meshes/{ids[0]}", "mesh")]
        if len(self.parents) == 2:
            parent_kind = BY_ID_FIELD[self.parents[1]]
            needs.append((parent_kind.path(ids[:2]), parent_kind.name))
        return needs

    @property
    def quota(self) -> str:
        """App Mesh's name for the quota on how many of this kind one parent holds:
        "meshes" (per account), "virtualNodesPerMesh", "routesPerVirtualRouter"..."""
        if not self.parents:
            return self.collection
        return f"{self.collection}Per{BY_ID_FIELD[self.parents[-1]].title}"

    def arn(self, ids: tuple[str, ...], *, partition: str, region: str, account: str) -> str:
        """App Mesh's ARN: arn:aws:appmesh:<region>:<account>:mesh/<mesh>/virtualRouter/<r>/route/<n>."""
        segs = ["mesh", ids[0]]
        if len(ids) == 3:
            segs += [BY_ID_FIELD[self.parents[1]].arn_segment, ids[1]]
        if self.name != "mesh":
            segs += [self.arn_segment, ids[-1]]
        return f"arn:{partition}:appmesh:{region}:{account}:" + "/".join(segs)


class Arn(NamedTuple):
    """A parsed App Mesh ARN. `partition` is "meshd" for the form meshd wrote before it
    used AWS's (arn:meshd:appmesh:<cluster>:<owner>:...), whose region and account are not
    AWS's and are not checked."""

    partition: str
    region: str
    account: str
    kind: Kind
    ids: tuple[str, ...]


_ARN = re.compile(r"^arn:([^:]+):appmesh:([^:]*):([^:]*):mesh/(.+)$")


def parse_arn(arn: str) -> Arn:
    """Split an App Mesh resource ARN; ValueError says what is wrong with it."""
    m = _ARN.match(arn or "")
    if not m:
        raise ValueError(f"not an App Mesh resource ARN (arn:<partition>:appmesh:<region>:<account>:mesh/...): "
                         f"{arn!r}")
    partition, region, account, resource = m.groups()
    segs = resource.split("/")
    kind, ids, rest = MESH, [segs[0]], segs[1:]
    if len(rest) % 2 or len(rest) > 4:
        raise ValueError(f"malformed resource path in {arn!r}")
    for i in range(0, len(rest), 2):
        # The kind under a mesh, then (for routes and gateway routes) under its parent.
        child = BY_ARN_SEGMENT.get(rest[i])
        if child is None or child.parents != kind.id_fields:
            raise ValueError(f"unknown resource type {rest[i]!r} under {kind.name} in {arn!r}")
        kind = child
        ids.append(rest[i + 1])
    return Arn(partition, region, account, kind, tuple(ids))


def _get(msg, *names):
    """Walk snake_case fields, returning None as soon as a message field is unset."""
    for n in names:
        if msg is None:
            return None
        desc = msg.DESCRIPTOR.fields_by_name.get(n)
        if desc is None:
            return None
        if desc.message_type is not None and not desc.is_repeated and not msg.HasField(n):
            return None
        msg = getattr(msg, n)
    return msg


def _service_refs(mesh: str, spec) -> list[str]:
    node = _get(spec, "provider", "virtual_node", "virtual_node_name")
    router = _get(spec, "provider", "virtual_router", "virtual_router_name")
    out = []
    if node:
        out.append(f"virtualNodes/{mesh}/{node}")
    if router:
        out.append(f"virtualRouters/{mesh}/{router}")
    return out


ROUTE_KINDS = ("http_route", "http2_route", "grpc_route", "tcp_route")


def _route_refs(mesh: str, spec) -> list[str]:
    out = []
    for rk in ROUTE_KINDS:
        targets = _get(spec, rk, "action", "weighted_targets")
        for t in targets or ():
            path = f"virtualNodes/{mesh}/{t.virtual_node}"
            if path not in out:
                out.append(path)
    return out


def _gateway_route_refs(mesh: str, spec) -> list[str]:
    out = []
    for rk in ("http_route", "http2_route", "grpc_route"):
        svc = _get(spec, rk, "action", "target", "virtual_service", "virtual_service_name")
        if svc:
            out.append(f"virtualServices/{mesh}/{svc}")
    return out


def route_reference(mesh: str, spec) -> list[str]:
    """The store path of the route a policy or rollout spec names, if it names one."""
    router = _get(spec, "route", "virtual_router_name")
    route = _get(spec, "route", "route_name")
    return [f"routes/{mesh}/{router}/{route}"] if router and route else []


def _node_paths(mesh: str, names) -> list[str]:
    return list(dict.fromkeys(f"virtualNodes/{mesh}/{n}" for n in names if n))


def _route_policy_refs(mesh: str, spec) -> list[str]:
    return route_reference(mesh, spec) + _node_paths(mesh, [_get(spec, "mirror", "virtual_node")])


def _node_policy_refs(mesh: str, spec) -> list[str]:
    return _node_paths(mesh, [_get(spec, "virtual_node_name")])


def _rollout_refs(mesh: str, spec) -> list[str]:
    return route_reference(mesh, spec) + _node_paths(
        mesh, [_get(spec, "stable", "virtual_node"), _get(spec, "canary", "virtual_node")])


# A rollout in one of these phases is over: its controller no longer writes the route, so
# another rollout of the same route may start.
FINISHED_PHASES = ("PROMOTED", "ROLLED_BACK", "ABORTED")


def _rollout_claims(mesh: str, data) -> list[str]:
    return [] if data.status.phase in FINISHED_PHASES else route_reference(mesh, data.spec)


def _kind(name, title, plural, collection, parents, refs=None, arn_segment=None, claims=None) -> Kind:
    snake = "".join("_" + c.lower() if c.isupper() else c for c in name)
    return Kind(
        name=name, title=title, plural_title=plural, collection=collection, field=snake,
        list_field="meshes" if name == "mesh" else snake + "s", parents=parents,
        name_field=snake + "_name",
        data_cls=getattr(admin_pb2, title + "Data"), ref_cls=getattr(admin_pb2, title + "Ref"),
        spec_cls=getattr(spec_pb2, title + "Spec"), status_cls=getattr(spec_pb2, title + "Status"),
        arn_segment=arn_segment or name, spec_required=name != "mesh",
        references=refs or (lambda mesh, spec: []), claims=claims or (lambda mesh, data: []),
    )


MESH = _kind("mesh", "Mesh", "Meshes", "meshes", ())
VIRTUAL_NODE = _kind("virtualNode", "VirtualNode", "VirtualNodes", "virtualNodes", ("mesh_name",))
VIRTUAL_SERVICE = _kind("virtualService", "VirtualService", "VirtualServices", "virtualServices",
                        ("mesh_name",), _service_refs)
VIRTUAL_ROUTER = _kind("virtualRouter", "VirtualRouter", "VirtualRouters", "virtualRouters", ("mesh_name",))
ROUTE = _kind("route", "Route", "Routes", "routes", ("mesh_name", "virtual_router_name"), _route_refs)
VIRTUAL_GATEWAY = _kind("virtualGateway", "VirtualGateway", "VirtualGateways", "virtualGateways", ("mesh_name",))
GATEWAY_ROUTE = _kind("gatewayRoute", "GatewayRoute", "GatewayRoutes", "gatewayRoutes",
                      ("mesh_name", "virtual_gateway_name"), _gateway_route_refs)

# meshd.v1 kinds beyond App Mesh. "Policys" is the RPC names' spelling (ListRoutePolicys).
# At most one RoutePolicy per route and one NodePolicy per node: two would leave the router
# to pick between their faults or limits.
ROUTE_POLICY = _kind("routePolicy", "RoutePolicy", "RoutePolicys", "routePolicies", ("mesh_name",),
                     _route_policy_refs, claims=lambda mesh, data: route_reference(mesh, data.spec))
NODE_POLICY = _kind("nodePolicy", "NodePolicy", "NodePolicys", "nodePolicies", ("mesh_name",),
                    _node_policy_refs, claims=lambda mesh, data: _node_policy_refs(mesh, data.spec))
ROLLOUT = _kind("rollout", "Rollout", "Rollouts", "rollouts", ("mesh_name",), _rollout_refs,
                claims=_rollout_claims)

APPMESH_KINDS: tuple[Kind, ...] = (MESH, VIRTUAL_NODE, VIRTUAL_SERVICE, VIRTUAL_ROUTER, ROUTE,
                                   VIRTUAL_GATEWAY, GATEWAY_ROUTE)
BEYOND_KINDS: tuple[Kind, ...] = (ROUTE_POLICY, NODE_POLICY, ROLLOUT)
# Every kind the admin API serves, watches, snapshots and authorizes.
KINDS: tuple[Kind, ...] = APPMESH_KINDS + BEYOND_KINDS
BY_NAME = {k.name: k for k in KINDS}
BY_COLLECTION = {k.collection: k for k in KINDS}
BY_ID_FIELD = {k.name_field: k for k in KINDS}
BY_TITLE = {k.title: k for k in KINDS}
BY_ARN_SEGMENT = {k.arn_segment: k for k in KINDS}
INSTANCES = "instances"
HOSTS = "hosts"
CLAIMS = "claims"


def claim_prefix(kind: Kind, target: str) -> str:
    """The keys under which resources of `kind` claim `target`; at most one holds it."""
    return f"{CLAIMS}/{kind.collection}/{target}|"


def claim_key(kind: Kind, target: str, claimant: str) -> str:
    return claim_prefix(kind, target) + claimant


def children_of(kind: Kind, ids: tuple[str, ...]) -> list[str]:
    """Collections that must be empty before the resource at `ids` can be deleted.

    App Mesh: a mesh can't be deleted while it has resources; a router while it has
    routes; a gateway while it has gateway routes. meshd adds: a virtual node while
    instances are registered to it.
    """
    if kind is MESH:
        return [f"{k.collection}/{ids[0]}/" for k in KINDS if k is not MESH] + [f"{INSTANCES}/{ids[0]}/"]
    if kind is VIRTUAL_ROUTER:
        return [ROUTE.list_prefix(ids)]
    if kind is VIRTUAL_GATEWAY:
        return [GATEWAY_ROUTE.list_prefix(ids)]
    if kind is VIRTUAL_NODE:
        return [f"{INSTANCES}/{ids[0]}/{ids[1]}/"]
    return []


def describe_path(path: str) -> str:
    """A store path in words, for error messages: 'virtualNode web in mesh shop'."""
    parts = path.rstrip("/").split("/")
    coll, ids = parts[0], parts[1:]
    if coll == INSTANCES and len(ids) == 3:
        return f"instance {ids[2]} of virtualNode {ids[1]} in mesh {ids[0]}"
    kind = BY_COLLECTION.get(coll)
    if kind is None or not ids:
        return path
    if kind is MESH:
        return f"mesh {ids[0]}"
    if len(ids) == 3:
        parent = BY_ID_FIELD[kind.parents[1]]
        return f"{kind.name} {ids[2]} of {parent.name} {ids[1]} in mesh {ids[0]}"
    if len(ids) == 2:
        return f"{kind.name} {ids[1]} in mesh {ids[0]}"
    return f"{kind.name} in mesh {ids[0]}"
