"""A virtual gateway's SPIFFE identity, and which hosts may obtain its certificate."""
from __future__ import annotations

import pytest

from meshd.lease import HostLease
from meshd.security import spiffe
from meshd.security.errors import InvalidIdentity, PermissionDenied
from meshd.security.hostauth import authorize_certificate, claim_gateway

pytestmark = pytest.mark.etcd

EDGE = "spiffe://meshd.local/mesh/shop/virtualGateway/edge"


def test_gateway_id_round_trips_and_is_not_a_workload():
    sid = spiffe.parse(EDGE)
    assert (sid.kind, sid.mesh, sid.name) == (spiffe.GATEWAY, "shop", "edge")
    assert spiffe.gateway_id("meshd.local", "shop", "edge").uri == EDGE
    assert sid != spiffe.parse("spiffe://meshd.local/mesh/shop/virtualNode/edge")
    with pytest.raises(InvalidIdentity):
        spiffe.parse("spiffe://meshd.local/mesh/shop/virtualGateway/..")
    # A "*" segment admits gateways or nodes, never both kinds through one pattern.
    assert spiffe.matches(EDGE, ["spiffe://meshd.local/mesh/shop/virtualGateway/*"])
    assert not spiffe.matches(EDGE, ["spiffe://meshd.local/mesh/shop/virtualNode/*"])


def test_a_host_gets_a_gateway_certificate_only_while_it_claims_the_gateway(store):
    h1, h2 = "spiffe://meshd.local/host/h1", "spiffe://meshd.local/host/h2"
    with pytest.raises(PermissionDenied):
        authorize_certificate(store, h1, EDGE)
    lease = HostLease(store, ttl=5)
    claim_gateway(store, lease, "h1", "shop", "edge")
    authorize_certificate(store, h1, EDGE)  # no raise
    for who, ident in ((h2, EDGE), (h1, "spiffe://meshd.local/mesh/shop/virtualGateway/other"),
                       (h1, "spiffe://meshd.local/mesh/other/virtualGateway/edge")):
        with pytest.raises(PermissionDenied):
            authorize_certificate(store, who, ident)
    # The claim lives under the host lease: when the host goes, so does its right.
    lease.stop(revoke=True)
    with pytest.raises(PermissionDenied):
        authorize_certificate(store, h1, EDGE)
