"""App Mesh ACM references resolved locally: certificates and ACM PCA trust anchors kept in
etcd under the ARNs App Mesh specs name, so a spec's `acm` sources work without AWS.

Store layout (registry paths; <h> is the hex SHA-256 of the ARN, as an ARN holds "/"):

    acm/certificates/<h>   JSON: arn, chain (PEM, leaf first), key (the PKCS#8 DER private
                           key sealed by ClusterKey.seal for this very path, base64), subject,
                           dns_names, serial, not_after, imported_at, imported_by
    acm/trust/<h>          JSON: arn, certificates (PEM), subject, not_after, imported_at, imported_by

The sealed key is bound to its record's path, so a record copied under another ARN does
not open. A data plane reads the whole prefix into an `AcmMaterial` (see `AcmCache`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

import registry
from meshd.security import certs as C
from meshd.security.clusterkey import ClusterKey, KeyRef, reseal_records
from meshd.security.errors import SecurityError

PREFIX = "acm/"
CERTIFICATES = "acm/certificates/"
TRUST = "acm/trust/"
# arn:<partition>:acm:<region>:<account>:certificate/<id>  (ACM's own ARN shape)
CERTIFICATE_ARN = re.compile(r"^arn:aws(-[a-z]+)*:acm:[a-z]{2}(-[a-z]+)+-\d+:\d{12}:certificate/[A-Za-z0-9-]{1,128}$")
# arn:<partition>:acm-pca:<region>:<account>:certificate-authority/<id>
AUTHORITY_ARN = re.compile(
    r"^arn:aws(-[a-z]+)*:acm-pca:[a-z]{2}(-[a-z]+)+-\d+:\d{12}:certificate-authority/[A-Za-z0-9-]{1,128}$")


class AcmInvalid(SecurityError):
    """An ACM import was refused; `field` names the input, the message says why."""

    reason = "ACM_INVALID"

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field}: {detail}")


def certificate_path(arn: str) -> str:
    return CERTIFICATES + hashlib.sha256(arn.encode()).hexdigest()


def trust_path(arn: str) -> str:
    return TRUST + hashlib.sha256(arn.encode()).hexdigest()


def check_certificate_arn(arn: str) -> str:
    if not CERTIFICATE_ARN.match(arn or ""):
        raise AcmInvalid("arn", f"{arn!r} is not an ACM certificate ARN "
                                "(arn:aws:acm:<region>:<account>:certificate/<id>)")
    return arn


def check_authority_arn(arn: str) -> str:
    if not AUTHORITY_ARN.match(arn or ""):
        raise AcmInvalid("arn", f"{arn!r} is not an ACM PCA certificate authority ARN "
                                "(arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>)")
    return arn


def _load_certs(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        got = C.load_certs(pem, what)
    except Exception as err:  # noqa: BLE001 - any parse failure is the operator's input
        raise AcmInvalid(what, f"not a PEM certificate ({err})") from err
    if not got:
        raise AcmInvalid(what, "no PEM certificate found")
    return got


@dataclass(frozen=True)
class AcmCertificateInfo:
    arn: str
    subject: str
    dns_names: tuple[str, ...]
    serial: str
    not_after: datetime
    imported_at: datetime
    imported_by: str


@dataclass(frozen=True)
class AcmTrustInfo:
    arn: str
    subject: str
    not_after: datetime
    imported_at: datetime
    imported_by: str
    certificates: int


def _cert_info(doc: dict) -> AcmCertificateInfo:
    return AcmCertificateInfo(doc["arn"], doc["subject"], tuple(doc["dns_names"]), doc["serial"],
                              datetime.fromisoformat(doc["not_after"]), datetime.fromisoformat(doc["imported_at"]),
                              doc["imported_by"])


def _trust_info(doc: dict) -> AcmTrustInfo:
    return AcmTrustInfo(doc["arn"], doc["subject"], datetime.fromisoformat(doc["not_after"]),
                        datetime.fromisoformat(doc["imported_at"]), doc["imported_by"], doc["count"])


class AcmStore:
    """Imports, lists and deletes ACM certificates and PCA trust anchors in etcd."""

    def __init__(self, store: registry.Store, key: ClusterKey | KeyRef, *,
                 clock: Callable[[], datetime] = C.utcnow):
        self.store = store
        self._key = key if isinstance(key, KeyRef) else KeyRef(key.source, key)
        self._clock = clock

    # -- certificates ----------------------------------------------------------------------
    def import_certificate(self, arn: str, cert_pem: bytes, key_pem: bytes, chain_pem: bytes = b"", *,
                           imported_by: str = "") -> AcmCertificateInfo:
        """Store (or replace) what `arn` stands for. The leaf must match the key and be in
        its validity period; the key is sealed under the cluster key for this path."""
        check_certificate_arn(arn)
        sealer = self._key.get()  # fail first, with NoClusterKey, before anything is parsed
        chain = _load_certs(cert_pem, "certificate") + (_load_certs(chain_pem, "chain") if chain_pem.strip() else [])
        leaf = chain[0]
        try:
            key = C.load_key(key_pem, "private key")
        except Exception as err:  # noqa: BLE001
            raise AcmInvalid("key", f"not a PEM private key ({err})") from err
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
            raise AcmInvalid("key", f"the private key does not match the certificate ({leaf.subject.rfc4514_string()})")
        now = self._clock()
        if leaf.not_valid_after_utc <= now:
            raise AcmInvalid("certificate", f"expired at {leaf.not_valid_after_utc.isoformat()}")
        if C.is_ca(leaf):
            raise AcmInvalid("certificate", "is a CA certificate; a listener presents a leaf "
                                            "(for a trust anchor use `meshctl trust import`)")
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = tuple(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            dns = ()
        path = certificate_path(arn)
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        doc = {"arn": arn, "chain": C.certs_to_pem(chain).decode(),
               "key": base64.b64encode(sealer.seal(path, der)).decode(),
               "subject": leaf.subject.rfc4514_string(), "dns_names": list(dns),
               "serial": format(leaf.serial_number, "x"), "not_after": leaf.not_valid_after_utc.isoformat(),
               "imported_at": now.isoformat(), "imported_by": imported_by}
        self.store.put(path, json.dumps(doc).encode())
        return _cert_info(doc)

    def certificates(self) -> list[AcmCertificateInfo]:
        items, _ = self.store.scan(CERTIFICATES)
        return sorted((_cert_info(json.loads(i.value)) for i in items), key=lambda c: c.arn)

    def delete_certificate(self, arn: str) -> bool:
        return self.store.delete(certificate_path(check_certificate_arn(arn)))

    # -- trust anchors ---------------------------------------------------------------------
    def import_trust(self, arn: str, cert_pem: bytes, *, imported_by: str = "") -> AcmTrustInfo:
        """Store (or replace) the CA certificate(s) an ACM PCA ARN stands for."""
        check_authority_arn(arn)
        anchors = _load_certs(cert_pem, "certificate")
        for c in anchors:
            if not C.is_ca(c):
                raise AcmInvalid("certificate", f"{c.subject.rfc4514_string()} is not a CA certificate "
                                                "(basicConstraints CA:TRUE, keyCertSign)")
        doc = {"arn": arn, "certificates": C.certs_to_pem(anchors).decode(),
               "subject": anchors[0].subject.rfc4514_string(),
               "not_after": anchors[0].not_valid_after_utc.isoformat(),
               "imported_at": self._clock().isoformat(), "imported_by": imported_by, "count": len(anchors)}
        self.store.put(trust_path(arn), json.dumps(doc).encode())
        return _trust_info(doc)

    def trust(self) -> list[AcmTrustInfo]:
        items, _ = self.store.scan(TRUST)
        return sorted((_trust_info(json.loads(i.value)) for i in items), key=lambda t: t.arn)

    def delete_trust(self, arn: str) -> bool:
        return self.store.delete(trust_path(check_authority_arn(arn)))


# -- the data plane's view ----------------------------------------------------------------
@dataclass(frozen=True)
class AcmMaterial:
    """Every imported ACM certificate (chain PEM, key PEM) and PCA anchor (PEM) by ARN;
    `unreadable` names ARNs whose key this host cannot open (and why)."""

    certificates: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    anchors: dict[str, bytes] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


def read_material(store: registry.Store, key: ClusterKey | KeyRef) -> AcmMaterial:
    """Read and open everything under `acm/` (blocking: etcd, and the cluster key file)."""
    ref = key if isinstance(key, KeyRef) else KeyRef(key.source, key)
    items, _ = store.scan(PREFIX)
    out = AcmMaterial()
    for item in items:
        doc = json.loads(item.value)
        if item.path.startswith(TRUST):
            out.anchors[doc["arn"]] = doc["certificates"].encode()
            continue
        try:
            der = ref.get().open(item.path, base64.b64decode(doc["key"]))
        except SecurityError as err:
            out.unreadable[doc["arn"]] = str(err)
            continue
        pem = serialization.load_der_private_key(der, password=None).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        out.certificates[doc["arn"]] = (doc["chain"].encode(), pem)
    return out


class AcmCache:
    """The latest `AcmMaterial`, re-read by `refresh()` (off the event loop); readers on the
    loop take `material` (one attribute read) and compare `generation`."""

    def __init__(self, read: Callable[[], AcmMaterial]):
        self._read = read
        self._lock = threading.Lock()
        self.material = AcmMaterial()
        self.generation = 0
        self.loaded = False

    def refresh(self) -> bool:
        """Re-read the store; True when what it holds changed."""
        with self._lock:
            got = self._read()
            changed = got != self.material or not self.loaded
            if changed:
                self.material = got
                self.generation += 1
            self.loaded = True
            return changed

    def certificate(self, arn: str) -> tuple[bytes, bytes] | None:
        return self.material.certificates.get(arn)

    def anchors(self, arns) -> tuple[bytes, list[str]]:
        """(PEM bundle of the imported anchors among `arns`, the ARNs not imported)."""
        have = self.material.anchors
        return b"".join(have[a] for a in arns if a in have), [a for a in arns if a not in have]


def reseal(store: registry.Store, old: ClusterKey, new: ClusterKey) -> int:
    """Re-encrypt every imported ACM certificate key from the `old` cluster key to the `new`
    one (cluster key rotation, beside `ca.reseal_keys` and `accesskeys.reseal`); returns how
    many were re-sealed. Each record is rewritten conditioned on the revision read; keys
    already under `new` are left alone, so an interrupted run can simply be re-run."""
    return reseal_records(store, CERTIFICATES, "key", old, new)
