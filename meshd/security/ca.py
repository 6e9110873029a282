"""The mesh CA: per-mesh signing authorities kept in etcd, keys sealed under the cluster key.

Store layout (registry paths; "*" is the cluster scope, whose CA signs host and user IDs):

    ca/<mesh>/signing               the id of the CA that signs now (exists iff the mesh has a CA)
    ca/<mesh>/authorities/<ca-id>   JSON: certificate, chain, state (active | retired), origin
    ca/<mesh>/keys/<ca-id>          the CA key, PKCS#8 DER sealed by ClusterKey.seal (never PEM)

Rotation is three explicit steps so no handshake fails in between (see docs/security.md):
`begin_rotation` adds a CA to the trust bundle without signing with it; once every host has
the new bundle, `switch_signing` moves issuance to it; once every workload certificate was
re-issued, `retire` drops the old CA from the bundle and deletes its key.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

import registry
from meshd.security import certs as C
from meshd.security import spiffe
from meshd.security.clusterkey import ClusterKey, KeyRef
from meshd.security.errors import (
    CAExists,
    CAInUse,
    ClusterKeyError,
    InvalidCA,
    InvalidIdentity,
    InvalidTtl,
    NoCA,
    UnknownCA,
    WrongClusterKey,
)

CLUSTER = "*"  # the cluster scope: its CA signs host and user identities
ACTIVE = "active"
RETIRED = "retired"
DEFAULT_CA_LIFETIME = timedelta(days=365)
DEFAULT_MAX_TTL = timedelta(days=30)


def _signing_path(mesh: str) -> str:
    return f"ca/{mesh}/signing"


def _authority_path(mesh: str, ca_id: str) -> str:
    return f"ca/{mesh}/authorities/{ca_id}"


def _key_path(mesh: str, ca_id: str) -> str:
    return f"ca/{mesh}/keys/{ca_id}"


@dataclass(frozen=True)
class CASource:
    """A CA the operator brings: its certificate, key, and the chain up to their root.

    A self-signed certificate is imported as a root; any other is an intermediate and
    needs its issuer in `chain_pem` so the signature can be checked on import.
    """

    cert_pem: bytes
    key_pem: bytes
    chain_pem: bytes = b""

    @staticmethod
    def from_files(cert_path: str, key_path: str, chain_path: str | None = None) -> "CASource":
        """Read PEM files; extra certificates after the first in `cert_path` count as chain."""
        cert = Path(cert_path).read_bytes()
        key = Path(key_path).read_bytes()
        chain = Path(chain_path).read_bytes() if chain_path else b""
        return CASource(cert, key, chain)


@dataclass(frozen=True)
class CAInfo:
    """One authority of a mesh, as stored (never with its key)."""

    mesh: str
    ca_id: str
    state: str  # ACTIVE or RETIRED
    origin: str  # "generated", "imported" (a root) or "intermediate"
    cert_pem: bytes
    chain_pem: bytes  # issuers above it, for an intermediate; empty for a root
    created_at: datetime
    retired_at: datetime | None
    signing: bool
    revision: int

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclass(frozen=True)
class Issued:
    """A signed workload, host or user certificate."""

    identity: str
    cert_pem: bytes  # the leaf alone
    chain_pem: bytes  # what to present in a handshake: the leaf, then the CA if it is an intermediate
    bundle_pem: bytes  # the mesh's trust bundle when it was issued
    serial: int
    not_before: datetime
    not_after: datetime
    ca_id: str


class MeshCA:
    """Creates, imports, rotates and retires mesh CAs, and signs CSRs with the current one."""

    def __init__(self, store: registry.Store, key: ClusterKey | KeyRef, *,
                 trust_domain: str = spiffe.DEFAULT_TRUST_DOMAIN,
                 ca_lifetime: timedelta = DEFAULT_CA_LIFETIME,
                 default_ttl: timedelta = C.DEFAULT_TTL,
                 max_ttl: timedelta = DEFAULT_MAX_TTL,
                 clock: Callable[[], datetime] = C.utcnow):
        self.store = store
        self._key = key if isinstance(key, KeyRef) else KeyRef(key.source, key)
        self.trust_domain = spiffe.check_trust_domain(trust_domain)
        self.ca_lifetime = ca_lifetime
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self._clock = clock

    def can_sign(self) -> bool:
        """Whether this meshd holds the cluster key (checked without touching etcd)."""
        try:
            self._key.get()
            return True
        except ClusterKeyError:
            return False

    # -- creating and importing ----------------------------------------------------------
    def create(self, mesh: str, source: CASource | None = None, *, now: datetime | None = None) -> CAInfo:
        """Give `mesh` its first CA, generated (EC P-256) or imported; it signs from now on."""
        now = now or self._clock()
        ca_id, record, sealed_key = self._prepare(mesh, source, now)
        try:
            self.store.commit(registry.Write(
                _signing_path(mesh), ca_id.encode(), expect_revision=0,
                puts=((_authority_path(mesh, ca_id), record), (_key_path(mesh, ca_id), sealed_key))))
        except registry.AlreadyExists as err:
            raise CAExists(mesh) from err
        return self.authority(mesh, ca_id)

    def ensure(self, mesh: str, *, now: datetime | None = None) -> CAInfo:
        """The signing CA of `mesh`, generating one first if it has none (for mesh creation)."""
        if self._signing_id(mesh) is None:
            try:
                return self.create(mesh, now=now)
            except CAExists:
                pass  # another meshd created it meanwhile
        return self.signing(mesh)

    def begin_rotation(self, mesh: str, source: CASource | None = None, *,
                       now: datetime | None = None) -> CAInfo:
        """Rotation step 1: add a new CA to the trust bundle. The old one still signs."""
        now = now or self._clock()
        ca_id, record, sealed_key = self._prepare(mesh, source, now)
        try:
            self.store.commit(registry.Write(
                _authority_path(mesh, ca_id), record, expect_revision=0,
                require=((_signing_path(mesh), "parent"),),
                puts=((_key_path(mesh, ca_id), sealed_key),)))
        except registry.NotFound as err:
            raise NoCA(mesh) from err
        return self.authority(mesh, ca_id)

    def switch_signing(self, mesh: str, ca_id: str, *, now: datetime | None = None) -> CAInfo:
        """Rotation step 2: issue with `ca_id` from now on (call once every host trusts it).

        The authority record is rewritten in the same transaction, so a concurrent `retire`
        of this CA (which checks that record's revision) cannot slip in between.
        """
        now = now or self._clock()
        item = self._authority_item(mesh, ca_id)
        doc = json.loads(item.value)
        if doc["state"] != ACTIVE:
            raise UnknownCA(mesh, ca_id)
        doc["signing_since"] = now.isoformat()
        self.store.commit(registry.Write(
            _authority_path(mesh, ca_id), json.dumps(doc).encode(), expect_revision=item.mod_revision,
            puts=((_signing_path(mesh), ca_id.encode()),)))
        return self.authority(mesh, ca_id)

    def retire(self, mesh: str, ca_id: str, *, now: datetime | None = None) -> CAInfo:
        """Rotation step 3: drop `ca_id` from the bundle and delete its key.

        Call only when every certificate it signed was re-issued (the caller knows; the CA
        does not track issued certificates). The signing CA is never retired.
        """
        now = now or self._clock()
        item = self._authority_item(mesh, ca_id)
        doc = json.loads(item.value)
        if doc["state"] == RETIRED:
            return self.authority(mesh, ca_id)
        if self._signing_id(mesh) == ca_id:
            raise CAInUse(mesh, ca_id, "signing")
        doc["state"] = RETIRED
        doc["retired_at"] = now.isoformat()
        self.store.commit(registry.Write(
            _authority_path(mesh, ca_id), json.dumps(doc).encode(), expect_revision=item.mod_revision,
            deletes=(_key_path(mesh, ca_id),)))
        return self.authority(mesh, ca_id)

    def destroy(self, mesh: str) -> int:
        """Delete every CA record and key of `mesh` (when the mesh is deleted); returns the count."""
        items, _ = self.store.scan(f"ca/{mesh}/")
        for item in items:
            self.store.delete(item.path)
        return len(items)

    # -- reading -------------------------------------------------------------------------
    def authorities(self, mesh: str) -> list[CAInfo]:
        """Every CA of `mesh`, active and retired, oldest first."""
        signing = self._signing_id(mesh)
        items, _ = self.store.scan(f"ca/{mesh}/authorities/")
        return [self._info(mesh, item, signing) for item in items]

    def authority(self, mesh: str, ca_id: str) -> CAInfo:
        return self._info(mesh, self._authority_item(mesh, ca_id), self._signing_id(mesh))

    def signing(self, mesh: str) -> CAInfo:
        signing = self._signing_id(mesh)
        if signing is None:
            raise NoCA(mesh)
        return self.authority(mesh, signing)

    def bundle(self, mesh: str) -> bytes:
        """The trust bundle: PEM of every active CA of the mesh (the CAs themselves, not their
        roots, so another mesh's intermediate under the same root is not trusted here)."""
        active = [a for a in self.authorities(mesh) if a.state == ACTIVE]
        if not active:
            raise NoCA(mesh)
        return b"".join(a.cert_pem for a in active)

    # -- signing -------------------------------------------------------------------------
    def sign_csr(self, mesh: str, csr_pem: bytes, identity: str, ttl: timedelta | None = None, *,
                 now: datetime | None = None, dns_names: tuple[str, ...] = (),
                 ip_addresses: tuple[str, ...] = ()) -> Issued:
        """Sign `csr_pem` for `identity` with the mesh's signing CA.

        The caller has already decided the requester may hold `identity` (see
        `meshd.security.hostauth`); this checks that the identity belongs to this CA's trust
        domain and mesh, that the CSR is self-signed and asks for nothing else, and clamps
        the lifetime to the CA's own.
        """
        now = now or self._clock()
        sid = spiffe.parse(identity)
        if sid.trust_domain != self.trust_domain:
            raise InvalidIdentity(identity, f"trust domain is not {self.trust_domain}")
        if sid.kind in spiffe.MESH_KINDS and sid.mesh != mesh:
            raise InvalidIdentity(identity, f"not an identity of mesh {mesh}")
        if sid.kind not in spiffe.MESH_KINDS and mesh != CLUSTER:
            raise InvalidIdentity(identity, f"{sid.kind} identities are signed by the cluster CA ({CLUSTER!r})")
        if (dns_names or ip_addresses) and sid.kind != spiffe.HOST:
            raise InvalidIdentity(identity, "only host identities carry DNS names or IP addresses")
        if sid.kind == spiffe.WORKLOAD:
            dns_names = (spiffe.workload_dns_name(sid.trust_domain, sid.mesh, sid.node),)
        try:
            extra = tuple([x509.DNSName(n) for n in dns_names] +
                          [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses])
        except ValueError as err:
            raise InvalidIdentity(identity, f"bad DNS name or IP address: {err}") from err
        ttl = self.default_ttl if ttl is None else ttl
        if not timedelta(seconds=1) <= ttl <= self.max_ttl:
            raise InvalidTtl(ttl.total_seconds(), self.max_ttl.total_seconds())
        csr = C.load_csr(csr_pem)
        C.check_csr_identity(csr, identity, also=tuple(dns_names) + tuple(ip_addresses))
        info = self.signing(mesh)
        ca_cert = info.certificate
        chain = C.load_certs(info.chain_pem) if info.chain_pem else []
        # A certificate must not outlive its issuers (RFC 5280 does not require it, but
        # a verifier at that moment would refuse the chain anyway).
        not_after = min(now + ttl, ca_cert.not_valid_after_utc, *(c.not_valid_after_utc for c in chain))
        ca_key = self._open_key(mesh, info.ca_id)
        leaf = C.issue_leaf(ca_cert, ca_key, csr.public_key(), identity,
                            not_before=now - C.BACKDATE, not_after=not_after, extra_names=extra)
        leaf_pem = C.cert_to_pem(leaf)
        present = leaf_pem + (info.cert_pem if info.origin == "intermediate" else b"")
        return Issued(identity, leaf_pem, present, self.bundle(mesh), leaf.serial_number,
                      leaf.not_valid_before_utc, leaf.not_valid_after_utc, info.ca_id)

    # -- internals -----------------------------------------------------------------------
    def _prepare(self, mesh: str, source: CASource | None, now: datetime) -> tuple[str, bytes, bytes]:
        """Make or validate a CA; return its id, its JSON record and its sealed key."""
        key = self._key.get()  # fail first, with NoClusterKey, before generating anything
        if source is None:
            cert, ca_key = C.make_ca(f"meshd {self.trust_domain} mesh {mesh} CA", now=now, lifetime=self.ca_lifetime)
            chain: list[x509.Certificate] = []
            origin = "generated"
        else:
            certs = C.load_certs(source.cert_pem, "CA certificate")
            if not certs:
                raise InvalidCA("parse", "no certificate in the CA certificate PEM")
            cert, chain = certs[0], certs[1:] + (C.load_certs(source.chain_pem, "chain") if source.chain_pem else [])
            ca_key = C.load_key(source.key_pem, "CA private key")
            C.validate_ca(cert, ca_key, chain, now)
            self_signed = cert.issuer == cert.subject
            if not self_signed and not chain:
                raise InvalidCA("chain", "an intermediate CA needs its issuer certificate in the chain")
            origin = "imported" if self_signed else "intermediate"
        fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        # Time first so a key-ordered listing of authorities is oldest first.
        ca_id = f"{now:%Y%m%dT%H%M%S}{now.microsecond:06d}Z-{fingerprint[:12]}"
        record = json.dumps({
            "id": ca_id, "state": ACTIVE, "origin": origin,
            "cert": C.cert_to_pem(cert).decode(), "chain": C.certs_to_pem(chain).decode(),
            "created_at": now.isoformat(), "retired_at": None,
        }).encode()
        der = ca_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
        return ca_id, record, key.seal(_key_path(mesh, ca_id), der)

    def _open_key(self, mesh: str, ca_id: str) -> C.PrivateKey:
        path = _key_path(mesh, ca_id)
        item = self.store.get(path)
        if item is None:
            raise UnknownCA(mesh, ca_id)
        der = self._key.get().open(path, item.value)
        return serialization.load_der_private_key(der, password=None)

    def _signing_id(self, mesh: str) -> str | None:
        item = self.store.get(_signing_path(mesh))
        return item.value.decode() if item else None

    def _authority_item(self, mesh: str, ca_id: str) -> registry.Item:
        item = self.store.get(_authority_path(mesh, ca_id))
        if item is None:
            raise UnknownCA(mesh, ca_id)
        return item

    @staticmethod
    def _info(mesh: str, item: registry.Item, signing: str | None) -> CAInfo:
        doc = json.loads(item.value)
        return CAInfo(
            mesh=mesh, ca_id=doc["id"], state=doc["state"], origin=doc["origin"],
            cert_pem=doc["cert"].encode(), chain_pem=doc["chain"].encode(),
            created_at=datetime.fromisoformat(doc["created_at"]),
            retired_at=datetime.fromisoformat(doc["retired_at"]) if doc["retired_at"] else None,
            signing=doc["id"] == signing, revision=item.mod_revision)


def reseal_keys(store: registry.Store, old: ClusterKey, new: ClusterKey) -> int:
    """Re-encrypt every CA key from the `old` cluster key to the `new` one (cluster key
    rotation); returns how many were re-sealed. Each key is rewritten conditioned on the
    revision read, so a concurrent CA change makes this raise rather than lose a write.
    Values already under `new` are left alone, so an interrupted run can simply be re-run.
    """
    count = 0
    items, _ = store.scan("ca/")
    for item in items:
        if "/keys/" not in item.path:
            continue
        try:
            plain = old.open(item.path, item.value)
        except WrongClusterKey:
            new.open(item.path, item.value)  # raises unless it is already under the new key
            continue
        store.commit(registry.Write(item.path, new.seal(item.path, plain), expect_revision=item.mod_revision))
        count += 1
    return count
