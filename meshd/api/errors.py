"""Admin API errors, and the one table that maps every error to a gRPC status.

Statuses carry a google.rpc.Status in the `grpc-status-details-bin` trailer: an ErrorInfo
with a stable `reason` (and the resources involved in its metadata) and, for invalid
input, a BadRequest listing each field violation, so clients in any language can act on
them without parsing prose.
"""
from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

import registry
from meshd.api.kinds import describe_path
from meshd.api.validate import InvalidSpec
from meshd.security import errors as sec

DOMAIN = "meshd.v1"


class ApiError(Exception):
    """Base of admin API errors raised above the registry."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def metadata(self) -> dict[str, str]:
        """The data of the error, for the ErrorInfo a client acts on."""
        return {}


class VersionConflict(ApiError):
    """An update or delete named an expected version that is no longer current."""

    code = grpc.StatusCode.ABORTED
    reason = "VERSION_CONFLICT"

    def __init__(self, resource: str, expected: int, actual: int):
        self.resource, self.expected, self.actual = resource, expected, actual
        super().__init__(f"{resource}: expected version {expected}, current version is {actual}")


class BadRequest(ApiError):
    """A request-level problem outside the spec (limit, token, missing name)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "BAD_REQUEST"

    def __init__(self, field: str, description: str):
        self.field, self.description = field, description
        super().__init__(f"{field}: {description}")


class Forbidden(ApiError):
    """A request named a mesh owner other than this cluster's account.

    App Mesh answers ForbiddenException for a mesh of another account that is not shared
    with the caller's; meshd serves one account per cluster, so no other account's mesh
    is ever shared. Distinct from RBAC's PermissionDenied (meshd.security), which is about
    the caller, not the resource.
    """

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "FORBIDDEN"

    def __init__(self, owner: str, account: str, what: str = "mesh owner"):
        self.owner, self.account = owner, account
        super().__init__(f"{what} {owner} is not this cluster's account {account}: "
                         f"meshd serves the meshes of account {account} only")

    def metadata(self) -> dict[str, str]:
        return {"owner": self.owner, "account": self.account}


class TooManyTags(ApiError):
    """A resource would carry more tags than App Mesh allows (TooManyTagsException)."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "TOO_MANY_TAGS"

    def __init__(self, count: int, limit: int):
        self.count, self.limit = count, limit
        super().__init__(f"a resource takes at most {limit} tags; this request would give it {count}; "
                         "none of its tags were applied")

    def metadata(self) -> dict[str, str]:
        return {"count": str(self.count), "limit": str(self.limit)}


class LimitExceeded(ApiError):
    """A create beyond one of the cluster's quotas (App Mesh's LimitExceededException)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "LIMIT_EXCEEDED"

    def __init__(self, quota: str, limit: int, parent: str):
        self.quota, self.limit, self.parent = quota, limit, parent
        where = f" in {describe_path(parent)}" if parent else ""
        super().__init__(f"quota {quota} is {limit}, and{where} {limit} already exist; "
                         "delete one, or raise the quota (meshd run --quota)")

    def metadata(self) -> dict[str, str]:
        return {"quota": self.quota, "limit": str(self.limit), "resource": self.parent}


class AwsIdentityMismatch(ApiError):
    """A meshd was started with a partition, region or account other than the one its
    cluster recorded when it was first started: its ARNs would name other resources."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "AWS_IDENTITY_MISMATCH"

    def __init__(self, field: str, recorded: str, requested: str):
        self.field, self.recorded, self.requested = field, recorded, requested
        super().__init__(f"this cluster's AWS {field} is {recorded!r} (recorded in etcd by its first meshd), "
                         f"but this meshd was started with {requested!r}: start it without the {field}, "
                         f"or with {recorded!r}")

    def metadata(self) -> dict[str, str]:
        return {"field": self.field, "recorded": self.recorded, "requested": self.requested}


class Claimed(ApiError):
    """A second resource of a kind that allows one per target: a second RoutePolicy of a
    route, a second NodePolicy of a node, a second unfinished Rollout of a route."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_CLAIMED"

    def __init__(self, kind: str, target: str, holder: str):
        self.kind, self.target, self.holder = kind, target, holder
        super().__init__(f"{describe_path(target)} already has {describe_path(holder)}: at most one {kind} "
                         f"may hold it at a time; update or delete that one instead")

    def metadata(self) -> dict[str, str]:
        return {"resource": self.target, "holder": self.holder, "kind": self.kind}


# registry error class -> (gRPC code, reason). The reason strings are part of the API.
_REGISTRY = {
    registry.NotFound: (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    registry.AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
    registry.Conflict: (grpc.StatusCode.ABORTED, "CONFLICT"),
    registry.InUse: (grpc.StatusCode.FAILED_PRECONDITION, "RESOURCE_IN_USE"),
    registry.IdempotencyMismatch: (grpc.StatusCode.INVALID_ARGUMENT, "IDEMPOTENT_PARAMETER_MISMATCH"),
    registry.Unavailable: (grpc.StatusCode.UNAVAILABLE, "ETCD_UNAVAILABLE"),
    registry.Compacted: (grpc.StatusCode.OUT_OF_RANGE, "COMPACTED"),
}
# meshd.security errors -> gRPC code; the reason is the error class's own `reason`.
# Unauthenticated and PermissionDenied are distinct classes and never confused.
_SECURITY = {
    sec.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    sec.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    sec.NoClusterKey: grpc.StatusCode.FAILED_PRECONDITION,
    sec.WrongClusterKey: grpc.StatusCode.FAILED_PRECONDITION,
    sec.CAInUse: grpc.StatusCode.FAILED_PRECONDITION,
    sec.NoCA: grpc.StatusCode.FAILED_PRECONDITION,
    sec.UnknownCA: grpc.StatusCode.NOT_FOUND,
    sec.CAExists: grpc.StatusCode.ALREADY_EXISTS,
    sec.InvalidCA: grpc.StatusCode.INVALID_ARGUMENT,
    sec.InvalidCSR: grpc.StatusCode.INVALID_ARGUMENT,
    sec.InvalidIdentity: grpc.StatusCode.INVALID_ARGUMENT,
    sec.InvalidTtl: grpc.StatusCode.INVALID_ARGUMENT,
    sec.UnsupportedSource: grpc.StatusCode.INVALID_ARGUMENT,
    sec.UnknownRole: grpc.StatusCode.INVALID_ARGUMENT,
    sec.UnknownPermission: grpc.StatusCode.INVALID_ARGUMENT,
    sec.DecryptionFailed: grpc.StatusCode.INTERNAL,
    sec.ClusterKeyError: grpc.StatusCode.FAILED_PRECONDITION,
}


def _message(err: Exception) -> tuple[str, dict[str, str]]:
    """Human message and ErrorInfo metadata for an error."""
    if isinstance(err, registry.NotFound):
        return f"{describe_path(err.path)} not found", {"resource": err.path, "role": err.role}
    if isinstance(err, registry.AlreadyExists):
        return f"{describe_path(err.path)} already exists", {"resource": err.path}
    if isinstance(err, registry.InUse):
        users = ", ".join(describe_path(p) for p in err.referrers)
        return (f"{describe_path(err.path)} is still in use by: {users}",
                {"resource": err.path, "referrers": ",".join(err.referrers)})
    if isinstance(err, registry.Unavailable):
        return (f"etcd is unavailable ({err.detail}); the write was not applied, retry later",
                {"endpoints": ",".join(err.endpoints)})
    if isinstance(err, VersionConflict):
        return str(err), {"expected": str(err.expected), "actual": str(err.actual)}
    if isinstance(err, InvalidSpec):
        return "invalid request: " + "; ".join(f"{v.field}: {v.description}" for v in err.violations), {}
    if isinstance(err, sec.PermissionDenied):
        return str(err), {"subject": err.subject, "permission": err.permission, "mesh": err.mesh}
    if isinstance(err, ApiError):
        return str(err), err.metadata()
    return str(err), {}


def classify(err: Exception) -> tuple[grpc.StatusCode, str]:
    """An error's gRPC code and its stable reason (the ErrorInfo reason): the one table the
    gRPC statuses and the App Mesh REST errors (meshd.awsapi) are both chosen by."""
    if isinstance(err, InvalidSpec):
        return grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SPEC"
    if isinstance(err, ApiError):
        return err.code, err.reason
    if isinstance(err, sec.SecurityError):
        return next((c for cls, c in _SECURITY.items() if isinstance(err, cls)), grpc.StatusCode.INTERNAL), err.reason
    for cls, (c, r) in _REGISTRY.items():
        if isinstance(err, cls):
            return c, r
    return grpc.StatusCode.INTERNAL, "INTERNAL"


def error_message(err: Exception) -> str:
    """The human message of an error, as its status carries it."""
    return _message(err)[0]


def to_status(err: Exception) -> tuple[grpc.StatusCode, str, status_pb2.Status]:
    """The single mapping from an error to (code, message, rich status)."""
    code, reason = classify(err)
    message, meta = _message(err)
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=meta))
    details.append(info)
    violations = []
    if isinstance(err, InvalidSpec):
        violations = [(v.field, v.description) for v in err.violations]
    elif isinstance(err, BadRequest):
        violations = [(err.field, err.description)]
    if violations:
        br = any_pb2.Any()
        br.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations]))
        details.append(br)
    rich = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return code, message, rich
