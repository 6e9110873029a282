"""Typed registry errors: each carries the data a caller needs, not prose."""
from __future__ import annotations


class RegistryError(Exception):
    """Base of every registry error. `reason` is a stable machine-readable code."""

    reason = "REGISTRY_ERROR"


class NotFound(RegistryError):
    """A path that must exist does not: the resource itself, its parent, or a reference."""

    reason = "NOT_FOUND"

    def __init__(self, path: str, *, role: str = "resource"):
        self.path = path
        self.role = role  # "resource", "parent" or "reference"
        super().__init__(f"{role} {path} not found")


class AlreadyExists(RegistryError):
    reason = "ALREADY_EXISTS"

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"{path} already exists")


class Conflict(RegistryError):
    """The stored revision is not the one the write was based on (optimistic concurrency)."""

    reason = "CONFLICT"

    def __init__(self, path: str, expected: int, actual: int):
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(f"{path}: expected revision {expected}, found {actual}")


class InUse(RegistryError):
    """A delete was refused because other resources still refer to, or live under, the path."""

    reason = "IN_USE"

    def __init__(self, path: str, referrers: list[str]):
        self.path = path
        self.referrers = referrers
        super().__init__(f"{path} is still used by {', '.join(referrers)}")


class IdempotencyMismatch(RegistryError):
    """A client token was reused with a different request body."""

    reason = "IDEMPOTENT_PARAMETER_MISMATCH"

    def __init__(self, token: str):
        self.token = token
        super().__init__(f"client token {token!r} was already used with different parameters")


class Unavailable(RegistryError):
    """etcd could not be reached, or did not answer in time."""

    reason = "ETCD_UNAVAILABLE"

    def __init__(self, endpoints: list[str], detail: str):
        self.endpoints = endpoints
        self.detail = detail
        super().__init__(f"etcd unavailable at {','.join(endpoints)}: {detail}")


class Compacted(RegistryError):
    """A watch asked for history that etcd has compacted away; resync from a full read."""

    reason = "COMPACTED"

    def __init__(self, revision: int):
        self.revision = revision
        super().__init__(f"revision compacted up to {revision}")
