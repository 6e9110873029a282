"""A virtual gateway's SPIFFE identity, and which hosts may obtain its certificate."""
from __future__ import annotations

import pytest

from meshd.lease import HostLease
from meshd.security import spiffe
from meshd.security.errors import InvalidIdentity, PermissionDenied
from meshd.security.hostauth import authorize_certificate, claim_gateway
from test_identity_api import clock, cluster  # noqa: F401 - the fixtures: a meshd with mTLS and token listeners, its clock

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


def test_sign_certificate_issues_a_claimed_gateway_its_identity_from_the_mesh_ca(cluster):
    """Through the admin API, as a host without the cluster key would ask a signer."""
    import grpc  # noqa: PLC0415
    from cryptography import x509  # noqa: PLC0415

    from meshd.security import make_csr  # noqa: PLC0415
    from meshd.security.certs import uri_sans  # noqa: PLC0415
    from meshd.v1 import admin_pb2 as pb, security_pb2 as sec  # noqa: PLC0415
    daemon, root, _, mtls_api, tmp_path = cluster
    root.admin.CreateMesh(pb.CreateMeshRequest(mesh_name="shop"), timeout=10)
    ident = tmp_path / "h1" / "identity"
    host = mtls_api((ident / "host.crt").read_bytes(), (ident / "host.key").read_bytes())
    _, csr = make_csr(EDGE)
    ask = sec.SignCertificateRequest(identity=EDGE, csr_pem=csr.decode())
    with pytest.raises(grpc.RpcError) as err:
        host.sec.SignCertificate(ask, timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    claim_gateway(daemon.store, daemon.lease, "h1", "shop", "edge")
    signed = host.sec.SignCertificate(ask, timeout=10)
    leaf = x509.load_pem_x509_certificate(signed.certificate_chain_pem.encode())
    assert uri_sans(leaf) == [EDGE]
    shop_bundle = root.sec.GetTrustBundle(sec.GetTrustBundleRequest(mesh_name="shop"), timeout=10)
    assert signed.trust_bundle_pem == shop_bundle.trust_bundle_pem
