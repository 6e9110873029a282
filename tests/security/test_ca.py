"""The mesh CA on real etcd: issuance, CSR checks, key at rest, import, intermediates, rotation."""
from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from meshd.security import certs as C
from meshd.security.ca import CLUSTER, MeshCA, CASource
from meshd.security.clusterkey import ClusterKey, KeyRef
from meshd.security.errors import (
    CAExists,
    CAInUse,
    CSRIdentityMismatch,
    DecryptionFailed,
    InvalidCA,
    InvalidCSR,
    InvalidIdentity,
    InvalidTtl,
    NoCA,
    NoClusterKey,
    WrongClusterKey,
)
from meshd.security.spiffe import host_id, workload_id

from .helpers import CA_EPOCH, real_now

pytestmark = [pytest.mark.identity, pytest.mark.etcd]

WEB = "spiffe://meshd.local/mesh/m1/virtualNode/web"


def verify(bundle_pem: bytes, chain_pem: bytes, now):
    """Path-validate a presented chain against a bundle as an RFC 5280 client verifier would."""
    leaf, *intermediates = C.load_certs(chain_pem)
    verifier = PolicyBuilder().store(Store(C.load_certs(bundle_pem))).time(now).build_client_verifier()
    return verifier.verify(leaf, intermediates)


def test_issued_certificate_verifies_and_carries_identity_and_lifetime(mesh_ca):
    now = real_now()
    _key, csr = C.make_csr(WEB)
    got = mesh_ca.sign_csr("m1", csr, WEB, now=now)
    leaf = x509.load_pem_x509_certificate(got.cert_pem)
    verified = verify(got.bundle_pem, got.chain_pem, now)
    # The SPIFFE ID, plus the DNS name the handshake checks (spiffe.workload_dns_name).
    assert [str(s.value) for s in verified.subjects] == [WEB, "web.m1.mesh.meshd.local"]
    assert C.uri_sans(leaf) == [WEB]
    # 24 h by default, from now (notBefore is backdated for clock skew, not the expiry).
    assert leaf.not_valid_after_utc == (now + timedelta(hours=24)).replace(microsecond=0)
    assert leaf.not_valid_before_utc <= now
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert got.ca_id == mesh_ca.signing("m1").ca_id


def test_lifetime_is_configurable_and_bounded(mesh_ca):
    now = real_now()
    _key, csr = C.make_csr(WEB)
    got = mesh_ca.sign_csr("m1", csr, WEB, timedelta(minutes=30), now=now)
    assert got.not_after == (now + timedelta(minutes=30)).replace(microsecond=0)
    with pytest.raises(InvalidTtl):
        mesh_ca.sign_csr("m1", csr, WEB, timedelta(days=365), now=now)
    short = MeshCA(mesh_ca.store, KeyRef("unused", mesh_ca._key.get()), default_ttl=timedelta(hours=2))
    assert short.sign_csr("m1", csr, WEB, now=now).not_after == (now + timedelta(hours=2)).replace(microsecond=0)


def test_certificate_never_outlives_its_ca(store, cluster_key):
    ca = MeshCA(store, cluster_key, ca_lifetime=timedelta(hours=5))
    now = real_now()
    ca.create("m1", now=now)
    _key, csr = C.make_csr(WEB)
    got = ca.sign_csr("m1", csr, WEB, timedelta(hours=24), now=now)
    assert got.not_after == ca.signing("m1").certificate.not_valid_after_utc


def test_another_mesh_bundle_does_not_verify(mesh_ca):
    _key, csr = C.make_csr(WEB)
    got = mesh_ca.sign_csr("m1", csr, WEB)
    with pytest.raises(VerificationError):
        verify(mesh_ca.bundle("m2"), got.chain_pem, real_now())


def test_csr_asking_for_another_identity_is_refused(mesh_ca):
    _key, csr = C.make_csr("spiffe://meshd.local/mesh/m1/virtualNode/db")
    with pytest.raises(CSRIdentityMismatch) as err:
        mesh_ca.sign_csr("m1", csr, WEB)
    assert err.value.authorized == WEB
    assert err.value.requested == ["spiffe://meshd.local/mesh/m1/virtualNode/db"]


def test_csr_with_extra_names_is_refused(mesh_ca):
    key = C.new_private_key()
    from cryptography.hazmat.primitives import hashes, serialization
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(WEB),
                                                       x509.DNSName("bank.example")]), critical=False)
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CSRIdentityMismatch) as err:
        mesh_ca.sign_csr("m1", csr, WEB)
    assert "bank.example" in err.value.requested


def test_csr_without_names_gets_exactly_the_authorized_identity(mesh_ca):
    from cryptography.hazmat.primitives import hashes, serialization
    key = C.new_private_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "admin")]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    got = mesh_ca.sign_csr("m1", csr, WEB)
    leaf = x509.load_pem_x509_certificate(got.cert_pem)
    assert C.uri_sans(leaf) == [WEB]
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "web"


def test_garbage_and_tampered_csrs_are_refused(mesh_ca):
    with pytest.raises(InvalidCSR) as err:
        mesh_ca.sign_csr("m1", b"not a csr", WEB)
    assert err.value.problem == "parse"
    _key, csr = C.make_csr(WEB)
    # Swap the public key for another one: the self-signature no longer matches.
    other_key, other_csr = C.make_csr(WEB)
    a, b = x509.load_pem_x509_csr(csr), x509.load_pem_x509_csr(other_csr)
    from cryptography.hazmat.primitives import serialization
    der = bytearray(a.public_bytes(serialization.Encoding.DER))
    pa = a.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pb = b.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    i = der.find(pa)
    der[i:i + len(pa)] = pb
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidCSR) as err:
        mesh_ca.sign_csr("m1", forged, WEB)
    assert err.value.problem == "signature"


def test_identity_must_belong_to_the_mesh_and_trust_domain(mesh_ca):
    other = "spiffe://meshd.local/mesh/m2/virtualNode/web"
    _key, csr = C.make_csr(other)
    with pytest.raises(InvalidIdentity):
        mesh_ca.sign_csr("m1", csr, other)
    foreign = "spiffe://evil.example/mesh/m1/virtualNode/web"
    _key, csr = C.make_csr(foreign)
    with pytest.raises(InvalidIdentity):
        mesh_ca.sign_csr("m1", csr, foreign)


def test_host_identities_come_from_the_cluster_ca(mesh_ca):
    host = host_id("meshd.local", "host-a").uri
    _key, csr = C.make_csr(host)
    with pytest.raises(InvalidIdentity):
        mesh_ca.sign_csr("m1", csr, host)
    with pytest.raises(NoCA):
        mesh_ca.sign_csr(CLUSTER, csr, host)
    mesh_ca.create(CLUSTER)
    got = mesh_ca.sign_csr(CLUSTER, csr, host)
    assert [str(s.value) for s in verify(mesh_ca.bundle(CLUSTER), got.chain_pem, real_now()).subjects] == [host]


def test_trust_domain_is_configurable(store, cluster_key):
    ca = MeshCA(store, cluster_key, trust_domain="prod.example")
    ca.create("m1")
    ident = workload_id("prod.example", "m1", "web").uri
    _key, csr = C.make_csr(ident)
    assert C.uri_sans(x509.load_pem_x509_certificate(ca.sign_csr("m1", csr, ident).cert_pem)) == [ident]
    _key, csr = C.make_csr(WEB)
    with pytest.raises(InvalidIdentity):
        ca.sign_csr("m1", csr, WEB)


def test_create_twice_is_refused_and_ensure_is_idempotent(mesh_ca):
    first = mesh_ca.signing("m1")
    with pytest.raises(CAExists):
        mesh_ca.create("m1")
    assert mesh_ca.ensure("m1").ca_id == first.ca_id
    assert mesh_ca.ensure("m3").signing


# -- key at rest ------------------------------------------------------------------------
def test_ca_key_in_etcd_is_ciphertext_that_only_the_cluster_key_opens(mesh_ca, etcd, etcd_prefix, tmp_path):
    import etcd3

    info = mesh_ca.signing("m1")
    # Read the raw value with a plain etcd client, not through the store.
    client = etcd3.client(host="127.0.0.1", port=int(etcd.url.rsplit(":", 1)[1]))
    raw, _ = client.get(f"{etcd_prefix}ca/m1/keys/{info.ca_id}")
    client.close()
    assert raw is not None and len(raw) > 64
    assert b"-----BEGIN" not in raw and b"PRIVATE KEY" not in raw
    from cryptography.hazmat.primitives import serialization
    with pytest.raises(ValueError):
        serialization.load_der_private_key(raw, password=None)
    # The cluster key opens it, and the result is the CA certificate's private key.
    der = mesh_ca._key.get().open(f"ca/m1/keys/{info.ca_id}", raw)
    key = serialization.load_der_private_key(der, password=None)
    assert C._same_public_key(key.public_key(), info.certificate.public_key())
    # Another cluster key does not, nor does the right key at another mesh's path.
    with pytest.raises(WrongClusterKey):
        ClusterKey.generate(tmp_path / "other.key").open(f"ca/m1/keys/{info.ca_id}", raw)
    with pytest.raises(DecryptionFailed):
        mesh_ca._key.get().open(f"ca/m2/keys/{info.ca_id}", raw)
    # Nothing about the CA record holds the key either.
    record = mesh_ca.store.get(f"ca/m1/authorities/{info.ca_id}").value
    assert b"PRIVATE KEY" not in record


def test_ca_key_moved_to_another_mesh_does_not_sign(mesh_ca):
    """An etcd writer who copies mesh m1's sealed key over m2's gets a refusal, not a signature."""
    m1, m2 = mesh_ca.signing("m1"), mesh_ca.signing("m2")
    stolen = mesh_ca.store.get(f"ca/m1/keys/{m1.ca_id}").value
    mesh_ca.store.put(f"ca/m2/keys/{m2.ca_id}", stolen)
    ident = "spiffe://meshd.local/mesh/m2/virtualNode/web"
    _key, csr = C.make_csr(ident)
    with pytest.raises(DecryptionFailed):
        mesh_ca.sign_csr("m2", csr, ident)


def test_without_the_cluster_key_meshd_cannot_sign(mesh_ca, tmp_path):
    keyless = MeshCA(mesh_ca.store, KeyRef(tmp_path / "nope.key"))
    _key, csr = C.make_csr(WEB)
    with pytest.raises(NoClusterKey) as err:
        keyless.sign_csr("m1", csr, WEB)
    assert "this meshd cannot sign: no cluster key at" in str(err.value)
    with pytest.raises(NoClusterKey):
        keyless.create("m9")
    assert keyless.store.get("ca/m9/signing") is None
    # Reading the bundle needs no key: a keyless meshd still verifies peers.
    assert keyless.bundle("m1") == mesh_ca.bundle("m1")


# -- import -----------------------------------------------------------------------------
def _pem(cert, key) -> CASource:
    return CASource(C.cert_to_pem(cert), C.key_to_pem(key))


def test_import_a_root_ca_from_files(store, cluster_key, tmp_path):
    now = real_now()
    cert, key = C.make_ca("user root", now=now, lifetime=timedelta(days=30))
    (tmp_path / "ca.pem").write_bytes(C.cert_to_pem(cert))
    (tmp_path / "ca.key").write_bytes(C.key_to_pem(key))
    ca = MeshCA(store, cluster_key)
    info = ca.create("m1", CASource.from_files(tmp_path / "ca.pem", tmp_path / "ca.key"))
    assert info.origin == "imported" and info.signing
    assert info.certificate == cert
    _k, csr = C.make_csr(WEB)
    got = ca.sign_csr("m1", csr, WEB)
    verify(C.cert_to_pem(cert), got.chain_pem, real_now())


@pytest.mark.parametrize("problem", ["not_ca", "key_mismatch", "expired", "chain"])
def test_import_refuses_unfit_cas(store, cluster_key, problem):
    now = real_now()
    root, root_key = C.make_ca("root", now=now, lifetime=timedelta(days=30), path_length=1)
    if problem == "not_ca":
        _k, csr = C.make_csr(WEB)
        leaf = C.issue_leaf(root, root_key, x509.load_pem_x509_csr(csr).public_key(), WEB,
                            not_before=now, not_after=now + timedelta(days=1))
        source = CASource(C.cert_to_pem(leaf), _k)
    elif problem == "key_mismatch":
        source = CASource(C.cert_to_pem(root), C.key_to_pem(C.new_private_key()))
    elif problem == "expired":
        old, old_key = C.make_ca("old", now=now - timedelta(days=40), lifetime=timedelta(days=30))
        source = _pem(old, old_key)
    else:  # an intermediate whose "chain" is some unrelated root
        inter, inter_key = C.make_ca("inter", now=now, lifetime=timedelta(days=10), issuer=(root, root_key))
        stranger, _ = C.make_ca("stranger", now=now, lifetime=timedelta(days=30))
        source = CASource(C.cert_to_pem(inter), C.key_to_pem(inter_key), C.cert_to_pem(stranger))
    ca = MeshCA(store, cluster_key)
    with pytest.raises(InvalidCA) as err:
        ca.create("m1", source)
    assert err.value.problem == problem
    assert store.get("ca/m1/signing") is None


def test_intermediate_signed_by_the_users_root(store, cluster_key):
    now = real_now()
    root, root_key = C.make_ca("user root", now=now, lifetime=timedelta(days=90), path_length=1)
    inter, inter_key = C.make_ca("meshd m1", now=now, lifetime=timedelta(days=30), issuer=(root, root_key))
    ca = MeshCA(store, cluster_key)
    info = ca.create("m1", CASource(C.cert_to_pem(inter), C.key_to_pem(inter_key), C.cert_to_pem(root)))
    assert info.origin == "intermediate"
    assert C.load_certs(info.chain_pem) == [root]  # the chain is kept
    _k, csr = C.make_csr(WEB)
    got = ca.sign_csr("m1", csr, WEB)
    # The presented chain is leaf + intermediate: it verifies up to the user's own root...
    assert C.load_certs(got.chain_pem)[1] == inter
    verify(C.cert_to_pem(root), got.chain_pem, real_now())
    # ...and the mesh bundle holds the intermediate, not the root, so another intermediate
    # of the same root (another mesh, another team) is not trusted in this mesh.
    assert C.load_certs(ca.bundle("m1")) == [inter]
    other, other_key = C.make_ca("other team", now=now, lifetime=timedelta(days=30), issuer=(root, root_key))
    foreign = C.issue_leaf(other, other_key, C.new_private_key().public_key(), WEB,
                           not_before=now, not_after=now + timedelta(hours=1))
    with pytest.raises(VerificationError):
        verify(ca.bundle("m1"), C.cert_to_pem(foreign) + C.cert_to_pem(other), real_now())


# -- rotation ---------------------------------------------------------------------------
def test_rotation_adds_then_switches_then_retires(mesh_ca):
    old = mesh_ca.signing("m1")
    new = mesh_ca.begin_rotation("m1")
    # Step 1: both trusted, the old one still signs.
    assert {c.ca_id for c in mesh_ca.authorities("m1") if c.state == "active"} == {old.ca_id, new.ca_id}
    assert len(C.load_certs(mesh_ca.bundle("m1"))) == 2
    _k, csr = C.make_csr(WEB)
    assert mesh_ca.sign_csr("m1", csr, WEB).ca_id == old.ca_id
    with pytest.raises(CAInUse) as err:
        mesh_ca.retire("m1", old.ca_id)
    assert err.value.why == "signing"
    # Step 2: the new one signs; certificates of both verify against the bundle.
    mesh_ca.switch_signing("m1", new.ca_id)
    got = mesh_ca.sign_csr("m1", csr, WEB)
    assert got.ca_id == new.ca_id
    verify(mesh_ca.bundle("m1"), got.chain_pem, real_now())
    # Step 3: retire the old one: out of the bundle, its key deleted, record kept.
    retired = mesh_ca.retire("m1", old.ca_id)
    assert retired.state == "retired" and retired.retired_at is not None
    assert C.load_certs(mesh_ca.bundle("m1")) == [new.certificate]
    assert mesh_ca.store.get(f"ca/m1/keys/{old.ca_id}") is None
    assert [c.ca_id for c in mesh_ca.authorities("m1")] == [old.ca_id, new.ca_id]
    with pytest.raises(CAInUse):
        mesh_ca.retire("m1", new.ca_id)


def test_rotation_to_an_imported_ca(mesh_ca):
    cert, key = C.make_ca("user root 2", now=real_now(), lifetime=timedelta(days=30))
    new = mesh_ca.begin_rotation("m1", _pem(cert, key))
    assert new.origin == "imported" and not new.signing
    mesh_ca.switch_signing("m1", new.ca_id)
    _k, csr = C.make_csr(WEB)
    verify(C.cert_to_pem(cert), mesh_ca.sign_csr("m1", csr, WEB).chain_pem, real_now())


def test_rotation_needs_an_existing_ca(store, cluster_key):
    with pytest.raises(NoCA):
        MeshCA(store, cluster_key).begin_rotation("nomesh")


# -- renewal ----------------------------------------------------------------------------
def test_renewal_at_two_thirds_of_lifetime(mesh_ca):
    now = real_now()
    _k, csr = C.make_csr(WEB)
    leaf = x509.load_pem_x509_certificate(mesh_ca.sign_csr("m1", csr, WEB, timedelta(hours=3), now=now).cert_pem)
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    r = C.renewal(leaf, start)
    assert r.at == start + (end - start) * 2 / 3 and not r.due and r.delay == r.at - start
    assert C.renewal(leaf, r.at).due
    late = C.renewal(leaf, end + timedelta(hours=1))
    assert late.due and late.delay == timedelta(0)
    from fractions import Fraction
    assert C.renewal(leaf, start, Fraction(1, 2)).at == start + (end - start) / 2


def test_expired_certificates_are_issued_only_when_asked_in_the_past(mesh_ca):
    """Issuance takes `now` from the caller; the suite uses it to build expired certs."""
    past = real_now() - CA_EPOCH / 2
    _k, csr = C.make_csr(WEB)
    got = mesh_ca.sign_csr("m1", csr, WEB, timedelta(hours=1), now=past)
    assert got.not_after < real_now()
    with pytest.raises(VerificationError):
        verify(got.bundle_pem, got.chain_pem, real_now())


def test_cluster_key_rotation_reseals_every_ca_key(mesh_ca, tmp_path):
    from meshd.security.ca import reseal_keys

    old = mesh_ca._key.get()
    new = ClusterKey.generate(tmp_path / "new.key")
    mesh_ca.begin_rotation("m1")
    assert reseal_keys(mesh_ca.store, old, new) == 3
    assert reseal_keys(mesh_ca.store, old, new) == 0  # re-runnable
    with pytest.raises(WrongClusterKey):  # a meshd still on the old key cannot sign...
        mesh_ca.sign_csr("m1", C.make_csr(WEB)[1], WEB)
    rotated = MeshCA(mesh_ca.store, new)  # ...one with the new key can
    got = rotated.sign_csr("m1", C.make_csr(WEB)[1], WEB)
    verify(rotated.bundle("m1"), got.chain_pem, real_now())
