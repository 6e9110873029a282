"""The composition root: wires etcd (embedded or external), the registry, the host lease,
the security library, the host identity and the admin API into one running meshd. No
other module wires packages together."""
from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import registry
from meshd.api import kinds as K
from meshd.api.auth import Access, build_rules
from meshd.api.resources import ApiConfig, Resources
from meshd.api.security_service import Security
from meshd.api.server import AdminServer, Listener
from meshd.embedded_etcd import EmbeddedEtcd
from meshd.identity import HostIdentity, IdentityError
from meshd.lease import HostLease
from meshd.security import AuditLog, KeyRef, MeshCA, Roles, Tokens
from meshd.security.errors import SecurityError

log = logging.getLogger("meshd")

DEFAULT_ADMIN = "127.0.0.1:7000"
DEFAULT_STATE_DIR = "/var/lib/meshd"
DEFAULT_CLUSTER_KEY = "/etc/meshd/cluster.key"


@dataclass
class MeshdConfig:
    """Everything `meshd run` can be told; defaults give a working single-host mesh."""

    admin: str = DEFAULT_ADMIN
    admin_token: str = ""  # TLS listener for bearer-token callers; empty: none
    insecure_local: bool = False  # serve --admin as plaintext (loopback only)
    etcd: list[str] = field(default_factory=list)  # empty: start the embedded etcd
    state_dir: str = DEFAULT_STATE_DIR
    host_name: str = field(default_factory=socket.gethostname)
    lease_ttl: int = 10
    etcd_timeout: float = 3.0
    etcd_prefix: str = registry.store.DEFAULT_PREFIX
    cluster: str = "local"
    embedded_etcd_port: int = 2379
    embedded_peer_port: int = 2380
    cluster_key: str = DEFAULT_CLUSTER_KEY
    trust_domain: str = "meshd.local"
    join_token: str = ""
    join_server: str = ""
    signer: str = ""
    audit_max_entries: int = 10_000


def _listen_ip(address: str) -> list[str]:
    host = address.rsplit(":", 1)[0].strip("[]")
    return [host] if host and host not in ("0.0.0.0", "::", "localhost") else []


class Meshd:
    """One meshd process's parts, started and stopped in dependency order."""

    def __init__(self, config: MeshdConfig):
        self.config = config
        self.etcd: EmbeddedEtcd | None = None
        self.store: registry.Store | None = None
        self.lease: HostLease | None = None
        self.identity: HostIdentity | None = None
        self.admin: AdminServer | None = None
        self._stopped = threading.Event()

    def start(self) -> "Meshd":
        cfg = self.config
        endpoints = list(cfg.etcd)
        if not endpoints:
            data = Path(cfg.state_dir) / "etcd"
            self.etcd = EmbeddedEtcd(data, client_port=cfg.embedded_etcd_port,
                                     peer_port=cfg.embedded_peer_port).start()
            endpoints = [self.etcd.url]
            log.info("embedded etcd ready", extra={"url": self.etcd.url, "data_dir": str(data)})
        self.store = registry.Store(endpoints, prefix=cfg.etcd_prefix, timeout=cfg.etcd_timeout)
        self.lease = HostLease(self.store, ttl=cfg.lease_ttl)
        self.lease.start()

        ca = MeshCA(self.store, KeyRef(cfg.cluster_key), trust_domain=cfg.trust_domain)
        tokens, roles = Tokens(self.store), Roles(self.store)
        audit = AuditLog(self.store, max_entries=cfg.audit_max_entries)

        def give_mesh_a_ca(kind, data):
            # Each mesh gets its CA when it is created; a meshd without the cluster key
            # leaves that to the first signer that issues a certificate in the mesh.
            if kind is K.MESH:
                try:
                    ca.ensure(data.mesh_name)
                except SecurityError as err:
                    log.info("mesh CA deferred", extra={"mesh": data.mesh_name, "reason": str(err)})

        resources = Resources(self.store, ApiConfig(cluster=cfg.cluster), host=cfg.host_name,
                              host_lease=self.lease, on_create=[give_mesh_a_ca])
        self.identity = HostIdentity(ca, cfg.host_name, cfg.state_dir,
                                     ip_addresses=tuple(_listen_ip(cfg.admin) + _listen_ip(cfg.admin_token)),
                                     join_token=cfg.join_token, join_server=cfg.join_server, signer=cfg.signer)
        creds = self.identity.obtain()
        if creds is None and not cfg.insecure_local:
            raise IdentityError(
                f"no host certificate: this host has no cluster key at {cfg.cluster_key} "
                "(`meshd init` makes one), no stored certificate, and no --join-token; "
                "or serve plaintext on loopback with --insecure-local")
        if creds is not None:
            self.identity.start_renewal()
        listeners = [Listener(cfg.admin, "local" if cfg.insecure_local else "mtls")]
        if cfg.admin_token:
            listeners.append(Listener(cfg.admin_token, "token"))
        access = Access(build_rules(K.KINDS), roles, tokens, audit, trust_domain=cfg.trust_domain)
        self.admin = AdminServer(
            resources, listeners, security=Security(self.store, ca, tokens, roles, audit), access=access,
            tls=self.identity.grpc_server_credentials if creds is not None else None)
        self.admin.start()
        log.info("meshd started", extra={"admin": self.admin.address, "etcd": ",".join(endpoints),
                                         "host": cfg.host_name, "pid": os.getpid(),
                                         "listeners": ",".join(f"{m}={a}" for m, a in self.admin.addresses.items()),
                                         "identity": self.identity.identity if creds else ""})
        return self

    def wait(self) -> None:
        self._stopped.wait()

    def stop(self) -> None:
        """Stop in reverse order: API, identity renewal, host lease (its instances vanish), store, etcd."""
        if self.admin:
            self.admin.stop()
        if self.identity:
            self.identity.stop()
        if self.lease:
            self.lease.stop(revoke=True)
        if self.store:
            self.store.close()
        if self.etcd:
            self.etcd.stop()
        self._stopped.set()
        log.info("meshd stopped")
