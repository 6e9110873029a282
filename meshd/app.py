"""The composition root: wires etcd (embedded or external), the registry, the host lease and
the admin API into one running meshd. No other module wires packages together."""
from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import registry
from meshd.api.resources import ApiConfig, Resources
from meshd.api.server import AdminServer
from meshd.embedded_etcd import EmbeddedEtcd
from meshd.lease import HostLease

log = logging.getLogger("meshd")

DEFAULT_ADMIN = "127.0.0.1:7000"
DEFAULT_STATE_DIR = "/var/lib/meshd"


@dataclass
class MeshdConfig:
    """Everything `meshd run` can be told; defaults give a working single-host mesh."""

    admin: str = DEFAULT_ADMIN
    etcd: list[str] = field(default_factory=list)  # empty: start the embedded etcd
    state_dir: str = DEFAULT_STATE_DIR
    host_name: str = field(default_factory=socket.gethostname)
    lease_ttl: int = 10
    etcd_timeout: float = 3.0
    etcd_prefix: str = registry.store.DEFAULT_PREFIX
    cluster: str = "local"
    embedded_etcd_port: int = 2379
    embedded_peer_port: int = 2380


class Meshd:
    """One meshd process's parts, started and stopped in dependency order."""

    def __init__(self, config: MeshdConfig):
        self.config = config
        self.etcd: EmbeddedEtcd | None = None
        self.store: registry.Store | None = None
        self.lease: HostLease | None = None
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
        resources = Resources(self.store, ApiConfig(cluster=cfg.cluster), host=cfg.host_name,
                              host_lease=self.lease)
        self.admin = AdminServer(resources, cfg.admin)
        self.admin.start()
        log.info("meshd started", extra={"admin": self.admin.address, "etcd": ",".join(endpoints),
                                         "host": cfg.host_name, "pid": os.getpid()})
        return self

    def wait(self) -> None:
        self._stopped.wait()

    def stop(self) -> None:
        """Stop in reverse order: API, host lease (its instances vanish), store, etcd."""
        if self.admin:
            self.admin.stop()
        if self.lease:
            self.lease.stop(revoke=True)
        if self.store:
            self.store.close()
        if self.etcd:
            self.etcd.stop()
        self._stopped.set()
        log.info("meshd stopped")
