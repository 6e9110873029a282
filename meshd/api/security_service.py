"""MeshSecurity: certificates, trust bundles, CAs, tokens, access keys, roles and the audit log over gRPC.

Each method delegates to `meshd.security`; authentication and the permission check happen
before (see `meshd.api.auth`), except where a call decides rights itself: SignCertificate
(host authorization) and JoinHost (the bootstrap token).
"""
from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

from google.protobuf import timestamp_pb2

import registry
from meshd.api.auth import CLUSTER, Caller
from meshd.api.errors import BadRequest
from meshd.security import (AccessKeys, AuditFilter, AuditLog, CASource, MeshCA, Roles, Tokens,
                            authorize_certificate, host_id, renewal, spiffe)
from meshd.security.accesskeys import PREFIX as ACCESS_KEYS
from meshd.security.acm import AcmInvalid, AcmStore, certificate_path, trust_path
from meshd.security.certs import load_certs
from meshd.v1 import security_pb2 as sec


def _ts(dt: datetime | None) -> timestamp_pb2.Timestamp | None:
    if dt is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt.astimezone(timezone.utc).replace(tzinfo=None))
    return ts


def _ttl(seconds: int, default: timedelta | None) -> timedelta | None:
    if seconds < 0:
        raise BadRequest("ttlSeconds", "must be >= 0")
    return timedelta(seconds=seconds) if seconds else default


def _ca_msg(info) -> sec.CertificateAuthority:
    return sec.CertificateAuthority(
        mesh_name=info.mesh, ca_id=info.ca_id, state=info.state.upper(), origin=info.origin, signing=info.signing,
        certificate_pem=info.cert_pem.decode(), not_after=_ts(info.certificate.not_valid_after_utc))


def _token_msg(t) -> sec.TokenInfo:
    return sec.TokenInfo(token_id=t.token_id, kind=t.kind, scope=t.scope, created_at=_ts(t.created_at),
                         expires_at=_ts(t.expires_at), used_at=_ts(t.used_at), created_by=t.created_by)


def _access_key_msg(k) -> sec.AccessKeyInfo:
    return sec.AccessKeyInfo(access_key_id=k.access_key_id, principal=k.principal, created_at=_ts(k.created_at),
                             created_by=k.created_by)


def _acm_cert_msg(c) -> sec.AcmCertificate:
    return sec.AcmCertificate(arn=c.arn, subject=c.subject, dns_names=list(c.dns_names), serial=c.serial,
                              not_after=_ts(c.not_after), imported_at=_ts(c.imported_at), imported_by=c.imported_by)


def _acm_trust_msg(t) -> sec.AcmTrustAnchor:
    return sec.AcmTrustAnchor(arn=t.arn, subject=t.subject, not_after=_ts(t.not_after),
                              imported_at=_ts(t.imported_at), imported_by=t.imported_by, certificates=t.certificates)


@contextlib.contextmanager
def _acm_input():
    """An ACM import refused for its input (ARN shape, PEM, key match) is the caller's error."""
    try:
        yield
    except AcmInvalid as err:
        raise BadRequest(err.field, err.detail) from err


def _binding_msg(b) -> sec.RoleBinding:
    return sec.RoleBinding(subject=b.subject, role=b.role.value, mesh_name=b.mesh, granted_by=b.granted_by,
                           granted_at=_ts(b.granted_at))


class Security:
    """The behaviour of MeshSecurity, given the authenticated caller of each call."""

    def __init__(self, store: registry.Store, ca: MeshCA, tokens: Tokens, roles: Roles, audit: AuditLog,
                 access_keys: AccessKeys | None = None):
        self.store = store
        self.ca = ca
        self.tokens = tokens
        self.roles = roles
        self.audit = audit
        # By default access keys seal with the CA's cluster key (the same KeyRef, so one
        # load of the key file) and stamp times with its clock.
        self.access_keys = access_keys or AccessKeys(store, ca._key, clock=ca._clock)
        self.acm = AcmStore(store, ca._key, clock=ca._clock)

    def WhoAmI(self, caller: Caller, req):
        bindings = [] if caller.subject == "local" else self.roles.bindings(subject=caller.subject)
        return sec.WhoAmIResponse(subject=caller.subject, authenticated_by=caller.via,
                                  bindings=[_binding_msg(b) for b in bindings])

    def _signed(self, issued) -> sec.SignCertificateResponse:
        leaf = load_certs(issued.cert_pem)[0]
        return sec.SignCertificateResponse(
            certificate_chain_pem=issued.chain_pem.decode(), trust_bundle_pem=issued.bundle_pem.decode(),
            not_before=_ts(issued.not_before), not_after=_ts(issued.not_after), ca_id=issued.ca_id,
            renew_at=_ts(renewal(leaf, issued.not_before).at))

    def SignCertificate(self, caller: Caller, req):
        if caller.subject != "local":
            authorize_certificate(self.store, caller.subject, req.identity, roles=self.roles)
        sid = spiffe.parse(req.identity)
        mesh = sid.mesh if sid.kind in spiffe.MESH_KINDS else CLUSTER
        if req.mesh_name and req.mesh_name != mesh:
            raise BadRequest("meshName", f"{req.identity} is signed by CA {mesh!r}, not {req.mesh_name!r}")
        if sid.kind in spiffe.MESH_KINDS:
            self.ca.ensure(mesh)
        issued = self.ca.sign_csr(mesh, req.csr_pem.encode(), req.identity, _ttl(req.ttl_seconds, None),
                                  dns_names=tuple(req.dns_names), ip_addresses=tuple(req.ip_addresses))
        return self._signed(issued)

    def GetTrustBundle(self, caller: Caller, req):
        return sec.GetTrustBundleResponse(trust_bundle_pem=self.ca.bundle(req.mesh_name or CLUSTER).decode())

    def JoinHost(self, caller: Caller | None, req):
        if not req.token:
            raise BadRequest("token", "a bootstrap token is required")
        identity = host_id(self.ca.trust_domain, req.host_name).uri
        self.tokens.redeem(req.token, scope="join", redeemed_by=identity)
        issued = self.ca.sign_csr(CLUSTER, req.csr_pem.encode(), identity,
                                  dns_names=tuple(req.dns_names), ip_addresses=tuple(req.ip_addresses))
        return sec.JoinHostResponse(certificate_chain_pem=issued.chain_pem.decode(),
                                    trust_bundle_pem=issued.bundle_pem.decode(), not_after=_ts(issued.not_after))

    def ListCertificateAuthorities(self, caller, req):
        return sec.ListCertificateAuthoritiesResponse(
            authorities=[_ca_msg(a) for a in self.ca.authorities(req.mesh_name or CLUSTER)])

    def ImportCertificateAuthority(self, caller, req):
        mesh = req.mesh_name or CLUSTER
        source = CASource(req.certificate_pem.encode(), req.private_key_pem.encode(), req.chain_pem.encode())
        if self.ca.authorities(mesh):
            info = self.ca.begin_rotation(mesh, source)
        else:
            info = self.ca.create(mesh, source)
        return sec.CertificateAuthorityResponse(authority=_ca_msg(info))

    def BeginCertificateAuthorityRotation(self, caller, req):
        return sec.CertificateAuthorityResponse(authority=_ca_msg(self.ca.begin_rotation(req.mesh_name or CLUSTER)))

    def SwitchSigningCertificateAuthority(self, caller, req):
        return sec.CertificateAuthorityResponse(
            authority=_ca_msg(self.ca.switch_signing(req.mesh_name or CLUSTER, req.ca_id)))

    def RetireCertificateAuthority(self, caller, req):
        return sec.CertificateAuthorityResponse(authority=_ca_msg(self.ca.retire(req.mesh_name or CLUSTER, req.ca_id)))

    def CreateBootstrapToken(self, caller, req):
        issued = self.tokens.create_token(_ttl(req.ttl_seconds, timedelta(hours=1)), "join", created_by=caller.subject)
        info = next(t for t in self.tokens.list_tokens() if t.token_id == issued.token_id)
        return sec.CreateBootstrapTokenResponse(token=issued.token, info=_token_msg(info))

    def ListBootstrapTokens(self, caller, req):
        return sec.ListBootstrapTokensResponse(tokens=[_token_msg(t) for t in self.tokens.list_tokens()])

    def DeleteBootstrapToken(self, caller, req):
        if not self.tokens.revoke_token(req.token_id):
            raise registry.NotFound(f"tokens/bootstrap/{req.token_id}")
        return sec.DeleteBootstrapTokenResponse()

    def CreateApiToken(self, caller, req):
        issued = self.tokens.create_api_token(req.principal, ttl=_ttl(req.ttl_seconds, None), created_by=caller.subject)
        info = next(t for t in self.tokens.list_api_tokens() if t.token_id == issued.token_id)
        return sec.CreateApiTokenResponse(token=issued.token, info=_token_msg(info))

    def ListApiTokens(self, caller, req):
        return sec.ListApiTokensResponse(tokens=[_token_msg(t) for t in self.tokens.list_api_tokens()])

    def DeleteApiToken(self, caller, req):
        if not self.tokens.revoke_api_token(req.token_id):
            raise registry.NotFound(f"tokens/api/{req.token_id}")
        return sec.DeleteApiTokenResponse()

    def CreateAccessKey(self, caller, req):
        issued = self.access_keys.create(req.principal, created_by=caller.subject)
        return sec.CreateAccessKeyResponse(access_key_id=issued.access_key_id,
                                           secret_access_key=issued.secret_access_key,
                                           principal=issued.principal, created_at=_ts(issued.created_at))

    def ListAccessKeys(self, caller, req):
        return sec.ListAccessKeysResponse(access_keys=[_access_key_msg(k) for k in self.access_keys.list()])

    def DeleteAccessKey(self, caller, req):
        if not self.access_keys.delete(req.access_key_id):
            raise registry.NotFound(ACCESS_KEYS + req.access_key_id)
        return sec.DeleteAccessKeyResponse()

    def ImportAcmCertificate(self, caller, req):
        with _acm_input():
            info = self.acm.import_certificate(req.arn, req.certificate_pem.encode(), req.private_key_pem.encode(),
                                               req.chain_pem.encode(), imported_by=caller.subject)
        return sec.ImportAcmCertificateResponse(certificate=_acm_cert_msg(info))

    def ListAcmCertificates(self, caller, req):
        return sec.ListAcmCertificatesResponse(certificates=[_acm_cert_msg(c) for c in self.acm.certificates()])

    def DeleteAcmCertificate(self, caller, req):
        with _acm_input():
            if not self.acm.delete_certificate(req.arn):
                raise registry.NotFound(certificate_path(req.arn))
        return sec.DeleteAcmCertificateResponse()

    def ImportAcmTrust(self, caller, req):
        with _acm_input():
            info = self.acm.import_trust(req.arn, req.certificate_pem.encode(), imported_by=caller.subject)
        return sec.ImportAcmTrustResponse(anchor=_acm_trust_msg(info))

    def ListAcmTrust(self, caller, req):
        return sec.ListAcmTrustResponse(anchors=[_acm_trust_msg(t) for t in self.acm.trust()])

    def DeleteAcmTrust(self, caller, req):
        with _acm_input():
            if not self.acm.delete_trust(req.arn):
                raise registry.NotFound(trust_path(req.arn))
        return sec.DeleteAcmTrustResponse()

    def GrantRole(self, caller, req):
        b = self.roles.grant(req.subject, req.role, req.mesh_name or CLUSTER, granted_by=caller.subject)
        return sec.GrantRoleResponse(binding=_binding_msg(b))

    def RevokeRole(self, caller, req):
        return sec.RevokeRoleResponse(existed=self.roles.revoke(req.subject, req.mesh_name or CLUSTER))

    def ListRoleBindings(self, caller, req):
        bs = self.roles.bindings(mesh=req.mesh_name or None, subject=req.subject or None)
        return sec.ListRoleBindingsResponse(bindings=[_binding_msg(b) for b in bs])

    def ListAuditEntries(self, caller, req):
        if not 0 <= req.limit <= 1000:
            raise BadRequest("limit", "must be between 1 and 1000")
        f = AuditFilter(who=req.who or None, action=req.action or None, resource_prefix=req.resource_prefix or None,
                        result=req.result or None, request_id=req.request_id or None)
        limit = req.limit or 100
        entries = self.audit.query(f, limit, before_seq=req.before_seq or None)
        resp = sec.ListAuditEntriesResponse(entries=[
            sec.AuditEntry(seq=e.seq, time=_ts(e.time), who=e.who, action=e.action, resource=e.resource,
                           result=e.result, request_id=e.request_id,
                           detail={str(k): str(v) for k, v in (e.detail or {}).items()}) for e in entries])
        if len(entries) == limit:
            resp.next_before_seq = entries[-1].seq
        return resp
