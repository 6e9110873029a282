"""The admin API's behaviour, written once for every kind: CRUD, tags, instances, watch.

It speaks protobuf requests and responses and raises typed errors; the gRPC servicer in
`meshd.api.server` maps them to statuses, and App Mesh's REST API (`meshd.awsapi`) calls
the same methods. Every write is a single registry transaction carrying the kind's
integrity rules (see `meshd.api.kinds`).

Identity is App Mesh's: every ARN is arn:<partition>:appmesh:<region>:<account>:mesh/...,
and meshOwner and resourceOwner are the account. Each cluster has one AwsIdentity, recorded
in etcd by its first meshd (`establish_aws_identity`, `ClusterIdentity`). ARNs and owners
are computed from the ids and that identity on every read, never trusted from storage, so
resources written before (with arn:meshd:... ARNs) read back in the same form as new ones.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterator, Mapping

from google.protobuf import timestamp_pb2

import registry
from meshd.api import kinds as K
from meshd.api.errors import (AwsIdentityMismatch, BadRequest, Claimed, Forbidden, LimitExceeded, TooManyTags,
                              VersionConflict)
from meshd.api.validate import FieldViolation, InvalidSpec, validate_name, validate_spec
from meshd.v1 import admin_pb2

log = logging.getLogger("meshd.api")

# App Mesh's limits (botocore's appmesh model; tests/test_appmesh_identity.py checks them
# against it): List pages of 1-100, ListTagsForResource pages of 1-50, 50 tags per
# resource, 50 keys per UntagResource.
MAX_LIMIT = 100
MAX_TAGS_LIMIT = 50
MAX_TAGS = 50
# The cluster's AwsIdentity, written once by the first meshd (create-if-absent).
AWS_IDENTITY_PATH = "cluster/aws-identity"
# App Mesh's quota names, one per kind of its model: "meshes", "virtualNodesPerMesh", ...
QUOTAS: tuple[str, ...] = tuple(k.quota for k in K.APPMESH_KINDS)
# An update without an expected version re-reads and retries when another writer got in
# between; bounded so a hot resource cannot keep a request spinning.
_UPDATE_ATTEMPTS = 16
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# A locality's region, zone or sub-zone: a cloud's name for it (us-east-1, us-east-1a) or a
# host name (up to a DNS name's 253 characters); "/" stays out, as `meshd run --locality
# region/zone/sub_zone` splits on it.
_LOCALITY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")
LOCALITY_PARTS = ("region", "zone", "sub_zone")
_HEALTH = ("HEALTHY", "UNHEALTHY", "UNKNOWN")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ACCOUNT = re.compile(r"^[0-9]{12}$")
# Partitions (aws, aws-cn, aws-us-gov...) and regions (us-east-1, cn-north-1...): lower-case
# words joined by hyphens, so that neither can break an ARN's colons or slashes.
_ARN_WORD = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


@dataclass(frozen=True)
class AwsIdentity:
    """Where this cluster sits in AWS's naming: the partition, region and account of every
    ARN it issues, and the account that owns its meshes. One per cluster."""

    partition: str = "aws"
    region: str = "us-east-1"
    account: str = "000000000000"

    def __post_init__(self):
        if not (_ARN_WORD.match(self.partition) and len(self.partition) <= 32) or self.partition == "meshd":
            # "meshd" is the partition of the ARNs meshd issued before it used AWS's form.
            raise ValueError(f"AWS partition {self.partition!r}: lower-case words joined by hyphens, e.g. aws, aws-cn")
        if not (_ARN_WORD.match(self.region) and len(self.region) <= 64):
            raise ValueError(f"AWS region {self.region!r}: lower-case words joined by hyphens, e.g. us-east-1")
        if not _ACCOUNT.match(self.account):
            raise ValueError(f"AWS account {self.account!r}: must be 12 digits")


@dataclass(frozen=True)
class ApiConfig:
    """This cluster's AWS identity (its ARNs and owners) and its quotas on creates."""

    aws: AwsIdentity = AwsIdentity()
    # Quota name (QUOTAS) -> the most resources of that kind one parent may hold. App Mesh's
    # quotas are per account and adjustable; a quota not given here is unlimited.
    quotas: Mapping[str, int] = field(default_factory=dict)
    # This meshd's own (region, zone, sub_zone): the locality of the instances registered
    # through it without one of their own. ("", "", "") when it has none.
    locality: tuple[str, str, str] = ("", "", "")

    def __post_init__(self):
        if len(self.locality) != 3 or locality_violations(*self.locality, field="locality"):
            raise ValueError(f"locality {self.locality!r}: expected (region, zone, sub_zone), each empty or "
                             "letters, digits and . _ : -, a zone only with a region, a sub-zone only with a zone")
        for name, value in self.quotas.items():
            if name not in QUOTAS:
                raise ValueError(f"unknown quota {name!r}; the quotas are {', '.join(QUOTAS)}")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"quota {name}: must be a whole number >= 0, got {value!r}")
        object.__setattr__(self, "quotas", MappingProxyType(dict(self.quotas)))


def parse_quota(text: str) -> tuple[str, int]:
    """NAME=N, as `meshd run --quota` takes it, checked: ("virtualNodesPerMesh", 500)."""
    name, sep, value = text.partition("=")
    if not sep or not value.strip().isdigit():
        raise ValueError(f"quota {text!r}: expected NAME=N with N a whole number, e.g. virtualNodesPerMesh=500")
    quota = (name.strip(), int(value))
    ApiConfig(quotas=dict([quota]))
    return quota


def locality_violations(region: str, zone: str, sub_zone: str, *, field: str) -> list[FieldViolation]:
    """What is wrong with a locality. Envoy's localities nest: a zone lies in a region and a
    sub-zone in a zone, so an inner part without its outer one has no place."""
    out = []
    parts = (region, zone, sub_zone)
    for name, value in zip(LOCALITY_PARTS, parts):
        if value and not _LOCALITY_PART.match(value):
            out.append(FieldViolation(f"{field}.{_camel(name)}", "1-253 letters, digits and . _ : - starting with "
                                      f"a letter or digit; got {value!r}"))
    for outer, inner in ((0, 1), (1, 2)):
        if parts[inner] and not parts[outer]:
            out.append(FieldViolation(f"{field}.{_camel(LOCALITY_PARTS[outer])}",
                                      f"required when {_camel(LOCALITY_PARTS[inner])} is given"))
    return out


def establish_aws_identity(store: registry.Store, *, partition: str = "", region: str = "",
                           account: str = "") -> AwsIdentity:
    """The cluster's AwsIdentity, as recorded in etcd; the first meshd records it.

    The values given are this meshd's explicit settings ("" for one not given). With no
    record yet, they (and the defaults for the rest) are recorded, create-if-absent, so
    meshds starting together agree on whichever got there first. With a record, it is
    adopted, and a given value that differs from it raises AwsIdentityMismatch: a meshd
    issuing other ARNs than its peers would name other resources.
    """
    given = {k: v for k, v in (("partition", partition), ("region", region), ("account", account)) if v}
    wanted = AwsIdentity(**given)  # ValueError for a malformed value, before etcd is touched
    for _ in range(_UPDATE_ATTEMPTS):
        item = store.get(AWS_IDENTITY_PATH)
        if item is None:
            record = json.dumps({"partition": wanted.partition, "region": wanted.region, "account": wanted.account})
            try:
                store.commit(registry.Write(AWS_IDENTITY_PATH, record.encode(), expect_revision=0))
            except registry.AlreadyExists:
                continue  # another meshd recorded first: adopt or refuse its identity
            log.info("cluster AWS identity recorded", extra={"partition": wanted.partition, "region": wanted.region,
                                                             "account": wanted.account, "key": AWS_IDENTITY_PATH})
            return wanted
        try:
            recorded = AwsIdentity(**json.loads(item.value))
        except (ValueError, TypeError) as err:
            raise ValueError(f"etcd key {AWS_IDENTITY_PATH}: not an AWS identity record: {err}") from err
        for name, value in given.items():
            if getattr(recorded, name) != value:
                raise AwsIdentityMismatch(name, getattr(recorded, name), value)
        return recorded
    raise registry.Conflict(AWS_IDENTITY_PATH, 0, -1)


class ClusterIdentity:
    """The cluster's AwsIdentity for one meshd, established (`establish_aws_identity`) when
    first needed and then kept.

    A meshd starts, and serves, while etcd is away (every request then answers UNAVAILABLE),
    so the identity cannot always be read at start: `get` raises registry.Unavailable until
    etcd answers, and AwsIdentityMismatch for as long as this meshd's settings contradict
    the recorded identity.
    """

    def __init__(self, store: registry.Store, *, partition: str = "", region: str = "", account: str = ""):
        self._store = store
        self._given = {"partition": partition, "region": region, "account": account}
        AwsIdentity(**{k: v for k, v in self._given.items() if v})  # a malformed setting fails now
        self._value: AwsIdentity | None = None
        self._lock = threading.Lock()

    def get(self) -> AwsIdentity:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = establish_aws_identity(self._store, **self._given)
                value = self._value
        return value


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def _encode_token(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()


def _decode_token(token: str, prefix: str) -> str | None:
    if not token:
        return None
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError) as err:
        raise BadRequest("nextToken", "not a token returned by this List call") from err
    if not isinstance(after, str) or not after.startswith(prefix):
        raise BadRequest("nextToken", "not a token returned by this List call")
    return after


def _limit(value: int, maximum: int = MAX_LIMIT) -> int:
    """A page size: 1..maximum, where 0 (unset over gRPC) means the maximum."""
    if value == 0:
        return maximum
    if not 1 <= value <= maximum:
        raise BadRequest("limit", f"must be between 1 and {maximum}, got {value}")
    return value


def _fingerprint(request) -> bytes:
    """Digest of a request body without its client token: "the same body" for idempotency."""
    clone = type(request)()
    clone.CopyFrom(request)
    clone.client_token = ""
    return hashlib.sha256(clone.SerializeToString(deterministic=True)).hexdigest().encode()


class Resources:
    """CRUD over every kind, plus tags, instances and watch, on one registry store."""

    def __init__(self, store: registry.Store, config: ApiConfig = ApiConfig(),
                 host: str = "", host_lease=None, on_create=(), identity: ClusterIdentity | None = None):
        """`identity`, when given, is the cluster's recorded identity and supersedes config.aws."""
        self.store = store
        self.config = config
        self._identity = identity
        self.host = host
        # The lease (a meshd.lease.HostLease) that holds instances registered through this
        # meshd without a TTL of their own: they live as long as this meshd does.
        self._host_lease = host_lease
        self._own_leases: dict[str, int] = {}
        # Called with (kind, data) after each successful create (the mesh CA hook).
        self._on_create = list(on_create)
        self._lock = threading.Lock()

    @property
    def aws(self) -> AwsIdentity:
        """This cluster's AWS identity: its ARNs' partition, region and account. With a
        ClusterIdentity it is read from etcd on first use (registry.Unavailable until etcd
        answers); callers in front of this layer (SigV4's region) read it per request."""
        return self._identity.get() if self._identity is not None else self.config.aws

    # -- helpers ----------------------------------------------------------------------
    def _ids(self, kind: K.Kind, request) -> tuple[str, ...]:
        violations = []
        ids = kind.ids(request)
        for f, value in zip(kind.id_fields, ids):
            try:
                validate_name(_camel(f), value)
            except InvalidSpec as err:
                violations.extend(err.violations)
        if violations:
            raise InvalidSpec(violations)
        return ids

    def _stamp(self, kind: K.Kind, data) -> None:
        """Set the ARN and owners of `data` from its ids and this cluster's identity."""
        aws = self.aws
        md = data.metadata
        md.arn = kind.arn(kind.ids(data), partition=aws.partition, region=aws.region, account=aws.account)
        md.mesh_owner = md.resource_owner = aws.account

    def _decode(self, kind: K.Kind, item: registry.Item):
        data = kind.data_cls()
        data.ParseFromString(item.value)
        self._stamp(kind, data)
        return data

    def _check_owner(self, request) -> None:
        """App Mesh's meshOwner: an account id; any account but this cluster's is refused as
        App Mesh refuses a mesh another account has not shared with the caller."""
        owner = getattr(request, "mesh_owner", "")
        if not owner:
            return
        if not _ACCOUNT.match(owner):
            raise BadRequest("meshOwner", f"must be a 12-digit AWS account id, got {owner!r}")
        if owner != self.aws.account:
            raise Forbidden(owner, self.aws.account)

    def _check_spec(self, kind: K.Kind, verb: str, request) -> None:
        if kind.spec_required and not request.HasField("spec"):
            raise BadRequest("spec", f"required: {verb}{kind.title} takes a spec")
        validate_spec(kind.name, request.spec)

    def _check_quota(self, kind: K.Kind, ids: tuple[str, ...], path: str) -> None:
        """Refuse a create that would put more of `kind` under its parent than its quota.

        The count is read before the create's transaction, not inside it: creates racing
        each other may each see room for one more, so concurrent creates can overshoot a
        quota by up to their number. Quotas are guard rails, as App Mesh's are, not
        invariants; a count inside the transaction would serialize every create of a kind.
        """
        limit = self.config.quotas.get(kind.quota)
        if limit is None:
            return
        # At most limit+1 keys are read, whatever the number stored.
        if limit == 0 or len(self.store.list(kind.list_prefix(ids[:-1]), limit=limit).items) >= limit:
            if self.store.get(path) is not None:
                return  # a create of an existing name: the commit answers AlreadyExists
            parent = K.BY_ID_FIELD[kind.parents[-1]].path(ids[:-1]) if kind.parents else ""
            raise LimitExceeded(kind.quota, limit, parent)

    def _read(self, kind: K.Kind, ids) -> tuple[registry.Item, object]:
        item = self.store.get(kind.path(ids))
        if item is None:
            raise registry.NotFound(kind.path(ids))
        return item, self._decode(kind, item)

    def _read_version(self, kind: K.Kind, ids, expected: int | None) -> tuple[registry.Item, object]:
        """The resource, or VersionConflict when `expected` is given and is not its version."""
        item, data = self._read(kind, ids)
        if expected is not None and data.metadata.version != expected:
            raise VersionConflict(K.describe_path(kind.path(ids)), expected, data.metadata.version)
        return item, data

    def _response(self, kind: K.Kind, verb: str, data):
        resp = getattr(admin_pb2, f"{verb}{kind.title}Response")()
        getattr(resp, kind.field).CopyFrom(data)
        return resp

    def _idempotent(self, kind: K.Kind, verb: str, request) -> tuple[tuple[str, bytes] | None, object]:
        """(idempotency key path, fingerprint) for a request with a client token, and a
        stored response when the same token and body were already applied."""
        token = request.client_token
        if not token:
            return None, None
        if not _TOKEN.match(token):
            raise BadRequest("clientToken", "1-64 letters, digits, hyphens and underscores")
        path = "idem/" + hashlib.sha256(f"{verb}|{kind.path(kind.ids(request))}|{token}".encode()).hexdigest()
        fp = _fingerprint(request)
        prior = self.store.get(path)
        if prior is not None:
            return (path, fp), self._replay(kind, verb, token, fp, prior.value)
        return (path, fp), None

    def _replay(self, kind: K.Kind, verb: str, token: str, fp: bytes, record: bytes):
        stored_fp, _, body = record.partition(b"\n")
        if stored_fp != fp:
            raise registry.IdempotencyMismatch(token)
        resp = getattr(admin_pb2, f"{verb}{kind.title}Response")()
        resp.ParseFromString(body)
        self._stamp(kind, getattr(resp, kind.field))
        return resp

    def _claim_changes(self, kind: K.Kind, ids: tuple[str, ...], old, new) -> dict:
        """The Write arguments that move `kind`'s claims from `old` data (None on create) to
        `new` (None on delete): a claim taken needs its target's claim range empty, which
        etcd checks in the write's own transaction, so two racing creates cannot both win."""
        path = kind.path(ids)
        before = kind.claims(ids[0], old) if old is not None else []
        after = kind.claims(ids[0], new) if new is not None else []
        taken = [t for t in after if t not in before]
        return {
            "require_empty": tuple(K.claim_prefix(kind, t) for t in taken),
            "puts": tuple((K.claim_key(kind, t, path), b"") for t in taken),
            "deletes": tuple(K.claim_key(kind, t, path) for t in before if t not in after),
        }

    def _commit(self, kind: K.Kind, write: registry.Write) -> registry.Committed:
        """Commit, turning a taken claim (the registry's "range not empty") into Claimed."""
        try:
            return self.store.commit(write)
        except registry.InUse as err:
            prefix = f"{K.CLAIMS}/{kind.collection}/"
            held = [r for r in err.referrers if r.startswith(prefix)]
            if err.path != write.path or not held:
                raise
            target, _, holder = held[0][len(prefix):].partition("|")
            raise Claimed(kind.name, target, holder) from err

    def _check_named_parts(self, kind: K.Kind, ids: tuple[str, ...], spec) -> None:
        """What a spec names inside the resources it refers to must be there: a rollout's
        stable and canary among its route's weighted targets (a rollout moves weight between
        two of them), a node policy's listener ports and a mirror's port among the node's
        listeners. The resources are read before the write's transaction: one changed in
        between (or later) is the data plane's and the controller's to find. A missing one
        is left to the write, which reports it as every missing reference is reported."""
        mesh = ids[0]
        if kind is K.ROLLOUT:
            violations = self._target_violations(mesh, spec)
        elif kind is K.NODE_POLICY:
            violations = self._port_violations(mesh, spec.virtual_node_name, [
                (f"spec.listenerRateLimits[{i}].port", limit.port)
                for i, limit in enumerate(spec.listener_rate_limits) if limit.HasField("port")])
        elif kind is K.ROUTE_POLICY and spec.mirror.HasField("port"):
            violations = self._port_violations(mesh, spec.mirror.virtual_node, [("spec.mirror.port", spec.mirror.port)])
        else:
            violations = []
        if violations:
            raise InvalidSpec(violations)

    def _stored(self, kind: K.Kind, path: str):
        item = self.store.get(path)
        return self._decode(kind, item) if item is not None else None

    def _target_violations(self, mesh: str, spec) -> list[FieldViolation]:
        route = K.route_reference(mesh, spec)
        data = self._stored(K.ROUTE, route[0]) if route else None
        if data is None:
            return []
        targets = [(t.virtual_node, t.port if t.HasField("port") else None)
                   for rk in K.ROUTE_KINDS for t in getattr(data.spec, rk).action.weighted_targets]
        violations = []
        for member in ("stable", "canary"):
            want = getattr(spec, member)
            port = want.port if want.HasField("port") else None
            if not want.HasField("virtual_node") or any(
                    n == want.virtual_node and (port is None or p == port) for n, p in targets):
                continue
            named = want.virtual_node + (f" port {port}" if port is not None else "")
            listed = ", ".join(n + (f":{p}" if p is not None else "") for n, p in targets) or "none"
            violations.append(FieldViolation(
                f"spec.{member}.virtualNode",
                f"{named} is not a weighted target of {K.describe_path(route[0])} (its targets: {listed})"))
        return violations

    def _port_violations(self, mesh: str, node: str, ports: list[tuple[str, int]]) -> list[FieldViolation]:
        data = self._stored(K.VIRTUAL_NODE, K.VIRTUAL_NODE.path((mesh, node))) if node and ports else None
        if data is None:
            return []
        listening = sorted(lst.port_mapping.port for lst in data.spec.listeners)
        return [FieldViolation(where, f"virtualNode {node} has no listener on port {port} "
                                      f"(its listeners: {', '.join(map(str, listening)) or 'none'})")
                for where, port in ports if port not in listening]

    # -- CRUD -------------------------------------------------------------------------
    def create(self, kind: K.Kind, request):
        ids = self._ids(kind, request)
        self._check_owner(request)
        self._check_spec(kind, "Create", request)
        _validate_tags(request.tags)
        idem, replay = self._idempotent(kind, "Create", request)
        if replay is not None:
            return replay
        path = kind.path(ids)
        self._check_quota(kind, ids, path)
        now = _now()
        data = kind.data_cls()
        for f, v in zip(kind.id_fields, ids):
            setattr(data, f, v)
        data.spec.CopyFrom(request.spec)
        md = data.metadata
        # Stored too, for readers of the raw record (backups, older meshds); reads recompute them.
        self._stamp(kind, data)
        md.uid = str(uuid.uuid4())
        md.version = 1
        md.created_at.CopyFrom(now)
        md.last_updated_at.CopyFrom(now)
        data.status.status = "ACTIVE"
        if kind is K.ROLLOUT:
            # The status is the controller's from here on (update_status); it starts before
            # the first step, all traffic still on the stable target.
            data.status.phase, data.status.step, data.status.canary_weight = "PROGRESSING", -1, 0
        self._check_named_parts(kind, ids, request.spec)
        resp = self._response(kind, "Create", data)
        refs = tuple(kind.references(ids[0], request.spec))
        claims = self._claim_changes(kind, ids, None, data)
        puts = claims["puts"]
        if request.tags:
            puts += ((f"tags/{path}", admin_pb2.TagList(tags=request.tags).SerializeToString()),)
        done = self._commit(kind, registry.Write(
            path, data.SerializeToString(deterministic=True), expect_revision=0,
            require=tuple(kind.parent_paths(ids)) + tuple((r, "reference") for r in refs),
            require_empty=claims["require_empty"], refs_add=refs, puts=puts,
            idempotency=(idem[0], idem[1] + b"\n" + resp.SerializeToString()) if idem else None,
        ))
        if done.replay is not None:
            return self._replay(kind, "Create", request.client_token, idem[1], done.replay)
        for hook in self._on_create:
            hook(kind, data)
        return resp

    def describe(self, kind: K.Kind, request):
        ids = self._ids(kind, request)
        self._check_owner(request)
        _, data = self._read(kind, ids)
        return self._response(kind, "Describe", data)

    def update(self, kind: K.Kind, request):
        ids = self._ids(kind, request)
        self._check_owner(request)
        self._check_spec(kind, "Update", request)
        idem, replay = self._idempotent(kind, "Update", request)
        if replay is not None:
            return replay
        path = kind.path(ids)
        self._check_named_parts(kind, ids, request.spec)
        expected = request.expected_version if request.HasField("expected_version") else None
        for _ in range(_UPDATE_ATTEMPTS):
            item, data = self._read_version(kind, ids, expected)
            old = kind.data_cls()
            old.CopyFrom(data)
            old_refs = set(kind.references(ids[0], data.spec))
            new_refs = kind.references(ids[0], request.spec)
            # The spec only: a status is the server's (a Rollout's is its controller's).
            data.spec.CopyFrom(request.spec)
            data.metadata.version += 1
            data.metadata.last_updated_at.CopyFrom(_now())
            resp = self._response(kind, "Update", data)
            claims = self._claim_changes(kind, ids, old, data)
            try:
                done = self._commit(kind, registry.Write(
                    path, data.SerializeToString(deterministic=True), expect_revision=item.mod_revision,
                    require=tuple(kind.parent_paths(ids)) + tuple((r, "reference") for r in new_refs),
                    refs_add=tuple(r for r in new_refs if r not in old_refs),
                    refs_remove=tuple(r for r in old_refs if r not in new_refs),
                    idempotency=(idem[0], idem[1] + b"\n" + resp.SerializeToString()) if idem else None,
                    **claims,
                ))
            except registry.Conflict:
                continue  # someone else wrote in between: re-read, and re-check `expected`
            if done.replay is not None:
                return self._replay(kind, "Update", request.client_token, idem[1], done.replay)
            return resp
        raise registry.Conflict(path, 0, -1)

    def delete(self, kind: K.Kind, request):
        ids = self._ids(kind, request)
        self._check_owner(request)
        path = kind.path(ids)
        expected = request.expected_version if request.HasField("expected_version") else None
        for _ in range(_UPDATE_ATTEMPTS):
            item, data = self._read_version(kind, ids, expected)
            try:
                self.store.commit(registry.Write(
                    path, None, expect_revision=item.mod_revision,
                    check_referrers=True, require_empty=tuple(K.children_of(kind, ids)),
                    refs_remove=tuple(kind.references(ids[0], data.spec)),
                    deletes=(f"tags/{path}", *self._claim_changes(kind, ids, data, None)["deletes"]),
                ))
            except registry.Conflict:
                continue
            data.status.status = "DELETED"
            return self._response(kind, "Delete", data)
        raise registry.Conflict(path, 0, -1)

    def update_status(self, kind: K.Kind, ids: tuple[str, ...], status, expected_version: int | None = None):
        """Replace the status of the resource at `ids` (its spec untouched), bumping its
        version; with `expected_version`, only if its version is still that one, else
        VersionConflict. For the server's own writers (the rollout controller): user Create
        and Update never write a status. A Watch sees the write as any other. A Rollout that
        reaches a finished phase releases its route, so another rollout may start there.
        Returns the resource's data as written."""
        path = kind.path(ids)
        for _ in range(_UPDATE_ATTEMPTS):
            item, data = self._read_version(kind, ids, expected_version)
            old = kind.data_cls()
            old.CopyFrom(data)
            data.status.CopyFrom(status)
            data.metadata.version += 1
            data.metadata.last_updated_at.CopyFrom(_now())
            try:
                self._commit(kind, registry.Write(
                    path, data.SerializeToString(deterministic=True), expect_revision=item.mod_revision,
                    **self._claim_changes(kind, ids, old, data)))
            except registry.Conflict:
                continue  # another writer got in between: re-read, and re-check the version
            return data
        raise registry.Conflict(path, 0, -1)

    def list(self, kind: K.Kind, request):
        """One page of `kind` under its parents, in key order. A route or gateway route
        listing whose router or gateway name is empty spans every router or gateway of the
        mesh (beyond App Mesh, which lists one parent's): `meshctl get routes -A` reads a
        mesh of 10,000 routes in pages of 100 instead of one listing per router. Each page
        is one etcd range read of at most limit+1 keys from the token's key on."""
        parent_ids = tuple(getattr(request, f) for f in kind.parents)
        if len(parent_ids) == 2 and not parent_ids[1]:
            parent_ids = parent_ids[:1]
        for f, v in zip(kind.parents, parent_ids):
            validate_name(_camel(f), v)
        self._check_owner(request)
        limit = _limit(request.limit)
        prefix = kind.list_prefix(parent_ids)
        after = _decode_token(request.next_token, prefix)
        if parent_ids and after is None:
            # App Mesh answers NotFound for a List under a parent that does not exist.
            needs = (kind.parent_paths(parent_ids + ("x",)) if len(parent_ids) == len(kind.parents)
                     else [(K.MESH.path(parent_ids), "mesh")])
            for p, role in needs:
                if self.store.get(p) is None:
                    raise registry.NotFound(p, role=role)
        page = self.store.list(prefix, after=after, limit=limit)
        resp = getattr(admin_pb2, f"List{kind.plural_title}Response")()
        refs = getattr(resp, kind.list_field)
        for item in page.items:
            data = self._decode(kind, item)
            ref = refs.add()
            for f in kind.id_fields:
                setattr(ref, f, getattr(data, f))
            md = data.metadata
            ref.arn, ref.version = md.arn, md.version
            ref.mesh_owner, ref.resource_owner = md.mesh_owner, md.resource_owner
            ref.created_at.CopyFrom(md.created_at)
            ref.last_updated_at.CopyFrom(md.last_updated_at)
        if page.next_after:
            resp.next_token = _encode_token(page.next_after)
        return resp

    # -- tags -------------------------------------------------------------------------
    def _path_for_arn(self, arn: str) -> str:
        """Resolve an ARN of this cluster's to the store path of its resource.

        Besides AWS's form, the arn:meshd:appmesh:<cluster>:<owner>:... form meshd issued
        before is accepted, as callers may have stored such ARNs.
        """
        try:
            parsed = K.parse_arn(arn)
            for f, v in zip(parsed.kind.id_fields, parsed.ids):
                validate_name(_camel(f), v)
        except ValueError as err:
            raise BadRequest("resourceArn", str(err)) from err
        except InvalidSpec as err:
            raise BadRequest("resourceArn", f"{arn!r}: " + "; ".join(
                f"{v.field}: {v.description}" for v in err.violations)) from err
        aws = self.aws
        if parsed.partition != "meshd":
            for what, got, ours in (("partition", parsed.partition, aws.partition),
                                    ("region", parsed.region, aws.region)):
                if got != ours:
                    raise BadRequest("resourceArn", f"{arn!r} names {what} {got!r}, "
                                                    f"but this cluster's {what} is {ours!r}")
            if parsed.account != aws.account:
                raise Forbidden(parsed.account, aws.account, what="account")
        path = parsed.kind.path(parsed.ids)
        if self.store.get(path) is None:
            raise registry.NotFound(path)
        return path

    def _tags(self, path: str) -> tuple[registry.Item | None, admin_pb2.TagList]:
        item = self.store.get(f"tags/{path}")
        tags = admin_pb2.TagList()
        if item is not None:
            tags.ParseFromString(item.value)
        for t in tags.tags:
            # Written before TagRef.value had presence, an empty value was not stored at all;
            # App Mesh's TagRef always has one.
            t.value = t.value
        return item, tags

    def _write_tags(self, path: str, mutate: Callable[[dict[str, str]], None]) -> None:
        for _ in range(_UPDATE_ATTEMPTS):
            item, tags = self._tags(path)
            current = {t.key: t.value for t in tags.tags}
            mutate(current)
            _validate_tags([admin_pb2.TagRef(key=k, value=v) for k, v in current.items()])
            value = admin_pb2.TagList(tags=[admin_pb2.TagRef(key=k, value=v) for k, v in sorted(current.items())])
            try:
                self.store.commit(registry.Write(
                    f"tags/{path}", value.SerializeToString(),
                    expect_revision=item.mod_revision if item else 0, require=((path, "resource"),)))
                return
            except (registry.Conflict, registry.AlreadyExists):
                continue
        raise registry.Conflict(f"tags/{path}", 0, -1)

    def tag_resource(self, request):
        path = self._path_for_arn(request.resource_arn)
        _validate_tags(request.tags)
        self._write_tags(path, lambda cur: cur.update({t.key: t.value for t in request.tags}))
        return admin_pb2.TagResourceResponse()

    def untag_resource(self, request):
        path = self._path_for_arn(request.resource_arn)
        # App Mesh's TagKeyList: at most 50 keys, each 1-128 characters.
        violations = []
        if len(request.tag_keys) > MAX_TAGS:
            violations.append(FieldViolation("tagKeys", f"at most {MAX_TAGS} keys, got {len(request.tag_keys)}"))
        violations += [FieldViolation(f"tagKeys[{i}]", "must be 1-128 characters")
                       for i, k in enumerate(request.tag_keys) if not 1 <= len(k) <= 128]
        if violations:
            raise InvalidSpec(violations)

        def drop(cur):
            for k in request.tag_keys:
                cur.pop(k, None)
        self._write_tags(path, drop)
        return admin_pb2.UntagResourceResponse()

    def list_tags(self, request):
        path = self._path_for_arn(request.resource_arn)
        limit = _limit(request.limit, MAX_TAGS_LIMIT)
        _, tags = self._tags(path)
        start = 0
        if request.next_token:
            try:
                start = int(json.loads(base64.urlsafe_b64decode(request.next_token.encode()))["offset"])
            except (ValueError, KeyError, TypeError) as err:
                raise BadRequest("nextToken", "not a token returned by ListTagsForResource") from err
        chunk = tags.tags[start:start + limit]
        resp = admin_pb2.ListTagsForResourceResponse(tags=chunk)
        if start + limit < len(tags.tags):
            resp.next_token = base64.urlsafe_b64encode(json.dumps({"offset": start + limit}).encode()).decode()
        return resp

    # -- instances --------------------------------------------------------------------
    def register_instance(self, request):
        violations = []
        for f in ("mesh_name", "virtual_node_name"):
            try:
                validate_name(_camel(f), getattr(request, f))
            except InvalidSpec as err:
                violations.extend(err.violations)
        if not _INSTANCE_ID.match(request.instance_id):
            violations.append(FieldViolation("instanceId",
                                             "1-128 letters, digits and . _ : - starting with a letter or digit"))
        if not _valid_address(request.address):
            violations.append(FieldViolation("address", f"not an IP address or DNS name: {request.address!r}"))
        if not 1 <= request.port <= 65535:
            violations.append(FieldViolation("port", f"must be 1-65535, got {request.port}"))
        if request.ttl_seconds < 0 or request.ttl_seconds > 86400:
            violations.append(FieldViolation("ttlSeconds", "must be 0 (host lease) or 1-86400"))
        if request.health and request.health not in _HEALTH:
            violations.append(FieldViolation("health", f"must be one of {', '.join(_HEALTH)}"))
        locality = admin_pb2.Locality()
        locality.CopyFrom(request.locality)
        if not any(getattr(locality, p) for p in LOCALITY_PARTS):
            # Registered without one: the instance runs where this meshd does.
            locality = admin_pb2.Locality(**dict(zip(LOCALITY_PARTS, self.config.locality)))
        violations += locality_violations(*(getattr(locality, p) for p in LOCALITY_PARTS), field="locality")
        if violations:
            raise InvalidSpec(violations)
        path = f"{K.INSTANCES}/{request.mesh_name}/{request.virtual_node_name}/{request.instance_id}"
        if request.ttl_seconds:
            lease = self._own_lease(path, request.ttl_seconds)
        elif self._host_lease is not None:
            lease = self._host_lease.current()
        else:
            raise BadRequest("ttlSeconds", "this meshd holds no host lease; give ttlSeconds")
        inst = admin_pb2.Instance(
            mesh_name=request.mesh_name, virtual_node_name=request.virtual_node_name,
            instance_id=request.instance_id, address=request.address, port=request.port,
            host=self.host, health=request.health or "UNKNOWN", attributes=request.attributes,
            lease_id=lease, ttl_seconds=request.ttl_seconds, locality=locality)
        inst.registered_at.CopyFrom(_now())
        value = inst.SerializeToString(deterministic=True)
        self.store.commit(registry.Write(
            path, value, lease=lease,
            require=((f"meshes/{request.mesh_name}", "mesh"),
                     (K.VIRTUAL_NODE.path((request.mesh_name, request.virtual_node_name)), "virtualNode"))))
        if not request.ttl_seconds:
            self._host_lease.hold(path, value, lease)
        return admin_pb2.RegisterInstanceResponse(instance=inst)

    def _own_lease(self, path: str, ttl: int) -> int:
        """A dedicated lease per TTL instance; re-registering refreshes it (a heartbeat)."""
        with self._lock:
            lease = self._own_leases.get(path)
        if lease and self.store.keepalive(lease) > 0:
            return lease
        lease = self.store.grant_lease(ttl)
        with self._lock:
            self._own_leases[path] = lease
        return lease

    def deregister_instance(self, request):
        path = f"{K.INSTANCES}/{request.mesh_name}/{request.virtual_node_name}/{request.instance_id}"
        item = self.store.get(path)
        if item is None:
            raise registry.NotFound(path)
        inst = admin_pb2.Instance()
        inst.ParseFromString(item.value)
        self.store.commit(registry.Write(path, None, expect_revision=item.mod_revision))
        with self._lock:
            self._own_leases.pop(path, None)
        if self._host_lease is not None:
            self._host_lease.release(path)
        return admin_pb2.DeregisterInstanceResponse(instance=inst)

    def list_instances(self, request):
        validate_name("meshName", request.mesh_name)
        prefix = f"{K.INSTANCES}/{request.mesh_name}/"
        if request.virtual_node_name:
            validate_name("virtualNodeName", request.virtual_node_name)
            prefix += request.virtual_node_name + "/"
        after = _decode_token(request.next_token, prefix)
        page = self.store.list(prefix, after=after, limit=_limit(request.limit))
        resp = admin_pb2.ListInstancesResponse()
        for item in page.items:
            resp.instances.add().ParseFromString(item.value)
        if page.next_after:
            resp.next_token = _encode_token(page.next_after)
        return resp

    # -- hosts ------------------------------------------------------------------------
    def list_hosts(self, request):
        """Live host records, with the revisions a caller compares their applied one against."""
        prefix = f"{K.HOSTS}/"
        after = _decode_token(request.next_token, prefix)
        page = self.store.list(prefix, after=after, limit=_limit(request.limit))
        resp = admin_pb2.ListHostsResponse(revision=page.revision)
        for item in page.items:
            resp.hosts.add().ParseFromString(item.value)
        if page.next_after:
            resp.next_token = _encode_token(page.next_after)
        # What the data plane routes by is exactly what Watch streams: the kinds and instances.
        resp.config_revision = max(self.store.last_modified(f"{coll}/", revision=page.revision)
                                   for coll in [*(k.collection for k in K.KINDS), K.INSTANCES])
        return resp

    # -- watch ------------------------------------------------------------------------
    def _event(self, ev: registry.Event) -> admin_pb2.ResourceEvent | None:
        coll = ev.path.split("/", 1)[0]
        out = admin_pb2.ResourceEvent(
            type=admin_pb2.ResourceEvent.PUT if ev.type == "put" else admin_pb2.ResourceEvent.DELETE,
            path=ev.path, revision=ev.revision)
        if coll == K.INSTANCES:
            out.kind = "instance"
            if ev.value:
                out.resource.instance.ParseFromString(ev.value)
            return out
        kind = K.BY_COLLECTION.get(coll)
        if kind is None:
            return None  # refs, tags, idempotency records: internal
        out.kind = kind.name
        if ev.value:
            data = getattr(out.resource, kind.field)
            data.ParseFromString(ev.value)
            self._stamp(kind, data)
        return out

    @staticmethod
    def _in_mesh(path: str, mesh: str) -> bool:
        parts = path.split("/")
        return not mesh or (len(parts) > 1 and parts[1] == mesh)

    def snapshot(self, mesh: str, chunk: int = 200) -> Iterator[admin_pb2.WatchResponse]:
        """The full current state at one revision, as one or more responses."""
        revision = self.store.revision()
        events = []
        for coll in [k.collection for k in K.KINDS] + [K.INSTANCES]:
            prefix = f"{coll}/{mesh}" + ("" if coll == "meshes" else "/") if mesh else f"{coll}/"
            after = None
            while True:
                page = self.store.list(prefix, after=after, limit=500, revision=revision)
                for item in page.items:
                    if not self._in_mesh(item.path, mesh):
                        continue
                    ev = self._event(registry.Event("put", item.path, item.value, item.mod_revision))
                    if ev is not None:
                        events.append(ev)
                if page.next_after is None:
                    break
                after = page.next_after
        first = True
        for i in range(0, max(len(events), 1), chunk):
            part = events[i:i + chunk]
            yield admin_pb2.WatchResponse(revision=revision, events=part, reset=first,
                                          snapshot_done=i + chunk >= len(events))
            first = False

    def watch(self, request, is_active: Callable[[], bool],
              on_start: Callable[[registry.store.Watch], None] = lambda w: None) -> Iterator[admin_pb2.WatchResponse]:
        """Snapshot (when asked or when history is gone), then changes, resuming on etcd blips."""
        mesh = request.mesh_name
        if mesh:
            validate_name("meshName", mesh)
        last = request.resume_revision
        if last < 0:
            raise BadRequest("resumeRevision", "must be >= 0")
        compacted = 0
        backoff = 0.1
        while is_active():
            if last == 0 or compacted:
                for resp in self.snapshot(mesh):
                    if compacted:
                        resp.compacted_revision = compacted
                    last = resp.revision
                    yield resp
                compacted = 0
            w = self.store.watch("", start_revision=last + 1)
            on_start(w)
            try:
                for revision, events in w:
                    backoff = 0.1
                    out = [e for e in (self._event(ev) for ev in events)
                           if e is not None and self._in_mesh(e.path, mesh)]
                    last = max(last, revision)
                    if out or not events:
                        yield admin_pb2.WatchResponse(revision=revision, events=out)
                    if not is_active():
                        break
            except registry.Compacted as err:
                log.info("watch history compacted; resyncing", extra={"revision": err.revision})
                compacted = err.revision
            except registry.Unavailable as err:
                log.warning("watch interrupted; resuming", extra={"error": str(err), "revision": last})
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                w.cancel()


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def _validate_tags(tags) -> None:
    """App Mesh's TagRef: key 1-128 characters and value 0-256, both required; then at
    most 50 tags on a resource, else TooManyTags (App Mesh's TooManyTagsException)."""
    violations = []
    seen = set()
    for i, t in enumerate(tags):
        if not 1 <= len(t.key) <= 128:
            violations.append(FieldViolation(f"tags[{i}].key", "must be 1-128 characters"))
        if not t.HasField("value"):
            violations.append(FieldViolation(f"tags[{i}].value", "required (it may be empty)"))
        elif len(t.value) > 256:
            violations.append(FieldViolation(f"tags[{i}].value", "must be at most 256 characters"))
        if t.key in seen:
            violations.append(FieldViolation(f"tags[{i}].key", f"duplicate key {t.key!r}"))
        seen.add(t.key)
    if violations:
        raise InvalidSpec(violations)
    if len(tags) > MAX_TAGS:
        raise TooManyTags(len(tags), MAX_TAGS)


def _valid_address(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return bool(_DNS_NAME.match(address))
