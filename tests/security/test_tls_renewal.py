"""Renewed credentials and TLS session resumption, over real loopback handshakes: a session
made with one certificate never resumes after the certificate is renewed, and `file`
sources are re-read only when the files change."""
from __future__ import annotations

import os
import socket
import ssl

import pytest

from meshd.security import tls

from .helpers import issue

pytestmark = [pytest.mark.identity, pytest.mark.etcd, pytest.mark.hardening]


def _connect(ctx: ssl.SSLContext, address, session=None) -> ssl.SSLSocket:
    """A handshake offering `session`; one echoed line, so TLS 1.3 tickets have arrived."""
    s = ctx.wrap_socket(socket.create_connection(address, timeout=10), session=session)
    f = s.makefile("rwb", buffering=0)
    f.write(b"x\n")
    assert f.readline() == b"x\n"
    return s


def _serial(s: ssl.SSLSocket) -> int:
    from cryptography import x509  # noqa: PLC0415
    return x509.load_der_x509_certificate(s.getpeercert(True)).serial_number


def test_tickets_do_not_resume_across_a_renewal(mesh_ca, servers):
    """The front hands each connection to the current context, whose ticket keys are its
    own: a ticket issued before `update` is refused after it (a full handshake with the new
    certificate), while tickets of the current generation keep resuming."""
    web, db = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "db")
    creds = tls.Credentials(db.chain_pem, db.key_pem, db.bundle_pem)
    server = servers(creds.server_front())
    client = web.client()
    first = _connect(client, server.address)
    assert first.version() == "TLSv1.3" and first.session.has_ticket
    again = _connect(client, server.address, first.session)
    assert again.session_reused and _serial(again) == db.serial
    renewed = issue(mesh_ca, "m1", "db")
    creds.update(renewed.chain_pem, renewed.key_pem)
    after = _connect(client, server.address, again.session)
    assert not after.session_reused, "a ticket from before the renewal resumed"
    assert _serial(after) == renewed.serial
    assert _connect(client, server.address, after.session).session_reused
    assert again.getpeercert(True)  # connections already open go on
    for s in (first, again, after):
        s.close()


def test_sni_front_tickets_die_with_the_front(mesh_ca, servers):
    """An SNI-selecting front issues tickets under its own keys whatever context it selects;
    making a new front (as the ingress does on renewal) is what retires them."""
    web, db = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "db")
    creds = tls.Credentials(db.chain_pem, db.key_pem, db.bundle_pem)
    fronts = [tls.sni_front(lambda _obj, _name: creds.server)]
    server = servers(tls.ServerFront(lambda: fronts[-1]))
    client = web.client()
    first = _connect(client, server.address)
    assert _connect(client, server.address, first.session).session_reused
    renewed = issue(mesh_ca, "m1", "db")
    creds.update(renewed.chain_pem, renewed.key_pem)
    # The same front: the old ticket still resumes, with the old certificate.
    stale = _connect(client, server.address, first.session)
    assert stale.session_reused and _serial(stale) == db.serial
    fronts.append(tls.sni_front(lambda _obj, _name: creds.server))
    fresh = _connect(client, server.address, stale.session)
    assert not fresh.session_reused and _serial(fresh) == renewed.serial
    for s in (first, stale, fresh):
        s.close()


def test_no_tickets_means_full_handshakes(mesh_ca, servers):
    web, db = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "db")
    creds = tls.Credentials(db.chain_pem, db.key_pem, db.bundle_pem)
    front = tls.sni_front(lambda _obj, _name: creds.server)
    front.num_tickets = 0
    server = servers(tls.ServerFront(lambda: front))
    client = web.client()
    first = _connect(client, server.address)
    assert not first.session.has_ticket
    assert not _connect(client, server.address, first.session).session_reused
    first.close()


def test_file_sources_are_reread_only_when_changed(mesh_ca, servers, tmp_path):
    web, db = issue(mesh_ca, "m1", "web"), issue(mesh_ca, "m1", "db")
    paths = {n: tmp_path / n for n in ("db.pem", "db.key", "ca.pem")}
    for name, blob in zip(paths, (db.chain_pem, db.key_pem, db.bundle_pem)):
        paths[name].write_bytes(blob)
    creds = tls.Credentials.from_files(*(str(p) for p in paths.values()))
    server = servers(creds.server_front())
    assert not creds.refresh_files() and creds.generation == 0
    renewed = issue(mesh_ca, "m1", "db")
    # Replaced the way deployments do it: a new file renamed over the old (a new inode).
    for name, blob in (("db.pem", renewed.chain_pem), ("db.key", renewed.key_pem)):
        tmp = tmp_path / (name + ".new")
        tmp.write_bytes(blob)
        os.replace(tmp, paths[name])
    assert creds.refresh_files() and creds.serial == renewed.serial
    assert not creds.refresh_files()
    s = _connect(web.client(), server.address)
    assert _serial(s) == renewed.serial
    s.close()


def test_listener_without_trust_asks_no_client_certificate(mesh_ca, servers, tmp_path):
    db = issue(mesh_ca, "m1", "db")
    (tmp_path / "db.pem").write_bytes(db.chain_pem)
    (tmp_path / "db.key").write_bytes(db.key_pem)
    creds = tls.Credentials.from_files(str(tmp_path / "db.pem"), str(tmp_path / "db.key"), "")
    server = servers(creds.server_front())
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(cadata=db.bundle_pem.decode())
    anonymous.check_hostname = False
    s = _connect(anonymous, server.address)
    assert _serial(s) == db.serial
    s.close()
