"""App Mesh `file` certificate sources replaced on disk while meshd runs: the ingress, the
egress's client policy and gateway listeners present and trust the new files on new
connections after the certificate thread's next pass, without a restart."""
from __future__ import annotations

import http.client
import os
import socket
import ssl
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh_harness import Mesh, Origin, shop_config
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.embedded_etcd import free_port
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.hardening, pytest.mark.dataplane, pytest.mark.etcd]


class Pki:
    """An operator's CA and its certificates, written where App Mesh `file` sources name
    them; `rotate` replaces every file the way deployments do (write, then rename over)."""

    def __init__(self, tmp_path, names=("api-v1", "web")):
        self.dir, self.names = tmp_path, names
        self.files = {"ca": str(tmp_path / "ca.pem")}
        for n in names:
            self.files[f"{n}.crt"], self.files[f"{n}.key"] = str(tmp_path / f"{n}.crt"), str(tmp_path / f"{n}.key")
        self.serials: dict[str, int] = {}
        self.rotate()

    def rotate(self) -> None:
        now = datetime.now(timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"corp-ca-{now.timestamp()}")])
        ca = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
              .not_valid_after(now + timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
        blobs = {"ca": ca.public_bytes(serialization.Encoding.PEM)}
        for n in self.names:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, n)]))
                    .issuer_name(subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
                    .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{n}.example.com")]), critical=False)
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                          ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                    .sign(ca_key, hashes.SHA256()))
            self.serials[n] = cert.serial_number
            blobs[f"{n}.crt"] = cert.public_bytes(serialization.Encoding.PEM)
            blobs[f"{n}.key"] = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption())
        for name, blob in blobs.items():
            tmp = self.files[name] + ".new"
            with open(tmp, "wb") as f:
                f.write(blob)
            os.replace(tmp, self.files[name])

    def client(self, who: str | None, cafile: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=cafile or self.files["ca"])
        if who:
            ctx.load_cert_chain(self.files[f"{who}.crt"], self.files[f"{who}.key"])
        return ctx


def _presented(ctx: ssl.SSLContext, address: str, name: str) -> int:
    """A full handshake against `address` asking for `name`: the serial it presents."""
    host, port = address.rsplit(":", 1)
    with ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=name) as s:
        return x509.load_der_x509_certificate(s.getpeercert(True)).serial_number


def test_ingress_and_client_policy_file_sources_follow_the_files(etcd, etcd_prefix, tmp_path):
    from test_mesh_traffic import web_client_policy_files  # noqa: PLC0415 - the file-sourced mesh

    pki = Pki(tmp_path)
    f = pki.files
    m = Mesh(etcd, etcd_prefix, tmp_path, {"api-v1": Origin("api-v1")}, upstream_idle_seconds=0.3)
    try:
        shop_config(m.a.resources, K, pb, targets={"api-v1": 1}, backends=(), node_listener={"tls": {
            "mode": "STRICT", "certificate": {"file": {"certificateChain": f["api-v1.crt"], "privateKey": f["api-v1.key"]}},
            "validation": {"trust": {"file": {"certificateChain": f["ca"]}},
                           "subjectAlternativeNames": {"match": {"exact": ["web.example.com"]}}}}})
        web_client_policy_files(m.a.resources, f)
        call = m.client()
        m.wait_routable(call)
        assert call(b"one", timeout=5) == b"api-v1:one"
        ingress = m.b.runtime.addresses["ingress"]
        first = dict(pki.serials)
        assert _presented(pki.client("web"), ingress, "api-v1.example.com") == first["api-v1"]
        old_web = pki.client("web")  # the first CA's client, kept for later
        pki.rotate()  # a new CA and new certificates: only the new ones are trusted from now
        # Nothing re-reads files on the loop: until the certificate thread's pass, the
        # ingress presents what it loaded.
        assert _presented(old_web, ingress, "api-v1.example.com") == first["api-v1"]
        assert m.b.runtime.renew_certs() and m.a.runtime.renew_certs()
        assert _presented(pki.client("web"), ingress, "api-v1.example.com") == pki.serials["api-v1"]
        with pytest.raises((ssl.SSLError, OSError)):  # the first CA's PKI on both ends: no longer
            _presented(old_web, ingress, "api-v1.example.com")
        time.sleep(1.0)  # the pooled connection idles out: the next call handshakes anew
        # Only works if host A presents its new certificate (B trusts the new CA only) and
        # trusts the new CA for B's.
        assert call(b"two", timeout=5) == b"api-v1:two"
        assert not m.b.runtime.renew_certs()  # unchanged files are not read again
    finally:
        m.close()


def test_gateway_listener_file_certificate_follows_the_files(etcd, etcd_prefix, tmp_path):
    from test_gateway_traffic import Edge, _until, h1_get  # noqa: PLC0415 - the gateway harness

    pki = Pki(tmp_path, names=("edge",))
    edge = Edge(etcd, etcd_prefix, tmp_path)
    try:
        tls_port = free_port()
        listeners = [{"portMapping": {"port": p, "protocol": proto}} for proto, p in edge.ports.items()]
        listeners.append({"portMapping": {"port": tls_port, "protocol": "http"}, "tls": {
            "mode": "STRICT", "certificate": {"file": {"certificateChain": pki.files["edge.crt"],
                                                       "privateKey": pki.files["edge.key"]}}}})
        edge.a.resources.update(K.VIRTUAL_GATEWAY, parse_json(pb.UpdateVirtualGatewayRequest, {
            "meshName": "shop", "virtualGatewayName": "edge", "spec": {"listeners": listeners}}))
        address = f"127.0.0.1:{tls_port}"

        def get(ctx) -> int:
            c = http.client.HTTPConnection("127.0.0.1", tls_port, timeout=10)
            c.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_port), timeout=10),
                                     server_hostname="edge.example.com")
            try:
                c.request("GET", "/red/x", headers={"Host": "shop.example.com"})
                r = c.getresponse()
                r.read()
                return r.status
            finally:
                c.close()
        assert _until(lambda: get(pki.client(None))) == 200  # no validation: no client certificate
        first = pki.serials["edge"]
        assert _presented(pki.client(None), address, "edge.example.com") == first
        old_trust = pki.client(None)
        pki.rotate()
        assert _presented(old_trust, address, "edge.example.com") == first
        edge.a.runtime.renew_certs()
        assert _presented(pki.client(None), address, "edge.example.com") == pki.serials["edge"]
        assert get(pki.client(None)) == 200
        assert h1_get(edge.ports["http"], "/red/x", "shop.example.com")[0] == 200
    finally:
        edge.close()
