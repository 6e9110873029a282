"""One-time bootstrap tokens (joining a host) and API bearer tokens (scripts), hashed at rest.

A token is `<kind>.<id>.<secret>`: the id names the etcd record, the 256-bit secret is
never stored, only its SHA-256 (a random 256-bit secret needs no slow hash: there is
nothing to guess). Store layout:

    tokens/bootstrap/<id>   JSON: hash, scope, expiry, used_at; on a lease that outlives
                            the expiry by `retention`, so used and expired tokens go away
    tokens/api/<id>         JSON: hash, principal, optional expiry
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import registry
from meshd.security.certs import utcnow
from meshd.security.errors import (
    InvalidIdentity,
    InvalidTtl,
    TokenExpired,
    TokenForged,
    TokenScopeMismatch,
    TokenUsed,
)

BOOTSTRAP = "mbt1"  # meshd bootstrap token, format 1
API = "mat1"  # meshd API token, format 1
_ID = re.compile(r"[0-9a-f]{16}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
# Principal names never contain ":" or "/", so they cannot be mistaken for SPIFFE IDs
# when both are used as RBAC subjects.
PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
MAX_BOOTSTRAP_TTL = timedelta(days=7)


@dataclass(frozen=True)
class IssuedToken:
    """A freshly minted token: `token` is shown once and never stored."""

    token: str
    token_id: str
    expires_at: datetime | None


@dataclass(frozen=True)
class TokenInfo:
    """A stored token's metadata (no secret, no hash)."""

    token_id: str
    kind: str  # "bootstrap" or "api"
    scope: str  # bootstrap: what it grants, e.g. "join"; api: the principal name
    created_at: datetime
    expires_at: datetime | None
    used_at: datetime | None
    created_by: str


def _hash(kind: str, token_id: str, secret: str) -> str:
    return hashlib.sha256(f"meshd token\x00{kind}\x00{token_id}\x00{secret}".encode()).hexdigest()


def _parse(kind: str, token: str) -> tuple[str, str]:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != kind or not _ID.fullmatch(parts[1]) or not _SECRET.fullmatch(parts[2]):
        raise TokenForged(None)
    return parts[1], parts[2]


def _mint(kind: str) -> tuple[str, str, str]:
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return f"{kind}.{token_id}.{secret}", token_id, secret


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _info(kind: str, doc: dict) -> TokenInfo:
    return TokenInfo(doc["id"], kind, doc.get("scope") or doc.get("principal", ""),
                     _time(doc["created_at"]), _time(doc.get("expires_at")),
                     _time(doc.get("used_at")), doc.get("created_by", ""))


class Tokens:
    """Mints, redeems and verifies tokens against records in etcd."""

    def __init__(self, store: registry.Store, *, clock: Callable[[], datetime] = utcnow,
                 retention: timedelta = timedelta(days=1)):
        self.store = store
        self._clock = clock
        self.retention = retention

    # -- bootstrap tokens ----------------------------------------------------------------
    def create_token(self, ttl: timedelta, scope: str = "join", *, created_by: str = "",
                     now: datetime | None = None) -> IssuedToken:
        """A one-time token valid for `ttl`, granting `scope` (e.g. "join")."""
        now = now or self._clock()
        if not timedelta(seconds=1) <= ttl <= MAX_BOOTSTRAP_TTL:
            raise InvalidTtl(ttl.total_seconds(), MAX_BOOTSTRAP_TTL.total_seconds())
        token, token_id, secret = _mint(BOOTSTRAP)
        expires = now + ttl
        doc = {"id": token_id, "hash": _hash(BOOTSTRAP, token_id, secret), "scope": scope,
               "created_at": now.isoformat(), "expires_at": expires.isoformat(),
               "used_at": None, "created_by": created_by}
        # The lease only garbage-collects: expiry is decided from `expires_at`, so a record
        # outliving its lease a little (or a lease ending early) changes no decision.
        lease = self.store.grant_lease(int((ttl + self.retention).total_seconds()) + 1)
        self.store.commit(registry.Write(f"tokens/bootstrap/{token_id}", json.dumps(doc).encode(),
                                         expect_revision=0, lease=lease))
        return IssuedToken(token, token_id, expires)

    def redeem(self, token: str, *, scope: str | None = None, redeemed_by: str = "",
               now: datetime | None = None) -> TokenInfo:
        """Consume a bootstrap token: succeeds once, atomically, across every meshd.

        Checks in this order so nothing about a token leaks to someone without its
        secret: shape and secret (TokenForged), then used (TokenUsed), expiry
        (TokenExpired) and scope (TokenScopeMismatch); then marks it used in a transaction
        conditioned on the revision read, so of two concurrent redeemers one wins.
        """
        now = now or self._clock()
        token_id, secret = _parse(BOOTSTRAP, token)
        path = f"tokens/bootstrap/{token_id}"
        item = self.store.get(path)
        doc = self._check_secret(BOOTSTRAP, item, token_id, secret)
        if doc["used_at"]:
            raise TokenUsed(token_id, _time(doc["used_at"]))
        expires = _time(doc["expires_at"])
        if now >= expires:
            raise TokenExpired(token_id, expires)
        if scope is not None and doc["scope"] != scope:
            raise TokenScopeMismatch(token_id, doc["scope"], scope)
        doc["used_at"] = now.isoformat()
        doc["redeemed_by"] = redeemed_by
        try:
            self.store.commit(registry.Write(path, json.dumps(doc).encode(),
                                             expect_revision=item.mod_revision, lease=item.lease))
        except registry.Conflict as err:
            raise TokenUsed(token_id, None) from err  # another redeemer won the race
        except registry.NotFound as err:
            raise TokenExpired(token_id, expires) from err  # the lease ran out meanwhile
        return _info("bootstrap", doc)

    def list_tokens(self) -> list[TokenInfo]:
        items, _ = self.store.scan("tokens/bootstrap/")
        return [_info("bootstrap", json.loads(i.value)) for i in items]

    def revoke_token(self, token_id: str) -> bool:
        """Delete a bootstrap token before use; True when it existed."""
        return self.store.delete(f"tokens/bootstrap/{token_id}")

    # -- API tokens ----------------------------------------------------------------------
    def create_api_token(self, principal: str, *, ttl: timedelta | None = None, created_by: str = "",
                         now: datetime | None = None) -> IssuedToken:
        """A bearer token that authenticates as `principal` until revoked (or `ttl` passes)."""
        now = now or self._clock()
        if not PRINCIPAL.fullmatch(principal):
            raise InvalidIdentity(principal, "principal names are 1-128 of A-Z a-z 0-9 . _ @ -")
        token, token_id, secret = _mint(API)
        expires = now + ttl if ttl is not None else None
        doc = {"id": token_id, "hash": _hash(API, token_id, secret), "principal": principal,
               "created_at": now.isoformat(), "expires_at": expires.isoformat() if expires else None,
               "created_by": created_by}
        self.store.commit(registry.Write(f"tokens/api/{token_id}", json.dumps(doc).encode(), expect_revision=0))
        return IssuedToken(token, token_id, expires)

    def verify_api_token(self, token: str, *, now: datetime | None = None) -> str:
        """The principal a bearer token authenticates, or TokenForged / TokenExpired."""
        now = now or self._clock()
        token_id, secret = _parse(API, token)
        doc = self._check_secret(API, self.store.get(f"tokens/api/{token_id}"), token_id, secret)
        expires = _time(doc["expires_at"])
        if expires is not None and now >= expires:
            raise TokenExpired(token_id, expires)
        return doc["principal"]

    def list_api_tokens(self) -> list[TokenInfo]:
        items, _ = self.store.scan("tokens/api/")
        return [_info("api", json.loads(i.value)) for i in items]

    def revoke_api_token(self, token_id: str) -> bool:
        return self.store.delete(f"tokens/api/{token_id}")

    @staticmethod
    def _check_secret(kind: str, item: registry.Item | None, token_id: str, secret: str) -> dict:
        if item is None:
            raise TokenForged(token_id)
        doc = json.loads(item.value)
        # Constant-time compare: response timing must not reveal how much of a guess matched.
        if not hmac.compare_digest(doc["hash"], _hash(kind, token_id, secret)):
            raise TokenForged(token_id)
        return doc
