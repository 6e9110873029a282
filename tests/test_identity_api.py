"""The authenticated admin API end to end: a real meshd with a cluster key, mTLS and token
listeners, real etcd; RBAC over every role x permission x two meshes, UNAUTHENTICATED vs
PERMISSION_DENIED, audit of every write, joining a host with a bootstrap token, plaintext
refused off loopback, and host-scoped certificate issuance."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from meshd.app import Meshd, MeshdConfig
from meshd.api.server import ListenerError
from meshd.embedded_etcd import free_port
from meshd.identity import IdentityError
from meshd.security import ClusterKey, Roles, Tokens, make_csr
from meshd.security.certs import utcnow
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import admin_pb2_grpc, security_pb2 as sec, security_pb2_grpc

pytestmark = [pytest.mark.identity, pytest.mark.etcd]


def _daemon(etcd, prefix, tmp_path, name, clock=utcnow, **overrides) -> Meshd:
    cfg = MeshdConfig(admin=f"127.0.0.1:{free_port()}", admin_token=f"127.0.0.1:{free_port()}",
                      etcd=[etcd.url], etcd_prefix=prefix, state_dir=str(tmp_path / name), host_name=name,
                      cluster_key=str(tmp_path / "cluster.key"), lease_ttl=5)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return Meshd(cfg, clock=clock).start()


class ManualClock:
    """A wall clock that stands still until the test moves it (Meshd's `clock`)."""

    def __init__(self):
        self.now: datetime = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class Api:
    """Stubs for one set of credentials."""

    def __init__(self, channel):
        self.channel = channel
        self.admin = admin_pb2_grpc.MeshAdminStub(channel)
        self.sec = security_pb2_grpc.MeshSecurityStub(channel)


@pytest.fixture
def cluster(etcd, etcd_prefix, tmp_path, clock):
    ClusterKey.generate(tmp_path / "cluster.key")
    daemon = _daemon(etcd, etcd_prefix, tmp_path, "h1", clock=clock)
    bundle = (tmp_path / "h1" / "identity" / "bundle.pem").read_bytes()

    def token_api(token: str | None) -> Api:
        creds = grpc.ssl_channel_credentials(bundle)
        if token is not None:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
        return Api(grpc.secure_channel(daemon.admin.addresses["token"], creds))

    def mtls_api(cert_pem: bytes, key_pem: bytes) -> Api:
        return Api(grpc.secure_channel(daemon.admin.addresses["mtls"],
                                       grpc.ssl_channel_credentials(bundle, key_pem, cert_pem)))

    # The operator's bootstrap, as `meshd grant-admin` does it: straight through etcd.
    roles, tokens = Roles(daemon.store), Tokens(daemon.store)
    roles.grant("root", "admin", "*")
    root = token_api(tokens.create_api_token("root").token)
    yield daemon, root, token_api, mtls_api, tmp_path
    daemon.stop()


def _self_signed(identity: str) -> tuple[bytes, bytes]:
    """A certificate its holder signed itself: the classic forged client certificate."""
    from datetime import datetime, timedelta, timezone  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mallory")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _code(fn, *args, **kwargs):
    try:
        fn(*args, timeout=10, **kwargs)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()


PERMISSIONS = {
    "viewer": {"describe", "list"},
    "editor": {"describe", "list", "create", "update", "delete"},
    "admin": {"describe", "list", "create", "update", "delete", "manage_ca", "manage_roles",
              "manage_tokens", "view_audit", "issue_certificate"},
}


def _operations(api: Api, mesh: str):
    """One call per permission, each aimed at `mesh` (or the cluster for cluster-wide ones)."""
    n = f"n-{uuid.uuid4().hex[:6]}"
    return {
        "describe": lambda: api.admin.DescribeMesh(pb.DescribeMeshRequest(mesh_name=mesh), timeout=10),
        "list": lambda: api.admin.ListVirtualNodes(pb.ListVirtualNodesRequest(mesh_name=mesh), timeout=10),
        "create": lambda: api.admin.CreateVirtualNode(pb.CreateVirtualNodeRequest(mesh_name=mesh, virtual_node_name=n, spec={}), timeout=10),
        "update": lambda: api.admin.UpdateVirtualNode(pb.UpdateVirtualNodeRequest(mesh_name=mesh, virtual_node_name="fixed", spec={}), timeout=10),
        "delete": lambda: api.admin.DeleteVirtualNode(pb.DeleteVirtualNodeRequest(mesh_name=mesh, virtual_node_name="doomed"), timeout=10),
        "manage_ca": lambda: api.sec.ListCertificateAuthorities(sec.ListCertificateAuthoritiesRequest(mesh_name=mesh), timeout=10),
        "manage_roles": lambda: api.sec.ListRoleBindings(sec.ListRoleBindingsRequest(mesh_name=mesh), timeout=10),
    }


def test_rbac_matrix_every_role_every_permission_two_meshes(cluster):
    daemon, root, token_api, _, _ = cluster
    for mesh in ("mesh-a", "mesh-b"):
        root.admin.CreateMesh(pb.CreateMeshRequest(mesh_name=mesh), timeout=10)
    users = {}
    for role in ("viewer", "editor", "admin"):
        tok = root.sec.CreateApiToken(sec.CreateApiTokenRequest(principal=f"{role}-user"), timeout=10).token
        root.sec.GrantRole(sec.GrantRoleRequest(subject=f"{role}-user", role=role, mesh_name="mesh-a"), timeout=10)
        users[role] = token_api(tok)
    users["none"] = token_api(root.sec.CreateApiToken(sec.CreateApiTokenRequest(principal="nobody"), timeout=10).token)
    results = {}
    for who, api in users.items():
        for mesh in ("mesh-a", "mesh-b"):
            for perm, op in _operations(api, mesh).items():
                # The update/delete targets exist afresh for each call, so OK means allowed.
                if perm in ("update", "delete"):
                    name = "fixed" if perm == "update" else "doomed"
                    root.admin.CreateVirtualNode(pb.CreateVirtualNodeRequest(mesh_name=mesh, virtual_node_name=name, spec={}), timeout=10) \
                        if _code(root.admin.DescribeVirtualNode, pb.DescribeVirtualNodeRequest(mesh_name=mesh, virtual_node_name=name)) != grpc.StatusCode.OK else None
                try:
                    op()
                    results[(who, mesh, perm)] = "OK"
                except grpc.RpcError as err:
                    results[(who, mesh, perm)] = err.code().name
            # Cluster-wide permissions: nobody bound only in a mesh has them.
            for perm, fn, req in (("manage_tokens", api.sec.ListBootstrapTokens, sec.ListBootstrapTokensRequest()),
                                  ("view_audit", api.sec.ListAuditEntries, sec.ListAuditEntriesRequest())):
                results[(who, "*", perm)] = _code(fn, req).name
    for (who, mesh, perm), got in results.items():
        allowed = who != "none" and mesh == "mesh-a" and perm in PERMISSIONS[who]
        assert got == ("OK" if allowed else "PERMISSION_DENIED"), (who, mesh, perm, got)
    # The cluster admin may do everything everywhere.
    for mesh in ("mesh-a", "mesh-b"):
        for perm, op in _operations(root, mesh).items():
            if perm in ("update", "delete"):
                continue
            op()


def test_unauthenticated_is_never_permission_denied(cluster):
    daemon, root, token_api, mtls_api, tmp_path = cluster
    root.admin.CreateMesh(pb.CreateMeshRequest(mesh_name="m"), timeout=10)
    for api in (token_api(None), token_api("api.0000000000000000.forged-secret-forged-secret-forged-sec")):
        with pytest.raises(grpc.RpcError) as err:
            api.admin.DescribeMesh(pb.DescribeMeshRequest(mesh_name="m"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    viewer_tok = root.sec.CreateApiToken(sec.CreateApiTokenRequest(principal="v"), timeout=10).token
    root.sec.GrantRole(sec.GrantRoleRequest(subject="v", role="viewer", mesh_name="m"), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        token_api(viewer_tok).admin.CreateVirtualNode(pb.CreateVirtualNodeRequest(mesh_name="m", virtual_node_name="x", spec={}), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "lacks permission create in mesh m" in err.value.details()
    info = next(d for d in rpc_status.from_call(err.value).details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR))
    ei = error_details_pb2.ErrorInfo()
    info.Unpack(ei)
    assert ei.metadata["permission"] == "create" and ei.metadata["mesh"] == "m"
    # A self-signed client certificate never completes the mTLS handshake.
    cert, key = _self_signed("spiffe://meshd.local/user/mallory")
    with pytest.raises(grpc.RpcError) as err:
        mtls_api(cert, key).admin.DescribeMesh(pb.DescribeMeshRequest(mesh_name="m"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_every_write_is_audited_with_who_what_result_and_request_id(cluster):
    daemon, root, token_api, _, _ = cluster
    rid = uuid.uuid4().hex
    root.admin.CreateMesh(pb.CreateMeshRequest(mesh_name="aud"), timeout=10, metadata=(("x-request-id", rid),))
    root.admin.CreateVirtualNode(pb.CreateVirtualNodeRequest(mesh_name="aud", virtual_node_name="n", spec={}), timeout=10)
    with pytest.raises(grpc.RpcError):
        root.admin.CreateVirtualNode(pb.CreateVirtualNodeRequest(mesh_name="aud", virtual_node_name="n", spec={}), timeout=10)
    nobody = token_api(root.sec.CreateApiToken(sec.CreateApiTokenRequest(principal="nobody"), timeout=10).token)
    with pytest.raises(grpc.RpcError):
        nobody.admin.DeleteMesh(pb.DeleteMeshRequest(mesh_name="aud"), timeout=10)
    root.admin.DescribeMesh(pb.DescribeMeshRequest(mesh_name="aud"), timeout=10)  # a read: not audited
    entries = root.sec.ListAuditEntries(sec.ListAuditEntriesRequest(resource_prefix="", limit=50), timeout=10).entries
    mine = [(e.who, e.action, e.resource, e.result) for e in reversed(entries)
            if e.resource.startswith(("meshes/aud", "virtualNodes/aud"))]
    assert mine == [
        ("root", "CreateMesh", "meshes/aud", "OK"),
        ("root", "CreateVirtualNode", "virtualNodes/aud/n", "OK"),
        ("root", "CreateVirtualNode", "virtualNodes/aud/n", "ALREADY_EXISTS"),
        ("nobody", "DeleteMesh", "meshes/aud", "PERMISSION_DENIED"),
    ]
    by_rid = root.sec.ListAuditEntries(sec.ListAuditEntriesRequest(request_id=rid), timeout=10).entries
    assert [(e.action, e.resource) for e in by_rid] == [("CreateMesh", "meshes/aud")]


def test_each_mesh_gets_a_ca_when_created(cluster):
    _, root, *_ = cluster
    root.admin.CreateMesh(pb.CreateMeshRequest(mesh_name="withca"), timeout=10)
    cas = root.sec.ListCertificateAuthorities(sec.ListCertificateAuthoritiesRequest(mesh_name="withca"), timeout=10).authorities
    assert len(cas) == 1 and cas[0].signing and cas[0].state == "ACTIVE"


def test_host_gets_certificates_only_for_nodes_it_runs(cluster):
    daemon, root, _, mtls_api, tmp_path = cluster
    root.admin.CreateMesh(pb.CreateMeshRequest(mesh_name="shop"), timeout=10)
    for n in ("web", "api"):
        root.admin.CreateVirtualNode(pb.CreateVirtualNodeRequest(mesh_name="shop", virtual_node_name=n, spec={}), timeout=10)
    # An instance of web registered through h1 (held by h1's lease).
    root.admin.RegisterInstance(pb.RegisterInstanceRequest(mesh_name="shop", virtual_node_name="web",
                                                           instance_id="w1", address="127.0.0.1", port=8080), timeout=10)
    ident = tmp_path / "h1" / "identity"
    host = mtls_api((ident / "host.crt").read_bytes(), (ident / "host.key").read_bytes())
    assert host.sec.WhoAmI(sec.WhoAmIRequest(), timeout=10).subject == "spiffe://meshd.local/host/h1"
    web_id = "spiffe://meshd.local/mesh/shop/virtualNode/web"
    _, csr = make_csr(web_id)
    signed = host.sec.SignCertificate(sec.SignCertificateRequest(identity=web_id, csr_pem=csr.decode()), timeout=10)
    assert "BEGIN CERTIFICATE" in signed.certificate_chain_pem and signed.not_after.seconds > 0
    api_id = "spiffe://meshd.local/mesh/shop/virtualNode/api"
    _, csr = make_csr(api_id)
    with pytest.raises(grpc.RpcError) as err:
        host.sec.SignCertificate(sec.SignCertificateRequest(identity=api_id, csr_pem=csr.decode()), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Hosts read configuration (implicit viewer) but cannot write it.
    host.admin.DescribeMesh(pb.DescribeMeshRequest(mesh_name="shop"), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        host.admin.DeleteVirtualNode(pb.DeleteVirtualNodeRequest(mesh_name="shop", virtual_node_name="api"), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_join_with_a_one_time_bootstrap_token(cluster, etcd, etcd_prefix):
    daemon, root, _, _, tmp_path = cluster
    token = root.sec.CreateBootstrapToken(sec.CreateBootstrapTokenRequest(ttl_seconds=600), timeout=10).token
    joined = _daemon(etcd, etcd_prefix, tmp_path, "h2", cluster_key=str(tmp_path / "absent.key"),
                     join_token=token, join_server=daemon.admin.addresses["token"])
    try:
        assert joined.identity.identity == "spiffe://meshd.local/host/h2"
        ident = tmp_path / "h2" / "identity"
        bundle = (ident / "bundle.pem").read_bytes()
        # h2 serves mTLS with its new certificate: a root client can talk to it.
        root_cert_dir = tmp_path / "rootcert"
        key, csr = make_csr("spiffe://meshd.local/user/ops")
        root.sec.GrantRole(sec.GrantRoleRequest(subject="spiffe://meshd.local/user/ops", role="admin", mesh_name="*"), timeout=10)
        signed = root.sec.SignCertificate(sec.SignCertificateRequest(identity="spiffe://meshd.local/user/ops",
                                                                     csr_pem=csr.decode()), timeout=10)
        ch = grpc.secure_channel(joined.admin.addresses["mtls"],
                                 grpc.ssl_channel_credentials(bundle, key, signed.certificate_chain_pem.encode()))
        who = security_pb2_grpc.MeshSecurityStub(ch).WhoAmI(sec.WhoAmIRequest(), timeout=10)
        assert (who.subject, who.authenticated_by) == ("spiffe://meshd.local/user/ops", "mtls")
        ch.close()
        del root_cert_dir
    finally:
        joined.stop()
    # The token was used: a replay is refused, and so the third host cannot start.
    with pytest.raises(IdentityError) as err:
        _daemon(etcd, etcd_prefix, tmp_path, "h3", cluster_key=str(tmp_path / "absent.key"),
                join_token=token, join_server=daemon.admin.addresses["token"])
    assert "UNAUTHENTICATED" in str(err.value) and "already used" in str(err.value)


@pytest.mark.hardening
def test_expired_bootstrap_token_is_refused(cluster, clock):
    _, root, token_api, _, _ = cluster

    def join(token: str, host: str):
        _, csr = make_csr(f"spiffe://meshd.local/host/{host}")
        return token_api(None).sec.JoinHost(sec.JoinHostRequest(token=token, host_name=host, csr_pem=csr.decode()),
                                            timeout=10)
    # Issued at one instant of the daemon's clock: one lives 30 s, the other 31 s.
    short = root.sec.CreateBootstrapToken(sec.CreateBootstrapTokenRequest(ttl_seconds=30), timeout=10).token
    longer = root.sec.CreateBootstrapToken(sec.CreateBootstrapTokenRequest(ttl_seconds=31), timeout=10).token
    clock.advance(timedelta(seconds=30))
    # At its expiry instant a token is expired (tokens.py: now >= expires_at).
    with pytest.raises(grpc.RpcError) as err:
        join(short, "late")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in err.value.details()
    # One second younger, the same call admits the host: it was the expiry that refused the first.
    assert "BEGIN CERTIFICATE" in join(longer, "on-time").certificate_chain_pem


def test_plaintext_is_refused_off_loopback(etcd, etcd_prefix, tmp_path):
    with pytest.raises(ListenerError) as err:
        _daemon(etcd, etcd_prefix, tmp_path, "h9", admin=f"0.0.0.0:{free_port()}", admin_token="", insecure_local=True)
    assert "loopback only" in str(err.value)


def test_no_identity_and_no_insecure_flag_refuses_to_start(etcd, etcd_prefix, tmp_path):
    with pytest.raises(IdentityError) as err:
        _daemon(etcd, etcd_prefix, tmp_path, "h8", cluster_key=str(tmp_path / "absent.key"))
    assert "meshd init" in str(err.value) and "--insecure-local" in str(err.value)


def test_meshctl_login_whoami_and_role_commands(cluster):
    daemon, root, token_api, _, tmp_path = cluster
    tok = Tokens(daemon.store).create_api_token("cli-user").token
    Roles(daemon.store).grant("cli-user", "admin", "*")
    bundle = tmp_path / "h1" / "identity" / "bundle.pem"
    env = {"MESHCTL_CONFIG": str(tmp_path / "meshctl.yaml"), "PATH": "/usr/bin:/bin"}

    def meshctl(*args):
        return subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", *args], capture_output=True, text=True,
                              env=env, timeout=60)
    out = meshctl("login", "--server", daemon.admin.addresses["token"], "--ca-file", str(bundle), "--token", tok)
    assert out.returncode == 0, out.stderr
    assert "as cli-user (token)" in out.stdout
    assert oct((tmp_path / "meshctl.yaml").stat().st_mode & 0o777) == "0o600"
    out = meshctl("whoami")
    assert out.returncode == 0 and out.stdout.startswith("cli-user (authenticated by token)")
    assert meshctl("role", "grant", "alice", "editor", "--mesh", "shop").returncode == 0
    listed = meshctl("role", "list", "--mesh", "shop", "-o", "json")
    assert '"subject": "alice"' in listed.stdout and '"role": "editor"' in listed.stdout
    token_out = meshctl("token", "create", "--ttl", "10m")
    assert token_out.returncode == 0 and token_out.stdout.count(".") == 2 and len(token_out.stdout.strip()) > 40
    audit = meshctl("audit", "--action", "GrantRole")
    assert "roles/shop/alice" in audit.stdout and "cli-user" in audit.stdout


def test_a_grant_or_revoke_answered_holds_for_the_very_next_call(cluster, etcd, etcd_prefix):
    """Read-your-writes for role bindings. Checks read a watched copy of the bindings, but
    once GrantRole or RevokeRole has answered, the next call through the same meshd must
    see it, and a grant answered by one meshd must already allow on another: a grant is
    never refused for the milliseconds the watch takes to deliver it."""
    daemon, root, token_api, _, tmp_path = cluster
    root.admin.CreateMesh(pb.CreateMeshRequest(mesh_name="m"), timeout=10)
    other = _daemon(etcd, etcd_prefix, tmp_path, "h2")
    # Busy processes (bounded: 60 s at most) so that the watch lags, as on a loaded host.
    burners = [subprocess.Popen([sys.executable, "-c", "import time\nt = time.monotonic() + 60\n"
                                 "while time.monotonic() < t: pass"]) for _ in range(4)]
    try:
        bundle = (tmp_path / "h1" / "identity" / "bundle.pem").read_bytes()
        tok = root.sec.CreateApiToken(sec.CreateApiTokenRequest(principal="rw"), timeout=10).token
        creds = grpc.composite_channel_credentials(grpc.ssl_channel_credentials(bundle),
                                                   grpc.access_token_call_credentials(tok))
        here = token_api(tok)
        there = Api(grpc.secure_channel(other.admin.addresses["token"], creds))
        describe = pb.DescribeMeshRequest(mesh_name="m")

        def create(api):
            n = f"n-{uuid.uuid4().hex[:8]}"
            return _code(api.admin.CreateVirtualNode,
                         pb.CreateVirtualNodeRequest(mesh_name="m", virtual_node_name=n, spec={}))
        for i in range(60):
            api = here if i % 2 == 0 else there  # alternately the granting meshd and another
            root.sec.GrantRole(sec.GrantRoleRequest(subject="rw", role="editor", mesh_name="m"), timeout=10)
            assert _code(api.admin.DescribeMesh, describe) == grpc.StatusCode.OK, i
            assert create(api) == grpc.StatusCode.OK, i
            # A downgrade is a revoke of what the stronger role gave.
            root.sec.GrantRole(sec.GrantRoleRequest(subject="rw", role="viewer", mesh_name="m"), timeout=10)
            assert create(here) == grpc.StatusCode.PERMISSION_DENIED, i
            assert _code(here.admin.DescribeMesh, describe) == grpc.StatusCode.OK, i
            root.sec.RevokeRole(sec.RevokeRoleRequest(subject="rw", mesh_name="m"), timeout=10)
            assert _code(here.admin.DescribeMesh, describe) == grpc.StatusCode.PERMISSION_DENIED, i
        # A revoke answered by another meshd reaches this one within the watch's delay.
        root.sec.GrantRole(sec.GrantRoleRequest(subject="rw", role="viewer", mesh_name="m"), timeout=10)
        assert _code(there.admin.DescribeMesh, describe) == grpc.StatusCode.OK
        Roles(other.store).revoke("rw", "m")  # straight in etcd, as another meshd's RevokeRole does
        deadline = time.monotonic() + 2
        while _code(here.admin.DescribeMesh, describe) != grpc.StatusCode.PERMISSION_DENIED:
            assert time.monotonic() < deadline, "a revoke made elsewhere still allows after 2 s"
            time.sleep(0.005)
    finally:
        for b in burners:
            b.kill()
            b.wait()
        other.stop()
