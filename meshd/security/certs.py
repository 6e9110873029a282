"""X.509 building blocks: keys, CSRs, CA and leaf certificates, validation, renewal timing.

Pure functions over `cryptography` objects: no store, no clock (callers pass `now`).
Leaf profile follows the X.509-SVID spec (SPIFFE §4, §5): exactly one URI SAN holding the
SPIFFE ID, cA=false, digitalSignature, and both serverAuth and clientAuth EKUs so one
certificate serves the inbound and outbound sides of mTLS.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshd.security.errors import CSRIdentityMismatch, InvalidCA, InvalidCSR

DEFAULT_TTL = timedelta(hours=24)
# Renew at two-thirds of the lifetime: an 8 h margin on a 24 h certificate covers a meshd
# restart or an etcd outage without ever presenting an expired certificate.
RENEW_FRACTION = Fraction(2, 3)
# Backdate notBefore a little so a peer whose clock runs slightly behind still accepts a
# freshly issued certificate (SPIRE does the same).
BACKDATE = timedelta(seconds=60)
_MIN_RSA_BITS = 2048
_CURVES = (ec.SECP256R1, ec.SECP384R1)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


# -- keys and PEM -----------------------------------------------------------------------
def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key, meshd's default for CAs and workloads."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(pem: bytes, what: str = "private key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise InvalidCA("parse", f"{what}: {err}") from err
    _check_key_type(key.public_key(), lambda d: InvalidCA("key_type", d))
    return key


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certs_to_pem(certs) -> bytes:
    return b"".join(cert_to_pem(c) for c in certs)


def load_certs(pem: bytes, what: str = "certificate") -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as err:
        raise InvalidCA("parse", f"{what}: {err}") from err
    return certs


def _check_key_type(pub, error):
    if isinstance(pub, ec.EllipticCurvePublicKey):
        if not isinstance(pub.curve, _CURVES):
            raise error(f"EC curve {pub.curve.name} (P-256 or P-384 expected)")
    elif isinstance(pub, rsa.RSAPublicKey):
        if pub.key_size < _MIN_RSA_BITS:
            raise error(f"RSA {pub.key_size} bits (at least {_MIN_RSA_BITS})")
    else:
        raise error(f"{type(pub).__name__} (EC P-256/P-384 or RSA expected)")


def _same_public_key(a, b) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return a.public_bytes(*fmt) == b.public_bytes(*fmt)


# -- CSRs -------------------------------------------------------------------------------
def make_csr(identity: str, key: PrivateKey | None = None) -> tuple[bytes, bytes]:
    """A new key (unless given) and a CSR asking for `identity` as its URI SAN: (key PEM, CSR PEM).

    This runs on the requesting host; only the CSR travels, the key stays where it was made.
    """
    key = key or new_private_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshd")]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=False)
           .sign(key, hashes.SHA256()))
    return key_to_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """Parse a CSR and check its self-signature (proof the requester holds the key)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as err:
        raise InvalidCSR("parse", str(err)) from err
    if not csr.is_signature_valid:
        raise InvalidCSR("signature")
    _check_key_type(csr.public_key(), lambda d: InvalidCSR("key_type", d))
    return csr


def requested_names(csr: x509.CertificateSigningRequest) -> list[str]:
    """Every name the CSR asks for, as strings: URIs, DNS names, IPs, emails."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in san]


def check_csr_identity(csr: x509.CertificateSigningRequest, identity: str, also: tuple[str, ...] = ()) -> None:
    """Refuse a CSR that asks for any name other than the authorized identity (and `also`).

    A CSR without SANs is fine: the CA writes the names itself. The CSR's subject is
    ignored (the CA sets its own), so it cannot smuggle a name in either.
    """
    names = requested_names(csr)
    if any(n != identity and n not in also for n in names):
        raise CSRIdentityMismatch(identity, names)


# -- certificates -----------------------------------------------------------------------
def _sig_hash(key: PrivateKey):
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


def _ski(pub) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(pub)


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())


def make_ca(common_name: str, *, now: datetime, lifetime: timedelta,
            key: PrivateKey | None = None, issuer: tuple[x509.Certificate, PrivateKey] | None = None,
            path_length: int | None = 0) -> tuple[x509.Certificate, PrivateKey]:
    """A CA certificate: self-signed root, or signed by `issuer` (cert, key) as an intermediate."""
    key = key or new_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshd"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer_cert.subject if issuer_cert else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE)
               .not_valid_after(now + lifetime)
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(_ski(key.public_key()), critical=False))
    if issuer_cert is not None:
        builder = builder.add_extension(_aki(issuer_cert), critical=False)
    return builder.sign(issuer_key, _sig_hash(issuer_key)), key


def issue_leaf(ca_cert: x509.Certificate, ca_key: PrivateKey, public_key, identity: str, *,
               not_before: datetime, not_after: datetime,
               extra_names: tuple[x509.GeneralName, ...] = ()) -> x509.Certificate:
    """An X.509-SVID for `identity`, valid from `not_before` to `not_after`.

    `extra_names` (DNS names and IP addresses) are for host certificates that also serve
    the admin API, whose gRPC clients check the server's host name against DNS/IP SANs.
    """
    tail = identity.rsplit("/", 1)[-1]
    usage_rsa = isinstance(public_key, rsa.RSAPublicKey)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshd"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, tail[:64])]))
            .issuer_name(ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=usage_rsa,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity),
                                                        *extra_names]),
                           critical=False)
            .add_extension(_ski(public_key), critical=False)
            .add_extension(_aki(ca_cert), critical=False)
            .sign(ca_key, _sig_hash(ca_key)))


def is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not bc.ca:
        return False
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True  # RFC 5280 §4.2.1.3: no keyUsage means no restriction
    return ku.key_cert_sign


def validate_ca(cert: x509.Certificate, key: PrivateKey, chain: list[x509.Certificate],
                now: datetime) -> None:
    """Check a CA to import: it is a CA, `key` is its key, it is valid now, and each chain
    certificate is a valid CA that signed the one before it."""
    if not is_ca(cert):
        raise InvalidCA("not_ca", "basicConstraints cA=true and keyCertSign are required")
    if not _same_public_key(cert.public_key(), key.public_key()):
        raise InvalidCA("key_mismatch", "the private key does not belong to the certificate")
    for c in (cert, *chain):
        if c.not_valid_after_utc <= now:
            raise InvalidCA("expired", f"{c.subject.rfc4514_string()} expired {c.not_valid_after_utc.isoformat()}")
        if c.not_valid_before_utc > now:
            raise InvalidCA("not_yet_valid", f"{c.subject.rfc4514_string()} valid from {c.not_valid_before_utc.isoformat()}")
    child = cert
    for parent in chain:
        if not is_ca(parent):
            raise InvalidCA("chain", f"{parent.subject.rfc4514_string()} is not a CA")
        try:
            child.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError) as err:
            raise InvalidCA("chain", f"{child.subject.rfc4514_string()} is not signed by "
                                     f"{parent.subject.rfc4514_string()}") from err
        child = parent


def uri_sans(cert: x509.Certificate) -> list[str]:
    """The URI SANs of a certificate (a meshd SVID has exactly one, its SPIFFE ID)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


# -- renewal ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Renewal:
    """When to renew a certificate, and how long from `now` that is (zero when due)."""

    at: datetime
    delay: timedelta
    due: bool


def renewal(cert: x509.Certificate, now: datetime, fraction: Fraction = RENEW_FRACTION) -> Renewal:
    """Renew at `fraction` of the way from notBefore to notAfter. Pure: `now` is passed in."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    at = start + (end - start) * fraction.numerator / fraction.denominator
    delay = at - now
    due = delay <= timedelta(0)
    return Renewal(at, timedelta(0) if due else delay, due)


def utcnow() -> datetime:
    """The one place this package reads the wall clock; everything else takes `now`."""
    return datetime.now(timezone.utc)
