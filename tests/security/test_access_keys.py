"""Access keys for SigV4 on real etcd and a real meshd: the secret sealed at rest and bound to
its path, lookups served from a cache that a delete on any meshd empties within the
promised time, MANAGE_TOKENS over gRPC, hosts without the cluster key, and meshctl."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from datetime import timezone

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from meshd.app import Meshd, MeshdConfig
from meshd.embedded_etcd import free_port
from meshd.security import ClusterKey, KeyRef, Roles, Tokens
from meshd.security.certs import utcnow
from meshd.security.accesskeys import AccessKeys, reseal
from meshd.security.errors import (
    DecryptionFailed,
    InvalidIdentity,
    NoClusterKey,
    Unauthenticated,
    UnknownAccessKey,
    WrongClusterKey,
)
from meshd.v1 import security_pb2 as sec
from meshd.v1 import security_pb2_grpc

pytestmark = [pytest.mark.identity, pytest.mark.etcd]

# What lookup promises after a delete on another meshd (the watch's delivery, with margin).
PROMPT = 2.0


def wait_for(predicate, timeout: float = PROMPT) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; returns whether it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


class CountingStore:
    """The real store, counting `get`s: shows whether a lookup went to etcd."""

    def __init__(self, store):
        self._store = store
        self.gets = 0

    def get(self, path):
        self.gets += 1
        return self._store.get(path)

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.fixture
def keys(store, cluster_key):
    ak = AccessKeys(store, cluster_key)
    yield ak
    ak.close()


@pytest.fixture
def counted(store, cluster_key):
    """AccessKeys on a counting store, as the meshd serving signed requests would hold it."""
    counting = CountingStore(store)
    ak = AccessKeys(counting, cluster_key)
    yield ak, counting
    ak.close()


def _cached(ak: AccessKeys, counting: CountingStore, access_key_id: str) -> bool:
    """Whether a lookup of `access_key_id` is now answered without reading etcd
    (the first lookups read it until the watch is up)."""
    def served_from_cache():
        ak.lookup(access_key_id)
        before = counting.gets
        ak.lookup(access_key_id)
        return counting.gets == before
    return wait_for(served_from_cache)


# -- the library --------------------------------------------------------------------------
def test_ids_and_secrets_have_aws_shapes(keys):
    issued = [keys.create("ci") for _ in range(5)]
    for k in issued:
        assert re.fullmatch(r"MKIA[A-Z2-7]{16}", k.access_key_id)
        assert re.fullmatch(r"[A-Za-z0-9+/]{40}", k.secret_access_key)
    assert len({k.access_key_id for k in issued}) == len({k.secret_access_key for k in issued}) == 5


def test_lookup_returns_the_principal_and_secret(keys, store, cluster_key):
    issued = keys.create("deploy-bot", created_by="alice")
    assert keys.lookup(issued.access_key_id) == ("deploy-bot", issued.secret_access_key)
    # Another meshd holding the same cluster key opens it too.
    other = AccessKeys(store, KeyRef("/nonexistent", cluster_key))
    try:
        assert other.lookup(issued.access_key_id) == ("deploy-bot", issued.secret_access_key)
    finally:
        other.close()
    [info] = keys.list()
    assert (info.access_key_id, info.principal, info.created_by, info.created_at) == (
        issued.access_key_id, "deploy-bot", "alice", issued.created_at)


def test_the_record_holds_no_plaintext_secret(keys, store):
    issued = keys.create("ci")
    raw = store.get(f"accesskeys/{issued.access_key_id}").value
    secret = issued.secret_access_key.encode()
    assert secret not in raw and base64.b64decode(secret) not in raw
    doc = json.loads(raw)
    assert set(doc) == {"id", "principal", "created_at", "created_by", "sealed_secret"}
    sealed = base64.b64decode(doc["sealed_secret"])
    assert sealed.startswith(b"MSK1") and secret not in sealed and base64.b64decode(secret) not in sealed


def test_the_sealed_secret_does_not_open_at_another_path(keys, store, cluster_key):
    issued = keys.create("ci")
    raw = store.get(f"accesskeys/{issued.access_key_id}").value
    sealed = base64.b64decode(json.loads(raw)["sealed_secret"])
    moved = "MKIA" + "A" * 16
    with pytest.raises(DecryptionFailed):
        cluster_key.open(f"accesskeys/{moved}", sealed)
    # Copied under another id in etcd, the record names no usable key.
    store.put(f"accesskeys/{moved}", raw)
    with pytest.raises(DecryptionFailed) as err:
        keys.lookup(moved)
    assert err.value.path == f"accesskeys/{moved}"
    assert keys.lookup(issued.access_key_id)[1] == issued.secret_access_key


@pytest.mark.parametrize("bad", ["", "AKIAIOSFODNN7EXAMPLE", "MKIA" + "a" * 16, "MKIA" + "A" * 17,
                                 "MKIA" + "1" * 16, "MKIA" + "A" * 15 + "/", "x" * 10_000],
                         ids=["empty", "aws", "lowercase", "long", "not-base32", "slash", "huge"])
def test_malformed_ids_are_refused_without_reading_etcd(counted, bad):
    ak, counting = counted
    with pytest.raises(UnknownAccessKey) as err:
        ak.lookup(bad)
    assert counting.gets == 0
    assert err.value.access_key_id == bad and len(str(err.value)) < 100


def test_unknown_id_is_an_authentication_failure(keys):
    with pytest.raises(UnknownAccessKey) as err:
        keys.lookup("MKIA" + "B" * 16)
    assert isinstance(err.value, Unauthenticated) and err.value.reason == "UNKNOWN_ACCESS_KEY"


def test_lookups_are_served_from_the_cache(counted):
    ak, counting = counted
    issued = ak.create("ci")
    assert _cached(ak, counting, issued.access_key_id)
    before = counting.gets
    for _ in range(100):
        assert ak.lookup(issued.access_key_id)[1] == issued.secret_access_key
    assert counting.gets == before


def test_a_key_deleted_by_another_meshd_stops_working_promptly(counted, store, cluster_key):
    ak, counting = counted
    issued = ak.create("ci")
    kept = ak.create("ci")
    assert _cached(ak, counting, issued.access_key_id) and _cached(ak, counting, kept.access_key_id)
    other = AccessKeys(store, cluster_key)  # a second meshd on the same etcd
    try:
        assert other.delete(issued.access_key_id)
    finally:
        other.close()

    def refused():
        try:
            ak.lookup(issued.access_key_id)
            return False
        except UnknownAccessKey:
            return True
    assert wait_for(refused), f"a deleted key still worked {PROMPT}s after its delete"
    assert ak.lookup(kept.access_key_id)[1] == kept.secret_access_key


def test_a_key_deleted_here_stops_working_at_once(counted):
    ak, counting = counted
    issued = ak.create("ci")
    assert _cached(ak, counting, issued.access_key_id)
    assert ak.delete(issued.access_key_id)
    with pytest.raises(UnknownAccessKey):
        ak.lookup(issued.access_key_id)
    assert not ak.delete(issued.access_key_id) and not ak.delete("not-an-id")


def test_a_lookup_racing_a_delete_does_not_cache_the_deleted_key(counted, store, cluster_key):
    """The lookup reads the record, then the delete lands and its watch event is handled,
    then the lookup would fill the cache: it must not, or the deleted key works forever."""
    ak, counting = counted
    warm = ak.create("ci")
    assert _cached(ak, counting, warm.access_key_id)  # the watch is up
    issued = ak.create("ci")
    real_get = counting.get

    def get_then_delete(path):
        item = real_get(path)
        seen = ak._generation  # internal: moves when the watch handles an event
        other = AccessKeys(store, cluster_key)
        try:
            assert other.delete(path.split("/")[-1])
        finally:
            other.close()
        assert wait_for(lambda: ak._generation != seen)
        return item
    counting.get = get_then_delete
    assert ak.lookup(issued.access_key_id)[1] == issued.secret_access_key  # read before the delete
    counting.get = real_get
    with pytest.raises(UnknownAccessKey):
        ak.lookup(issued.access_key_id)


def test_principal_names_are_validated(keys):
    for bad in ("", "a/b", "spiffe://meshd.local/user/x", "-x", "x" * 129):
        with pytest.raises(InvalidIdentity):
            keys.create(bad)
    assert keys.list() == []


def test_a_host_without_the_cluster_key_can_neither_create_nor_open(keys, store, tmp_path):
    issued = keys.create("ci")
    keyless = AccessKeys(store, KeyRef(tmp_path / "absent.key"))
    try:
        with pytest.raises(NoClusterKey) as err:
            keyless.create("ci")
        assert err.value.path == str(tmp_path / "absent.key")
        assert [k.access_key_id for k in keyless.list()] == [issued.access_key_id]  # nothing written
        with pytest.raises(NoClusterKey):
            keyless.lookup(issued.access_key_id)
    finally:
        keyless.close()
    wrong = AccessKeys(store, ClusterKey.generate(tmp_path / "other.key"))
    try:
        with pytest.raises(WrongClusterKey):
            wrong.lookup(issued.access_key_id)
    finally:
        wrong.close()


def test_cluster_key_rotation_reseals_every_secret(keys, store, cluster_key, tmp_path):
    issued = [keys.create("ci") for _ in range(3)]
    new = ClusterKey.generate(tmp_path / "new.key")
    assert reseal(store, cluster_key, new) == 3
    assert reseal(store, cluster_key, new) == 0  # re-runnable
    rotated = AccessKeys(store, new)
    try:
        for k in issued:
            assert rotated.lookup(k.access_key_id) == ("ci", k.secret_access_key)
    finally:
        rotated.close()


# -- a real meshd: gRPC, permissions, audit, meshctl -------------------------------------------
def _start(etcd, prefix, tmp_path, name, **overrides) -> Meshd:
    settings = dict(admin=f"127.0.0.1:{free_port()}", admin_token=f"127.0.0.1:{free_port()}",
                    etcd=[etcd.url], etcd_prefix=prefix, state_dir=str(tmp_path / name), host_name=name,
                    cluster_key=str(tmp_path / "cluster.key"), lease_ttl=5)
    clock = overrides.pop("clock", utcnow)
    return Meshd(MeshdConfig(**{**settings, **overrides}), clock=clock).start()


class Daemon:
    """A meshd with the cluster key, and security stubs for API tokens on its token listener.
    Its clock stands still at `now`, so the times it stamps can be checked exactly."""

    def __init__(self, etcd, prefix, tmp_path):
        ClusterKey.generate(tmp_path / "cluster.key")
        self.etcd, self.prefix, self.tmp_path = etcd, prefix, tmp_path
        self.now = utcnow()
        self.meshd = _start(etcd, prefix, tmp_path, "h1", clock=lambda: self.now)
        self.bundle = tmp_path / "h1" / "identity" / "bundle.pem"
        self.channels: list[grpc.Channel] = []
        # The operator's bootstrap, as `meshd grant-admin` does it: straight through etcd.
        Roles(self.meshd.store).grant("root", "admin", "*")
        self.root_token = Tokens(self.meshd.store).create_api_token("root").token
        self.root = self.api(self.root_token)

    def api(self, token: str, meshd: Meshd | None = None):
        creds = grpc.composite_channel_credentials(grpc.ssl_channel_credentials(self.bundle.read_bytes()),
                                                   grpc.access_token_call_credentials(token))
        channel = grpc.secure_channel((meshd or self.meshd).admin.addresses["token"], creds)
        self.channels.append(channel)
        return security_pb2_grpc.MeshSecurityStub(channel)

    def user(self, principal: str, role: str | None):
        if role:
            self.root.GrantRole(sec.GrantRoleRequest(subject=principal, role=role, mesh_name="*"), timeout=10)
        return self.api(self.root.CreateApiToken(sec.CreateApiTokenRequest(principal=principal), timeout=10).token)

    def close(self):
        for c in self.channels:
            c.close()
        self.meshd.stop()


@pytest.fixture
def daemon(etcd, etcd_prefix, tmp_path):
    d = Daemon(etcd, etcd_prefix, tmp_path)
    yield d
    d.close()


def test_create_list_delete_over_grpc_audited_without_the_secret(daemon):
    created = daemon.root.CreateAccessKey(sec.CreateAccessKeyRequest(principal="ci-bot"), timeout=10)
    assert re.fullmatch(r"MKIA[A-Z2-7]{16}", created.access_key_id) and len(created.secret_access_key) == 40
    assert created.principal == "ci-bot" and created.created_at.ToDatetime(timezone.utc) == daemon.now
    listed = daemon.root.ListAccessKeys(sec.ListAccessKeysRequest(), timeout=10).access_keys
    assert [(k.access_key_id, k.principal, k.created_by) for k in listed] == [
        (created.access_key_id, "ci-bot", "root")]
    assert listed[0].created_at == created.created_at
    # What the SigV4 verifier will see, on any meshd with the cluster key.
    verifier = AccessKeys(daemon.meshd.store, ClusterKey.load(daemon.tmp_path / "cluster.key"))
    try:
        assert verifier.lookup(created.access_key_id) == ("ci-bot", created.secret_access_key)
        daemon.root.DeleteAccessKey(sec.DeleteAccessKeyRequest(access_key_id=created.access_key_id), timeout=10)
        assert wait_for(lambda: not verifier.list())
        with pytest.raises(UnknownAccessKey):
            verifier.lookup(created.access_key_id)
    finally:
        verifier.close()
    assert daemon.root.ListAccessKeys(sec.ListAccessKeysRequest(), timeout=10).access_keys == []
    with pytest.raises(grpc.RpcError) as err:
        daemon.root.DeleteAccessKey(sec.DeleteAccessKeyRequest(access_key_id=created.access_key_id), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    entries = daemon.root.ListAuditEntries(sec.ListAuditEntriesRequest(resource_prefix="accesskeys"),
                                           timeout=10).entries
    assert [(e.who, e.action, e.resource, e.result) for e in reversed(entries)] == [
        ("root", "CreateAccessKey", "accesskeys/ci-bot", "OK"),
        ("root", "DeleteAccessKey", f"accesskeys/{created.access_key_id}", "OK"),
        ("root", "DeleteAccessKey", f"accesskeys/{created.access_key_id}", "NOT_FOUND"),
    ]
    assert created.secret_access_key not in str(entries)


def test_bad_principal_is_invalid_argument(daemon):
    with pytest.raises(grpc.RpcError) as err:
        daemon.root.CreateAccessKey(sec.CreateAccessKeyRequest(principal="a/b"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("role", ["viewer", "editor", None])
def test_without_manage_tokens_every_access_key_call_is_refused(daemon, role):
    existing = daemon.root.CreateAccessKey(sec.CreateAccessKeyRequest(principal="ci"), timeout=10)
    user = daemon.user(f"{role or 'nobody'}-user", role)
    calls = (("CreateAccessKey", sec.CreateAccessKeyRequest(principal="me")),
             ("ListAccessKeys", sec.ListAccessKeysRequest()),
             ("DeleteAccessKey", sec.DeleteAccessKeyRequest(access_key_id=existing.access_key_id)))
    for method, request in calls:
        with pytest.raises(grpc.RpcError) as err:
            getattr(user, method)(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
        assert "lacks permission manage_tokens in mesh *" in err.value.details(), method
        [any_info] = [d for d in rpc_status.from_call(err.value).details
                      if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
        info = error_details_pb2.ErrorInfo()
        any_info.Unpack(info)
        assert (info.reason, info.metadata["permission"]) == ("PERMISSION_DENIED", "manage_tokens"), method
    listed = daemon.root.ListAccessKeys(sec.ListAccessKeysRequest(), timeout=10).access_keys
    assert [k.access_key_id for k in listed] == [existing.access_key_id]  # nothing made, nothing deleted


def test_a_meshd_without_the_cluster_key_refuses_to_create_keys(daemon):
    token = daemon.root.CreateBootstrapToken(sec.CreateBootstrapTokenRequest(ttl_seconds=600), timeout=10).token
    keyless = _start(daemon.etcd, daemon.prefix, daemon.tmp_path, "h2",
                     cluster_key=str(daemon.tmp_path / "absent.key"), join_token=token,
                     join_server=daemon.meshd.admin.addresses["token"])
    try:
        api = daemon.api(daemon.root_token, keyless)
        with pytest.raises(grpc.RpcError) as err:
            api.CreateAccessKey(sec.CreateAccessKeyRequest(principal="ci"), timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no cluster key at" in err.value.details() and "absent.key" in err.value.details()
        # Listing needs no key, and the keyed meshd still creates.
        assert api.ListAccessKeys(sec.ListAccessKeysRequest(), timeout=10).access_keys == []
        daemon.root.CreateAccessKey(sec.CreateAccessKeyRequest(principal="ci"), timeout=10)
        assert len(api.ListAccessKeys(sec.ListAccessKeysRequest(), timeout=10).access_keys) == 1
    finally:
        keyless.stop()


def test_meshctl_accesskey_commands(daemon):
    env = {"MESHCTL_CONFIG": str(daemon.tmp_path / "meshctl.yaml"), "PATH": "/usr/bin:/bin"}

    def meshctl(*args):
        return subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", *args], capture_output=True, text=True,
                              env=env, timeout=60)
    out = meshctl("login", "--server", daemon.meshd.admin.addresses["token"], "--ca-file", str(daemon.bundle),
                  "--token", daemon.root_token)
    assert out.returncode == 0, out.stderr
    out = meshctl("accesskey", "create", "--principal", "ci-bot")
    assert out.returncode == 0, out.stderr
    key_id = re.search(r"^AccessKeyId:\s+(MKIA[A-Z2-7]{16})$", out.stdout, re.M).group(1)
    secret = re.search(r"^SecretAccessKey:\s+(\S{40})$", out.stdout, re.M).group(1)
    assert f"aws configure set aws_access_key_id {key_id}" in out.stdout
    assert f"aws configure set aws_secret_access_key {secret}" in out.stdout or \
        f"aws configure set aws_secret_access_key '{secret}'" in out.stdout
    verifier = AccessKeys(daemon.meshd.store, ClusterKey.load(daemon.tmp_path / "cluster.key"))
    try:
        assert verifier.lookup(key_id) == ("ci-bot", secret)
    finally:
        verifier.close()
    as_json = meshctl("accesskey", "create", "--principal", "other", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    other = json.loads(as_json.stdout)
    assert other["principal"] == "other" and len(other["secretAccessKey"]) == 40
    table = meshctl("accesskey", "list")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "PRINCIPAL", "CREATED", "CREATED_BY"]
    assert sorted((r.split()[0], r.split()[1], r.split()[3]) for r in rows) == sorted(
        [(key_id, "ci-bot", "root"), (other["accessKeyId"], "other", "root")])
    assert secret not in table.stdout
    listed = json.loads(meshctl("accesskey", "list", "-o", "json").stdout)["accessKeys"]
    assert {k["accessKeyId"] for k in listed} == {key_id, other["accessKeyId"]}
    out = meshctl("accesskey", "delete", key_id)
    assert out.returncode == 0 and key_id in out.stdout, out.stderr
    listed = json.loads(meshctl("accesskey", "list", "-o", "json").stdout)["accessKeys"]
    assert [k["accessKeyId"] for k in listed] == [other["accessKeyId"]]
    again = meshctl("accesskey", "delete", key_id)
    assert again.returncode != 0 and "NOT_FOUND" in again.stderr + again.stdout
