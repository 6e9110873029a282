import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoleBinding(_message.Message):
    __slots__ = ("subject", "role", "mesh_name", "granted_by", "granted_at")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    GRANTED_BY_FIELD_NUMBER: _ClassVar[int]
    GRANTED_AT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    role: str
    mesh_name: str
    granted_by: str
    granted_at: _timestamp_pb2.Timestamp
    def __init__(self, subject: _Optional[str] = ..., role: _Optional[str] = ..., mesh_name: _Optional[str] = ..., granted_by: _Optional[str] = ..., granted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("subject", "authenticated_by", "bindings")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATED_BY_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    subject: str
    authenticated_by: str
    bindings: _containers.RepeatedCompositeFieldContainer[RoleBinding]
    def __init__(self, subject: _Optional[str] = ..., authenticated_by: _Optional[str] = ..., bindings: _Optional[_Iterable[_Union[RoleBinding, _Mapping]]] = ...) -> None: ...

class SignCertificateRequest(_message.Message):
    __slots__ = ("mesh_name", "identity", "csr_pem", "ttl_seconds", "dns_names", "ip_addresses")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    identity: str
    csr_pem: str
    ttl_seconds: int
    dns_names: _containers.RepeatedScalarFieldContainer[str]
    ip_addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mesh_name: _Optional[str] = ..., identity: _Optional[str] = ..., csr_pem: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., dns_names: _Optional[_Iterable[str]] = ..., ip_addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class SignCertificateResponse(_message.Message):
    __slots__ = ("certificate_chain_pem", "trust_bundle_pem", "not_before", "not_after", "ca_id", "renew_at")
    CERTIFICATE_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    CA_ID_FIELD_NUMBER: _ClassVar[int]
    RENEW_AT_FIELD_NUMBER: _ClassVar[int]
    certificate_chain_pem: str
    trust_bundle_pem: str
    not_before: _timestamp_pb2.Timestamp
    not_after: _timestamp_pb2.Timestamp
    ca_id: str
    renew_at: _timestamp_pb2.Timestamp
    def __init__(self, certificate_chain_pem: _Optional[str] = ..., trust_bundle_pem: _Optional[str] = ..., not_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ca_id: _Optional[str] = ..., renew_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetTrustBundleRequest(_message.Message):
    __slots__ = ("mesh_name",)
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    def __init__(self, mesh_name: _Optional[str] = ...) -> None: ...

class GetTrustBundleResponse(_message.Message):
    __slots__ = ("trust_bundle_pem",)
    TRUST_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    trust_bundle_pem: str
    def __init__(self, trust_bundle_pem: _Optional[str] = ...) -> None: ...

class JoinHostRequest(_message.Message):
    __slots__ = ("token", "host_name", "csr_pem", "dns_names", "ip_addresses")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    HOST_NAME_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    DNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    token: str
    host_name: str
    csr_pem: str
    dns_names: _containers.RepeatedScalarFieldContainer[str]
    ip_addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, token: _Optional[str] = ..., host_name: _Optional[str] = ..., csr_pem: _Optional[str] = ..., dns_names: _Optional[_Iterable[str]] = ..., ip_addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class JoinHostResponse(_message.Message):
    __slots__ = ("certificate_chain_pem", "trust_bundle_pem", "not_after")
    CERTIFICATE_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    certificate_chain_pem: str
    trust_bundle_pem: str
    not_after: _timestamp_pb2.Timestamp
    def __init__(self, certificate_chain_pem: _Optional[str] = ..., trust_bundle_pem: _Optional[str] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CertificateAuthority(_message.Message):
    __slots__ = ("mesh_name", "ca_id", "state", "origin", "signing", "certificate_pem", "not_after")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    CA_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SIGNING_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    ca_id: str
    state: str
    origin: str
    signing: bool
    certificate_pem: str
    not_after: _timestamp_pb2.Timestamp
    def __init__(self, mesh_name: _Optional[str] = ..., ca_id: _Optional[str] = ..., state: _Optional[str] = ..., origin: _Optional[str] = ..., signing: _Optional[bool] = ..., certificate_pem: _Optional[str] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListCertificateAuthoritiesRequest(_message.Message):
    __slots__ = ("mesh_name",)
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    def __init__(self, mesh_name: _Optional[str] = ...) -> None: ...

class ListCertificateAuthoritiesResponse(_message.Message):
    __slots__ = ("authorities",)
    AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    authorities: _containers.RepeatedCompositeFieldContainer[CertificateAuthority]
    def __init__(self, authorities: _Optional[_Iterable[_Union[CertificateAuthority, _Mapping]]] = ...) -> None: ...

class ImportCertificateAuthorityRequest(_message.Message):
    __slots__ = ("mesh_name", "certificate_pem", "private_key_pem", "chain_pem")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    certificate_pem: str
    private_key_pem: str
    chain_pem: str
    def __init__(self, mesh_name: _Optional[str] = ..., certificate_pem: _Optional[str] = ..., private_key_pem: _Optional[str] = ..., chain_pem: _Optional[str] = ...) -> None: ...

class BeginCertificateAuthorityRotationRequest(_message.Message):
    __slots__ = ("mesh_name",)
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    def __init__(self, mesh_name: _Optional[str] = ...) -> None: ...

class SwitchSigningCertificateAuthorityRequest(_message.Message):
    __slots__ = ("mesh_name", "ca_id")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    CA_ID_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    ca_id: str
    def __init__(self, mesh_name: _Optional[str] = ..., ca_id: _Optional[str] = ...) -> None: ...

class RetireCertificateAuthorityRequest(_message.Message):
    __slots__ = ("mesh_name", "ca_id")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    CA_ID_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    ca_id: str
    def __init__(self, mesh_name: _Optional[str] = ..., ca_id: _Optional[str] = ...) -> None: ...

class CertificateAuthorityResponse(_message.Message):
    __slots__ = ("authority",)
    AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    authority: CertificateAuthority
    def __init__(self, authority: _Optional[_Union[CertificateAuthority, _Mapping]] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("token_id", "kind", "scope", "created_at", "expires_at", "used_at", "created_by")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    USED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    kind: str
    scope: str
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    used_at: _timestamp_pb2.Timestamp
    created_by: str
    def __init__(self, token_id: _Optional[str] = ..., kind: _Optional[str] = ..., scope: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ...) -> None: ...

class CreateBootstrapTokenRequest(_message.Message):
    __slots__ = ("ttl_seconds",)
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ttl_seconds: int
    def __init__(self, ttl_seconds: _Optional[int] = ...) -> None: ...

class CreateBootstrapTokenResponse(_message.Message):
    __slots__ = ("token", "info")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    token: str
    info: TokenInfo
    def __init__(self, token: _Optional[str] = ..., info: _Optional[_Union[TokenInfo, _Mapping]] = ...) -> None: ...

class ListBootstrapTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBootstrapTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class DeleteBootstrapTokenRequest(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class DeleteBootstrapTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateApiTokenRequest(_message.Message):
    __slots__ = ("principal", "ttl_seconds")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    principal: str
    ttl_seconds: int
    def __init__(self, principal: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class CreateApiTokenResponse(_message.Message):
    __slots__ = ("token", "info")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    token: str
    info: TokenInfo
    def __init__(self, token: _Optional[str] = ..., info: _Optional[_Union[TokenInfo, _Mapping]] = ...) -> None: ...

class ListApiTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListApiTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class DeleteApiTokenRequest(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class DeleteApiTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AccessKeyInfo(_message.Message):
    __slots__ = ("access_key_id", "principal", "created_at", "created_by")
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    access_key_id: str
    principal: str
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    def __init__(self, access_key_id: _Optional[str] = ..., principal: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ...) -> None: ...

class CreateAccessKeyRequest(_message.Message):
    __slots__ = ("principal",)
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    principal: str
    def __init__(self, principal: _Optional[str] = ...) -> None: ...

class CreateAccessKeyResponse(_message.Message):
    __slots__ = ("access_key_id", "secret_access_key", "principal", "created_at")
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    access_key_id: str
    secret_access_key: str
    principal: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, access_key_id: _Optional[str] = ..., secret_access_key: _Optional[str] = ..., principal: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAccessKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAccessKeysResponse(_message.Message):
    __slots__ = ("access_keys",)
    ACCESS_KEYS_FIELD_NUMBER: _ClassVar[int]
    access_keys: _containers.RepeatedCompositeFieldContainer[AccessKeyInfo]
    def __init__(self, access_keys: _Optional[_Iterable[_Union[AccessKeyInfo, _Mapping]]] = ...) -> None: ...

class DeleteAccessKeyRequest(_message.Message):
    __slots__ = ("access_key_id",)
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    access_key_id: str
    def __init__(self, access_key_id: _Optional[str] = ...) -> None: ...

class DeleteAccessKeyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GrantRoleRequest(_message.Message):
    __slots__ = ("subject", "role", "mesh_name")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    subject: str
    role: str
    mesh_name: str
    def __init__(self, subject: _Optional[str] = ..., role: _Optional[str] = ..., mesh_name: _Optional[str] = ...) -> None: ...

class GrantRoleResponse(_message.Message):
    __slots__ = ("binding",)
    BINDING_FIELD_NUMBER: _ClassVar[int]
    binding: RoleBinding
    def __init__(self, binding: _Optional[_Union[RoleBinding, _Mapping]] = ...) -> None: ...

class RevokeRoleRequest(_message.Message):
    __slots__ = ("subject", "mesh_name")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    subject: str
    mesh_name: str
    def __init__(self, subject: _Optional[str] = ..., mesh_name: _Optional[str] = ...) -> None: ...

class RevokeRoleResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...

class ListRoleBindingsRequest(_message.Message):
    __slots__ = ("mesh_name", "subject")
    MESH_NAME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    mesh_name: str
    subject: str
    def __init__(self, mesh_name: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class ListRoleBindingsResponse(_message.Message):
    __slots__ = ("bindings",)
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    bindings: _containers.RepeatedCompositeFieldContainer[RoleBinding]
    def __init__(self, bindings: _Optional[_Iterable[_Union[RoleBinding, _Mapping]]] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("seq", "time", "who", "action", "resource", "result", "request_id", "detail")
    class DetailEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    who: str
    action: str
    resource: str
    result: str
    request_id: str
    detail: _containers.ScalarMap[str, str]
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., who: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[str] = ..., result: _Optional[str] = ..., request_id: _Optional[str] = ..., detail: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListAuditEntriesRequest(_message.Message):
    __slots__ = ("who", "action", "resource_prefix", "result", "request_id", "limit", "before_seq")
    WHO_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_SEQ_FIELD_NUMBER: _ClassVar[int]
    who: str
    action: str
    resource_prefix: str
    result: str
    request_id: str
    limit: int
    before_seq: int
    def __init__(self, who: _Optional[str] = ..., action: _Optional[str] = ..., resource_prefix: _Optional[str] = ..., result: _Optional[str] = ..., request_id: _Optional[str] = ..., limit: _Optional[int] = ..., before_seq: _Optional[int] = ...) -> None: ...

class ListAuditEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_before_seq")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_BEFORE_SEQ_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    next_before_seq: int
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., next_before_seq: _Optional[int] = ...) -> None: ...

class AcmCertificate(_message.Message):
    __slots__ = ("arn", "subject", "dns_names", "serial", "not_after", "imported_at", "imported_by")
    ARN_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_BY_FIELD_NUMBER: _ClassVar[int]
    arn: str
    subject: str
    dns_names: _containers.RepeatedScalarFieldContainer[str]
    serial: str
    not_after: _timestamp_pb2.Timestamp
    imported_at: _timestamp_pb2.Timestamp
    imported_by: str
    def __init__(self, arn: _Optional[str] = ..., subject: _Optional[str] = ..., dns_names: _Optional[_Iterable[str]] = ..., serial: _Optional[str] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., imported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., imported_by: _Optional[str] = ...) -> None: ...

class ImportAcmCertificateRequest(_message.Message):
    __slots__ = ("arn", "certificate_pem", "private_key_pem", "chain_pem")
    ARN_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    arn: str
    certificate_pem: str
    private_key_pem: str
    chain_pem: str
    def __init__(self, arn: _Optional[str] = ..., certificate_pem: _Optional[str] = ..., private_key_pem: _Optional[str] = ..., chain_pem: _Optional[str] = ...) -> None: ...

class ImportAcmCertificateResponse(_message.Message):
    __slots__ = ("certificate",)
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    certificate: AcmCertificate
    def __init__(self, certificate: _Optional[_Union[AcmCertificate, _Mapping]] = ...) -> None: ...

class ListAcmCertificatesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAcmCertificatesResponse(_message.Message):
    __slots__ = ("certificates",)
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    certificates: _containers.RepeatedCompositeFieldContainer[AcmCertificate]
    def __init__(self, certificates: _Optional[_Iterable[_Union[AcmCertificate, _Mapping]]] = ...) -> None: ...

class DeleteAcmCertificateRequest(_message.Message):
    __slots__ = ("arn",)
    ARN_FIELD_NUMBER: _ClassVar[int]
    arn: str
    def __init__(self, arn: _Optional[str] = ...) -> None: ...

class DeleteAcmCertificateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AcmTrustAnchor(_message.Message):
    __slots__ = ("arn", "subject", "not_after", "imported_at", "imported_by", "certificates")
    ARN_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    IMPORTED_BY_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    arn: str
    subject: str
    not_after: _timestamp_pb2.Timestamp
    imported_at: _timestamp_pb2.Timestamp
    imported_by: str
    certificates: int
    def __init__(self, arn: _Optional[str] = ..., subject: _Optional[str] = ..., not_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., imported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., imported_by: _Optional[str] = ..., certificates: _Optional[int] = ...) -> None: ...

class ImportAcmTrustRequest(_message.Message):
    __slots__ = ("arn", "certificate_pem")
    ARN_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    arn: str
    certificate_pem: str
    def __init__(self, arn: _Optional[str] = ..., certificate_pem: _Optional[str] = ...) -> None: ...

class ImportAcmTrustResponse(_message.Message):
    __slots__ = ("anchor",)
    ANCHOR_FIELD_NUMBER: _ClassVar[int]
    anchor: AcmTrustAnchor
    def __init__(self, anchor: _Optional[_Union[AcmTrustAnchor, _Mapping]] = ...) -> None: ...

class ListAcmTrustRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAcmTrustResponse(_message.Message):
    __slots__ = ("anchors",)
    ANCHORS_FIELD_NUMBER: _ClassVar[int]
    anchors: _containers.RepeatedCompositeFieldContainer[AcmTrustAnchor]
    def __init__(self, anchors: _Optional[_Iterable[_Union[AcmTrustAnchor, _Mapping]]] = ...) -> None: ...

class DeleteAcmTrustRequest(_message.Message):
    __slots__ = ("arn",)
    ARN_FIELD_NUMBER: _ClassVar[int]
    arn: str
    def __init__(self, arn: _Optional[str] = ...) -> None: ...

class DeleteAcmTrustResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
