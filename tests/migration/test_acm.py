"""App Mesh specs naming ACM certificates and ACM PCA authorities, served by real meshds from
what `meshctl certificate import` / `meshctl trust import` stored under those ARNs: an
operator's own CA (made with meshd.security's helpers) stands in for ACM PCA."""
from __future__ import annotations

import base64
import json
import logging
import socket
import ssl
import subprocess
import sys
import time
from datetime import timedelta

import grpc
import pytest
from cryptography import x509

from mesh_harness import Origin, shop_config, start_meshd
from test_meshctl_status import until
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.app import Meshd, MeshdConfig
from meshd.embedded_etcd import free_port
from meshd.proxy import GatewayConfig
from meshd.security import ClusterKey
from meshd.security import certs as C
from meshd.security.acm import certificate_path, read_material, reseal, trust_path
from meshd.security.errors import DecryptionFailed
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.migration, pytest.mark.identity, pytest.mark.dataplane, pytest.mark.etcd]

CERT_ARN = "arn:aws:acm:eu-west-1:111122223333:certificate/0f3c2b1a-5d6e-4f70-8a9b-0c1d2e3f4a5b"
PCA_ARN = "arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/7e6d5c4b-3a29-4817-9f0e-1d2c3b4a5f60"


class CorpPki:
    """An operator's CA and leaf certificates, written as PEM files for meshctl."""

    def __init__(self, tmp_path, tag: str):
        self.dir, self.tag = tmp_path, tag
        now = C.utcnow()
        self.ca, self.ca_key = C.make_ca(f"corp {tag} CA", now=now, lifetime=timedelta(days=2))
        self.ca_file = self._write(f"{tag}-ca.pem", C.cert_to_pem(self.ca))

    def _write(self, name: str, blob: bytes) -> str:
        (self.dir / name).write_bytes(blob)
        return str(self.dir / name)

    def leaf(self, dns: str) -> tuple[str, str, int]:
        """(certificate file, key file, serial) of a leaf for `dns` signed by this CA."""
        key = C.new_private_key()
        now = C.utcnow()
        cert = C.issue_leaf(self.ca, self.ca_key, key.public_key(), f"spiffe://corp.example/{dns}",
                            not_before=now - timedelta(minutes=5), not_after=now + timedelta(days=1),
                            extra_names=(x509.DNSName(dns),))
        return (self._write(f"{self.tag}-{dns}.crt", C.cert_to_pem(cert)),
                self._write(f"{self.tag}-{dns}.key", C.key_to_pem(key)), cert.serial_number)


def control(etcd, prefix, tmp_path, key) -> Meshd:
    """A meshd serving only the admin API, plaintext on loopback, for the real meshctl."""
    cfg = MeshdConfig(admin=f"127.0.0.1:{free_port()}", etcd=[etcd.url], etcd_prefix=prefix,
                      state_dir=str(tmp_path / "control"), host_name="control", cluster_key=str(key), lease_ttl=5,
                      insecure_local=True)
    return Meshd(cfg).start()


def meshctl(server: Meshd, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", server.admin.address, *args],
                          capture_output=True, text=True, timeout=60)


def handshake(port: int, cafile: str, name: str) -> int:
    """A full TLS handshake to 127.0.0.1:`port` verifying `name`: the serial presented."""
    ctx = ssl.create_default_context(cafile=cafile)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname=name) as s:
        return x509.load_der_x509_certificate(s.getpeercert(True)).serial_number


def refused(port: int, cafile: str, name: str):
    try:
        handshake(port, cafile, name)
    except (ssl.SSLError, OSError) as err:
        return err
    return None


def test_gateway_listener_serves_the_acm_certificate_once_imported(etcd, etcd_prefix, tmp_path, caplog):
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    pki = CorpPki(tmp_path, "corp")
    crt, crt_key, serial = pki.leaf("edge.example.com")
    ctl = control(etcd, etcd_prefix, tmp_path, key)
    gw = start_meshd(etcd, etcd_prefix, tmp_path, "host-a", [], key,
                     gateways=[GatewayConfig(mesh="shop", virtual_gateway="edge", address="127.0.0.1")])
    port = free_port()
    try:
        ctl.resources.create(K.MESH, parse_json(pb.CreateMeshRequest, {"meshName": "shop", "spec": {}}))
        caplog.set_level(logging.INFO, logger="meshd.proxy.tls")
        # Accepted although nothing is imported under the ARN yet (App Mesh would check ACM).
        ctl.resources.create(K.VIRTUAL_GATEWAY, parse_json(pb.CreateVirtualGatewayRequest, {
            "meshName": "shop", "virtualGatewayName": "edge", "spec": {"listeners": [{
                "portMapping": {"port": port, "protocol": "http"},
                "tls": {"mode": "STRICT", "certificate": {"acm": {"certificateArn": CERT_ARN}}}}]}}))
        # The listener opens, and refuses every handshake until the import.
        until("the listener open", lambda: f"gateway:edge:{port}" in gw.runtime.addresses)
        err = refused(port, pki.ca_file, "edge.example.com")
        assert err is not None
        line = f"listener {port} of virtualGateway edge: ACM certificate {CERT_ARN} not imported " \
               "(meshctl certificate import)"
        assert [r.getMessage() for r in caplog.records].count(line) == 1
        assert refused(port, pki.ca_file, "edge.example.com") is not None
        assert [r.getMessage() for r in caplog.records].count(line) == 1  # once per state change
        status = meshctl(ctl, "status")
        assert status.returncode == 0, status.stderr
        assert f"virtualGateway edge listener {port}" in status.stdout
        assert f"{CERT_ARN}: certificate not imported" in status.stdout

        out = meshctl(ctl, "certificate", "import", "--arn", CERT_ARN, "--cert", crt, "--key", crt_key)
        assert out.returncode == 0, out.stderr
        assert f"certificate {CERT_ARN} imported" in out.stdout
        # No restart: a new connection gets the imported certificate.
        assert until("the imported certificate served",
                     lambda: refused(port, pki.ca_file, "edge.example.com") is None)
        assert handshake(port, pki.ca_file, "edge.example.com") == serial
        assert any(f"ACM certificate {CERT_ARN} served" in r.getMessage() for r in caplog.records)
        status = meshctl(ctl, "status")
        assert "certificate not imported" not in status.stdout

        listed = json.loads(meshctl(ctl, "certificate", "list", "-o", "json").stdout)
        assert [c["arn"] for c in listed["certificates"]] == [CERT_ARN]
        assert listed["certificates"][0]["dnsNames"] == ["edge.example.com"]
        audit = meshctl(ctl, "audit", "--action", "ImportAcmCertificate", "-o", "json")
        assert CERT_ARN in audit.stdout

        # Deleted: the listener refuses again, without a restart.
        assert meshctl(ctl, "certificate", "delete", "--arn", CERT_ARN).returncode == 0
        assert until("the listener refusing again", lambda: refused(port, pki.ca_file, "edge.example.com"))
    finally:
        gw.stop()
        ctl.stop()


class Shop:
    """Host A runs `web` (egress), host B runs `api-v1` (an echo origin); `ctl` is the
    admin-only meshd the real meshctl talks to."""

    def __init__(self, etcd, prefix, tmp_path, key):
        from meshd.proxy import LocalApp  # noqa: PLC0415
        self.ctl = control(etcd, prefix, tmp_path, key)
        self.origin = Origin("api-v1")
        self.web = start_meshd(etcd, prefix, tmp_path, "host-a", [LocalApp(
            mesh="shop", virtual_node="web", port=free_port(), egress="127.0.0.1:0")], key, upstream_idle_seconds=0.3)
        self.api = start_meshd(etcd, prefix, tmp_path, "host-b", [LocalApp(
            mesh="shop", virtual_node="api-v1", port=self.origin.port, instance_id="api-v1")], key,
            upstream_idle_seconds=0.3)
        self.channel = None

    def configure(self, api_tls: dict, web_policy_tls: dict) -> None:
        from google.protobuf import json_format  # noqa: PLC0415
        r = self.ctl.resources
        shop_config(r, K, pb, targets={"api-v1": 1}, backends=(), node_listener={"tls": api_tls})
        node = r.describe(K.VIRTUAL_NODE, pb.DescribeVirtualNodeRequest(mesh_name="shop", virtual_node_name="web"))
        spec = json_format.MessageToDict(node.virtual_node.spec)
        spec["backends"] = [{"virtualService": {"virtualServiceName": "api.shop.local",
                                                "clientPolicy": {"tls": web_policy_tls}}}]
        r.update(K.VIRTUAL_NODE, parse_json(pb.UpdateVirtualNodeRequest, {
            "meshName": "shop", "virtualNodeName": "web", "spec": spec}))
        self.channel = grpc.insecure_channel(self.web.runtime.addresses["egress:web"],
                                             options=[("grpc.default_authority", "api.shop.local:9090"),
                                                      ("grpc.enable_retries", 0)])

    def works(self) -> bool:
        """One call web → api-v1 through both meshds, answered by the origin."""
        try:
            return self.channel.unary_unary("/echo.Echo/Say")(b"x", timeout=5) == b"api-v1:x"
        except grpc.RpcError:
            return False

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.web.stop()
        self.api.stop()
        self.ctl.stop()
        self.origin.stop()


def test_client_policy_trusts_the_imported_pca_anchor_only(etcd, etcd_prefix, tmp_path):
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    corp, other = CorpPki(tmp_path, "corp"), CorpPki(tmp_path, "other")
    crt, crt_key, _ = corp.leaf("api-v1.example.com")
    shop = Shop(etcd, etcd_prefix, tmp_path, key)
    ctl = shop.ctl
    try:
        # api-v1 presents the operator's certificate; web trusts the ACM PCA ARN only.
        shop.configure({"mode": "STRICT", "certificate": {"file": {"certificateChain": crt, "privateKey": crt_key}}},
                       {"validation": {"trust": {"acm": {"certificateAuthorityArns": [PCA_ARN]}},
                                       "subjectAlternativeNames": {"match": {"exact": ["api-v1.example.com"]}}}})
        time.sleep(2.0)  # configuration applied, instances seen: still refused, nothing trusts corp
        assert not shop.works()
        status = meshctl(ctl, "status")
        assert f"virtualNode web backend api.shop.local: {PCA_ARN}: trust anchor not imported" in status.stdout
        # Another CA under the ARN: api-v1's certificate does not chain to it.
        assert meshctl(ctl, "trust", "import", "--arn", PCA_ARN, "--cert", other.ca_file).returncode == 0
        time.sleep(2.5)
        assert not shop.works()
        assert shop.origin.calls == 0
        # The right anchor: upstream validated, no restart.
        out = meshctl(ctl, "trust", "import", "--arn", PCA_ARN, "--cert", corp.ca_file)
        assert out.returncode == 0, out.stderr
        until("a call validated with the imported anchor", shop.works)
        assert shop.origin.calls >= 1
        listed = json.loads(meshctl(ctl, "trust", "list", "-o", "json").stdout)
        assert [a["arn"] for a in listed["anchors"]] == [PCA_ARN]
        assert "not imported" not in meshctl(ctl, "status").stdout
    finally:
        shop.close()


def test_virtual_node_listener_serves_the_acm_certificate_once_imported(etcd, etcd_prefix, tmp_path):
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    corp = CorpPki(tmp_path, "corp")
    crt, crt_key, serial = corp.leaf("api-v1.example.com")
    shop = Shop(etcd, etcd_prefix, tmp_path, key)
    try:
        # api-v1's listener names an ACM certificate; web checks it against the corp CA file.
        shop.configure({"mode": "STRICT", "certificate": {"acm": {"certificateArn": CERT_ARN}}},
                       {"validation": {"trust": {"file": {"certificateChain": corp.ca_file}},
                                       "subjectAlternativeNames": {"match": {"exact": ["api-v1.example.com"]}}}})
        ingress = int(shop.api.runtime.addresses["ingress"].rsplit(":", 1)[1])
        time.sleep(2.0)
        assert not shop.works()
        assert refused(ingress, corp.ca_file, "api-v1.example.com") is not None
        status = meshctl(shop.ctl, "status")
        assert f"virtualNode api-v1 listener 9090: {CERT_ARN}: certificate not imported" in status.stdout
        out = meshctl(shop.ctl, "certificate", "import", "--arn", CERT_ARN, "--cert", crt, "--key", crt_key)
        assert out.returncode == 0, out.stderr
        until("a call to the listener serving the imported certificate", shop.works)
        assert handshake(ingress, corp.ca_file, "api-v1.example.com") == serial
    finally:
        shop.close()


def test_imported_key_is_sealed_and_bound_to_its_path(etcd, etcd_prefix, tmp_path):
    key = tmp_path / "cluster.key"
    cluster_key = ClusterKey.generate(key)
    pki = CorpPki(tmp_path, "corp")
    crt, crt_key, _ = pki.leaf("edge.example.com")
    ctl = control(etcd, etcd_prefix, tmp_path, key)
    try:
        assert meshctl(ctl, "certificate", "import", "--arn", CERT_ARN, "--cert", crt, "--key", crt_key).returncode == 0
        from registry import Store  # noqa: PLC0415
        store = Store([etcd.url], prefix=etcd_prefix)
        try:
            items, _ = store.scan("acm/")
            assert [i.path for i in items] == [certificate_path(CERT_ARN)]
            raw = items[0].value
            key_der = C.load_key(open(crt_key, "rb").read()).private_bytes(
                *_pkcs8_der())
            pem_body = b"".join(open(crt_key, "rb").read().splitlines()[1:-1])
            for secret in (key_der, pem_body, base64.b64encode(key_der), b"PRIVATE KEY"):
                assert secret not in raw
            sealed = base64.b64decode(json.loads(raw)["key"])
            assert C.load_key(C.key_to_pem(_der_key(cluster_key.open(certificate_path(CERT_ARN), sealed)))) is not None
            with pytest.raises(DecryptionFailed):
                cluster_key.open(certificate_path(CERT_ARN + "-other"), sealed)
            with pytest.raises(DecryptionFailed):
                cluster_key.open(trust_path(PCA_ARN), sealed)
            # Cluster key rotation re-seals it; the data plane's read opens it under the new key only.
            new_key = ClusterKey.generate(tmp_path / "new.key")
            assert reseal(store, cluster_key, new_key) == 1
            assert reseal(store, cluster_key, new_key) == 0  # already under the new key: a re-run is a no-op
            material = read_material(store, new_key)
            assert material.certificates[CERT_ARN][1] == C.key_to_pem(C.load_key(open(crt_key, "rb").read()))
            assert CERT_ARN in read_material(store, cluster_key).unreadable
        finally:
            store.close()
    finally:
        ctl.stop()


def _pkcs8_der():
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    return serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()


def _der_key(der: bytes):
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    return serialization.load_der_private_key(der, password=None)


def test_imports_are_validated_with_clear_errors(etcd, etcd_prefix, tmp_path):
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    pki = CorpPki(tmp_path, "corp")
    crt, crt_key, _ = pki.leaf("edge.example.com")
    _, other_key, _ = pki.leaf("other.example.com")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    ctl = control(etcd, etcd_prefix, tmp_path, key)
    try:
        bad_arn = meshctl(ctl, "certificate", "import", "--arn", PCA_ARN, "--cert", crt, "--key", crt_key)
        assert bad_arn.returncode != 0 and "is not an ACM certificate ARN" in bad_arn.stderr
        mismatch = meshctl(ctl, "certificate", "import", "--arn", CERT_ARN, "--cert", crt, "--key", other_key)
        assert mismatch.returncode != 0 and "the private key does not match the certificate" in mismatch.stderr
        unparsable = meshctl(ctl, "certificate", "import", "--arn", CERT_ARN, "--cert", str(junk), "--key", crt_key)
        assert unparsable.returncode != 0 and "certificate" in unparsable.stderr and "PEM" in unparsable.stderr
        leaf_as_anchor = meshctl(ctl, "trust", "import", "--arn", PCA_ARN, "--cert", crt)
        assert leaf_as_anchor.returncode != 0 and "is not a CA certificate" in leaf_as_anchor.stderr
        cert_arn_as_pca = meshctl(ctl, "trust", "import", "--arn", CERT_ARN, "--cert", pki.ca_file)
        assert cert_arn_as_pca.returncode != 0 and "ACM PCA certificate authority ARN" in cert_arn_as_pca.stderr
        missing = meshctl(ctl, "certificate", "delete", "--arn", CERT_ARN)
        assert missing.returncode != 0 and "not found" in missing.stderr
        # SDS stays refused, pointing at the mesh CA or a file source.
        sds = ctl.resources
        with pytest.raises(Exception) as err:
            sds.create(K.MESH, parse_json(pb.CreateMeshRequest, {"meshName": "m", "spec": {}}))
            sds.create(K.VIRTUAL_GATEWAY, parse_json(pb.CreateVirtualGatewayRequest, {
                "meshName": "m", "virtualGatewayName": "g", "spec": {"listeners": [{
                    "portMapping": {"port": 8443, "protocol": "http"},
                    "tls": {"mode": "STRICT", "certificate": {"sds": {"secretName": "s"}}}}]}}))
        assert "mesh CA" in str(err.value) and "file" in str(err.value)
    finally:
        ctl.stop()
