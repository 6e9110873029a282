"""The host lease: one etcd lease per meshd that holds the instances it registered.

If this meshd dies, etcd expires the lease and every instance under it disappears from all
route tables. If the lease is lost while the meshd lives (a partition longer than the TTL),
a new lease is granted and the instances registered through this meshd are written again.
"""
from __future__ import annotations

import logging
import threading

import registry

log = logging.getLogger("meshd.lease")


class HostLease:
    """Keeps one lease alive at a third of its TTL and re-registers after it is lost."""

    def __init__(self, store: registry.Store, ttl: int = 10, rewrite=None):
        self.store = store
        self.ttl = ttl
        # rewrite(value, lease_id) -> value: lets the owner of held values record the new
        # lease in them when they are written again after a lost lease.
        self._rewrite = rewrite
        self._id = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # path -> value of each key this meshd wrote under the lease, for re-registration.
        self._held: dict[str, bytes] = {}
        self.renewals = 0
        self.losses = 0

    def current(self) -> int:
        """The live lease id, granting one first if there is none."""
        with self._lock:
            if not self._id:
                self._id = self.store.grant_lease(self.ttl)
                log.info("host lease granted", extra={"lease": self._id, "ttl": self.ttl})
            return self._id

    def hold(self, path: str, value: bytes) -> None:
        with self._lock:
            self._held[path] = value

    def release(self, path: str) -> None:
        with self._lock:
            self._held.pop(path, None)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="host-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        wait = self.ttl / 3
        while not self._stop.wait(wait):
            try:
                lease = self.current()
                if self.store.keepalive(lease) > 0:
                    self.renewals += 1
                    wait = self.ttl / 3
                    continue
                self._reacquire()
            except registry.Unavailable as err:
                # Try again soon (the store has moved to another endpoint), not a third of the
                # TTL later: two missed keepalives in a row would lose the lease.
                wait = min(0.5, self.ttl / 6)
                log.warning("host lease keepalive failed", extra={"error": str(err)})

    def _reacquire(self) -> None:
        self.losses += 1
        with self._lock:
            self._id = 0
        lease = self.current()
        with self._lock:
            held = dict(self._held)
        for path, value in held.items():
            if self._rewrite is not None:
                value = self._rewrite(value, lease)
                with self._lock:
                    if path in self._held:
                        self._held[path] = value
            self.store.put(path, value, lease=lease)
        log.warning("host lease was lost; instances re-registered",
                    extra={"lease": lease, "instances": len(held)})

    def stop(self, revoke: bool = True) -> None:
        """Stop renewing; with `revoke`, drop the lease so its instances vanish at once."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if revoke and self._id:
            try:
                self.store.revoke_lease(self._id)
            except registry.Unavailable as err:
                log.warning("could not revoke host lease; it will expire", extra={"error": str(err)})
