"""Workload certificates of the data plane: issued from the mesh CA with the node's SPIFFE ID
and DNS name, and renewed at two thirds of their lifetime."""
from __future__ import annotations

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
