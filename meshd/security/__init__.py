"""meshd.security: the cluster key, mesh CAs, workload certificates, TLS contexts, tokens,
access keys, roles, the audit log and host authorization — the identity and trust library of meshd.

It persists through `registry` only, and imports neither the admin API, nor gRPC servers,
nor the data plane; the composition root wires it in.
"""
from meshd.security.accesskeys import AccessKeyInfo, AccessKeys, IssuedAccessKey
from meshd.security.audit import AuditEntry, AuditFilter, AuditLog
from meshd.security.ca import CLUSTER, CAInfo, CASource, Issued, MeshCA, reseal_keys
from meshd.security.certs import DEFAULT_TTL, Renewal, make_csr, renewal
from meshd.security.clusterkey import ClusterKey, KeyRef
from meshd.security import errors  # every typed error: meshd.security.errors.<Name>
from meshd.security.errors import PermissionDenied, SecurityError, Unauthenticated
from meshd.security.hostauth import authorize_certificate, host_runs_node
from meshd.security.rbac import PERMISSIONS, Binding, Permission, Role, Roles
from meshd.security.spiffe import DEFAULT_TRUST_DOMAIN, SpiffeId, host_id, user_id, workload_id
from meshd.security.tls import (
    Credentials,
    FileCertificate,
    FileTrust,
    certificate_source,
    check_san,
    client_context,
    peer_identity,
    server_context,
    trust_source,
    verify_peer,
)
from meshd.security.tokens import IssuedToken, TokenInfo, Tokens

__all__ = [
    "AccessKeyInfo", "AccessKeys", "AuditEntry", "AuditFilter", "AuditLog", "Binding", "CAInfo", "CASource", "CLUSTER",
    "ClusterKey", "Credentials", "DEFAULT_TRUST_DOMAIN", "DEFAULT_TTL", "FileCertificate",
    "FileTrust", "Issued", "IssuedAccessKey", "IssuedToken", "KeyRef", "MeshCA", "PERMISSIONS", "Permission",
    "PermissionDenied", "Renewal", "Role", "Roles", "SecurityError", "SpiffeId", "TokenInfo",
    "Tokens", "Unauthenticated", "authorize_certificate", "certificate_source", "check_san",
    "client_context", "errors", "host_id", "host_runs_node", "make_csr", "peer_identity", "renewal", "reseal_keys",
    "server_context", "trust_source", "user_id", "verify_peer", "workload_id",
]
