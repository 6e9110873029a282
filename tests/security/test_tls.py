"""Real TLS handshakes over loopback with the contexts meshd.security produces: what is
accepted, what is refused and why, file sources, and hot-swapped credentials."""
from __future__ import annotations

import ssl
from datetime import timedelta

import pytest

from meshd.security import certs as C
from meshd.security import tls
from meshd.security.errors import PeerIdentityRejected, TlsConfigError, UnsupportedSource

from .helpers import CA_EPOCH, Client, issue, real_now, round_trip

pytestmark = [pytest.mark.identity, pytest.mark.etcd]

M1_NODES = "spiffe://meshd.local/mesh/m1/virtualNode/*"


def refused(ctx, server, allowed=None) -> BaseException:
    """Attempt a request; return the client-side error (the test fails if it got an echo)."""
    try:
        echo = round_trip(ctx, server.address, b"secret", allowed)
    except (ssl.SSLError, OSError, PeerIdentityRejected) as err:
        return err
    pytest.fail(f"request went through and echoed {echo!r}")


def server_reason(ctx, server, allowed=None) -> str:
    """Attempt a request that must be refused; return the server's reason for refusing it
    (the verify message of its own, new failure — not one left by an earlier attempt)."""
    before = len(server.failures)
    refused(ctx, server, allowed)
    err = server.failure_after(before)
    return getattr(err, "verify_message", None) or f"{type(err).__name__}: {err}"


def test_mutual_tls_between_two_nodes_of_a_mesh(mesh_ca, servers):
    web, db = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "db")
    server = servers(db.server(), allowed=[M1_NODES])
    c = Client(web.client(), server.address, allowed=[db.identity])
    try:
        assert c.echo(b"hello") == b"hello"
        assert c.server_identity == db.identity
        assert c.sock.selected_alpn_protocol() == "h2"
        assert c.sock.version() in ("TLSv1.3", "TLSv1.2")
    finally:
        c.close()
    assert server.peers == [web.identity]


def test_http1_only_client_negotiates_http11(mesh_ca, servers):
    web, db = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "db")
    server = servers(db.server())
    ctx = tls.client_context(web.chain_pem, web.key_pem, web.bundle_pem, alpn=("http/1.1",))
    c = Client(ctx, server.address)
    assert c.sock.selected_alpn_protocol() == "http/1.1"
    c.close()


def test_expired_client_certificate_is_refused(mesh_ca, servers):
    db = issue(mesh_ca, "m1", "db")
    stale = issue(mesh_ca, "m1", "web", ttl=timedelta(hours=1), now=real_now() - CA_EPOCH / 2)
    server = servers(db.server())
    assert server_reason(stale.client(), server) == "certificate has expired"
    assert server.peers == []


def test_expired_server_certificate_is_refused(mesh_ca, servers):
    web = issue(mesh_ca, "m1", "web")
    stale = issue(mesh_ca, "m1", "db", ttl=timedelta(hours=1), now=real_now() - CA_EPOCH / 2)
    server = servers(stale.server())
    err = refused(web.client(), server)
    assert isinstance(err, ssl.SSLCertVerificationError) and err.verify_message == "certificate has expired"


def test_certificate_from_another_meshs_ca_is_refused(mesh_ca, servers):
    db = issue(mesh_ca, "m1", "db")
    intruder = issue(mesh_ca, "m2", "web")
    server = servers(db.server())
    # The intruder knows m1's (public) bundle, so it accepts the server; the server must
    # be the one refusing m2's certificate.
    intruding = tls.client_context(intruder.chain_pem, intruder.key_pem, db.bundle_pem)
    assert server_reason(intruding, server) == "unable to get local issuer certificate"
    # And the other way round: an m1 client does not accept an m2 server.
    err = refused(issue(mesh_ca, "m1", "web").client(), servers(intruder.server()))
    assert isinstance(err, ssl.SSLCertVerificationError)


def test_wrong_san_is_refused_by_the_server(mesh_ca, servers):
    db = issue(mesh_ca, "m1", "db")
    web, admin = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "admin-tool")
    server = servers(db.server(), allowed=[web.identity])
    refused(admin.client(), server)
    err = server.failures[-1]
    assert isinstance(err, PeerIdentityRejected) and err.identity == admin.identity
    assert round_trip(web.client(), server.address, b"ok") == b"ok"


def test_wrong_san_is_refused_by_the_client(mesh_ca, servers):
    web, db, cache = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "db"), issue(mesh_ca, "m1", "cache")
    server = servers(cache.server())
    err = refused(web.client(), server, allowed=[db.identity])
    assert isinstance(err, PeerIdentityRejected) and err.identity == cache.identity


def test_self_signed_client_certificate_is_refused(mesh_ca, servers):
    db = issue(mesh_ca, "m1", "db")
    now = real_now()
    # A self-made "CA" that signs itself a certificate with a perfectly valid-looking SPIFFE ID.
    fake_ca, fake_key = C.make_ca("meshd meshd.local mesh m1 CA", now=now, lifetime=timedelta(days=1))
    key = C.new_private_key()
    leaf = C.issue_leaf(fake_ca, fake_key, key.public_key(), db.identity.replace("db", "web"),
                        not_before=now, not_after=now + timedelta(hours=1))
    server = servers(db.server(), allowed=[M1_NODES])
    ctx = tls.client_context(C.cert_to_pem(leaf) + C.cert_to_pem(fake_ca), C.key_to_pem(key), db.bundle_pem)
    assert server_reason(ctx, server) == "self-signed certificate in certificate chain"
    # A bare self-signed end certificate (issuer = subject, its own key) is refused too.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    self_key = C.new_private_key()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "web")])
    self_signed = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(self_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
                   .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                       "spiffe://meshd.local/mesh/m1/virtualNode/web")]), critical=False)
                   .sign(self_key, hashes.SHA256()))
    ctx = tls.client_context(C.cert_to_pem(self_signed), C.key_to_pem(self_key), db.bundle_pem)
    assert server_reason(ctx, server) == "self-signed certificate"
    assert server.peers == []


def test_client_without_certificate_is_refused(mesh_ca, servers):
    db = issue(mesh_ca, "m1", "db")
    server = servers(db.server())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=db.bundle_pem.decode())
    refused(ctx, server)
    assert server.peers == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_1_is_refused(mesh_ca, servers):
    web, db = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "db")
    server = servers(db.server())
    ctx = web.client()
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    refused(ctx, server)


def test_check_san_patterns():
    web = "spiffe://meshd.local/mesh/m1/virtualNode/web"
    assert tls.check_san(web, [web]) == web
    assert tls.check_san(web, [M1_NODES]) == web
    assert tls.check_san(web, None) == web  # App Mesh: no matchers, no SAN restriction
    for allowed in (["spiffe://meshd.local/mesh/m2/virtualNode/*"], ["spiffe://meshd.local/mesh/m1/virtualNode/db"],
                    ["spiffe://meshd.local/*"], ["spiffe://meshd.local/mesh/m1/virtualNode/we"]):
        with pytest.raises(PeerIdentityRejected):
            tls.check_san(web, allowed)
    with pytest.raises(PeerIdentityRejected):
        tls.check_san(None, [M1_NODES])


# -- App Mesh sources -------------------------------------------------------------------
def test_file_sources_are_honoured_as_is(mesh_ca, servers, tmp_path):
    web, db = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "db")
    for name, blob in {"db.pem": db.chain_pem, "db.key": db.key_pem, "ca.pem": db.bundle_pem}.items():
        (tmp_path / name).write_bytes(blob)
    cert = tls.certificate_source("file", certificate_chain=str(tmp_path / "db.pem"), private_key=str(tmp_path / "db.key"))
    trust = tls.trust_source("file", certificate_chain=str(tmp_path / "ca.pem"))
    creds = tls.Credentials.from_files(cert.certificate_chain, cert.private_key, trust.certificate_chain)
    server = servers(creds.server_front())
    assert round_trip(web.client(), server.address, b"f", allowed=[db.identity]) == b"f"
    # The user replaces the files; reload picks the new certificate up for new handshakes.
    db2 = issue(mesh_ca, "m1", "db")
    (tmp_path / "db.pem").write_bytes(db2.chain_pem)
    (tmp_path / "db.key").write_bytes(db2.key_pem)
    creds.reload_files()
    c = Client(web.client(), server.address)
    assert c.server_serial == db2.serial
    c.close()


@pytest.mark.parametrize("kind", ["sds"])
def test_sds_sources_are_refused_clearly(kind):
    with pytest.raises(UnsupportedSource) as err:
        tls.certificate_source(kind, field="spec.listeners[0].tls.certificate")
    assert err.value.source == kind
    assert "not supported here, use file or the mesh CA" in str(err.value)
    assert "spec.listeners[0].tls.certificate" in str(err.value)
    with pytest.raises(UnsupportedSource):
        tls.trust_source(kind)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(TlsConfigError) as err:
        tls.Credentials.from_files(str(tmp_path / "no.pem"), str(tmp_path / "no.key"), str(tmp_path / "ca.pem"))
    assert err.value.what.endswith("no.pem")


def test_mismatched_key_is_a_config_error(mesh_ca):
    web, db = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "db")
    with pytest.raises(TlsConfigError):
        tls.server_context(web.chain_pem, db.key_pem, web.bundle_pem)


# -- hot swap ---------------------------------------------------------------------------
def test_update_changes_new_handshakes_and_keeps_open_connections(mesh_ca, servers):
    web, db = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "db")
    creds = tls.Credentials(db.chain_pem, db.key_pem, db.bundle_pem)
    server = servers(creds.server_front(), allowed=[M1_NODES])
    before = Client(web.client(), server.address)
    assert before.server_serial == db.serial and before.echo(b"1") == b"1"
    renewed = issue(mesh_ca, "m1", "db")
    assert creds.update(renewed.chain_pem, renewed.key_pem) == 1
    after = Client(web.client(), server.address)
    assert after.server_serial == renewed.serial
    assert after.sock.selected_alpn_protocol() == "h2"  # the swapped-in context negotiates too
    assert before.echo(b"still here") == b"still here"  # the old session goes on
    before.close()
    after.close()


def test_bad_update_keeps_the_working_credentials(mesh_ca, servers):
    web, db = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "db")
    creds = tls.Credentials(db.chain_pem, db.key_pem, db.bundle_pem)
    server = servers(creds.server_front())
    with pytest.raises(TlsConfigError):
        creds.update(web.chain_pem)  # web's certificate with db's key
    assert creds.generation == 0
    assert round_trip(web.client(), server.address, b"x") == b"x"


def test_front_context_uses_the_current_trust_bundle(mesh_ca, servers):
    """Trust moves with the swap too: a client from m2 is refused until m2's CA is trusted."""
    db, m2web = issue(mesh_ca, "m1", "db"), issue(mesh_ca, "m2", "web")
    creds = tls.Credentials(db.chain_pem, db.key_pem, db.bundle_pem)
    server = servers(creds.server_front())
    client = tls.client_context(m2web.chain_pem, m2web.key_pem, db.bundle_pem)
    refused(client, server)
    creds.update(bundle_pem=db.bundle_pem + m2web.bundle_pem)
    assert round_trip(client, server.address, b"now trusted") == b"now trusted"
