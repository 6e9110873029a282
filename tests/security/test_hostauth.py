"""Host authorization for certificates, against instances registered in real etcd."""
from __future__ import annotations

import pytest

from meshd.security import certs as C
from meshd.security.errors import PermissionDenied
from meshd.security.hostauth import authorize_certificate, host_runs_node
from meshd.security.rbac import Roles
from meshd.v1 import admin_pb2

pytestmark = [pytest.mark.identity, pytest.mark.etcd]

TD = "spiffe://meshd.local"
HOST_A = f"{TD}/host/host-a"
HOST_B = f"{TD}/host/host-b"
WEB = f"{TD}/mesh/m1/virtualNode/web"
DB = f"{TD}/mesh/m1/virtualNode/db"


def register(store, mesh, node, instance_id, host):
    """Store an instance exactly as the admin API's RegisterInstance does."""
    inst = admin_pb2.Instance(mesh_name=mesh, virtual_node_name=node, instance_id=instance_id,
                              address="10.0.0.1", port=8080, host=host, health="HEALTHY")
    store.put(f"instances/{mesh}/{node}/{instance_id}", inst.SerializeToString())


@pytest.fixture
def placed(store):
    register(store, "m1", "web", "web-1", "host-a")
    register(store, "m1", "db", "db-1", "host-b")
    register(store, "m2", "web", "web-1", "host-b")
    return store


def test_host_may_get_certificates_only_for_nodes_it_hosts(placed):
    authorize_certificate(placed, HOST_A, WEB)
    with pytest.raises(PermissionDenied) as err:
        authorize_certificate(placed, HOST_A, DB)
    assert (err.value.subject, err.value.permission, err.value.mesh) == (HOST_A, "issue_certificate", "m1")
    assert "host-a has no instance" in str(err.value)
    # Same node name in another mesh: hosted by host-b, not host-a.
    with pytest.raises(PermissionDenied):
        authorize_certificate(placed, HOST_A, f"{TD}/mesh/m2/virtualNode/web")
    authorize_certificate(placed, HOST_B, f"{TD}/mesh/m2/virtualNode/web")


def test_right_goes_when_the_instance_goes(placed):
    authorize_certificate(placed, HOST_A, WEB)
    placed.delete("instances/m1/web/web-1")
    with pytest.raises(PermissionDenied):
        authorize_certificate(placed, HOST_A, WEB)


def test_host_identity_is_only_its_own(placed):
    authorize_certificate(placed, HOST_A, HOST_A)
    with pytest.raises(PermissionDenied):
        authorize_certificate(placed, HOST_A, HOST_B)
    with pytest.raises(PermissionDenied):
        authorize_certificate(placed, HOST_A, f"{TD}/user/root")


def test_non_hosts_need_an_admin_role(placed):
    roles = Roles(placed)
    for requester in ("ci-bot", f"{TD}/user/alice", WEB):
        with pytest.raises(PermissionDenied):
            authorize_certificate(placed, requester, DB, roles=roles)
    roles.grant("ci-bot", "editor", "m1")
    with pytest.raises(PermissionDenied):
        authorize_certificate(placed, "ci-bot", DB, roles=roles)
    roles.grant("ci-bot", "admin", "m1")
    authorize_certificate(placed, "ci-bot", DB, roles=roles)
    with pytest.raises(PermissionDenied):  # an admin of m1 issues nothing in m2
        authorize_certificate(placed, "ci-bot", f"{TD}/mesh/m2/virtualNode/web", roles=roles)


def test_foreign_trust_domain_host_is_refused(placed):
    with pytest.raises(PermissionDenied):
        authorize_certificate(placed, "spiffe://other.example/host/host-a", WEB)


def test_many_instances_are_paged_through(store):
    for i in range(450):
        register(store, "m1", "web", f"web-{i:04d}", f"h{i}")
    assert host_runs_node(store, "h449", "m1", "web")
    assert not host_runs_node(store, "h450", "m1", "web")


def test_issuance_flow_host_csr_to_certificate(placed, mesh_ca):
    """What the admin API will do: authenticate the host, authorize, then sign its CSR."""
    key_pem, csr = C.make_csr(WEB)
    authorize_certificate(placed, HOST_A, WEB)
    got = mesh_ca.sign_csr("m1", csr, WEB)
    assert C.uri_sans(C.load_certs(got.cert_pem)[0]) == [WEB]
    with pytest.raises(PermissionDenied):
        authorize_certificate(placed, HOST_A, DB)
