import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Duration(_message.Message):
    __slots__ = ("unit", "value")
    UNIT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    unit: str
    value: int
    def __init__(self, unit: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...

class PortMapping(_message.Message):
    __slots__ = ("port", "protocol")
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    port: int
    protocol: str
    def __init__(self, port: _Optional[int] = ..., protocol: _Optional[str] = ...) -> None: ...

class MatchRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class HeaderMatchMethod(_message.Message):
    __slots__ = ("exact", "prefix", "regex", "suffix", "range")
    EXACT_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    REGEX_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    exact: str
    prefix: str
    regex: str
    suffix: str
    range: MatchRange
    def __init__(self, exact: _Optional[str] = ..., prefix: _Optional[str] = ..., regex: _Optional[str] = ..., suffix: _Optional[str] = ..., range: _Optional[_Union[MatchRange, _Mapping]] = ...) -> None: ...

class HttpRouteHeader(_message.Message):
    __slots__ = ("name", "invert", "match")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INVERT_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    invert: bool
    match: HeaderMatchMethod
    def __init__(self, name: _Optional[str] = ..., invert: _Optional[bool] = ..., match: _Optional[_Union[HeaderMatchMethod, _Mapping]] = ...) -> None: ...

class GrpcRouteMetadata(_message.Message):
    __slots__ = ("name", "invert", "match")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INVERT_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    invert: bool
    match: HeaderMatchMethod
    def __init__(self, name: _Optional[str] = ..., invert: _Optional[bool] = ..., match: _Optional[_Union[HeaderMatchMethod, _Mapping]] = ...) -> None: ...

class HttpPathMatch(_message.Message):
    __slots__ = ("exact", "regex")
    EXACT_FIELD_NUMBER: _ClassVar[int]
    REGEX_FIELD_NUMBER: _ClassVar[int]
    exact: str
    regex: str
    def __init__(self, exact: _Optional[str] = ..., regex: _Optional[str] = ...) -> None: ...

class QueryParameterMatch(_message.Message):
    __slots__ = ("exact",)
    EXACT_FIELD_NUMBER: _ClassVar[int]
    exact: str
    def __init__(self, exact: _Optional[str] = ...) -> None: ...

class HttpQueryParameter(_message.Message):
    __slots__ = ("name", "match")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    match: QueryParameterMatch
    def __init__(self, name: _Optional[str] = ..., match: _Optional[_Union[QueryParameterMatch, _Mapping]] = ...) -> None: ...

class ListenerTlsAcmCertificate(_message.Message):
    __slots__ = ("certificate_arn",)
    CERTIFICATE_ARN_FIELD_NUMBER: _ClassVar[int]
    certificate_arn: str
    def __init__(self, certificate_arn: _Optional[str] = ...) -> None: ...

class ListenerTlsFileCertificate(_message.Message):
    __slots__ = ("certificate_chain", "private_key")
    CERTIFICATE_CHAIN_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    certificate_chain: str
    private_key: str
    def __init__(self, certificate_chain: _Optional[str] = ..., private_key: _Optional[str] = ...) -> None: ...

class ListenerTlsSdsCertificate(_message.Message):
    __slots__ = ("secret_name",)
    SECRET_NAME_FIELD_NUMBER: _ClassVar[int]
    secret_name: str
    def __init__(self, secret_name: _Optional[str] = ...) -> None: ...

class ListenerTlsCertificate(_message.Message):
    __slots__ = ("acm", "file", "sds")
    ACM_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    SDS_FIELD_NUMBER: _ClassVar[int]
    acm: ListenerTlsAcmCertificate
    file: ListenerTlsFileCertificate
    sds: ListenerTlsSdsCertificate
    def __init__(self, acm: _Optional[_Union[ListenerTlsAcmCertificate, _Mapping]] = ..., file: _Optional[_Union[ListenerTlsFileCertificate, _Mapping]] = ..., sds: _Optional[_Union[ListenerTlsSdsCertificate, _Mapping]] = ...) -> None: ...

class ClientTlsCertificate(_message.Message):
    __slots__ = ("file", "sds")
    FILE_FIELD_NUMBER: _ClassVar[int]
    SDS_FIELD_NUMBER: _ClassVar[int]
    file: ListenerTlsFileCertificate
    sds: ListenerTlsSdsCertificate
    def __init__(self, file: _Optional[_Union[ListenerTlsFileCertificate, _Mapping]] = ..., sds: _Optional[_Union[ListenerTlsSdsCertificate, _Mapping]] = ...) -> None: ...

class TlsValidationContextAcmTrust(_message.Message):
    __slots__ = ("certificate_authority_arns",)
    CERTIFICATE_AUTHORITY_ARNS_FIELD_NUMBER: _ClassVar[int]
    certificate_authority_arns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, certificate_authority_arns: _Optional[_Iterable[str]] = ...) -> None: ...

class TlsValidationContextFileTrust(_message.Message):
    __slots__ = ("certificate_chain",)
    CERTIFICATE_CHAIN_FIELD_NUMBER: _ClassVar[int]
    certificate_chain: str
    def __init__(self, certificate_chain: _Optional[str] = ...) -> None: ...

class TlsValidationContextSdsTrust(_message.Message):
    __slots__ = ("secret_name",)
    SECRET_NAME_FIELD_NUMBER: _ClassVar[int]
    secret_name: str
    def __init__(self, secret_name: _Optional[str] = ...) -> None: ...

class SubjectAlternativeNameMatchers(_message.Message):
    __slots__ = ("exact",)
    EXACT_FIELD_NUMBER: _ClassVar[int]
    exact: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, exact: _Optional[_Iterable[str]] = ...) -> None: ...

class SubjectAlternativeNames(_message.Message):
    __slots__ = ("match",)
    MATCH_FIELD_NUMBER: _ClassVar[int]
    match: SubjectAlternativeNameMatchers
    def __init__(self, match: _Optional[_Union[SubjectAlternativeNameMatchers, _Mapping]] = ...) -> None: ...

class TlsValidationContextTrust(_message.Message):
    __slots__ = ("acm", "file", "sds")
    ACM_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    SDS_FIELD_NUMBER: _ClassVar[int]
    acm: TlsValidationContextAcmTrust
    file: TlsValidationContextFileTrust
    sds: TlsValidationContextSdsTrust
    def __init__(self, acm: _Optional[_Union[TlsValidationContextAcmTrust, _Mapping]] = ..., file: _Optional[_Union[TlsValidationContextFileTrust, _Mapping]] = ..., sds: _Optional[_Union[TlsValidationContextSdsTrust, _Mapping]] = ...) -> None: ...

class TlsValidationContext(_message.Message):
    __slots__ = ("trust", "subject_alternative_names")
    TRUST_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ALTERNATIVE_NAMES_FIELD_NUMBER: _ClassVar[int]
    trust: TlsValidationContextTrust
    subject_alternative_names: SubjectAlternativeNames
    def __init__(self, trust: _Optional[_Union[TlsValidationContextTrust, _Mapping]] = ..., subject_alternative_names: _Optional[_Union[SubjectAlternativeNames, _Mapping]] = ...) -> None: ...

class ListenerTlsValidationContextTrust(_message.Message):
    __slots__ = ("file", "sds")
    FILE_FIELD_NUMBER: _ClassVar[int]
    SDS_FIELD_NUMBER: _ClassVar[int]
    file: TlsValidationContextFileTrust
    sds: TlsValidationContextSdsTrust
    def __init__(self, file: _Optional[_Union[TlsValidationContextFileTrust, _Mapping]] = ..., sds: _Optional[_Union[TlsValidationContextSdsTrust, _Mapping]] = ...) -> None: ...

class ListenerTlsValidationContext(_message.Message):
    __slots__ = ("trust", "subject_alternative_names")
    TRUST_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ALTERNATIVE_NAMES_FIELD_NUMBER: _ClassVar[int]
    trust: ListenerTlsValidationContextTrust
    subject_alternative_names: SubjectAlternativeNames
    def __init__(self, trust: _Optional[_Union[ListenerTlsValidationContextTrust, _Mapping]] = ..., subject_alternative_names: _Optional[_Union[SubjectAlternativeNames, _Mapping]] = ...) -> None: ...

class ListenerTls(_message.Message):
    __slots__ = ("mode", "certificate", "validation")
    MODE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    mode: str
    certificate: ListenerTlsCertificate
    validation: ListenerTlsValidationContext
    def __init__(self, mode: _Optional[str] = ..., certificate: _Optional[_Union[ListenerTlsCertificate, _Mapping]] = ..., validation: _Optional[_Union[ListenerTlsValidationContext, _Mapping]] = ...) -> None: ...

class ClientPolicyTls(_message.Message):
    __slots__ = ("enforce", "ports", "certificate", "validation")
    ENFORCE_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    enforce: bool
    ports: _containers.RepeatedScalarFieldContainer[int]
    certificate: ClientTlsCertificate
    validation: TlsValidationContext
    def __init__(self, enforce: _Optional[bool] = ..., ports: _Optional[_Iterable[int]] = ..., certificate: _Optional[_Union[ClientTlsCertificate, _Mapping]] = ..., validation: _Optional[_Union[TlsValidationContext, _Mapping]] = ...) -> None: ...

class ClientPolicy(_message.Message):
    __slots__ = ("tls",)
    TLS_FIELD_NUMBER: _ClassVar[int]
    tls: ClientPolicyTls
    def __init__(self, tls: _Optional[_Union[ClientPolicyTls, _Mapping]] = ...) -> None: ...

class BackendDefaults(_message.Message):
    __slots__ = ("client_policy",)
    CLIENT_POLICY_FIELD_NUMBER: _ClassVar[int]
    client_policy: ClientPolicy
    def __init__(self, client_policy: _Optional[_Union[ClientPolicy, _Mapping]] = ...) -> None: ...

class HealthCheckPolicy(_message.Message):
    __slots__ = ("healthy_threshold", "interval_millis", "path", "port", "protocol", "timeout_millis", "unhealthy_threshold")
    HEALTHY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MILLIS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MILLIS_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    healthy_threshold: int
    interval_millis: int
    path: str
    port: int
    protocol: str
    timeout_millis: int
    unhealthy_threshold: int
    def __init__(self, healthy_threshold: _Optional[int] = ..., interval_millis: _Optional[int] = ..., path: _Optional[str] = ..., port: _Optional[int] = ..., protocol: _Optional[str] = ..., timeout_millis: _Optional[int] = ..., unhealthy_threshold: _Optional[int] = ...) -> None: ...

class HttpTimeout(_message.Message):
    __slots__ = ("idle", "per_request")
    IDLE_FIELD_NUMBER: _ClassVar[int]
    PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    idle: Duration
    per_request: Duration
    def __init__(self, idle: _Optional[_Union[Duration, _Mapping]] = ..., per_request: _Optional[_Union[Duration, _Mapping]] = ...) -> None: ...

class GrpcTimeout(_message.Message):
    __slots__ = ("idle", "per_request")
    IDLE_FIELD_NUMBER: _ClassVar[int]
    PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    idle: Duration
    per_request: Duration
    def __init__(self, idle: _Optional[_Union[Duration, _Mapping]] = ..., per_request: _Optional[_Union[Duration, _Mapping]] = ...) -> None: ...

class TcpTimeout(_message.Message):
    __slots__ = ("idle",)
    IDLE_FIELD_NUMBER: _ClassVar[int]
    idle: Duration
    def __init__(self, idle: _Optional[_Union[Duration, _Mapping]] = ...) -> None: ...

class ListenerTimeout(_message.Message):
    __slots__ = ("grpc", "http", "http2", "tcp")
    GRPC_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    HTTP2_FIELD_NUMBER: _ClassVar[int]
    TCP_FIELD_NUMBER: _ClassVar[int]
    grpc: GrpcTimeout
    http: HttpTimeout
    http2: HttpTimeout
    tcp: TcpTimeout
    def __init__(self, grpc: _Optional[_Union[GrpcTimeout, _Mapping]] = ..., http: _Optional[_Union[HttpTimeout, _Mapping]] = ..., http2: _Optional[_Union[HttpTimeout, _Mapping]] = ..., tcp: _Optional[_Union[TcpTimeout, _Mapping]] = ...) -> None: ...

class OutlierDetection(_message.Message):
    __slots__ = ("base_ejection_duration", "interval", "max_ejection_percent", "max_server_errors")
    BASE_EJECTION_DURATION_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MAX_EJECTION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MAX_SERVER_ERRORS_FIELD_NUMBER: _ClassVar[int]
    base_ejection_duration: Duration
    interval: Duration
    max_ejection_percent: int
    max_server_errors: int
    def __init__(self, base_ejection_duration: _Optional[_Union[Duration, _Mapping]] = ..., interval: _Optional[_Union[Duration, _Mapping]] = ..., max_ejection_percent: _Optional[int] = ..., max_server_errors: _Optional[int] = ...) -> None: ...

class VirtualNodeGrpcConnectionPool(_message.Message):
    __slots__ = ("max_requests",)
    MAX_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    max_requests: int
    def __init__(self, max_requests: _Optional[int] = ...) -> None: ...

class VirtualNodeHttpConnectionPool(_message.Message):
    __slots__ = ("max_connections", "max_pending_requests")
    MAX_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_PENDING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    max_connections: int
    max_pending_requests: int
    def __init__(self, max_connections: _Optional[int] = ..., max_pending_requests: _Optional[int] = ...) -> None: ...

class VirtualNodeHttp2ConnectionPool(_message.Message):
    __slots__ = ("max_requests",)
    MAX_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    max_requests: int
    def __init__(self, max_requests: _Optional[int] = ...) -> None: ...

class VirtualNodeTcpConnectionPool(_message.Message):
    __slots__ = ("max_connections",)
    MAX_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    max_connections: int
    def __init__(self, max_connections: _Optional[int] = ...) -> None: ...

class VirtualNodeConnectionPool(_message.Message):
    __slots__ = ("grpc", "http", "http2", "tcp")
    GRPC_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    HTTP2_FIELD_NUMBER: _ClassVar[int]
    TCP_FIELD_NUMBER: _ClassVar[int]
    grpc: VirtualNodeGrpcConnectionPool
    http: VirtualNodeHttpConnectionPool
    http2: VirtualNodeHttp2ConnectionPool
    tcp: VirtualNodeTcpConnectionPool
    def __init__(self, grpc: _Optional[_Union[VirtualNodeGrpcConnectionPool, _Mapping]] = ..., http: _Optional[_Union[VirtualNodeHttpConnectionPool, _Mapping]] = ..., http2: _Optional[_Union[VirtualNodeHttp2ConnectionPool, _Mapping]] = ..., tcp: _Optional[_Union[VirtualNodeTcpConnectionPool, _Mapping]] = ...) -> None: ...

class VirtualGatewayConnectionPool(_message.Message):
    __slots__ = ("grpc", "http", "http2")
    GRPC_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    HTTP2_FIELD_NUMBER: _ClassVar[int]
    grpc: VirtualNodeGrpcConnectionPool
    http: VirtualNodeHttpConnectionPool
    http2: VirtualNodeHttp2ConnectionPool
    def __init__(self, grpc: _Optional[_Union[VirtualNodeGrpcConnectionPool, _Mapping]] = ..., http: _Optional[_Union[VirtualNodeHttpConnectionPool, _Mapping]] = ..., http2: _Optional[_Union[VirtualNodeHttp2ConnectionPool, _Mapping]] = ...) -> None: ...

class JsonFormatRef(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class LoggingFormat(_message.Message):
    __slots__ = ("text", "json")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    text: str
    json: _containers.RepeatedCompositeFieldContainer[JsonFormatRef]
    def __init__(self, text: _Optional[str] = ..., json: _Optional[_Iterable[_Union[JsonFormatRef, _Mapping]]] = ...) -> None: ...

class FileAccessLog(_message.Message):
    __slots__ = ("path", "format")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    path: str
    format: LoggingFormat
    def __init__(self, path: _Optional[str] = ..., format: _Optional[_Union[LoggingFormat, _Mapping]] = ...) -> None: ...

class AccessLog(_message.Message):
    __slots__ = ("file",)
    FILE_FIELD_NUMBER: _ClassVar[int]
    file: FileAccessLog
    def __init__(self, file: _Optional[_Union[FileAccessLog, _Mapping]] = ...) -> None: ...

class Logging(_message.Message):
    __slots__ = ("access_log",)
    ACCESS_LOG_FIELD_NUMBER: _ClassVar[int]
    access_log: AccessLog
    def __init__(self, access_log: _Optional[_Union[AccessLog, _Mapping]] = ...) -> None: ...

class EgressFilter(_message.Message):
    __slots__ = ("type",)
    TYPE_FIELD_NUMBER: _ClassVar[int]
    type: str
    def __init__(self, type: _Optional[str] = ...) -> None: ...

class MeshServiceDiscovery(_message.Message):
    __slots__ = ("ip_preference",)
    IP_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    ip_preference: str
    def __init__(self, ip_preference: _Optional[str] = ...) -> None: ...

class MeshSpec(_message.Message):
    __slots__ = ("egress_filter", "service_discovery")
    EGRESS_FILTER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_DISCOVERY_FIELD_NUMBER: _ClassVar[int]
    egress_filter: EgressFilter
    service_discovery: MeshServiceDiscovery
    def __init__(self, egress_filter: _Optional[_Union[EgressFilter, _Mapping]] = ..., service_discovery: _Optional[_Union[MeshServiceDiscovery, _Mapping]] = ...) -> None: ...

class Listener(_message.Message):
    __slots__ = ("port_mapping", "health_check", "timeout", "tls", "outlier_detection", "connection_pool")
    PORT_MAPPING_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    OUTLIER_DETECTION_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_POOL_FIELD_NUMBER: _ClassVar[int]
    port_mapping: PortMapping
    health_check: HealthCheckPolicy
    timeout: ListenerTimeout
    tls: ListenerTls
    outlier_detection: OutlierDetection
    connection_pool: VirtualNodeConnectionPool
    def __init__(self, port_mapping: _Optional[_Union[PortMapping, _Mapping]] = ..., health_check: _Optional[_Union[HealthCheckPolicy, _Mapping]] = ..., timeout: _Optional[_Union[ListenerTimeout, _Mapping]] = ..., tls: _Optional[_Union[ListenerTls, _Mapping]] = ..., outlier_detection: _Optional[_Union[OutlierDetection, _Mapping]] = ..., connection_pool: _Optional[_Union[VirtualNodeConnectionPool, _Mapping]] = ...) -> None: ...

class DnsServiceDiscovery(_message.Message):
    __slots__ = ("hostname", "ip_preference", "response_type")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    IP_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TYPE_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    ip_preference: str
    response_type: str
    def __init__(self, hostname: _Optional[str] = ..., ip_preference: _Optional[str] = ..., response_type: _Optional[str] = ...) -> None: ...

class AwsCloudMapInstanceAttribute(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class AwsCloudMapServiceDiscovery(_message.Message):
    __slots__ = ("namespace_name", "service_name", "attributes", "ip_preference")
    NAMESPACE_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    IP_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    namespace_name: str
    service_name: str
    attributes: _containers.RepeatedCompositeFieldContainer[AwsCloudMapInstanceAttribute]
    ip_preference: str
    def __init__(self, namespace_name: _Optional[str] = ..., service_name: _Optional[str] = ..., attributes: _Optional[_Iterable[_Union[AwsCloudMapInstanceAttribute, _Mapping]]] = ..., ip_preference: _Optional[str] = ...) -> None: ...

class ServiceDiscovery(_message.Message):
    __slots__ = ("dns", "aws_cloud_map")
    DNS_FIELD_NUMBER: _ClassVar[int]
    AWS_CLOUD_MAP_FIELD_NUMBER: _ClassVar[int]
    dns: DnsServiceDiscovery
    aws_cloud_map: AwsCloudMapServiceDiscovery
    def __init__(self, dns: _Optional[_Union[DnsServiceDiscovery, _Mapping]] = ..., aws_cloud_map: _Optional[_Union[AwsCloudMapServiceDiscovery, _Mapping]] = ...) -> None: ...

class VirtualServiceBackend(_message.Message):
    __slots__ = ("virtual_service_name", "client_policy")
    VIRTUAL_SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_POLICY_FIELD_NUMBER: _ClassVar[int]
    virtual_service_name: str
    client_policy: ClientPolicy
    def __init__(self, virtual_service_name: _Optional[str] = ..., client_policy: _Optional[_Union[ClientPolicy, _Mapping]] = ...) -> None: ...

class Backend(_message.Message):
    __slots__ = ("virtual_service",)
    VIRTUAL_SERVICE_FIELD_NUMBER: _ClassVar[int]
    virtual_service: VirtualServiceBackend
    def __init__(self, virtual_service: _Optional[_Union[VirtualServiceBackend, _Mapping]] = ...) -> None: ...

class VirtualNodeSpec(_message.Message):
    __slots__ = ("listeners", "service_discovery", "backends", "backend_defaults", "logging")
    LISTENERS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_DISCOVERY_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    LOGGING_FIELD_NUMBER: _ClassVar[int]
    listeners: _containers.RepeatedCompositeFieldContainer[Listener]
    service_discovery: ServiceDiscovery
    backends: _containers.RepeatedCompositeFieldContainer[Backend]
    backend_defaults: BackendDefaults
    logging: Logging
    def __init__(self, listeners: _Optional[_Iterable[_Union[Listener, _Mapping]]] = ..., service_discovery: _Optional[_Union[ServiceDiscovery, _Mapping]] = ..., backends: _Optional[_Iterable[_Union[Backend, _Mapping]]] = ..., backend_defaults: _Optional[_Union[BackendDefaults, _Mapping]] = ..., logging: _Optional[_Union[Logging, _Mapping]] = ...) -> None: ...

class VirtualNodeServiceProvider(_message.Message):
    __slots__ = ("virtual_node_name",)
    VIRTUAL_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    virtual_node_name: str
    def __init__(self, virtual_node_name: _Optional[str] = ...) -> None: ...

class VirtualRouterServiceProvider(_message.Message):
    __slots__ = ("virtual_router_name",)
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    virtual_router_name: str
    def __init__(self, virtual_router_name: _Optional[str] = ...) -> None: ...

class VirtualServiceProvider(_message.Message):
    __slots__ = ("virtual_node", "virtual_router")
    VIRTUAL_NODE_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_ROUTER_FIELD_NUMBER: _ClassVar[int]
    virtual_node: VirtualNodeServiceProvider
    virtual_router: VirtualRouterServiceProvider
    def __init__(self, virtual_node: _Optional[_Union[VirtualNodeServiceProvider, _Mapping]] = ..., virtual_router: _Optional[_Union[VirtualRouterServiceProvider, _Mapping]] = ...) -> None: ...

class VirtualServiceSpec(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: VirtualServiceProvider
    def __init__(self, provider: _Optional[_Union[VirtualServiceProvider, _Mapping]] = ...) -> None: ...

class VirtualRouterListener(_message.Message):
    __slots__ = ("port_mapping",)
    PORT_MAPPING_FIELD_NUMBER: _ClassVar[int]
    port_mapping: PortMapping
    def __init__(self, port_mapping: _Optional[_Union[PortMapping, _Mapping]] = ...) -> None: ...

class VirtualRouterSpec(_message.Message):
    __slots__ = ("listeners",)
    LISTENERS_FIELD_NUMBER: _ClassVar[int]
    listeners: _containers.RepeatedCompositeFieldContainer[VirtualRouterListener]
    def __init__(self, listeners: _Optional[_Iterable[_Union[VirtualRouterListener, _Mapping]]] = ...) -> None: ...

class WeightedTarget(_message.Message):
    __slots__ = ("virtual_node", "weight", "port")
    VIRTUAL_NODE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    virtual_node: str
    weight: int
    port: int
    def __init__(self, virtual_node: _Optional[str] = ..., weight: _Optional[int] = ..., port: _Optional[int] = ...) -> None: ...

class RouteAction(_message.Message):
    __slots__ = ("weighted_targets",)
    WEIGHTED_TARGETS_FIELD_NUMBER: _ClassVar[int]
    weighted_targets: _containers.RepeatedCompositeFieldContainer[WeightedTarget]
    def __init__(self, weighted_targets: _Optional[_Iterable[_Union[WeightedTarget, _Mapping]]] = ...) -> None: ...

class HttpRouteMatch(_message.Message):
    __slots__ = ("prefix", "path", "query_parameters", "headers", "method", "scheme", "port")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    path: HttpPathMatch
    query_parameters: _containers.RepeatedCompositeFieldContainer[HttpQueryParameter]
    headers: _containers.RepeatedCompositeFieldContainer[HttpRouteHeader]
    method: str
    scheme: str
    port: int
    def __init__(self, prefix: _Optional[str] = ..., path: _Optional[_Union[HttpPathMatch, _Mapping]] = ..., query_parameters: _Optional[_Iterable[_Union[HttpQueryParameter, _Mapping]]] = ..., headers: _Optional[_Iterable[_Union[HttpRouteHeader, _Mapping]]] = ..., method: _Optional[str] = ..., scheme: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class HttpRetryPolicy(_message.Message):
    __slots__ = ("max_retries", "per_retry_timeout", "http_retry_events", "tcp_retry_events")
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    PER_RETRY_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    HTTP_RETRY_EVENTS_FIELD_NUMBER: _ClassVar[int]
    TCP_RETRY_EVENTS_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    per_retry_timeout: Duration
    http_retry_events: _containers.RepeatedScalarFieldContainer[str]
    tcp_retry_events: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, max_retries: _Optional[int] = ..., per_retry_timeout: _Optional[_Union[Duration, _Mapping]] = ..., http_retry_events: _Optional[_Iterable[str]] = ..., tcp_retry_events: _Optional[_Iterable[str]] = ...) -> None: ...

class HttpRoute(_message.Message):
    __slots__ = ("match", "action", "retry_policy", "timeout")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    match: HttpRouteMatch
    action: RouteAction
    retry_policy: HttpRetryPolicy
    timeout: HttpTimeout
    def __init__(self, match: _Optional[_Union[HttpRouteMatch, _Mapping]] = ..., action: _Optional[_Union[RouteAction, _Mapping]] = ..., retry_policy: _Optional[_Union[HttpRetryPolicy, _Mapping]] = ..., timeout: _Optional[_Union[HttpTimeout, _Mapping]] = ...) -> None: ...

class GrpcRouteMatch(_message.Message):
    __slots__ = ("service_name", "method_name", "metadata", "port")
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    METHOD_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    method_name: str
    metadata: _containers.RepeatedCompositeFieldContainer[GrpcRouteMetadata]
    port: int
    def __init__(self, service_name: _Optional[str] = ..., method_name: _Optional[str] = ..., metadata: _Optional[_Iterable[_Union[GrpcRouteMetadata, _Mapping]]] = ..., port: _Optional[int] = ...) -> None: ...

class GrpcRetryPolicy(_message.Message):
    __slots__ = ("max_retries", "per_retry_timeout", "grpc_retry_events", "http_retry_events", "tcp_retry_events")
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    PER_RETRY_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    GRPC_RETRY_EVENTS_FIELD_NUMBER: _ClassVar[int]
    HTTP_RETRY_EVENTS_FIELD_NUMBER: _ClassVar[int]
    TCP_RETRY_EVENTS_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    per_retry_timeout: Duration
    grpc_retry_events: _containers.RepeatedScalarFieldContainer[str]
    http_retry_events: _containers.RepeatedScalarFieldContainer[str]
    tcp_retry_events: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, max_retries: _Optional[int] = ..., per_retry_timeout: _Optional[_Union[Duration, _Mapping]] = ..., grpc_retry_events: _Optional[_Iterable[str]] = ..., http_retry_events: _Optional[_Iterable[str]] = ..., tcp_retry_events: _Optional[_Iterable[str]] = ...) -> None: ...

class GrpcRoute(_message.Message):
    __slots__ = ("match", "action", "retry_policy", "timeout")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    match: GrpcRouteMatch
    action: RouteAction
    retry_policy: GrpcRetryPolicy
    timeout: GrpcTimeout
    def __init__(self, match: _Optional[_Union[GrpcRouteMatch, _Mapping]] = ..., action: _Optional[_Union[RouteAction, _Mapping]] = ..., retry_policy: _Optional[_Union[GrpcRetryPolicy, _Mapping]] = ..., timeout: _Optional[_Union[GrpcTimeout, _Mapping]] = ...) -> None: ...

class TcpRouteMatch(_message.Message):
    __slots__ = ("port",)
    PORT_FIELD_NUMBER: _ClassVar[int]
    port: int
    def __init__(self, port: _Optional[int] = ...) -> None: ...

class TcpRoute(_message.Message):
    __slots__ = ("match", "action", "timeout")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    match: TcpRouteMatch
    action: RouteAction
    timeout: TcpTimeout
    def __init__(self, match: _Optional[_Union[TcpRouteMatch, _Mapping]] = ..., action: _Optional[_Union[RouteAction, _Mapping]] = ..., timeout: _Optional[_Union[TcpTimeout, _Mapping]] = ...) -> None: ...

class RouteSpec(_message.Message):
    __slots__ = ("priority", "http_route", "http2_route", "grpc_route", "tcp_route")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    HTTP_ROUTE_FIELD_NUMBER: _ClassVar[int]
    HTTP2_ROUTE_FIELD_NUMBER: _ClassVar[int]
    GRPC_ROUTE_FIELD_NUMBER: _ClassVar[int]
    TCP_ROUTE_FIELD_NUMBER: _ClassVar[int]
    priority: int
    http_route: HttpRoute
    http2_route: HttpRoute
    grpc_route: GrpcRoute
    tcp_route: TcpRoute
    def __init__(self, priority: _Optional[int] = ..., http_route: _Optional[_Union[HttpRoute, _Mapping]] = ..., http2_route: _Optional[_Union[HttpRoute, _Mapping]] = ..., grpc_route: _Optional[_Union[GrpcRoute, _Mapping]] = ..., tcp_route: _Optional[_Union[TcpRoute, _Mapping]] = ...) -> None: ...

class VirtualGatewayListener(_message.Message):
    __slots__ = ("port_mapping", "health_check", "tls", "connection_pool")
    PORT_MAPPING_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECK_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_POOL_FIELD_NUMBER: _ClassVar[int]
    port_mapping: PortMapping
    health_check: HealthCheckPolicy
    tls: ListenerTls
    connection_pool: VirtualGatewayConnectionPool
    def __init__(self, port_mapping: _Optional[_Union[PortMapping, _Mapping]] = ..., health_check: _Optional[_Union[HealthCheckPolicy, _Mapping]] = ..., tls: _Optional[_Union[ListenerTls, _Mapping]] = ..., connection_pool: _Optional[_Union[VirtualGatewayConnectionPool, _Mapping]] = ...) -> None: ...

class VirtualGatewaySpec(_message.Message):
    __slots__ = ("listeners", "backend_defaults", "logging")
    LISTENERS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    LOGGING_FIELD_NUMBER: _ClassVar[int]
    listeners: _containers.RepeatedCompositeFieldContainer[VirtualGatewayListener]
    backend_defaults: BackendDefaults
    logging: Logging
    def __init__(self, listeners: _Optional[_Iterable[_Union[VirtualGatewayListener, _Mapping]]] = ..., backend_defaults: _Optional[_Union[BackendDefaults, _Mapping]] = ..., logging: _Optional[_Union[Logging, _Mapping]] = ...) -> None: ...

class GatewayRouteVirtualService(_message.Message):
    __slots__ = ("virtual_service_name",)
    VIRTUAL_SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    virtual_service_name: str
    def __init__(self, virtual_service_name: _Optional[str] = ...) -> None: ...

class GatewayRouteTarget(_message.Message):
    __slots__ = ("virtual_service", "port")
    VIRTUAL_SERVICE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    virtual_service: GatewayRouteVirtualService
    port: int
    def __init__(self, virtual_service: _Optional[_Union[GatewayRouteVirtualService, _Mapping]] = ..., port: _Optional[int] = ...) -> None: ...

class GatewayRouteHostnameMatch(_message.Message):
    __slots__ = ("exact", "suffix")
    EXACT_FIELD_NUMBER: _ClassVar[int]
    SUFFIX_FIELD_NUMBER: _ClassVar[int]
    exact: str
    suffix: str
    def __init__(self, exact: _Optional[str] = ..., suffix: _Optional[str] = ...) -> None: ...

class GatewayRouteHostnameRewrite(_message.Message):
    __slots__ = ("default_target_hostname",)
    DEFAULT_TARGET_HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    default_target_hostname: str
    def __init__(self, default_target_hostname: _Optional[str] = ...) -> None: ...

class HttpGatewayRoutePrefixRewrite(_message.Message):
    __slots__ = ("default_prefix", "value")
    DEFAULT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    default_prefix: str
    value: str
    def __init__(self, default_prefix: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class HttpGatewayRoutePathRewrite(_message.Message):
    __slots__ = ("exact",)
    EXACT_FIELD_NUMBER: _ClassVar[int]
    exact: str
    def __init__(self, exact: _Optional[str] = ...) -> None: ...

class HttpGatewayRouteRewrite(_message.Message):
    __slots__ = ("hostname", "prefix", "path")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    hostname: GatewayRouteHostnameRewrite
    prefix: HttpGatewayRoutePrefixRewrite
    path: HttpGatewayRoutePathRewrite
    def __init__(self, hostname: _Optional[_Union[GatewayRouteHostnameRewrite, _Mapping]] = ..., prefix: _Optional[_Union[HttpGatewayRoutePrefixRewrite, _Mapping]] = ..., path: _Optional[_Union[HttpGatewayRoutePathRewrite, _Mapping]] = ...) -> None: ...

class HttpGatewayRouteAction(_message.Message):
    __slots__ = ("target", "rewrite")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REWRITE_FIELD_NUMBER: _ClassVar[int]
    target: GatewayRouteTarget
    rewrite: HttpGatewayRouteRewrite
    def __init__(self, target: _Optional[_Union[GatewayRouteTarget, _Mapping]] = ..., rewrite: _Optional[_Union[HttpGatewayRouteRewrite, _Mapping]] = ...) -> None: ...

class HttpGatewayRouteMatch(_message.Message):
    __slots__ = ("prefix", "path", "query_parameters", "headers", "hostname", "method", "port")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    path: HttpPathMatch
    query_parameters: _containers.RepeatedCompositeFieldContainer[HttpQueryParameter]
    headers: _containers.RepeatedCompositeFieldContainer[HttpRouteHeader]
    hostname: GatewayRouteHostnameMatch
    method: str
    port: int
    def __init__(self, prefix: _Optional[str] = ..., path: _Optional[_Union[HttpPathMatch, _Mapping]] = ..., query_parameters: _Optional[_Iterable[_Union[HttpQueryParameter, _Mapping]]] = ..., headers: _Optional[_Iterable[_Union[HttpRouteHeader, _Mapping]]] = ..., hostname: _Optional[_Union[GatewayRouteHostnameMatch, _Mapping]] = ..., method: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class HttpGatewayRoute(_message.Message):
    __slots__ = ("match", "action")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    match: HttpGatewayRouteMatch
    action: HttpGatewayRouteAction
    def __init__(self, match: _Optional[_Union[HttpGatewayRouteMatch, _Mapping]] = ..., action: _Optional[_Union[HttpGatewayRouteAction, _Mapping]] = ...) -> None: ...

class GrpcGatewayRouteRewrite(_message.Message):
    __slots__ = ("hostname",)
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    hostname: GatewayRouteHostnameRewrite
    def __init__(self, hostname: _Optional[_Union[GatewayRouteHostnameRewrite, _Mapping]] = ...) -> None: ...

class GrpcGatewayRouteAction(_message.Message):
    __slots__ = ("target", "rewrite")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REWRITE_FIELD_NUMBER: _ClassVar[int]
    target: GatewayRouteTarget
    rewrite: GrpcGatewayRouteRewrite
    def __init__(self, target: _Optional[_Union[GatewayRouteTarget, _Mapping]] = ..., rewrite: _Optional[_Union[GrpcGatewayRouteRewrite, _Mapping]] = ...) -> None: ...

class GrpcGatewayRouteMatch(_message.Message):
    __slots__ = ("service_name", "hostname", "metadata", "port")
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    hostname: GatewayRouteHostnameMatch
    metadata: _containers.RepeatedCompositeFieldContainer[GrpcRouteMetadata]
    port: int
    def __init__(self, service_name: _Optional[str] = ..., hostname: _Optional[_Union[GatewayRouteHostnameMatch, _Mapping]] = ..., metadata: _Optional[_Iterable[_Union[GrpcRouteMetadata, _Mapping]]] = ..., port: _Optional[int] = ...) -> None: ...

class GrpcGatewayRoute(_message.Message):
    __slots__ = ("match", "action")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    match: GrpcGatewayRouteMatch
    action: GrpcGatewayRouteAction
    def __init__(self, match: _Optional[_Union[GrpcGatewayRouteMatch, _Mapping]] = ..., action: _Optional[_Union[GrpcGatewayRouteAction, _Mapping]] = ...) -> None: ...

class GatewayRouteSpec(_message.Message):
    __slots__ = ("priority", "http_route", "http2_route", "grpc_route")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    HTTP_ROUTE_FIELD_NUMBER: _ClassVar[int]
    HTTP2_ROUTE_FIELD_NUMBER: _ClassVar[int]
    GRPC_ROUTE_FIELD_NUMBER: _ClassVar[int]
    priority: int
    http_route: HttpGatewayRoute
    http2_route: HttpGatewayRoute
    grpc_route: GrpcGatewayRoute
    def __init__(self, priority: _Optional[int] = ..., http_route: _Optional[_Union[HttpGatewayRoute, _Mapping]] = ..., http2_route: _Optional[_Union[HttpGatewayRoute, _Mapping]] = ..., grpc_route: _Optional[_Union[GrpcGatewayRoute, _Mapping]] = ...) -> None: ...

class MeshStatus(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class VirtualNodeStatus(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class VirtualServiceStatus(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class VirtualRouterStatus(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class RouteStatus(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class VirtualGatewayStatus(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class GatewayRouteStatus(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class RouteReference(_message.Message):
    __slots__ = ("virtual_router_name", "route_name")
    VIRTUAL_ROUTER_NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    virtual_router_name: str
    route_name: str
    def __init__(self, virtual_router_name: _Optional[str] = ..., route_name: _Optional[str] = ...) -> None: ...

class FaultDelay(_message.Message):
    __slots__ = ("percentage", "fixed_delay", "jitter")
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    FIXED_DELAY_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    percentage: float
    fixed_delay: Duration
    jitter: Duration
    def __init__(self, percentage: _Optional[float] = ..., fixed_delay: _Optional[_Union[Duration, _Mapping]] = ..., jitter: _Optional[_Union[Duration, _Mapping]] = ...) -> None: ...

class FaultAbort(_message.Message):
    __slots__ = ("percentage", "http_status", "grpc_status")
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    GRPC_STATUS_FIELD_NUMBER: _ClassVar[int]
    percentage: float
    http_status: int
    grpc_status: int
    def __init__(self, percentage: _Optional[float] = ..., http_status: _Optional[int] = ..., grpc_status: _Optional[int] = ...) -> None: ...

class FaultInjection(_message.Message):
    __slots__ = ("delay", "abort", "match")
    DELAY_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    delay: FaultDelay
    abort: FaultAbort
    match: _containers.RepeatedCompositeFieldContainer[HttpRouteHeader]
    def __init__(self, delay: _Optional[_Union[FaultDelay, _Mapping]] = ..., abort: _Optional[_Union[FaultAbort, _Mapping]] = ..., match: _Optional[_Iterable[_Union[HttpRouteHeader, _Mapping]]] = ...) -> None: ...

class TrafficMirror(_message.Message):
    __slots__ = ("virtual_node", "percentage", "port", "max_in_flight", "max_body_bytes")
    VIRTUAL_NODE_FIELD_NUMBER: _ClassVar[int]
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_BODY_BYTES_FIELD_NUMBER: _ClassVar[int]
    virtual_node: str
    percentage: float
    port: int
    max_in_flight: int
    max_body_bytes: int
    def __init__(self, virtual_node: _Optional[str] = ..., percentage: _Optional[float] = ..., port: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., max_body_bytes: _Optional[int] = ...) -> None: ...

class RateLimit(_message.Message):
    __slots__ = ("max_tokens", "tokens_per_fill", "fill_interval")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_FILL_FIELD_NUMBER: _ClassVar[int]
    FILL_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    tokens_per_fill: int
    fill_interval: Duration
    def __init__(self, max_tokens: _Optional[int] = ..., tokens_per_fill: _Optional[int] = ..., fill_interval: _Optional[_Union[Duration, _Mapping]] = ...) -> None: ...

class RoutePolicySpec(_message.Message):
    __slots__ = ("route", "fault", "mirror", "rate_limit")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    MIRROR_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    route: RouteReference
    fault: FaultInjection
    mirror: TrafficMirror
    rate_limit: RateLimit
    def __init__(self, route: _Optional[_Union[RouteReference, _Mapping]] = ..., fault: _Optional[_Union[FaultInjection, _Mapping]] = ..., mirror: _Optional[_Union[TrafficMirror, _Mapping]] = ..., rate_limit: _Optional[_Union[RateLimit, _Mapping]] = ...) -> None: ...

class RoutePolicyStatus(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class ListenerRateLimit(_message.Message):
    __slots__ = ("port", "rate_limit")
    PORT_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    port: int
    rate_limit: RateLimit
    def __init__(self, port: _Optional[int] = ..., rate_limit: _Optional[_Union[RateLimit, _Mapping]] = ...) -> None: ...

class LocalityBalancing(_message.Message):
    __slots__ = ("enabled", "overprovisioning_factor")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    OVERPROVISIONING_FACTOR_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    overprovisioning_factor: int
    def __init__(self, enabled: _Optional[bool] = ..., overprovisioning_factor: _Optional[int] = ...) -> None: ...

class NodePolicySpec(_message.Message):
    __slots__ = ("virtual_node_name", "listener_rate_limits", "locality")
    VIRTUAL_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    LISTENER_RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    LOCALITY_FIELD_NUMBER: _ClassVar[int]
    virtual_node_name: str
    listener_rate_limits: _containers.RepeatedCompositeFieldContainer[ListenerRateLimit]
    locality: LocalityBalancing
    def __init__(self, virtual_node_name: _Optional[str] = ..., listener_rate_limits: _Optional[_Iterable[_Union[ListenerRateLimit, _Mapping]]] = ..., locality: _Optional[_Union[LocalityBalancing, _Mapping]] = ...) -> None: ...

class NodePolicyStatus(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class RolloutTarget(_message.Message):
    __slots__ = ("virtual_node", "port")
    VIRTUAL_NODE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    virtual_node: str
    port: int
    def __init__(self, virtual_node: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class RolloutStep(_message.Message):
    __slots__ = ("weight", "min_duration", "min_requests")
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MIN_DURATION_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    weight: int
    min_duration: Duration
    min_requests: int
    def __init__(self, weight: _Optional[int] = ..., min_duration: _Optional[_Union[Duration, _Mapping]] = ..., min_requests: _Optional[int] = ...) -> None: ...

class PrometheusCheck(_message.Message):
    __slots__ = ("address", "query", "min", "max")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    address: str
    query: str
    min: float
    max: float
    def __init__(self, address: _Optional[str] = ..., query: _Optional[str] = ..., min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class RolloutAnalysis(_message.Message):
    __slots__ = ("interval", "min_success_rate", "max_latency_p99", "max_latency_p99_ratio", "prometheus", "min_requests_to_fail")
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MIN_SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_P99_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_P99_RATIO_FIELD_NUMBER: _ClassVar[int]
    PROMETHEUS_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_TO_FAIL_FIELD_NUMBER: _ClassVar[int]
    interval: Duration
    min_success_rate: float
    max_latency_p99: Duration
    max_latency_p99_ratio: float
    prometheus: PrometheusCheck
    min_requests_to_fail: int
    def __init__(self, interval: _Optional[_Union[Duration, _Mapping]] = ..., min_success_rate: _Optional[float] = ..., max_latency_p99: _Optional[_Union[Duration, _Mapping]] = ..., max_latency_p99_ratio: _Optional[float] = ..., prometheus: _Optional[_Union[PrometheusCheck, _Mapping]] = ..., min_requests_to_fail: _Optional[int] = ...) -> None: ...

class RolloutSpec(_message.Message):
    __slots__ = ("route", "stable", "canary", "steps", "analysis", "paused", "abort", "promote")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_FIELD_NUMBER: _ClassVar[int]
    route: RouteReference
    stable: RolloutTarget
    canary: RolloutTarget
    steps: _containers.RepeatedCompositeFieldContainer[RolloutStep]
    analysis: RolloutAnalysis
    paused: bool
    abort: bool
    promote: bool
    def __init__(self, route: _Optional[_Union[RouteReference, _Mapping]] = ..., stable: _Optional[_Union[RolloutTarget, _Mapping]] = ..., canary: _Optional[_Union[RolloutTarget, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[RolloutStep, _Mapping]]] = ..., analysis: _Optional[_Union[RolloutAnalysis, _Mapping]] = ..., paused: _Optional[bool] = ..., abort: _Optional[bool] = ..., promote: _Optional[bool] = ...) -> None: ...

class RolloutStepRecord(_message.Message):
    __slots__ = ("step", "weight", "started_at", "ended_at", "result", "reason", "canary_requests", "canary_success_rate", "canary_p99_ms", "stable_p99_ms", "stable_requests")
    STEP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANARY_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    CANARY_SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    CANARY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    STABLE_P99_MS_FIELD_NUMBER: _ClassVar[int]
    STABLE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    step: int
    weight: int
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    result: str
    reason: str
    canary_requests: int
    canary_success_rate: float
    canary_p99_ms: float
    stable_p99_ms: float
    stable_requests: int
    def __init__(self, step: _Optional[int] = ..., weight: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., result: _Optional[str] = ..., reason: _Optional[str] = ..., canary_requests: _Optional[int] = ..., canary_success_rate: _Optional[float] = ..., canary_p99_ms: _Optional[float] = ..., stable_p99_ms: _Optional[float] = ..., stable_requests: _Optional[int] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("status", "phase", "step", "canary_weight", "step_started_at", "message", "controller", "history", "current")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CANARY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEP_STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    status: str
    phase: str
    step: int
    canary_weight: int
    step_started_at: _timestamp_pb2.Timestamp
    message: str
    controller: str
    history: _containers.RepeatedCompositeFieldContainer[RolloutStepRecord]
    current: RolloutStepRecord
    def __init__(self, status: _Optional[str] = ..., phase: _Optional[str] = ..., step: _Optional[int] = ..., canary_weight: _Optional[int] = ..., step_started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., controller: _Optional[str] = ..., history: _Optional[_Iterable[_Union[RolloutStepRecord, _Mapping]]] = ..., current: _Optional[_Union[RolloutStepRecord, _Mapping]] = ...) -> None: ...
