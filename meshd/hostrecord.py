"""The host record: each meshd publishes `hosts/<name>` under its host lease, so any admin
API can say which hosts are alive, where to scrape them and what configuration each applied.

The record is rewritten only when something in it changed, and at most once per `interval`:
the applied revision moves with every configuration change, and a burst of changes must
not become a burst of etcd writes. It is written under the host lease, so a host that dies
drops out when its lease expires; after a lost lease the next tick writes it again under
the new one.
"""
from __future__ import annotations

import importlib.metadata
import logging
import threading
from typing import Callable

import registry
from meshd.api import kinds as K
from meshd.lease import HostLease
from meshd.loops import supervised
from meshd.v1 import admin_pb2

log = logging.getLogger("meshd.hostrecord")


def meshd_version() -> str:
    try:
        return importlib.metadata.version("meshd")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"  # run from a source tree that was never installed


class HostRecord:
    """Publishes one host's record while it runs; `stop()` deletes it with the lease."""

    def __init__(self, store: registry.Store, lease: HostLease, *, host_name: str, admin_address: str,
                 metrics_address: Callable[[], str] = lambda: "", data_plane: bool = False,
                 applied: Callable[[], tuple[int, int]] = lambda: (0, 0), interval: float = 1.0):
        self.store = store
        self.lease = lease
        self.path = f"{K.HOSTS}/{host_name}"
        self._base = admin_pb2.Host(host_name=host_name, version=meshd_version(), admin_address=admin_address,
                                    data_plane=data_plane)
        self._base.started_at.GetCurrentTime()
        # metrics_address() -> "HOST:PORT"; applied() -> (store revision, generation) of the
        # route tables the data plane serves, (0, 0) without a data plane.
        self._metrics_address = metrics_address
        self._applied = applied
        self.interval = interval
        self._published: tuple | None = None  # (lease, metrics, revision, generation) last written
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.writes = 0

    def start(self) -> "HostRecord":
        self.publish()
        self._thread = supervised("host-record", self._run, self._stop)
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.publish()

    def publish(self) -> bool:
        """Write the record if it changed (or the lease did); True when a write happened."""
        try:
            lease = self.lease.current()
            revision, generation = self._applied()
            state = (lease, self._metrics_address(), revision, generation)
            if state == self._published:
                return False
            rec = admin_pb2.Host()
            rec.CopyFrom(self._base)
            rec.lease_id, rec.metrics_address, rec.applied_revision, rec.config_generation = state
            rec.updated_at.GetCurrentTime()
            self.store.put(self.path, rec.SerializeToString(deterministic=True), lease=lease)
        except registry.RegistryError as err:
            # etcd away, or the lease expired before the lease keeper noticed: the next tick
            # tries again (with the new lease once it is granted).
            log.warning("host record not published", extra={"error": str(err)})
            return False
        self._published = state
        self.writes += 1
        return True

    def stop(self) -> None:
        """Stop publishing; the record itself goes with the host lease."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
