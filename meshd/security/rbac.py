"""Role-based access for the admin API: role bindings per mesh or cluster-wide, in etcd.

Roles nest (viewer ⊂ editor ⊂ admin). A binding in mesh A grants nothing in mesh B; a
binding in "*" (cluster-wide) applies in every mesh and is the only kind that satisfies a
cluster-level check (mesh="*"). Store layout:

    roles/<mesh or *>/<subject, percent-encoded>    JSON: subject, role, granted_by/at

A subject is the SPIFFE ID of an mTLS client certificate or an API token's principal name.
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Callable
from urllib.parse import quote

import registry
from meshd.security import spiffe
from meshd.security.certs import utcnow
from meshd.security.errors import (
    InvalidIdentity,
    PermissionDenied,
    Unauthenticated,
    UnknownPermission,
    UnknownRole,
)
from meshd.security.tokens import PRINCIPAL

CLUSTER = "*"


class Permission(str, enum.Enum):
    """What an admin API call needs; the API maps each RPC to exactly one."""

    DESCRIBE = "describe"
    LIST = "list"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    MANAGE_CA = "manage_ca"
    MANAGE_TOKENS = "manage_tokens"
    MANAGE_ROLES = "manage_roles"
    ISSUE_CERTIFICATE = "issue_certificate"
    VIEW_AUDIT = "view_audit"


class Role(str, enum.Enum):
    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"


_VIEWER = frozenset({Permission.DESCRIBE, Permission.LIST})
_EDITOR = _VIEWER | {Permission.CREATE, Permission.UPDATE, Permission.DELETE}
# issue_certificate sits with admin: signing an arbitrary identity is CA management. Hosts
# obtain their own certificates through meshd.security.hostauth, not through a role.
_ADMIN = _EDITOR | {Permission.MANAGE_CA, Permission.MANAGE_TOKENS, Permission.MANAGE_ROLES,
                    Permission.ISSUE_CERTIFICATE, Permission.VIEW_AUDIT}
PERMISSIONS: dict[Role, frozenset[Permission]] = {Role.VIEWER: _VIEWER, Role.EDITOR: _EDITOR, Role.ADMIN: _ADMIN}
_RANK = {Role.VIEWER: 1, Role.EDITOR: 2, Role.ADMIN: 3}


@dataclass(frozen=True)
class Binding:
    subject: str
    role: Role
    mesh: str  # a mesh name or CLUSTER
    granted_by: str
    granted_at: datetime


def _role(role: str | Role) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise UnknownRole(str(role)) from None


def _permission(permission: str | Permission) -> Permission:
    try:
        return Permission(permission)
    except ValueError:
        raise UnknownPermission(str(permission)) from None


def check_subject(subject: str) -> str:
    """A subject is a meshd SPIFFE ID or a principal name; anything else is refused."""
    if subject.startswith("spiffe://"):
        spiffe.parse(subject)
    elif not PRINCIPAL.fullmatch(subject):
        raise InvalidIdentity(subject, "neither a SPIFFE ID nor a principal name")
    return subject


def _path(mesh: str, subject: str) -> str:
    return f"roles/{mesh}/{quote(subject, safe='')}"


class Roles:
    """Grants, revokes and checks role bindings."""

    def __init__(self, store: registry.Store, *, clock: Callable[[], datetime] = utcnow):
        self.store = store
        self.clock = clock

    def grant(self, subject: str, role: str | Role, mesh: str = CLUSTER, *, granted_by: str = "",
              now: datetime | None = None) -> Binding:
        """Bind `subject` to `role` in `mesh` (replacing its previous role there)."""
        now = now or self.clock()
        b = Binding(check_subject(subject), _role(role), mesh, granted_by, now)
        revision = self.store.put(_path(mesh, subject), json.dumps({
            "subject": b.subject, "role": b.role.value, "mesh": mesh,
            "granted_by": granted_by, "granted_at": now.isoformat()}).encode())
        self._wrote(mesh, b.subject, revision)
        return b

    def revoke(self, subject: str, mesh: str = CLUSTER) -> bool:
        """Remove `subject`'s binding in `mesh`; True when there was one."""
        revision = self.store.remove(_path(mesh, subject))
        if revision:
            self._wrote(mesh, subject, revision)
        return revision > 0

    def _wrote(self, mesh: str, subject: str, revision: int) -> None:
        """Called with the etcd revision of each binding this object wrote (a hook for
        copies of the bindings that must see their own writes)."""

    def bindings(self, mesh: str | None = None, subject: str | None = None) -> list[Binding]:
        """Bindings in one mesh (or all, mesh=None), optionally of one subject."""
        items, _ = self.store.scan(f"roles/{mesh}/" if mesh is not None else "roles/")
        out = [self._binding(i.value) for i in items]
        return [b for b in out if subject is None or b.subject == subject]

    def role_of(self, subject: str, mesh: str) -> Role | None:
        """The strongest role `subject` holds in `mesh`: its binding there or a cluster-wide one."""
        scopes = (CLUSTER,) if mesh == CLUSTER else (mesh, CLUSTER)
        best = None
        for scope in scopes:
            item = self.store.get(_path(scope, subject))
            if item is not None:
                role = self._binding(item.value).role
                if best is None or _RANK[role] > _RANK[best]:
                    best = role
        return best

    def authorize(self, subject: str | None, permission: str | Permission, mesh: str) -> Role:
        """Allow `subject` to use `permission` in `mesh`, or raise.

        No subject → Unauthenticated (the caller proved nothing). A subject without the
        permission → PermissionDenied naming it. An unknown permission is a programming
        error (UnknownPermission), checked before anything else so it never reads as a denial.
        """
        return self._decide(subject, permission, mesh, self.role_of)

    @staticmethod
    def _decide(subject: str | None, permission: str | Permission, mesh: str,
                role_of: Callable[[str, str], Role | None]) -> Role:
        perm = _permission(permission)
        if not subject:
            raise Unauthenticated("no authenticated subject")
        role = role_of(subject, mesh)
        if role is None or perm not in PERMISSIONS[role]:
            raise PermissionDenied(subject, perm.value, mesh, role.value if role else None)
        return role

    @staticmethod
    def _binding(raw: bytes) -> Binding:
        doc = json.loads(raw)
        return Binding(doc["subject"], Role(doc["role"]), doc["mesh"], doc.get("granted_by", ""),
                       datetime.fromisoformat(doc["granted_at"]))


def permissions_of(role: str | Role) -> frozenset[Permission]:
    return PERMISSIONS[_role(role)]
