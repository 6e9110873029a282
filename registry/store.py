"""The etcd store: relative paths to opaque values, one etcd transaction per write.

Every write names the integrity rules it depends on (the path's expected revision, parents
and references that must exist, child collections that must be empty, referrers that must
be gone), and all of them are checked inside the same etcd transaction as the write, so
two meshds racing on the same resources can never both succeed against stale state.
References are stored as index keys `refs/<target>|<referrer>`, written in that same
transaction, so "who still uses X?" is one range read.
"""
from __future__ import annotations

import functools
import queue
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Sequence
from urllib.parse import urlsplit

import grpc
from etcd3 import etcdrpc
from etcd3 import exceptions as etcd_exc
from etcd3 import transactions as tx
from etcd3.client import Endpoint, MultiEndpointEtcd3Client

from registry.errors import (
    AlreadyExists,
    Compacted,
    Conflict,
    InUse,
    NotFound,
    RegistryError,
    Unavailable,
)

DEFAULT_PREFIX = "/meshd/v1/"
# Names never contain "|" (the admin API validates names), so "<target>|" is a prefix that
# selects exactly the referrers of one target.
REF_SEP = "|"
REFS = "refs/"
# How often a write is retried when its transaction failed but re-reading shows nothing
# wrong any more (a concurrent change came and went). Bounded so a hot key cannot spin.
_COMMIT_ATTEMPTS = 5


# gRPC channel options for etcd. Reconnect backoff capped at 1 s (gRPC's default grows to
# 120 s, so a meshd would stay cut off long after etcd is back); keepalive pings so a member
# that stops answering (a partition) is noticed in seconds instead of never.
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True, slots=True)
class Item:
    """One stored value, with the etcd revisions that make optimistic concurrency work."""

    path: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a key-ordered listing; `next_after` is the last path when more remain."""

    items: list[Item]
    next_after: str | None
    revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """A change seen by a watch. For a delete, `value` is the last value (prev_kv)."""

    type: str  # "put" or "delete"
    path: str
    value: bytes
    revision: int


@dataclass(frozen=True)
class Write:
    """One transactional change of `path` together with the rules it must satisfy.

    expect_revision: None = no check, 0 = the path must not exist (create),
        >0 = its mod revision must still be this (update/delete of what was read).
    require: (path, role) pairs that must exist, e.g. the parent mesh or a route's target.
    require_empty: prefixes that must hold no keys, e.g. a router's routes on delete.
    check_referrers: refuse while any reference index key points at `path`.
    refs_add / refs_remove: reference targets that `path` starts / stops pointing at.
    puts / deletes: companion keys written in the same transaction (tags, indexes).
    idempotency: (path, record) stored under the idempotency lease; the write fails if the
        path already exists, and the caller replays the stored record instead.
    """

    path: str
    value: bytes | None = None
    expect_revision: int | None = None
    require: tuple[tuple[str, str], ...] = ()
    require_empty: tuple[str, ...] = ()
    check_referrers: bool = False
    refs_add: tuple[str, ...] = ()
    refs_remove: tuple[str, ...] = ()
    puts: tuple[tuple[str, bytes], ...] = ()
    deletes: tuple[str, ...] = ()
    idempotency: tuple[str, bytes] | None = None
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Committed:
    """The outcome of a write: its revision, or the stored record of an earlier identical one."""

    revision: int
    replay: bytes | None = None


def prefix_end(prefix: bytes) -> bytes:
    """The etcd range end that selects every key starting with `prefix`."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def ref_key(target: str, referrer: str) -> str:
    return f"{REFS}{target}{REF_SEP}{referrer}"


def _translate_errors(fn):
    """Turn every way the etcd client reports an unreachable cluster into `Unavailable`."""

    @functools.wraps(fn)
    def wrapper(self: "Store", *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except RegistryError:
            raise
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            self._next_endpoint()
            details = err.details() if hasattr(err, "details") else err
            raise Unavailable(self.endpoints, f"{code.name if code else 'error'}: {details}") from err
        except (etcd_exc.ConnectionFailedError, etcd_exc.ConnectionTimeoutError) as err:
            self._next_endpoint()
            raise Unavailable(self.endpoints, type(err).__name__) from err
        except etcd_exc.NoServerAvailableError as err:
            raise Unavailable(self.endpoints, "no endpoint reachable") from err
        except etcd_exc.Etcd3Exception as err:
            raise Unavailable(self.endpoints, f"{type(err).__name__}: {err}") from err
        except ValueError as err:
            # etcd3.Endpoint.use() raises ValueError for an endpoint marked failed; any other
            # ValueError is a bug of ours and must not pass for an etcd outage.
            if "failed node" not in str(err):
                raise
            raise Unavailable(self.endpoints, f"endpoint marked failed: {err}") from err

    return wrapper


class Store:
    """A thread-safe handle on the etcd cluster that holds meshd's state."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 3.0,
        ca_cert: str | None = None,
        cert_key: str | None = None,
        cert_cert: str | None = None,
        idempotency_ttl: int = 3600,
    ):
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.endpoints = list(endpoints)
        self.prefix = prefix
        self.timeout = timeout
        self._raw_prefix = prefix.encode()
        creds = None
        if ca_cert:
            with open(ca_cert, "rb") as f:
                ca = f.read()
            key = chain = None
            if cert_key and cert_cert:
                with open(cert_key, "rb") as f:
                    key = f.read()
                with open(cert_cert, "rb") as f:
                    chain = f.read()
            creds = grpc.ssl_channel_credentials(ca, key, chain)
        eps = []
        for url in self.endpoints:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            secure = parts.scheme == "https"
            # A short time_retry: the client library otherwise shuns a failed endpoint for
            # five minutes, which would outlast the etcd outage it reacted to.
            eps.append(
                Endpoint(parts.hostname or "127.0.0.1", parts.port or 2379, secure=secure,
                         creds=creds if secure else None, time_retry=0.2, opts=_CHANNEL_OPTIONS)
            )
        self._client = MultiEndpointEtcd3Client(endpoints=eps, timeout=timeout, failover=True)
        self._idem_ttl = idempotency_ttl
        self._idem_lease: tuple[int, float] | None = None
        self._lock = threading.Lock()
        self._keepalive = _KeepAliveStream()

    def _next_endpoint(self) -> None:
        """After a failed call, move to the next endpoint at once, so the next call (even one
        made much later, like a lease keepalive) does not go back to a dead or cut-off member."""
        labels = list(self._client.endpoints)
        if len(labels) < 2:
            return
        with self._lock:
            cur = self._client._current_endpoint_label
            i = labels.index(cur) if cur in labels else -1
            self._client._current_endpoint_label = labels[(i + 1) % len(labels)]

    # -- keys -------------------------------------------------------------------------
    def key(self, path: str) -> bytes:
        return self._raw_prefix + path.encode()

    def path(self, key: bytes) -> str:
        return key[len(self._raw_prefix):].decode()

    # -- reads ------------------------------------------------------------------------
    @_translate_errors
    def get(self, path: str) -> Item | None:
        resp = self._client.get_response(self.key(path))
        if not resp.kvs:
            return None
        kv = resp.kvs[0]
        return Item(path, kv.value, kv.mod_revision, kv.create_revision, kv.lease)

    @_translate_errors
    def list(self, prefix: str, *, after: str | None = None, limit: int = 100,
             revision: int | None = None) -> Page:
        """Key-ordered page of `prefix`, starting after the path `after`.

        A cursor on the key (not an offset) keeps pages stable across concurrent writes:
        an item that exists throughout the listing is returned exactly once.
        """
        raw = self.key(prefix)
        start = raw if after is None else self.key(after) + b"\x00"
        kwargs = {"limit": limit + 1}
        if revision:
            kwargs["revision"] = revision
        resp = self._client.get_range_response(start, prefix_end(raw), sort_order="ascend", **kwargs)
        kvs = list(resp.kvs)
        more = len(kvs) > limit
        items = [Item(self.path(kv.key), kv.value, kv.mod_revision, kv.create_revision, kv.lease)
                 for kv in kvs[:limit]]
        return Page(items, items[-1].path if more and items else None, resp.header.revision)

    def scan(self, prefix: str, *, page: int = 500) -> tuple[list[Item], int]:
        """Every item under `prefix` at one revision (paged reads pinned to that revision)."""
        first = self.list(prefix, limit=page)
        items, rev, after = list(first.items), first.revision, first.next_after
        while after is not None:
            nxt = self.list(prefix, after=after, limit=page, revision=rev)
            items.extend(nxt.items)
            after = nxt.next_after
        return items, rev

    @_translate_errors
    def last_modified(self, prefix: str, *, revision: int | None = None) -> int:
        """The newest mod revision of any key under `prefix` (0: none), read as one key:
        etcd sorts the range by mod revision, so this costs no scan of the values.
        A delete leaves no key behind, so it is not seen here."""
        raw = self.key(prefix)
        kwargs = {"revision": revision} if revision else {}
        resp = self._client.get_range_response(raw, prefix_end(raw), sort_order="descend",
                                               sort_target="mod", limit=1, keys_only=True, **kwargs)
        return resp.kvs[0].mod_revision if resp.kvs else 0

    @_translate_errors
    def revision(self) -> int:
        return self._client.get_response(self.key("")).header.revision

    # -- writes -----------------------------------------------------------------------
    def commit(self, w: Write) -> Committed:
        """Apply `w` atomically, or raise the typed error naming the first rule it broke."""
        for _ in range(_COMMIT_ATTEMPTS):
            ok, revision = self._try_commit(w)
            if ok:
                return Committed(revision)
            replay = self._diagnose(w)
            if replay is not None:
                return Committed(revision, replay)
        raise Conflict(w.path, w.expect_revision or 0, -1)

    @_translate_errors
    def _try_commit(self, w: Write) -> tuple[bool, int]:
        key = self.key(w.path)
        compare = []
        if w.expect_revision == 0:
            compare.append(tx.Version(key) == 0)
        elif w.expect_revision is not None:
            compare.append(tx.Mod(key) == w.expect_revision)
        for p, _role in w.require:
            compare.append(tx.Version(self.key(p)) > 0)
        for p in w.require_empty:
            raw = self.key(p)
            # A range compare with no keys in range compares against the zero key-value, so
            # "version == 0 over the range" holds exactly when the range is empty.
            compare.append(tx.Version(raw, range_end=prefix_end(raw)) == 0)
        if w.check_referrers:
            raw = self.key(ref_key(w.path, ""))
            compare.append(tx.Version(raw, range_end=prefix_end(raw)) == 0)
        success = []
        if w.value is None:
            success.append(tx.Delete(key))
        else:
            success.append(tx.Put(key, w.value, lease=w.lease or None))
        for t in w.refs_add:
            success.append(tx.Put(self.key(ref_key(t, w.path)), b""))
        for t in w.refs_remove:
            success.append(tx.Delete(self.key(ref_key(t, w.path))))
        for p, v in w.puts:
            success.append(tx.Put(self.key(p), v))
        for p in w.deletes:
            success.append(tx.Delete(self.key(p)))
        if w.idempotency is not None:
            ikey = self.key(w.idempotency[0])
            compare.append(tx.Version(ikey) == 0)
            success.append(tx.Put(ikey, w.idempotency[1], lease=self._idempotency_lease()))
        req = etcdrpc.TxnRequest(
            compare=[c.build_message() for c in compare],
            success=self._client._ops_to_requests(success),
            failure=[],
        )
        resp = self._client.kvstub.Txn(req, self.timeout, credentials=self._client.call_credentials,
                                       metadata=self._client.metadata)
        return resp.succeeded, resp.header.revision

    def _diagnose(self, w: Write) -> bytes | None:
        """After a failed transaction, find which rule failed and raise its error.

        Returns the stored record when the failure was an already-used idempotency key,
        and None when nothing is wrong any more (the caller retries the transaction).
        """
        if w.idempotency is not None:
            rec = self.get(w.idempotency[0])
            if rec is not None:
                return rec.value
        cur = self.get(w.path)
        if w.expect_revision == 0 and cur is not None:
            raise AlreadyExists(w.path)
        if w.expect_revision:
            if cur is None:
                raise NotFound(w.path)
            if cur.mod_revision != w.expect_revision:
                raise Conflict(w.path, w.expect_revision, cur.mod_revision)
        for p, role in w.require:
            if self.get(p) is None:
                raise NotFound(p, role=role)
        if w.check_referrers:
            refs = self.list(ref_key(w.path, ""), limit=20).items
            if refs:
                raise InUse(w.path, [r.path.split(REF_SEP, 1)[1] for r in refs])
        for p in w.require_empty:
            children = self.list(p, limit=20).items
            if children:
                raise InUse(w.path, [c.path for c in children])
        return None

    def _idempotency_lease(self) -> int:
        """One shared lease for idempotency records, renewed by replacement every ttl/2."""
        with self._lock:
            now = time.monotonic()
            if self._idem_lease is None or now - self._idem_lease[1] > self._idem_ttl / 2:
                lease = self._client.lease(self._idem_ttl)
                self._idem_lease = (lease.id, now)
            return self._idem_lease[0]

    @_translate_errors
    def put(self, path: str, value: bytes, *, lease: int = 0) -> int:
        """An unconditional put, for keys that only their owner writes (instances, status)."""
        resp = self._client.put(self.key(path), value, lease=lease or None)
        return resp.header.revision

    @_translate_errors
    def delete(self, path: str) -> bool:
        return bool(self._client.delete(self.key(path)))

    @_translate_errors
    def remove(self, path: str) -> int:
        """Delete `path`; the revision of the delete, 0 when there was no such key (a
        watcher of the key sees the delete at that revision)."""
        resp = self._client.delete(self.key(path), return_response=True)
        return resp.header.revision if resp.deleted else 0

    # -- leases -----------------------------------------------------------------------
    @_translate_errors
    def grant_lease(self, ttl: int) -> int:
        return self._client.lease(ttl).id

    @_translate_errors
    def keepalive(self, lease_id: int) -> int:
        """Refresh a lease; returns its remaining TTL, 0 when etcd no longer has it."""
        return self._keepalive.renew(self._client, lease_id, self.timeout)

    @_translate_errors
    def revoke_lease(self, lease_id: int) -> None:
        try:
            self._client.revoke_lease(lease_id)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise

    # -- admin (tests, operations) ----------------------------------------------------
    @_translate_errors
    def compact(self, revision: int) -> None:
        self._client.compact(revision, physical=True)

    @_translate_errors
    def status(self):
        return self._client.status()

    # -- watches ----------------------------------------------------------------------
    def watch(self, prefix: str, *, start_revision: int) -> "Watch":
        """Changes under `prefix` from `start_revision` (inclusive), as a cancellable iterator."""
        return Watch(self, prefix, start_revision)

    def close(self) -> None:
        self._keepalive.close()
        self._client.close()


class _KeepAliveStream:
    """One LeaseKeepAlive stream kept open for every renewal, as etcd's Go client does.

    python-etcd3's `refresh_lease` opens a stream per renewal, sends one request and
    half-closes it; `etcd grpc-proxy` cancels the stream it forwards on that half-close,
    before etcd's answer comes back ("context canceled"), so behind the proxy no renewal
    ever succeeded. A stream that stays open is answered the same by etcd and by the proxy.
    It is opened on first use, again after any failure (a little later each time a new one
    fails, up to a second), and again when the store moved to another endpoint.
    """

    _BACKOFF_MIN = 0.1
    _BACKOFF_MAX = 1.0

    def __init__(self):
        # One renewal at a time: a response is matched to the request that is waiting.
        self._lock = threading.Lock()
        self._call = None
        self._channel = None
        self._requests: queue.Queue | None = None
        self._responses: queue.Queue | None = None
        self._backoff = 0.0
        self._failed_at = 0.0

    def renew(self, client: MultiEndpointEtcd3Client, lease_id: int, timeout: float) -> int:
        """Send one keepalive for `lease_id` and return the TTL etcd answers (0: no such lease).

        Raises what the stream failed with (translated by the caller) or a timeout after
        `timeout` seconds; either way the stream is dropped and the next call opens a new one."""
        with self._lock:
            deadline = time.monotonic() + timeout
            channel = client.channel
            if self._call is None or self._channel is not channel:
                self._open(client, channel, deadline)
            while not self._responses.empty():  # answers to renewals that already timed out
                self._responses.get_nowait()
            self._requests.put(etcdrpc.LeaseKeepAliveRequest(ID=lease_id))
            while True:
                try:
                    item = self._responses.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    self._fail()
                    raise etcd_exc.ConnectionTimeoutError("no lease keepalive answer in time") from None
                if isinstance(item, Exception):
                    self._fail()
                    raise item
                if item.ID == lease_id:
                    self._backoff = 0.0
                    return int(item.TTL)

    def _open(self, client: MultiEndpointEtcd3Client, channel, deadline: float) -> None:
        self._drop()
        wait = min(self._failed_at + self._backoff - time.monotonic(), deadline - time.monotonic())
        if wait > 0:
            time.sleep(wait)
        requests: queue.Queue = queue.Queue()
        responses: queue.Queue = queue.Queue()

        def request_iter():
            while (item := requests.get()) is not None:
                yield item

        # "hasleader": a member cut off from the quorum ends the stream instead of answering
        # for a lease it cannot renew (clientv3.WithRequireLeader, as the Go client's lessor).
        metadata = tuple(client.metadata or ()) + (("hasleader", "true"),)
        call = etcdrpc.LeaseStub(channel).LeaseKeepAlive(
            request_iter(), credentials=client.call_credentials, metadata=metadata)
        threading.Thread(target=self._read, args=(call, responses), name="etcd-lease-keepalive",
                         daemon=True).start()
        self._call, self._channel = call, channel
        self._requests, self._responses = requests, responses

    @staticmethod
    def _read(call, responses: queue.Queue) -> None:
        """Move the stream's answers into `responses`, and how it ended after them; the
        queues belong to this one stream, so a dropped stream never answers a newer one."""
        try:
            for resp in call:
                responses.put(resp)
            responses.put(etcd_exc.ConnectionFailedError("lease keepalive stream closed by the server"))
        except grpc.RpcError as err:
            responses.put(err)

    def _fail(self) -> None:
        self._drop()
        self._backoff = min(max(self._backoff * 2, self._BACKOFF_MIN), self._BACKOFF_MAX)
        self._failed_at = time.monotonic()

    def _drop(self) -> None:
        if self._call is not None:
            self._requests.put(None)
            self._call.cancel()
        self._call = self._channel = None

    def close(self) -> None:
        with self._lock:
            self._drop()


class Watch:
    """A resumable etcd watch: iterate for (revision, [Event]) batches; `cancel()` stops it.

    The stream raises `Compacted` when `start_revision` is no longer in etcd's history, and
    `Unavailable` when the connection breaks; the caller resumes from the last revision it
    processed (+1), or resyncs from a full read after `Compacted`.
    Progress notifications arrive as empty batches, so `revision` keeps advancing.
    """

    def __init__(self, store: Store, prefix: str, start_revision: int):
        self._store = store
        raw = store.key(prefix)
        self._create = etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
            key=raw, range_end=prefix_end(raw), start_revision=start_revision,
            progress_notify=True, prev_kv=True))
        self._requests: queue.Queue = queue.Queue()
        self._call = None
        self._cancelled = False

    def _request_iter(self):
        yield self._create
        while True:
            item = self._requests.get()
            if item is None:
                return
            yield item

    def cancel(self) -> None:
        self._cancelled = True
        self._requests.put(None)
        if self._call is not None:
            self._call.cancel()

    def __iter__(self) -> Iterator[tuple[int, list[Event]]]:
        store = self._store
        try:
            stub = etcdrpc.WatchStub(store._client.channel)
            # "hasleader": etcd ends the watch when its member has no leader (partitioned from
            # the quorum) instead of keeping it open and silent (clientv3.WithRequireLeader).
            metadata = tuple(store._client.metadata or ()) + (("hasleader", "true"),)
            self._call = stub.Watch(self._request_iter(), credentials=store._client.call_credentials,
                                    metadata=metadata)
            if self._cancelled:
                self._call.cancel()
            for resp in self._call:
                if resp.compact_revision:
                    raise Compacted(resp.compact_revision)
                if resp.canceled:
                    raise Unavailable(store.endpoints, f"watch canceled: {resp.cancel_reason}")
                if resp.created:
                    continue  # the acknowledgement carries no events; compaction, if any, follows
                events = []
                for ev in resp.events:
                    if ev.type == ev.DELETE:
                        events.append(Event("delete", store.path(ev.kv.key), ev.prev_kv.value, ev.kv.mod_revision))
                    else:
                        events.append(Event("put", store.path(ev.kv.key), ev.kv.value, ev.kv.mod_revision))
                yield resp.header.revision, events
        except grpc.RpcError as err:
            if self._cancelled:
                return
            store._next_endpoint()
            raise Unavailable(store.endpoints, f"watch broke: {err.code().name}") from err
        except (ValueError, etcd_exc.NoServerAvailableError) as err:
            raise Unavailable(store.endpoints, f"watch could not start: {err}") from err
        finally:
            self._requests.put(None)
