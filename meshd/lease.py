"""The host lease: one etcd lease per meshd that holds the instances it registered.

If this meshd dies, etcd expires the lease and every instance under it disappears from all
route tables. If the lease is lost while the meshd lives (a partition longer than the TTL),
a new lease is granted and the instances registered through this meshd are written again.

Which held keys still have to be written under the live lease is state (`_unwritten`), not
a call in progress: etcd often refuses the new grant or the writes for a moment right after
a partition heals (an election, a member catching up), and whichever thread grants the next
lease, the lease loop keeps writing until every held key is under it.
"""
from __future__ import annotations

import logging
import threading
import time

import registry
from meshd.loops import supervised

log = logging.getLogger("meshd.lease")


class HostLease:
    """Keeps one lease alive at a third of its TTL and re-registers after it is lost.

    Renewals go over the store's one long-lived keepalive stream (`registry.Store.keepalive`),
    which etcd and `etcd grpc-proxy` both answer."""

    def __init__(self, store: registry.Store, ttl: int = 10, rewrite=None):
        self.store = store
        self.ttl = ttl
        # rewrite(value, lease_id) -> value: lets the owner of held values record the new
        # lease in them when they are written again after a lost lease.
        self._rewrite = rewrite
        self._id = 0
        # _lock guards the fields below and is never held across an etcd call; _grant_lock
        # makes one thread at a time grant, and others wait for it no longer than one call.
        self._lock = threading.Lock()
        self._grant_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # path -> value of each key this meshd wrote under the lease, for re-registration.
        self._held: dict[str, bytes] = {}
        # Held paths not yet written under the live lease (all of them after a loss).
        self._unwritten: set[str] = set()
        self._last_renewed = time.monotonic()
        self.renewals = 0
        self.losses = 0
        self.grants = 0

    def current(self) -> int:
        """The live lease id, granting one first if there is none."""
        with self._lock:
            if self._id:
                return self._id
        # Bounded: a thread waits for another's grant at most about one etcd call long.
        if not self._grant_lock.acquire(timeout=self.store.timeout + 1):
            raise registry.Unavailable(self.store.endpoints, "host lease grant still in progress")
        try:
            with self._lock:
                if self._id:
                    return self._id
            lease = self.store.grant_lease(self.ttl)
            with self._lock:
                self._id = lease
                self._unwritten = set(self._held)
                self.grants += 1
                pending = len(self._unwritten)
        finally:
            self._grant_lock.release()
        if self.losses:
            log.warning("host lease granted again after a loss; re-registering",
                        extra={"lease": lease, "ttl": self.ttl, "to_rewrite": pending})
        else:
            log.info("host lease granted", extra={"lease": lease, "ttl": self.ttl})
        return lease

    def hold(self, path: str, value: bytes, lease: int) -> None:
        """Remember a key written under `lease`, to write it again if the lease is lost."""
        with self._lock:
            self._held[path] = value
            if lease == self._id:
                self._unwritten.discard(path)
            else:  # written under a lease that is gone already: the loop writes it again
                self._unwritten.add(path)

    def release(self, path: str) -> None:
        with self._lock:
            self._held.pop(path, None)
            self._unwritten.discard(path)

    def unwritten(self) -> int:
        """How many held keys still wait to be written under the live lease."""
        with self._lock:
            return len(self._unwritten)

    def start(self) -> None:
        self._thread = supervised("host-lease", self._run, self._stop, pause=self._retry_wait)

    @property
    def _retry_wait(self) -> float:
        # Soon, not a third of the TTL later: two missed keepalives in a row lose the lease.
        return min(0.5, self.ttl / 6)

    def _run(self) -> None:
        wait = self.ttl / 3
        while not self._stop.wait(wait):
            wait = self._tick()

    def _tick(self) -> float:
        """One keepalive, a new grant if the lease is gone, and the writes it owes; returns
        how long to wait for the next tick. Every etcd call here is bounded by the store's
        timeout, so the loop always comes back to say what happened."""
        wait = self.ttl / 3
        try:
            lease = self.current()
            left = self.store.keepalive(lease)
            if left > 0:
                self.renewals += 1
                self._last_renewed = time.monotonic()
                # etcd answers with the TTL the lease now has (etcd raises a TTL below its
                # minimum): renewing at a third of it leaves two more tries before expiry.
                wait = left / 3
            else:
                self._lost(lease)
                lease = self.current()
            if not self._write_unwritten(lease):
                return self._retry_wait
        except registry.Unavailable as err:
            log.warning("host lease not renewed", extra={
                "lease": self._id, "error": str(err), "unwritten": self.unwritten(),
                "since_renewal_s": round(time.monotonic() - self._last_renewed, 1), "ttl": self.ttl})
            return self._retry_wait
        return wait

    def _lost(self, lease: int) -> None:
        with self._lock:
            if self._id == lease:
                self._id = 0
            held = len(self._held)
        self.losses += 1
        log.warning("host lease expired in etcd; its instances are gone until re-registered",
                    extra={"lease": lease, "instances": held})

    def _write_unwritten(self, lease: int) -> bool:
        """Write every held key still owed to `lease`; True when none is left."""
        with self._lock:
            todo = {p: self._held[p] for p in self._unwritten if p in self._held}
        if not todo:
            return True
        for path, value in todo.items():
            new = self._rewrite(value, lease) if self._rewrite is not None else value
            self.store.put(path, new, lease=lease)
            with self._lock:
                if self._id != lease:
                    return False  # lost again meanwhile: the next grant starts over
                # A newer value held meanwhile (a health change) was maybe overwritten by
                # this one: leave the path owed, so the newer value goes out next.
                if self._held.get(path) is value:
                    self._held[path] = new
                    self._unwritten.discard(path)
        left = self.unwritten()
        log.warning("host lease: instances re-registered under the new lease",
                    extra={"lease": lease, "written": len(todo), "left": left})
        return not left

    def stop(self, revoke: bool = True) -> None:
        """Stop renewing; with `revoke`, drop the lease so its instances vanish at once."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.store.timeout + 5)
        if revoke and self._id:
            try:
                self.store.revoke_lease(self._id)
            except registry.Unavailable as err:
                log.warning("could not revoke host lease; it will expire", extra={"error": str(err)})
