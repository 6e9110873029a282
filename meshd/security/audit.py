"""The audit log: who did what to which resource, with what result, kept in etcd, bounded.

Store layout:

    audit/seq                   the last sequence number (decimal)
    audit/entries/<seq, 20 digits>   JSON entry

Each record is one transaction: bump `audit/seq` (conditioned on the revision read),
write the entry, and delete the entry `max_entries` behind it. So sequence numbers are
dense, keys sort oldest to newest, and the log never holds more than `max_entries`.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Callable, Sequence

import registry
from meshd.security.certs import utcnow

SEQ = "audit/seq"
ENTRIES = "audit/entries/"
DEFAULT_MAX_ENTRIES = 10_000
# Concurrent recorders race on audit/seq; each retry re-reads it. Bounded so a storm of
# writers ends in registry.Conflict rather than spinning.
_ATTEMPTS = 64


def _entry_path(seq: int) -> str:
    return f"{ENTRIES}{seq:020d}"


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: datetime
    who: str  # the authenticated subject, or "" when unauthenticated
    action: str  # e.g. "CreateVirtualNode", "GrantRole", "SignCertificate"
    resource: str  # e.g. "virtualNodes/m1/web"
    result: str  # "OK" or an error reason code, e.g. "PERMISSION_DENIED"
    request_id: str
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AuditFilter:
    """Every given field must match; `resource_prefix` matches the start of the resource."""

    who: str | None = None
    action: str | None = None
    resource_prefix: str | None = None
    result: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __call__(self, e: AuditEntry) -> bool:
        return ((self.who is None or e.who == self.who)
                and (self.action is None or e.action == self.action)
                and (self.resource_prefix is None or e.resource.startswith(self.resource_prefix))
                and (self.result is None or e.result == self.result)
                and (self.request_id is None or e.request_id == self.request_id)
                and (self.since is None or e.time >= self.since)
                and (self.until is None or e.time < self.until))


def _decode(raw: bytes) -> AuditEntry:
    doc = json.loads(raw)
    doc["time"] = datetime.fromisoformat(doc["time"])
    return AuditEntry(**doc)


class AuditLog:
    """Appends entries and answers queries, newest first."""

    def __init__(self, store: registry.Store, *, max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], datetime] = utcnow):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.store = store
        self.max_entries = max_entries
        self._clock = clock

    def record(self, who: str, action: str, resource: str, result: str, request_id: str, *,
               detail: dict | None = None, now: datetime | None = None) -> AuditEntry:
        """Append one entry and drop the one `max_entries` older, in one transaction."""
        return self.record_many([(who, action, resource, result, request_id, detail)], now=now)[0]

    def record_many(self, records: Sequence[tuple[str, str, str, str, str, dict | None]], *,
                    now: datetime | None = None) -> list[AuditEntry]:
        """Append (who, action, resource, result, request_id, detail) entries with consecutive
        sequence numbers, dropping as many of the oldest, in one transaction: concurrent
        writers batched into one append race on `audit/seq` once instead of once each."""
        now = now or self._clock()
        for attempt in range(_ATTEMPTS):
            cur = self.store.get(SEQ)
            first = (int(cur.value) if cur else 0) + 1
            entries, puts, deletes = [], [], []
            for seq, (who, action, resource, result, request_id, detail) in enumerate(records, first):
                entry = AuditEntry(seq, now, who, action, resource, result, request_id, dict(detail or {}))
                doc = asdict(entry)
                doc["time"] = now.isoformat()
                entries.append(entry)
                puts.append((_entry_path(seq), json.dumps(doc).encode()))
                if seq - self.max_entries > 0:
                    deletes.append(_entry_path(seq - self.max_entries))
            try:
                self.store.commit(registry.Write(
                    SEQ, str(first + len(records) - 1).encode(), expect_revision=cur.mod_revision if cur else 0,
                    puts=tuple(puts), deletes=tuple(deletes)))
                return entries
            except (registry.Conflict, registry.AlreadyExists):
                # Randomised backoff so racing recorders stop colliding in lockstep.
                time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise registry.Conflict(SEQ, 0, -1)

    def last_seq(self) -> int:
        cur = self.store.get(SEQ)
        return int(cur.value) if cur else 0

    def query(self, filter: AuditFilter | None = None, limit: int = 100, *,
              before_seq: int | None = None, page: int = 200) -> list[AuditEntry]:
        """Up to `limit` matching entries, newest first, older than `before_seq` if given.

        Pass the last entry's seq as `before_seq` to read the next page. Sequence numbers
        are dense, so each window of keys is read with one range request, newest window first.
        """
        match = filter or AuditFilter()
        last = self.last_seq()
        hi = last if before_seq is None else min(before_seq - 1, last)
        floor = max(1, last - self.max_entries + 1)
        out: list[AuditEntry] = []
        while hi >= floor and len(out) < limit:
            lo = max(floor, hi - page + 1)
            items = self.store.list(ENTRIES, after=_entry_path(lo - 1) if lo > 1 else None, limit=hi - lo + 1).items
            for item in reversed(items):
                e = _decode(item.value)
                if e.seq <= hi and match(e):
                    out.append(e)
                    if len(out) == limit:
                        break
            hi = lo - 1
        return out

    def count(self) -> int:
        """How many entries are stored (reads every key: for tests and `trim`, not hot paths)."""
        items, _ = self.store.scan(ENTRIES)
        return len(items)

    def trim(self) -> int:
        """Delete entries older than the newest `max_entries` (after lowering the bound)."""
        keep_from = self.last_seq() - self.max_entries + 1
        items, _ = self.store.scan(ENTRIES)
        stale = [i.path for i in items if int(i.path[len(ENTRIES):]) < keep_from]
        for p in stale:
            self.store.delete(p)
        return len(stale)
