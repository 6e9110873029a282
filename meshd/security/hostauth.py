"""Which certificates a meshd host may obtain: its own host identity, the identities of the
virtual nodes it has registered instances of, and of the virtual gateways it runs —
nothing else.

Instances live at `instances/<mesh>/<node>/<id>` as serialized `meshd.v1.Instance`, each
naming the `host` that registered it (and keeps its lease alive). So a host that stops
serving a node, or dies, loses the right to certificates for it when its instances go.
A virtual gateway has no instances: a host running one (its local config's `gateways:`)
claims it at `gatewayHosts/<mesh>/<gateway>/<host>`, under the same host lease, with the
same effect. Claims are internal records: the Watch stream does not carry them.
"""
from __future__ import annotations

import registry
from meshd.security import spiffe
from meshd.security.errors import PermissionDenied
from meshd.security.rbac import PERMISSIONS, Permission, Roles
from meshd.v1 import admin_pb2

_PAGE = 200


def host_runs_node(store: registry.Store, host: str, mesh: str, node: str) -> bool:
    """True when `host` registered at least one instance of virtual node `node` in `mesh`."""
    prefix = f"instances/{mesh}/{node}/"
    after = None
    while True:
        page = store.list(prefix, after=after, limit=_PAGE)
        for item in page.items:
            inst = admin_pb2.Instance()
            inst.ParseFromString(item.value)
            if inst.host == host:
                return True
        if page.next_after is None:
            return False
        after = page.next_after


GATEWAY_HOSTS = "gatewayHosts"


def _gateway_path(host: str, mesh: str, gateway: str) -> str:
    return f"{GATEWAY_HOSTS}/{mesh}/{gateway}/{host}"


def claim_gateway(store: registry.Store, lease, host: str, mesh: str, gateway: str) -> None:
    """Record, under `lease` (a meshd.lease.HostLease), that `host` runs virtual gateway
    `gateway` of `mesh`. The record is an Instance naming the host, so the host lease
    re-writes it like an instance when the lease is lost and granted again."""
    path = _gateway_path(host, mesh, gateway)
    lease_id = lease.current()
    value = admin_pb2.Instance(mesh_name=mesh, host=host, lease_id=lease_id).SerializeToString(deterministic=True)
    store.put(path, value, lease=lease_id)
    lease.hold(path, value, lease_id)


def host_runs_gateway(store: registry.Store, host: str, mesh: str, gateway: str) -> bool:
    """True while `host` holds a claim on virtual gateway `gateway` of `mesh`."""
    return store.get(_gateway_path(host, mesh, gateway)) is not None


def authorize_certificate(store: registry.Store, requester: str, identity: str, *,
                          roles: Roles | None = None) -> None:
    """Decide whether the authenticated `requester` may obtain a certificate for `identity`.

    - a host (spiffe://td/host/H) may renew its own host identity, obtain a workload
      identity of node N in mesh M only while it has an instance of N registered, and a
      gateway identity of virtual gateway G in M only while it claims G (`claim_gateway`);
    - any subject holding `issue_certificate` where the identity lives (an admin, via
      `roles`) may obtain any identity there;
    - everyone else is refused with PermissionDenied(permission="issue_certificate").
    The identity must be in the requester's trust domain.
    """
    target = spiffe.parse(identity)
    mesh = target.mesh if target.kind in spiffe.MESH_KINDS else "*"
    if roles is not None:
        role = roles.role_of(requester, mesh)
        if role is not None and Permission.ISSUE_CERTIFICATE in PERMISSIONS[role]:
            return
    who = spiffe.parse(requester) if requester.startswith("spiffe://") else None
    if who is None or who.kind != spiffe.HOST:
        raise PermissionDenied(requester, Permission.ISSUE_CERTIFICATE.value, mesh,
                               detail=f"not a host, and no role allows issuing {identity}")
    if who.trust_domain != target.trust_domain:
        raise PermissionDenied(requester, Permission.ISSUE_CERTIFICATE.value, mesh,
                               detail=f"{identity} is outside trust domain {who.trust_domain}")
    if target.kind == spiffe.HOST:
        if target.name == who.name:
            return
        raise PermissionDenied(requester, Permission.ISSUE_CERTIFICATE.value, mesh,
                               detail=f"host {who.name} may not take the identity of host {target.name}")
    if target.kind == spiffe.WORKLOAD and host_runs_node(store, who.name, target.mesh, target.node):
        return
    if target.kind == spiffe.GATEWAY and host_runs_gateway(store, who.name, target.mesh, target.name):
        return
    raise PermissionDenied(requester, Permission.ISSUE_CERTIFICATE.value, mesh,
                           detail=f"host {who.name} has no instance of {target.kind} {identity}")
