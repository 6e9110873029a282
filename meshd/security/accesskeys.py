"""AWS-style access keys (an id and a secret) that SigV4 signers such as the AWS CLI and boto3 use.

A SigV4 verifier recomputes the request's HMAC, so it needs the secret itself: unlike API
tokens (hashed at rest), the secret is stored sealed under the cluster key, bound to its
path, and only a meshd holding that key can create keys or verify with them. Store layout:

    accesskeys/<id>   JSON: id, principal, created_at, created_by, and "sealed_secret":
                      base64 of ClusterKey.seal("accesskeys/<id>", secret)

The id has the shape of an AWS access key id (20 characters, A-Z and 2-7) with the meshd
prefix "MKIA", so it is never mistaken for a real AWS key; the secret is 40 characters of
base64, as AWS's are.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable

import registry
from meshd.security.certs import utcnow
from meshd.security.clusterkey import ClusterKey, KeyRef, reseal_records
from meshd.security.errors import DecryptionFailed, InvalidIdentity, UnknownAccessKey
from meshd.security.tokens import PRINCIPAL

log = logging.getLogger("meshd.security.accesskeys")

PREFIX = "accesskeys/"
ID_PREFIX = "MKIA"  # "meshd key", in the place of AWS's AKIA (long-term) / ASIA (temporary)
# 16 base32 characters carry 80 random bits; base32's alphabet is AWS's (A-Z, 2-7).
ACCESS_KEY_ID = re.compile(ID_PREFIX + r"[A-Z2-7]{16}")
_SECRET_BYTES = 30  # 240 random bits; base64 of 30 bytes is exactly 40 characters, no padding
CACHE_SIZE = 1024
_MAX_BACKOFF = 2.0


@dataclass(frozen=True)
class IssuedAccessKey:
    """A freshly created key: `secret_access_key` is shown once, and stored only sealed."""

    access_key_id: str
    secret_access_key: str
    principal: str
    created_at: datetime


@dataclass(frozen=True)
class AccessKeyInfo:
    """A stored key's metadata (never its secret)."""

    access_key_id: str
    principal: str
    created_at: datetime
    created_by: str


def _path(access_key_id: str) -> str:
    return PREFIX + access_key_id


def _info(doc: dict) -> AccessKeyInfo:
    return AccessKeyInfo(doc["id"], doc["principal"], datetime.fromisoformat(doc["created_at"]),
                         doc.get("created_by", ""))


class AccessKeys:
    """Creates, lists and deletes access keys, and looks up the secret of a signed request.

    `lookup` runs on every signed request, so opened secrets are cached in this process.
    Invalidation is by an etcd watch on `accesskeys/` (registry.Store.watch), not by a TTL:
    a key deleted by any meshd leaves the cache once the watch delivers the delete, which
    takes milliseconds, not a TTL's seconds. The cache is used only while that watch is
    running: when it breaks the cache is emptied and lookups read etcd until it is back.
    The watch thread starts with the first lookup (a meshd that only serves the gRPC admin
    API never starts it); `close()` stops it.
    """

    def __init__(self, store: registry.Store, key_ref: ClusterKey | KeyRef, *,
                 clock: Callable[[], datetime] = utcnow, cache_size: int = CACHE_SIZE):
        self.store = store
        self._key = key_ref if isinstance(key_ref, KeyRef) else KeyRef(key_ref.source, key_ref)
        self._clock = clock
        self._cache_size = cache_size
        self._cache: dict[str, tuple[str, str]] = {}  # id -> (principal, secret), oldest first
        self._lock = threading.Lock()
        # `_live`: the watch is set up, so a delete after now will reach the cache.
        # `_generation` moves on every invalidation, so a lookup whose etcd read raced a
        # delete does not put the deleted key back into the cache after the delete was seen.
        self._live = False
        self._generation = 0
        self._watch: registry.store.Watch | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    # -- administration --------------------------------------------------------------------
    def create(self, principal: str, *, created_by: str = "", now: datetime | None = None) -> IssuedAccessKey:
        """A new key that signs as `principal`; NoClusterKey when this meshd cannot seal it."""
        if not PRINCIPAL.fullmatch(principal):
            raise InvalidIdentity(principal, "principal names are 1-128 of A-Z a-z 0-9 . _ @ -")
        key = self._key.get()  # fail first, with NoClusterKey, before minting anything
        now = now or self._clock()
        secret = base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()
        while True:
            access_key_id = ID_PREFIX + base64.b32encode(secrets.token_bytes(10)).decode()
            path = _path(access_key_id)
            doc = {"id": access_key_id, "principal": principal, "created_at": now.isoformat(),
                   "created_by": created_by,
                   "sealed_secret": base64.b64encode(key.seal(path, secret.encode())).decode()}
            try:
                self.store.commit(registry.Write(path, json.dumps(doc).encode(), expect_revision=0))
            except registry.AlreadyExists:
                continue  # 80 random bits met an existing id: draw again rather than overwrite it
            return IssuedAccessKey(access_key_id, secret, principal, now)

    def list(self) -> list[AccessKeyInfo]:
        """Every key, ordered by id."""
        items, _ = self.store.scan(PREFIX)
        return [_info(json.loads(i.value)) for i in items]

    def delete(self, access_key_id: str) -> bool:
        """Delete a key; True when it existed. It stops signing at once in this process, and
        in others as soon as their watch delivers the delete."""
        if not ACCESS_KEY_ID.fullmatch(access_key_id):
            return False
        existed = self.store.delete(_path(access_key_id))
        self._invalidate((access_key_id,))
        return existed

    # -- the signed-request path -----------------------------------------------------------
    def lookup(self, access_key_id: str) -> tuple[str, str]:
        """(principal, secret) of a key, for verifying a SigV4 signature.

        UnknownAccessKey for a malformed (checked before any etcd read), unknown or deleted
        id; NoClusterKey, WrongClusterKey or DecryptionFailed when the secret cannot be opened.
        """
        if not ACCESS_KEY_ID.fullmatch(access_key_id):
            raise UnknownAccessKey(access_key_id)
        self._start_watch()
        with self._lock:
            hit = self._cache.get(access_key_id)
            if hit is not None:
                return hit
            live, generation = self._live, self._generation
        path = _path(access_key_id)
        item = self.store.get(path)
        if item is None:
            raise UnknownAccessKey(access_key_id)
        doc = json.loads(item.value)
        try:
            sealed = base64.b64decode(doc["sealed_secret"], validate=True)
        except (KeyError, binascii.Error) as err:
            raise DecryptionFailed(path) from err
        found = (doc["principal"], self._key.get().open(path, sealed).decode())
        with self._lock:
            if live and self._live and self._generation == generation:
                if len(self._cache) >= self._cache_size:
                    del self._cache[next(iter(self._cache))]
                self._cache[access_key_id] = found
        return found

    def close(self) -> None:
        """Stop the watch thread and forget every cached secret."""
        self._closed.set()
        with self._lock:
            watch = self._watch
        if watch is not None:
            watch.cancel()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._invalidate(None)

    # -- cache invalidation ----------------------------------------------------------------
    def _invalidate(self, ids: Iterable[str] | None, *, live: bool | None = None) -> None:
        """Drop `ids` from the cache (None: all of it); optionally set whether it may be used."""
        with self._lock:
            self._generation += 1
            if ids is None:
                self._cache.clear()
            else:
                for i in ids:
                    self._cache.pop(i, None)
            if live is not None:
                self._live = live

    def _start_watch(self) -> None:
        if self._thread is not None or self._closed.is_set():
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._follow, name="accesskeys-watch", daemon=True)
                self._thread.start()

    def _follow(self) -> None:
        """The watch thread: drop each key that changes; on any break, empty the cache and
        watch again from the current revision (nothing cached survives the gap, so no
        event of the gap is needed)."""
        backoff = 0.1
        while not self._closed.is_set():
            try:
                # Cached entries are read after `start - 1`, so every later delete is at or
                # after `start` and the watch delivers it.
                start = self.store.revision() + 1
                watch = self.store.watch(PREFIX, start_revision=start)
                with self._lock:
                    self._watch = watch
                    self._live = not self._closed.is_set()
                if self._closed.is_set():
                    watch.cancel()  # close() ran before this watch was published to it
                for _revision, events in watch:
                    if events:
                        self._invalidate([ev.path[len(PREFIX):] for ev in events])
                    backoff = 0.1
            except (registry.Unavailable, registry.Compacted) as err:
                if not self._closed.is_set():
                    log.warning("access key watch interrupted; not caching until it is back",
                                extra={"error": str(err)})
            except Exception:  # noqa: BLE001 - the thread must outlive a bug; the cache stays off meanwhile
                log.exception("access key watch failed; not caching until it is back")
            finally:
                self._invalidate(None, live=False)
            self._closed.wait(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)


def reseal(store: registry.Store, old: ClusterKey, new: ClusterKey) -> int:
    """Re-encrypt every access key secret from the `old` cluster key to the `new` one
    (cluster key rotation, beside `meshd.security.ca.reseal_keys`); returns how many were
    re-sealed. Each record is rewritten conditioned on the revision read, and secrets
    already under `new` are left alone, so an interrupted run can simply be re-run.
    """
    return reseal_records(store, PREFIX, "sealed_secret", old, new)
