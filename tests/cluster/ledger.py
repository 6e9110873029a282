"""The "nothing lost" checker: every write the admin API acknowledged during a drill, and
every write whose outcome stayed unknown, compared at the end with what the cluster holds.

A write is acknowledged when the API answered OK; its path, resulting version and spec are
recorded. A write that ran out of retries on UNAVAILABLE/DEADLINE_EXCEEDED may or may not
have been applied, so it is recorded as unknown and excuses exactly the differences it could
explain (a higher version, a missing resource after an unknown delete). Anything else —
an acknowledged version missing or rolled back, a different spec at the acknowledged
version — is a lost write.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import grpc

from meshd.api import kinds as K
from meshd.v1 import admin_pb2 as pb

from .harness import RETRYABLE, MeshClient, token


@dataclass(frozen=True)
class Entry:
    acked: bool
    op: str  # "put" or "delete"
    version: int = 0
    spec: bytes = b""


class Ledger:
    """Writes through a `MeshClient` and remembers each outcome per resource path."""

    def __init__(self, client: MeshClient):
        self.client = client
        self.history: dict[str, list[Entry]] = {}
        self.kinds: dict[str, tuple[K.Kind, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def _note(self, kind: K.Kind, ids: tuple[str, ...], entry: Entry) -> None:
        path = kind.path(ids)
        with self._lock:
            self.kinds[path] = (kind, ids)
            self.history.setdefault(path, []).append(entry)

    def put(self, kind: K.Kind, verb: str, hosts: list[str] | None = None, **fields):
        """Create or Update one resource (with a client token, so retries are safe)."""
        req = getattr(pb, f"{verb}{kind.title}Request")(**fields, client_token=token())
        ids = kind.ids(req)
        try:
            _, resp = self.client.call(f"{verb}{kind.title}", req, hosts)
        except grpc.RpcError as err:
            if err.code() in RETRYABLE:
                self._note(kind, ids, Entry(False, "put", spec=req.spec.SerializeToString(deterministic=True)))
            raise
        data = getattr(resp, kind.field)
        self._note(kind, ids, Entry(True, "put", data.metadata.version, data.spec.SerializeToString(deterministic=True)))
        return data

    def delete(self, kind: K.Kind, hosts: list[str] | None = None, **fields) -> None:
        req = getattr(pb, f"Delete{kind.title}Request")(**fields)
        ids = kind.ids(req)
        failures_before = sum(self.client.stats.failed_attempts.values())
        try:
            self.client.call(f"Delete{kind.title}", req, hosts)
        except grpc.RpcError as err:
            retried = sum(self.client.stats.failed_attempts.values()) > failures_before + 1
            if err.code() == grpc.StatusCode.NOT_FOUND and retried:
                # A retry found it gone: an earlier try whose answer was lost applied it.
                self._note(kind, ids, Entry(False, "delete"))
                return
            if err.code() in RETRYABLE:
                self._note(kind, ids, Entry(False, "delete"))
            raise
        self._note(kind, ids, Entry(True, "delete"))

    @property
    def acknowledged(self) -> int:
        return sum(e.acked for h in self.history.values() for e in h)

    @property
    def unknown(self) -> int:
        return sum(not e.acked for h in self.history.values() for e in h)

    def verify(self, client: MeshClient, hosts: list[str] | None = None) -> list[str]:
        """Problems found comparing the ledger with the final state read through `hosts`."""
        problems = []
        for path, history in sorted(self.history.items()):
            kind, ids = self.kinds[path]
            req = getattr(pb, f"Describe{kind.title}Request")(**dict(zip(kind.id_fields, ids)))
            try:
                _, resp = client.call(f"Describe{kind.title}", req, hosts)
                final = getattr(resp, kind.field)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                final = None
            problem = _judge(history, final)
            if problem:
                problems.append(f"{path}: {problem}")
        return problems


def _judge(history: list[Entry], final) -> str | None:
    last = max((i for i, e in enumerate(history) if e.acked), default=None)
    if last is None:
        return None  # nothing acknowledged, any outcome is allowed
    ack, after = history[last], history[last + 1:]
    unknown_puts = sum(e.op == "put" for e in after)
    unknown_delete = any(e.op == "delete" for e in after)
    if ack.op == "delete":
        if final is not None and not unknown_puts:
            return f"acknowledged delete, but version {final.metadata.version} is there"
        return None
    if final is None:
        return None if unknown_delete else f"acknowledged version {ack.version} is missing"
    v = final.metadata.version
    if v < ack.version:
        return f"acknowledged version {ack.version} rolled back to {v}"
    if v == ack.version and final.spec.SerializeToString(deterministic=True) != ack.spec:
        return f"version {v} holds a different spec than the one acknowledged"
    if v > ack.version + unknown_puts:
        return f"version {v} is past the acknowledged {ack.version} with only {unknown_puts} unknown writes after it"
    return None
