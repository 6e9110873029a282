"""Typed security errors: one base, and subclasses that carry the data a caller maps on.

The admin API maps them in one table: `Unauthenticated` → UNAUTHENTICATED,
`PermissionDenied` → PERMISSION_DENIED, `NoClusterKey` → FAILED_PRECONDITION, the CA and
CSR errors → INVALID_ARGUMENT / FAILED_PRECONDITION. `Unauthenticated` and
`PermissionDenied` are siblings, never one a subclass of the other, so a handler catching
one can never swallow the other.
"""
from __future__ import annotations

from datetime import datetime


class SecurityError(Exception):
    """Base of every security error. `reason` is a stable machine-readable code."""

    reason = "SECURITY_ERROR"


# -- cluster key ------------------------------------------------------------------------
class ClusterKeyError(SecurityError):
    reason = "CLUSTER_KEY_ERROR"


class NoClusterKey(ClusterKeyError):
    """This meshd has no cluster key file, so it cannot open CA keys nor sign."""

    reason = "NO_CLUSTER_KEY"

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"this meshd cannot sign: no cluster key at {path}")


class ClusterKeyInvalid(ClusterKeyError):
    """The key file exists but is unusable: wrong format/length, or readable by others."""

    reason = "CLUSTER_KEY_INVALID"

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem  # "format", "length", "permissions", "exists"
        super().__init__(f"cluster key at {path}: {problem}")


class WrongClusterKey(ClusterKeyError):
    """A sealed value was made under another cluster key (key ids differ)."""

    reason = "WRONG_CLUSTER_KEY"

    def __init__(self, path: str, sealed_key_id: str, have_key_id: str):
        self.path = path
        self.sealed_key_id = sealed_key_id
        self.have_key_id = have_key_id
        super().__init__(f"{path} was sealed under cluster key {sealed_key_id}, this meshd has {have_key_id}")


class DecryptionFailed(ClusterKeyError):
    """Authentication of a sealed value failed: tampered, truncated, or moved to another path."""

    reason = "DECRYPTION_FAILED"

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"sealed value at {path} does not authenticate under this cluster key and path")


# -- CA and issuance --------------------------------------------------------------------
class CAError(SecurityError):
    reason = "CA_ERROR"


class NoCA(CAError):
    """The mesh (or the cluster scope "*") has no CA yet."""

    reason = "NO_CA"

    def __init__(self, mesh: str):
        self.mesh = mesh
        super().__init__(f"mesh {mesh!r} has no CA")


class CAExists(CAError):
    reason = "CA_EXISTS"

    def __init__(self, mesh: str):
        self.mesh = mesh
        super().__init__(f"mesh {mesh!r} already has a CA")


class UnknownCA(CAError):
    reason = "UNKNOWN_CA"

    def __init__(self, mesh: str, ca_id: str):
        self.mesh = mesh
        self.ca_id = ca_id
        super().__init__(f"mesh {mesh!r} has no CA {ca_id!r}")


class CAInUse(CAError):
    """Retiring the CA that signs, or the last trusted CA, would break the mesh."""

    reason = "CA_IN_USE"

    def __init__(self, mesh: str, ca_id: str, why: str):
        self.mesh = mesh
        self.ca_id = ca_id
        self.why = why  # "signing" or "last"
        super().__init__(f"CA {ca_id} of mesh {mesh!r} cannot be retired: it is the {why} CA")


class InvalidCA(CAError):
    """An imported CA was refused; `problem` is a stable code, `detail` says more."""

    reason = "INVALID_CA"

    def __init__(self, problem: str, detail: str = ""):
        self.problem = problem  # "not_ca", "key_mismatch", "expired", "not_yet_valid", "parse", "chain", "key_type"
        self.detail = detail
        super().__init__(f"CA refused: {problem}" + (f" ({detail})" if detail else ""))


class InvalidCSR(SecurityError):
    reason = "INVALID_CSR"

    def __init__(self, problem: str, detail: str = ""):
        self.problem = problem  # "parse", "signature", "key_type"
        self.detail = detail
        super().__init__(f"CSR refused: {problem}" + (f" ({detail})" if detail else ""))


class CSRIdentityMismatch(InvalidCSR):
    """The CSR asks for names other than the identity the caller is authorized for."""

    reason = "CSR_IDENTITY_MISMATCH"

    def __init__(self, authorized: str, requested: list[str]):
        self.authorized = authorized
        self.requested = requested
        super().__init__("identity", f"requests {requested}, authorized identity is {authorized}")


class InvalidIdentity(SecurityError):
    """A SPIFFE ID that is malformed, or outside the trust domain / mesh of the signing CA."""

    reason = "INVALID_IDENTITY"

    def __init__(self, identity: str, problem: str):
        self.identity = identity
        self.problem = problem
        super().__init__(f"identity {identity!r}: {problem}")


class InvalidTtl(SecurityError):
    reason = "INVALID_TTL"

    def __init__(self, seconds: float, maximum: float):
        self.seconds = seconds
        self.maximum = maximum
        super().__init__(f"ttl {seconds}s is outside 1..{maximum}s")


# -- TLS --------------------------------------------------------------------------------
class UnsupportedSource(SecurityError):
    """An App Mesh certificate source or trust meshd does not serve (acm, sds)."""

    reason = "UNSUPPORTED_SOURCE"

    def __init__(self, source: str, field: str = ""):
        self.source = source
        self.field = field
        where = f"{field}: " if field else ""
        super().__init__(f"{where}{source} certificate source is not supported here, use file or the mesh CA")


class TlsConfigError(SecurityError):
    """Certificates, key or trust could not be loaded into a TLS context."""

    reason = "TLS_CONFIG"

    def __init__(self, what: str, detail: str):
        self.what = what
        self.detail = detail
        super().__init__(f"cannot load {what}: {detail}")


# -- authentication ---------------------------------------------------------------------
class Unauthenticated(SecurityError):
    """The caller proved no identity, or the proof was refused. Never a PermissionDenied."""

    reason = "UNAUTHENTICATED"


class PeerIdentityRejected(Unauthenticated):
    """A TLS peer's SPIFFE ID is missing or matches none of the allowed patterns."""

    reason = "PEER_IDENTITY_REJECTED"

    def __init__(self, identity: str | None, allowed: tuple[str, ...]):
        self.identity = identity
        self.allowed = allowed
        super().__init__(f"peer identity {identity!r} matches none of {list(allowed)}")


class TokenError(Unauthenticated):
    reason = "TOKEN_ERROR"


class TokenForged(TokenError):
    """Malformed, unknown id, or wrong secret: indistinguishable to the caller on purpose."""

    reason = "TOKEN_FORGED"

    def __init__(self, token_id: str | None):
        self.token_id = token_id
        super().__init__("token refused: not a token this cluster issued")


class TokenExpired(TokenError):
    reason = "TOKEN_EXPIRED"

    def __init__(self, token_id: str, expired_at: datetime):
        self.token_id = token_id
        self.expired_at = expired_at
        super().__init__(f"token {token_id} expired at {expired_at.isoformat()}")


class TokenUsed(TokenError):
    reason = "TOKEN_USED"

    def __init__(self, token_id: str, used_at: datetime | None):
        self.token_id = token_id
        self.used_at = used_at
        when = used_at.isoformat() if used_at else "concurrently"
        super().__init__(f"token {token_id} was already used ({when})")


class TokenScopeMismatch(TokenError):
    reason = "TOKEN_SCOPE_MISMATCH"

    def __init__(self, token_id: str, scope: str, wanted: str):
        self.token_id = token_id
        self.scope = scope
        self.wanted = wanted
        super().__init__(f"token {token_id} has scope {scope!r}, {wanted!r} is needed")


class UnknownAccessKey(Unauthenticated):
    """A SigV4 request named an access key id that is malformed, unknown or deleted
    (AWS answers these with UnrecognizedClientException / InvalidClientTokenId)."""

    reason = "UNKNOWN_ACCESS_KEY"

    def __init__(self, access_key_id: str):
        self.access_key_id = access_key_id
        # The id comes from the request: only its first characters go into the message.
        super().__init__(f"access key {access_key_id[:32]!r} is not a key of this cluster")


# -- authorization ----------------------------------------------------------------------
class PermissionDenied(SecurityError):
    """An authenticated subject lacks `permission` in `mesh` ("*" = cluster-wide)."""

    reason = "PERMISSION_DENIED"

    def __init__(self, subject: str, permission: str, mesh: str, role: str | None = None,
                 detail: str = ""):
        self.subject = subject
        self.permission = permission
        self.mesh = mesh
        self.role = role  # the best role the subject holds there, if any
        self.detail = detail
        held = f"role {role}" if role else "no role"
        extra = f": {detail}" if detail else ""
        super().__init__(f"{subject} lacks permission {permission} in mesh {mesh} ({held}){extra}")


class UnknownRole(SecurityError):
    reason = "UNKNOWN_ROLE"

    def __init__(self, role: str):
        self.role = role
        super().__init__(f"unknown role {role!r}")


class UnknownPermission(SecurityError):
    reason = "UNKNOWN_PERMISSION"

    def __init__(self, permission: str):
        self.permission = permission
        super().__init__(f"unknown permission {permission!r}")
