"""Continuous mTLS traffic for ~10 s while workload certificates renew and the mesh CA
rotates twice underneath (add → switch → retire): not one request may fail."""
from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from cryptography import x509

from meshd.security import certs as C
from meshd.security import tls

from .helpers import Client, round_trip

pytestmark = [pytest.mark.identity, pytest.mark.etcd]

RUN_SECONDS = 10.0
M1_NODES = "spiffe://meshd.local/mesh/m1/virtualNode/*"


class Node:
    """One side's meshd: it makes its key and CSR, has the CA sign it, swaps credentials."""

    def __init__(self, ca, name: str):
        self.ca = ca
        self.identity = f"spiffe://meshd.local/mesh/m1/virtualNode/{name}"
        chain, key, bundle = self._issue()
        self.first = (chain, key)
        self.creds = tls.Credentials(chain, key, bundle)

    def _issue(self):
        key_pem, csr = C.make_csr(self.identity)
        got = self.ca.sign_csr("m1", csr, self.identity, timedelta(hours=1))
        return got.chain_pem, key_pem, got.bundle_pem

    def renew(self):
        self.creds.update(*self._issue())

    def refresh_bundle(self):
        self.creds.update(bundle_pem=self.ca.bundle("m1"))


def test_no_request_fails_while_certificates_and_ca_rotate(mesh_ca, servers):
    db, web = Node(mesh_ca, "db"), Node(mesh_ca, "web")
    server = servers(db.creds.server_front(), allowed=[M1_NODES])
    stop = threading.Event()
    ok = Counter()
    failures: list[str] = []
    issuers_seen: set[bytes] = set()  # authority key ids of the server certificates seen
    serials_seen: set[int] = set()

    def fresh_connections():
        """A new connection (full handshake) per request: always the current credentials."""
        n = 0
        while not stop.is_set():
            n += 1
            payload = f"fresh-{n}".encode()
            try:
                c = Client(web.creds.client, server.address, allowed=[db.identity])
                try:
                    echo = c.echo(payload)
                finally:
                    c.close()
                if echo != payload:
                    failures.append(f"fresh {n}: echoed {echo!r}")
                    continue
                issuers_seen.add(_aki(c.server_cert))
                serials_seen.add(c.server_serial)
                ok["fresh"] += 1
            except Exception as err:  # every failure counts, whatever its kind
                failures.append(f"fresh {n}: {type(err).__name__}: {err}")

    def long_lived():
        """One connection held for the whole run: a rotation must not break it."""
        c = Client(web.creds.client, server.address, allowed=[db.identity])
        n = 0
        try:
            while not stop.is_set():
                n += 1
                payload = f"kept-{n}".encode()
                try:
                    echo = c.echo(payload)
                except Exception as err:
                    failures.append(f"kept {n}: {type(err).__name__}: {err}")
                    return
                if echo != payload:
                    failures.append(f"kept {n}: echoed {echo!r}")
                ok["kept"] += 1
                time.sleep(0.005)
        finally:
            c.close()

    workers = [threading.Thread(target=fresh_connections), threading.Thread(target=fresh_connections),
               threading.Thread(target=long_lived)]
    for w in workers:
        w.start()

    first_ca = mesh_ca.signing("m1")
    start = time.monotonic()
    rotations = []

    def at(t):
        remaining = start + t - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    # Renew every 0.5 s; two full CA rotations, each: add to bundle → wait for every node
    # to trust it → switch signing → re-issue every workload cert → retire the old CA.
    schedule = {2.0: "begin", 3.0: "switch", 4.0: "retire", 6.0: "begin", 7.0: "switch", 8.0: "retire"}
    t = 0.5
    while t < RUN_SECONDS:
        at(t)
        action = schedule.get(t)
        if action == "begin":
            new = mesh_ca.begin_rotation("m1")
            rotations.append((mesh_ca.signing("m1").ca_id, new.ca_id))
            db.refresh_bundle()
            web.refresh_bundle()
        elif action == "switch":
            mesh_ca.switch_signing("m1", rotations[-1][1])
        elif action == "retire":
            # Every workload certificate was re-issued by the new CA at the last renewal.
            mesh_ca.retire("m1", rotations[-1][0])
            db.refresh_bundle()
            web.refresh_bundle()
        if action in (None, "switch"):
            # Hosts renew at different moments, never together: a window in which the two
            # sides hold certificates from different CAs must be harmless.
            db.renew()
            at(t + 0.2)
            web.renew()
        t += 0.5
    at(RUN_SECONDS)
    stop.set()
    for w in workers:
        w.join(timeout=15)

    assert failures == []
    assert server.failures == []
    assert ok["fresh"] > 50 and ok["kept"] > 50, ok
    # The run did rotate: each of the three CAs signed server certificates the clients
    # accepted, many renewed certificates were presented, and only the last CA is trusted.
    assert len(rotations) == 2 and rotations[0][0] == first_ca.ca_id
    cas = {_ski(a.certificate): a.ca_id for a in mesh_ca.authorities("m1")}
    assert {cas[k] for k in issuers_seen} == {first_ca.ca_id, rotations[0][1], rotations[1][1]}
    assert len(serials_seen) >= 10, len(serials_seen)
    active = [a for a in mesh_ca.authorities("m1") if a.state == "active"]
    assert [a.ca_id for a in active] == [rotations[-1][1]]
    # After the retirements, the client's first certificate (from the first CA) is refused.
    before = len(server.failures)
    with pytest.raises(OSError):
        round_trip(tls.client_context(*web.first, db.creds.bundle_pem + first_ca.cert_pem), server.address)
    refusal = server.failure_after(before)
    # (OpenSSL completes the client's chain from its own store, so the retired CA arrives
    # with the leaf and is reported as an untrusted self-signed certificate.)
    assert refusal.verify_message in (
        "unable to get local issuer certificate", "self-signed certificate in certificate chain")


def _aki(cert) -> bytes:
    return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


def _ski(cert) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
