"""Workload certificates of the data plane: issued from the mesh CA with the node's SPIFFE ID
and DNS name, renewed in place at two thirds of their lifetime, never signed from the loop."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest

from meshd.proxy import WorkloadCerts
from meshd.security import ClusterKey, KeyRef, MeshCA

pytestmark = [pytest.mark.identity, pytest.mark.etcd]


def test_issued_then_renewed_at_two_thirds_of_life(store, tmp_path):
    key = ClusterKey.generate(tmp_path / "k")
    ca = MeshCA(store, KeyRef(str(tmp_path / "k"), key))
    ca.ensure("shop")
    signed = []

    def sign(identity, csr):
        issued = ca.sign_csr("shop", csr, identity, ttl=timedelta(hours=1))
        signed.append(issued.not_after)
        return issued.chain_pem, issued.bundle_pem
    now = [__import__("time").time()]
    certs = WorkloadCerts("meshd.local", sign, clock=lambda: now[0])
    first = certs.contexts("shop", "web")
    assert first.identity == "spiffe://meshd.local/mesh/shop/virtualNode/web"
    assert certs.contexts("shop", "web") is first  # cached while fresh
    assert not certs.renew_due()
    now[0] += 0.6 * 3600  # before two thirds of the lifetime
    assert not certs.renew_due() and len(signed) == 1
    now[0] += 0.1 * 3600  # past two thirds
    serial, server, client = first.serial, first.server, first.client_h2
    assert certs.renew_due() == [("shop", "web", "workload")]
    # Renewed in place: whoever holds the credentials sees new contexts and certificate.
    assert certs.contexts("shop", "web") is first and len(signed) == 2
    assert first.serial != serial and first.server is not server and first.client_h2 is not client


def test_the_loop_side_never_signs_and_a_failed_renewal_keeps_the_certificate(store, tmp_path, caplog):
    key = ClusterKey.generate(tmp_path / "k")
    ca = MeshCA(store, KeyRef(str(tmp_path / "k"), key))
    ca.ensure("shop")
    outage = []

    def sign(identity, csr):
        if outage:
            raise ConnectionError("etcd unavailable")
        issued = ca.sign_csr("shop", csr, identity, ttl=timedelta(hours=1))
        return issued.chain_pem, issued.bundle_pem
    now = [time.time()]
    certs = WorkloadCerts("meshd.local", sign, clock=lambda: now[0])
    # What the loop calls (the SNI callback, the egress) only reads: None until issued,
    # and the next pass of the certificate thread issues what was asked for.
    assert certs.get("shop", "web") is None and certs.issued == 0
    assert certs.renew_due() == [("shop", "web", "workload")]
    creds = certs.get("shop", "web")
    serial = creds.serial
    outage.append(True)
    now[0] += 0.7 * 3600  # due, and signing fails: the current certificate stays
    with caplog.at_level(logging.WARNING, logger="meshd.proxy.tls"):
        assert certs.renew_due() == []
        assert creds.serial == serial and certs.get("shop", "web") is creds
        assert certs.renew_due() == []  # backing off: not tried again at once
        assert caplog.records[-1].levelno == logging.WARNING
        now[0] += 0.25 * 3600  # under a tenth of the life left: loud
        assert certs.renew_due() == []
        assert caplog.records[-1].levelno == logging.ERROR
    outage.clear()
    now[0] += 120
    assert certs.renew_due() == [("shop", "web", "workload")] and creds.serial != serial
