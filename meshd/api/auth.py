"""Admin API authentication, authorization and audit: the IAM analogue.

Who is calling comes from the transport: an mTLS client certificate (its SPIFFE ID), a
bearer token on the TLS token listener, or the plaintext loopback listener that exists
only with `--insecure-local` (the caller is then `local`, a cluster admin, like root on a
Unix socket). What they may do comes from one table: every RPC needs exactly one
permission in one mesh ("*" = cluster-wide). Every write is audit-logged, refused ones too.
"""
from __future__ import annotations

import logging
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Callable

import grpc
from cryptography import x509

import registry
from meshd.security import PERMISSIONS, AuditLog, Permission, PermissionDenied, Role, Roles, Tokens, spiffe
from meshd.security.errors import Unauthenticated

log = logging.getLogger("meshd.api.auth")

CLUSTER = "*"
LOCAL = "local"
ROLES = "roles/"  # meshd.security.rbac's bindings: roles/<mesh or *>/<subject>


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its subject and how it proved it."""

    subject: str
    via: str  # "mtls", "token" or "local"


@dataclass(frozen=True)
class Rule:
    """What one RPC needs: a permission (None: any authenticated caller), the mesh it
    applies in, whether it writes (and so is audited), and the resource it names."""

    permission: Permission | None
    mesh: Callable[[object], str]
    write: bool
    resource: Callable[[object], str]
    public: bool = False  # JoinHost: authenticated by the bootstrap token it carries


def _mesh_of(req) -> str:
    return getattr(req, "mesh_name", "") or CLUSTER


def _mesh_of_arn(req) -> str:
    m = re.search(r":mesh/([^/]+)", getattr(req, "resource_arn", ""))
    return m.group(1) if m else CLUSTER


def build_rules(kinds) -> dict[str, Rule]:
    """The RPC → permission table for MeshAdmin and MeshSecurity."""
    rules: dict[str, Rule] = {}
    for k in kinds:
        def res(req, k=k):
            return k.path(tuple(getattr(req, f, "") for f in k.id_fields))
        mesh = _mesh_of if k.name != "mesh" else (lambda req: req.mesh_name or CLUSTER)
        rules[f"/meshd.v1.MeshAdmin/Create{k.title}"] = Rule(Permission.CREATE, mesh, True, res)
        rules[f"/meshd.v1.MeshAdmin/Update{k.title}"] = Rule(Permission.UPDATE, mesh, True, res)
        rules[f"/meshd.v1.MeshAdmin/Delete{k.title}"] = Rule(Permission.DELETE, mesh, True, res)
        rules[f"/meshd.v1.MeshAdmin/Describe{k.title}"] = Rule(Permission.DESCRIBE, mesh, False, res)
        rules[f"/meshd.v1.MeshAdmin/List{k.plural_title}"] = Rule(
            Permission.LIST, (lambda req: CLUSTER) if k.name == "mesh" else _mesh_of, False, res)

    def arn(req):
        return req.resource_arn

    def inst(req):
        return f"instances/{req.mesh_name}/{req.virtual_node_name}/{getattr(req, 'instance_id', '')}"

    def none(req):
        return ""

    def cluster(req):
        return CLUSTER

    a = "/meshd.v1.MeshAdmin/"
    s = "/meshd.v1.MeshSecurity/"
    rules.update({
        a + "TagResource": Rule(Permission.UPDATE, _mesh_of_arn, True, arn),
        a + "UntagResource": Rule(Permission.UPDATE, _mesh_of_arn, True, arn),
        a + "ListTagsForResource": Rule(Permission.DESCRIBE, _mesh_of_arn, False, arn),
        a + "RegisterInstance": Rule(Permission.CREATE, _mesh_of, True, inst),
        a + "DeregisterInstance": Rule(Permission.DELETE, _mesh_of, True, inst),
        a + "ListInstances": Rule(Permission.LIST, _mesh_of, False, inst),
        a + "Watch": Rule(Permission.LIST, _mesh_of, False, none),
        a + "ListHosts": Rule(Permission.LIST, cluster, False, lambda req: "hosts"),
        s + "WhoAmI": Rule(None, cluster, False, none),
        # Certificate rights are decided by meshd.security.hostauth (hosts) or the
        # issue_certificate permission (admins), inside the call.
        s + "SignCertificate": Rule(None, _mesh_of, True, lambda req: req.identity),
        s + "GetTrustBundle": Rule(Permission.DESCRIBE, _mesh_of, False, lambda req: f"ca/{_mesh_of(req)}"),
        s + "JoinHost": Rule(None, cluster, True, lambda req: f"hosts/{req.host_name}", public=True),
        s + "ListCertificateAuthorities": Rule(Permission.MANAGE_CA, _mesh_of, False, lambda req: f"ca/{_mesh_of(req)}"),
        s + "ImportCertificateAuthority": Rule(Permission.MANAGE_CA, _mesh_of, True, lambda req: f"ca/{_mesh_of(req)}"),
        s + "BeginCertificateAuthorityRotation": Rule(Permission.MANAGE_CA, _mesh_of, True, lambda req: f"ca/{_mesh_of(req)}"),
        s + "SwitchSigningCertificateAuthority": Rule(Permission.MANAGE_CA, _mesh_of, True,
                                                      lambda req: f"ca/{_mesh_of(req)}/{req.ca_id}"),
        s + "RetireCertificateAuthority": Rule(Permission.MANAGE_CA, _mesh_of, True,
                                               lambda req: f"ca/{_mesh_of(req)}/{req.ca_id}"),
        s + "CreateBootstrapToken": Rule(Permission.MANAGE_TOKENS, cluster, True, lambda req: "tokens/bootstrap"),
        s + "ListBootstrapTokens": Rule(Permission.MANAGE_TOKENS, cluster, False, lambda req: "tokens/bootstrap"),
        s + "DeleteBootstrapToken": Rule(Permission.MANAGE_TOKENS, cluster, True,
                                         lambda req: f"tokens/bootstrap/{req.token_id}"),
        s + "CreateApiToken": Rule(Permission.MANAGE_TOKENS, cluster, True, lambda req: f"tokens/api/{req.principal}"),
        s + "ListApiTokens": Rule(Permission.MANAGE_TOKENS, cluster, False, lambda req: "tokens/api"),
        s + "DeleteApiToken": Rule(Permission.MANAGE_TOKENS, cluster, True, lambda req: f"tokens/api/{req.token_id}"),
        s + "CreateAccessKey": Rule(Permission.MANAGE_TOKENS, cluster, True, lambda req: f"accesskeys/{req.principal}"),
        s + "ListAccessKeys": Rule(Permission.MANAGE_TOKENS, cluster, False, lambda req: "accesskeys"),
        s + "DeleteAccessKey": Rule(Permission.MANAGE_TOKENS, cluster, True,
                                    lambda req: f"accesskeys/{req.access_key_id}"),
        # ACM certificates and PCA trust anchors serve every mesh: cluster-wide CA rights.
        s + "ImportAcmCertificate": Rule(Permission.MANAGE_CA, cluster, True,
                                         lambda req: f"acm/certificates/{req.arn}"),
        s + "ListAcmCertificates": Rule(Permission.MANAGE_CA, cluster, False, lambda req: "acm/certificates"),
        s + "DeleteAcmCertificate": Rule(Permission.MANAGE_CA, cluster, True,
                                         lambda req: f"acm/certificates/{req.arn}"),
        s + "ImportAcmTrust": Rule(Permission.MANAGE_CA, cluster, True, lambda req: f"acm/trust/{req.arn}"),
        s + "ListAcmTrust": Rule(Permission.MANAGE_CA, cluster, False, lambda req: "acm/trust"),
        s + "DeleteAcmTrust": Rule(Permission.MANAGE_CA, cluster, True, lambda req: f"acm/trust/{req.arn}"),
        s + "GrantRole": Rule(Permission.MANAGE_ROLES, _mesh_of, True, lambda req: f"roles/{_mesh_of(req)}/{req.subject}"),
        s + "RevokeRole": Rule(Permission.MANAGE_ROLES, _mesh_of, True, lambda req: f"roles/{_mesh_of(req)}/{req.subject}"),
        s + "ListRoleBindings": Rule(Permission.MANAGE_ROLES, _mesh_of, False, lambda req: f"roles/{_mesh_of(req)}"),
        s + "ListAuditEntries": Rule(Permission.VIEW_AUDIT, cluster, False, lambda req: "audit"),
    })
    return rules


def _peer_spiffe_id(context: grpc.ServicerContext) -> str | None:
    pem = context.auth_context().get("x509_pem_cert")
    if not pem:
        return None
    cert = x509.load_pem_x509_certificate(pem[0])
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]
    return uris[0] if len(uris) == 1 else None


def _is_loopback_peer(peer: str) -> bool:
    return peer.startswith(("ipv4:127.", "ipv6:[::1]", "unix:"))


class WatchedRoles(Roles):
    """Roles whose checks read an in-memory copy of every binding, kept by an etcd watch.

    Every authorized admin call looked up the caller's binding in its mesh and its cluster
    binding: two etcd reads, most of a read call's cost. Bindings are few (one per subject
    and scope), so this process holds all of them: a full read of `roles/` at a revision,
    then a watch from the next one applying each grant and revoke. A revoke by any meshd
    stops working here once the watch delivers it (milliseconds), exactly as strict as the
    reads were otherwise. While the watch is not running (before it started, after it
    broke) checks read etcd as Roles does, and the copy is rebuilt from a fresh full read.
    The watch starts with the first check; `close()` stops it.

    The copy never refuses what etcd allows, and it sees its own writes:
    - a refusal is confirmed in etcd before it is answered, so a grant answered by any
      meshd allows at once here (refusals are rare; this is what every check cost before);
    - a binding granted or revoked through this object is read from etcd until the watch
      has applied that write, so once RevokeRole (or a downgrade) has answered, the next
      call through this meshd is refused. Only a revoke answered by another meshd takes
      the watch's delay to reach here.
    """

    def __init__(self, store: registry.Store, **kwargs):
        super().__init__(store, **kwargs)
        self._lock = threading.Lock()
        self._bindings: dict[tuple[str, str], Role] | None = None  # (scope, subject) -> role; None: not live
        self._watch: registry.store.Watch | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._applied = 0  # the etcd revision the copy holds everything up to
        self._unseen: dict[tuple[str, str], int] = {}  # (scope, subject) written here -> its revision, until applied

    def authorize(self, subject: str | None, permission: str | Permission, mesh: str) -> Role:
        try:
            return self._decide(subject, permission, mesh, self.role_of)
        except PermissionDenied as refused:
            # The copy may not hold a grant yet; what etcd says is the answer. With etcd
            # unreachable the copy's refusal stands (it fails closed, and precisely).
            try:
                return self._decide(subject, permission, mesh, super().role_of)
            except registry.Unavailable:
                raise refused from None

    def role_of(self, subject: str, mesh: str) -> Role | None:
        self._start()
        bindings = self._bindings
        scopes = (CLUSTER,) if mesh == CLUSTER else (mesh, CLUSTER)
        unseen = self._unseen
        if bindings is None or (unseen and any((scope, subject) in unseen for scope in scopes)):
            return super().role_of(subject, mesh)
        held = [bindings.get((scope, subject)) for scope in scopes]
        # Roles nest (viewer within editor within admin): the strongest grants the most.
        return max((r for r in held if r is not None), key=lambda r: len(PERMISSIONS[r]), default=None)

    def _wrote(self, mesh: str, subject: str, revision: int) -> None:
        with self._lock:
            if revision > self._applied:
                self._unseen = {**self._unseen, (mesh, subject): revision}

    def _caught_up(self, revision: int) -> None:
        """The copy now holds every binding up to `revision`."""
        with self._lock:
            self._applied = revision
            if self._unseen:
                self._unseen = {k: r for k, r in self._unseen.items() if r > revision}

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            watch, self._bindings = self._watch, None
        if watch is not None:
            watch.cancel()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _start(self) -> None:
        if self._thread is not None or self._closed.is_set():
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._follow, name="roles-watch", daemon=True)
                self._thread.start()

    def _follow(self) -> None:
        backoff = 0.1
        while not self._closed.is_set():
            try:
                items, revision = self.store.scan(ROLES)
                bindings, keys = {}, {}  # keys: store path -> (scope, subject), for deletes
                for item in items:
                    b = self._binding(item.value)
                    keys[item.path] = (b.mesh, b.subject)
                    bindings[keys[item.path]] = b.role
                watch = self.store.watch(ROLES, start_revision=revision + 1)
                with self._lock:
                    self._watch = watch
                if self._closed.is_set():
                    watch.cancel()
                    return
                self._bindings = bindings
                self._caught_up(revision)
                for batch_revision, events in watch:
                    for ev in events:
                        if ev.type == "put":
                            b = self._binding(ev.value)
                            keys[ev.path] = (b.mesh, b.subject)
                            bindings[keys[ev.path]] = b.role
                        elif ev.path in keys:
                            bindings.pop(keys.pop(ev.path), None)
                    self._caught_up(batch_revision)
                    backoff = 0.1
            except (registry.Unavailable, registry.Compacted) as err:
                if not self._closed.is_set():
                    log.warning("role binding watch interrupted; reading etcd until it is back",
                                extra={"error": str(err)})
            except Exception:  # noqa: BLE001 - the thread must outlive a bug; checks read etcd meanwhile
                log.exception("role binding watch failed; reading etcd until it is back")
            finally:
                self._bindings = None
            self._closed.wait(backoff)
            backoff = min(backoff * 2, 2.0)


class _GroupCommit:
    """Audit records of concurrent calls appended together (group commit).

    Every write RPC must be recorded before it is answered, and the log's one sequence
    counter makes concurrent appends conflict and retry, so N writers in flight cost O(N^2)
    transactions. Here a caller queues its record; the first caller to find no append
    running becomes the leader and appends every queued record (up to BATCH: etcd's
    default limit is 128 operations per transaction, two per record) in one transaction;
    each caller returns once its own record is written, so nothing is answered unaudited.
    """

    BATCH = 32

    def __init__(self, audit: AuditLog):
        self.audit = audit
        self._lock = threading.Condition()
        self._queue: list[list] = []  # [record, done, error]
        self._leading = False

    def record(self, *record) -> None:
        """Append one (who, action, resource, result, request_id, detail); raises what the
        append raised."""
        mine = [record, False, None]
        with self._lock:
            self._queue.append(mine)
            while not mine[1] and self._leading:
                self._lock.wait()
            if mine[1]:
                if mine[2] is not None:
                    raise mine[2]
                return
            self._leading = True
        try:
            while True:
                with self._lock:
                    batch, self._queue = self._queue[:self.BATCH], self._queue[self.BATCH:]
                    if not batch:
                        return
                error = None
                try:
                    self.audit.record_many([b[0] for b in batch])
                except Exception as err:  # noqa: BLE001 - handed to each caller of the batch
                    error = err
                with self._lock:
                    for b in batch:
                        b[1], b[2] = True, error
                    self._lock.notify_all()
                if mine[1]:
                    break
        finally:
            with self._lock:
                self._leading = False
                self._lock.notify_all()  # a waiter whose record is still queued leads next
        if mine[2] is not None:
            raise mine[2]


class Access:
    """Authenticates calls, applies the rule table with the role bindings, audits writes."""

    def __init__(self, rules: dict[str, Rule], roles: Roles, tokens: Tokens, audit: AuditLog,
                 *, trust_domain: str):
        self.rules = rules
        # Checks read a watched copy of the bindings; `roles` (grants, revokes) writes them.
        self.roles = WatchedRoles(roles.store, clock=roles.clock)
        self.tokens = tokens
        self.audit_log = audit
        self._audit = _GroupCommit(audit)
        self.trust_domain = trust_domain

    def close(self) -> None:
        """Stop the role bindings' watch (checks read etcd from then on)."""
        self.roles.close()

    def authenticate(self, context: grpc.ServicerContext) -> Caller:
        """The caller of this call, or Unauthenticated (never PermissionDenied)."""
        security = context.auth_context().get("transport_security_type", [b""])[0]
        if security != b"ssl":
            # Only the --insecure-local listener is plaintext, and it only binds loopback.
            if not _is_loopback_peer(context.peer()):
                raise Unauthenticated(f"plaintext call from {context.peer()} refused")
            return Caller(LOCAL, "local")
        identity = _peer_spiffe_id(context)
        if identity is not None:
            return Caller(identity, "mtls")
        md = dict(context.invocation_metadata() or ())
        auth = md.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return Caller(self.tokens.verify_api_token(auth[7:].strip()), "token")
        raise Unauthenticated("no client certificate and no bearer token")

    def authorize(self, caller: Caller, rule: Rule, request) -> None:
        """PermissionDenied naming the missing permission, unless the caller may."""
        if rule.permission is None:
            return
        mesh = rule.mesh(request)
        if caller.subject == LOCAL:
            return  # the loopback admin: like root on a Unix socket
        if self._is_host(caller.subject) and rule.permission in (Permission.DESCRIBE, Permission.LIST):
            return  # every meshd may read the configuration it routes by
        self.roles.authorize(caller.subject, rule.permission, mesh)

    def _is_host(self, subject: str) -> bool:
        try:
            sid = spiffe.parse(subject)
        except Exception:  # noqa: BLE001 - a principal name is simply not a host
            return False
        return sid.kind == spiffe.HOST and sid.trust_domain == self.trust_domain

    def audit(self, caller: Caller | None, method: str, rule: Rule, request, result: str,
              request_id: str) -> None:
        if not rule.write:
            return
        try:
            resource = rule.resource(request)
        except Exception:  # noqa: BLE001 - a malformed request still gets its audit line
            resource = ""
        try:
            self._audit.record(caller.subject if caller else "anonymous", method.rsplit("/", 1)[-1],
                               resource, result, request_id, None)
        except Exception as err:  # noqa: BLE001 - the write happened; say loudly that its record did not
            log.error("audit record failed", extra={"method": method, "error": str(err)})


def request_id(context: grpc.ServicerContext) -> str:
    md = dict(context.invocation_metadata() or ())
    rid = md.get("x-request-id") or uuid.uuid4().hex
    return rid[:128]
