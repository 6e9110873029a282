"""This meshd host's own identity: its host certificate, how it is obtained and renewed.

A host gets `spiffe://<trust-domain>/host/<host-name>` from the cluster CA, one of three ways:
- it holds the cluster key, so it signs its own CSR (the first host, and every signer);
- it has a valid certificate from an earlier run in its state dir;
- it joins with a one-time bootstrap token: it reads the cluster trust bundle from etcd
  (anyone with etcd access is trusted, see docs/security.md), connects to a signer's token
  listener verifying it against that bundle, and exchanges token + CSR for a certificate.
The private key is made here and never leaves the host. Renewal runs at two thirds of the
lifetime; the admin API's TLS credentials pick the new certificate up on new handshakes.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import grpc

import registry
from meshd.security import CLUSTER, Credentials, MeshCA, host_id, make_csr, renewal
from meshd.security.certs import load_certs
from meshd.security.errors import ClusterKeyError, SecurityError
from meshd.v1 import security_pb2, security_pb2_grpc

log = logging.getLogger("meshd.identity")

# How long a first start waits for etcd to sign the host certificate before giving up.
ETCD_WAIT_SECONDS = 15.0


class IdentityError(Exception):
    """No host certificate could be obtained; the message says what to do."""


class HostIdentity:
    """Obtains, stores, renews and serves the host certificate."""

    def __init__(self, ca: MeshCA, host_name: str, state_dir: str | os.PathLike, *,
                 dns_names: tuple[str, ...] = (), ip_addresses: tuple[str, ...] = (),
                 join_token: str = "", join_server: str = "", signer: str = ""):
        self.ca = ca
        self.host_name = host_name
        self.identity = host_id(ca.trust_domain, host_name).uri
        self.dir = Path(state_dir) / "identity"
        self.dns_names = tuple(dict.fromkeys((host_name, "localhost", *dns_names)))
        self.ip_addresses = tuple(dict.fromkeys(("127.0.0.1", *ip_addresses)))
        self.join_token = join_token
        self.join_server = join_server
        self.signer = signer or join_server
        self.credentials: Credentials | None = None
        self.not_after: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0

    # -- obtaining --------------------------------------------------------------------
    def obtain(self) -> Credentials | None:
        """Get a certificate by the first way that works; None when no way applies."""
        if self._load():
            return self.credentials  # renewal takes over when it is due
        issued = self._sign_locally()
        if issued is None and self.join_token:
            issued = self._join()
        if issued is None:
            return None
        self._install(*issued)
        return self.credentials

    def _sign_locally(self):
        if not self.ca.can_sign():
            log.info("no cluster key: this host does not sign its own certificate")
            return None
        # Signing needs etcd (the cluster CA lives there). A host starting beside etcd members
        # that are still settling can meet a moment without one: wait for it, bounded (then
        # the start goes on as before: no certificate, which only --insecure-local survives).
        deadline = time.monotonic() + ETCD_WAIT_SECONDS
        while True:
            try:
                self.ca.ensure(CLUSTER)
                key_pem, csr_pem = make_csr(self.identity)
                issued = self.ca.sign_csr(CLUSTER, csr_pem, self.identity, dns_names=self.dns_names,
                                          ip_addresses=self.ip_addresses)
                return issued.chain_pem, key_pem, issued.bundle_pem
            except ClusterKeyError as err:
                log.info("no cluster key: this host does not sign", extra={"reason": str(err)})
                return None
            except registry.Unavailable as err:
                if time.monotonic() >= deadline:
                    log.error("cannot sign the host certificate: etcd stayed unavailable",
                              extra={"error": str(err), "waited_s": ETCD_WAIT_SECONDS})
                    return None
                log.warning("cannot sign the host certificate while etcd is unavailable; trying again",
                            extra={"error": str(err)})
                time.sleep(1.0)

    def _join(self):
        if not self.join_server:
            raise IdentityError("--join-token needs --join-server, the token listener of a signing meshd")
        try:
            bundle = self.ca.bundle(CLUSTER)
        except SecurityError as err:
            raise IdentityError(f"cannot read the cluster trust bundle from etcd: {err}") from err
        key_pem, csr_pem = make_csr(self.identity)
        channel = grpc.secure_channel(self.join_server, grpc.ssl_channel_credentials(bundle))
        try:
            resp = security_pb2_grpc.MeshSecurityStub(channel).JoinHost(security_pb2.JoinHostRequest(
                token=self.join_token, host_name=self.host_name, csr_pem=csr_pem.decode(),
                dns_names=self.dns_names, ip_addresses=self.ip_addresses), timeout=15)
        except grpc.RpcError as err:
            raise IdentityError(f"join refused by {self.join_server}: {err.code().name}: {err.details()}") from err
        finally:
            channel.close()
        log.info("joined the cluster", extra={"identity": self.identity, "server": self.join_server})
        return resp.certificate_chain_pem.encode(), key_pem, resp.trust_bundle_pem.encode()

    def _load(self) -> bool:
        try:
            chain = (self.dir / "host.crt").read_bytes()
            key = (self.dir / "host.key").read_bytes()
            bundle = (self.dir / "bundle.pem").read_bytes()
        except FileNotFoundError:
            return False
        leaf = load_certs(chain)[0]
        if leaf.not_valid_after_utc <= datetime.now(timezone.utc):
            log.warning("stored host certificate expired", extra={"not_after": leaf.not_valid_after_utc.isoformat()})
            return False
        self._install(chain, key, bundle, write=False)
        return True

    def _install(self, chain: bytes, key: bytes, bundle: bytes, *, write: bool = True) -> None:
        if write:
            self.dir.mkdir(parents=True, exist_ok=True)
            for name, data, mode in (("host.key", key, 0o600), ("host.crt", chain, 0o644), ("bundle.pem", bundle, 0o644)):
                tmp = self.dir / f".{name}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.dir / name)
        if self.credentials is None:
            self.credentials = Credentials(chain, key, bundle)
        else:
            self.credentials.update(chain, key, bundle)
        self.not_after = load_certs(chain)[0].not_valid_after_utc

    # -- serving ----------------------------------------------------------------------
    def grpc_server_credentials(self, require_client_auth: bool) -> grpc.ServerCredentials:
        """Server credentials that re-read the current certificate on each new handshake."""
        def config():
            c = self.credentials
            return grpc.ssl_server_certificate_configuration(
                [(c.key_pem, c.cert_chain_pem)], root_certificates=c.bundle_pem)
        state = {"generation": self.credentials.generation}

        def fetch():
            if self.credentials.generation == state["generation"]:
                return None  # unchanged: keep the current configuration
            state["generation"] = self.credentials.generation
            return config()
        return grpc.dynamic_ssl_server_credentials(config(), fetch, require_client_authentication=require_client_auth)

    # -- renewal ----------------------------------------------------------------------
    def start_renewal(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="host-cert-renewal", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.is_set():
            leaf = load_certs(self.credentials.cert_chain_pem)[0]
            due = renewal(leaf, datetime.now(timezone.utc))
            if self._stop.wait(max(1.0, due.delay.total_seconds())):
                return
            try:
                issued = self._sign_locally() or self._renew_remotely()
                self._install(*issued)
                self.renewals += 1
                log.info("host certificate renewed", extra={"not_after": self.not_after.isoformat()})
            except Exception as err:  # noqa: BLE001 - keep the current certificate and retry soon
                log.warning("host certificate renewal failed; retrying", extra={"error": str(err)})
                self._stop.wait(30)

    def _renew_remotely(self):
        """Renew through a peer's mTLS listener, authenticated by the current certificate."""
        if not self.signer:
            raise IdentityError("no cluster key and no --signer (a signing meshd's mTLS admin address) to renew through")
        key_pem, csr_pem = make_csr(self.identity)
        c = self.credentials
        creds = grpc.ssl_channel_credentials(c.bundle_pem, c.key_pem, c.cert_chain_pem)
        channel = grpc.secure_channel(self.signer, creds)
        try:
            resp = security_pb2_grpc.MeshSecurityStub(channel).SignCertificate(security_pb2.SignCertificateRequest(
                mesh_name=CLUSTER, identity=self.identity, csr_pem=csr_pem.decode(),
                dns_names=self.dns_names, ip_addresses=self.ip_addresses), timeout=15)
        finally:
            channel.close()
        return resp.certificate_chain_pem.encode(), key_pem, resp.trust_bundle_pem.encode()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

