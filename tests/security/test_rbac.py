"""Role bindings on real etcd: every role × every permission across two meshes and the
cluster scope, and denials never confused with missing authentication."""
from __future__ import annotations

import itertools

import pytest

from meshd.security.errors import (
    InvalidIdentity,
    PermissionDenied,
    Unauthenticated,
    UnknownPermission,
    UnknownRole,
)
from meshd.security.rbac import PERMISSIONS, Permission, Role, Roles

pytestmark = [pytest.mark.identity, pytest.mark.etcd]

MESHES = ("mesh-a", "mesh-b")
# What each role may do, written out by hand from the issue (not derived from the code
# under test): viewer reads, editor also writes resources, admin also manages security.
EXPECTED = {
    "viewer": {"describe", "list"},
    "editor": {"describe", "list", "create", "update", "delete"},
    "admin": {"describe", "list", "create", "update", "delete", "manage_ca", "manage_tokens",
              "manage_roles", "issue_certificate", "view_audit"},
}
ALL = sorted(EXPECTED["admin"])


def test_permission_table_is_the_documented_one():
    assert {r.value: {p.value for p in ps} for r, ps in PERMISSIONS.items()} == EXPECTED
    assert {p.value for p in Permission} == set(ALL)
    assert EXPECTED["viewer"] < EXPECTED["editor"] < EXPECTED["admin"]


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_matrix_role_in_one_mesh(store, role):
    """A subject bound in mesh-a: allowed exactly its permissions there, nothing in mesh-b
    nor cluster-wide."""
    roles = Roles(store)
    subject = f"spiffe://meshd.local/user/{role}-person"
    roles.grant(subject, role, "mesh-a")
    for perm, mesh in itertools.product(ALL, (*MESHES, "*")):
        allowed = mesh == "mesh-a" and perm in EXPECTED[role]
        if allowed:
            assert roles.authorize(subject, perm, mesh) == Role(role)
        else:
            with pytest.raises(PermissionDenied) as err:
                roles.authorize(subject, perm, mesh)
            assert (err.value.permission, err.value.mesh, err.value.subject) == (perm, mesh, subject)
            assert err.value.role == (role if mesh == "mesh-a" else None)
            assert perm in str(err.value)


@pytest.mark.parametrize("role", sorted(EXPECTED))
def test_matrix_cluster_wide_role(store, role):
    roles = Roles(store)
    roles.grant("ops-bot", role)  # "*" by default
    for perm, mesh in itertools.product(ALL, (*MESHES, "*")):
        if perm in EXPECTED[role]:
            assert roles.authorize("ops-bot", perm, mesh) == Role(role)
        else:
            with pytest.raises(PermissionDenied):
                roles.authorize("ops-bot", perm, mesh)


def test_strongest_binding_wins_and_mesh_bindings_do_not_leak(store):
    roles = Roles(store)
    roles.grant("dana", "viewer")  # cluster-wide viewer
    roles.grant("dana", "admin", "mesh-a")
    assert roles.authorize("dana", "manage_ca", "mesh-a") == Role.ADMIN
    assert roles.authorize("dana", "list", "mesh-b") == Role.VIEWER
    with pytest.raises(PermissionDenied) as err:
        roles.authorize("dana", "create", "mesh-b")
    assert err.value.role == "viewer"
    with pytest.raises(PermissionDenied):  # a mesh admin is not a cluster admin
        roles.authorize("dana", "manage_roles", "*")


def test_grant_replaces_and_revoke_removes(store):
    roles = Roles(store)
    roles.grant("erin", "admin", "mesh-a", granted_by="root")
    roles.grant("erin", "viewer", "mesh-a")
    assert [(b.subject, b.role, b.mesh) for b in roles.bindings("mesh-a")] == [("erin", Role.VIEWER, "mesh-a")]
    with pytest.raises(PermissionDenied):
        roles.authorize("erin", "delete", "mesh-a")
    assert roles.revoke("erin", "mesh-a")
    assert not roles.revoke("erin", "mesh-a")
    with pytest.raises(PermissionDenied) as err:
        roles.authorize("erin", "describe", "mesh-a")
    assert err.value.role is None


def test_bindings_listing_by_subject_across_meshes(store):
    roles = Roles(store)
    sid = "spiffe://meshd.local/mesh/mesh-a/virtualNode/web"
    roles.grant(sid, "viewer", "mesh-a")
    roles.grant(sid, "editor", "mesh-b")
    roles.grant("other", "admin")
    assert sorted((b.mesh, b.role.value) for b in roles.bindings(subject=sid)) == [("mesh-a", "viewer"), ("mesh-b", "editor")]


def test_unauthenticated_is_never_a_permission_denial(store):
    roles = Roles(store)
    for nobody in (None, ""):
        with pytest.raises(Unauthenticated) as err:
            roles.authorize(nobody, "describe", "mesh-a")
        assert not isinstance(err.value, PermissionDenied)
    assert not issubclass(PermissionDenied, Unauthenticated)
    assert not issubclass(Unauthenticated, PermissionDenied)
    with pytest.raises(PermissionDenied) as err:
        roles.authorize("stranger", "describe", "mesh-a")
    assert not isinstance(err.value, Unauthenticated)


def test_unknown_names_are_errors_not_denials(store):
    roles = Roles(store)
    with pytest.raises(UnknownPermission):
        roles.authorize("x", "launch_missiles", "mesh-a")
    with pytest.raises(UnknownRole):
        roles.grant("x", "owner", "mesh-a")
    with pytest.raises(InvalidIdentity):
        roles.grant("not a/subject", "viewer")
    with pytest.raises(InvalidIdentity):
        roles.grant("spiffe://meshd.local/nonsense", "viewer")


def test_watched_copy_never_refuses_a_grant_made_elsewhere_and_sees_its_own_revoke(store):
    """The API's watched copy of the bindings (meshd.api.auth.WatchedRoles): a grant written
    by another meshd allows at once (a refusal is confirmed in etcd, however far behind the
    watch is), and a revoke made through the copy refuses the very next check."""
    from meshd.api.auth import WatchedRoles  # noqa: PLC0415

    roles, elsewhere = WatchedRoles(store), Roles(store)
    try:
        roles.grant("vic", "viewer", "mesh-a")
        assert roles.authorize("vic", "describe", "mesh-a") is Role.VIEWER
        for _ in range(20):
            elsewhere.grant("vic", "editor", "mesh-a")
            assert roles.authorize("vic", "create", "mesh-a") is Role.EDITOR
            assert roles.revoke("vic", "mesh-a")
            with pytest.raises(PermissionDenied):
                roles.authorize("vic", "describe", "mesh-a")
    finally:
        roles.close()
