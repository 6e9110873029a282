"""App Mesh's field limits, checked on parsed meshd.v1 specs, with errors that name the field.

Two passes, both driven by the protobuf descriptors rather than by code per message:

* `parse_json` checks a JSON document's shape against the message's descriptor (unknown
  members, wrong JSON types, two members of one union, integer overflow, a list given
  empty that App Mesh bounds below) before handing it to `json_format.ParseDict`, so every
  parse error carries an App Mesh field path such as `spec.listeners[0].portMapping.port`
  instead of protobuf's prose.
* `validate_spec` walks a parsed spec and applies `RULES` (per-field limits, keyed by message
  and App Mesh member name) and `CHECKS` (rules that relate several members, such as "a
  listener's timeout is named by its protocol").

`to_json` is `parse_json`'s inverse, writing `long`s as numbers as App Mesh does.

The limits are App Mesh's API model (botocore's `appmesh`, 2019-01-25) and API reference.
Where meshd refuses more than the model, the rule says which part and why (`Rule.stricter`)
and so does the violation. Every violation is collected before raising, so a client sees
them all at once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

# The router's own regex engine, so the API accepts exactly the patterns routes can run.
from _fastroute._re2 import BadRegex, Regex
from meshd.observe.accesslog import format_errors
from meshd.v1 import spec_pb2

__all__ = [
    "FieldViolation",
    "InvalidSpec",
    "SPEC_TYPES",
    "BEYOND_SPEC_TYPES",
    "parse_json",
    "to_json",
    "validate_name",
    "validate_spec",
]


@dataclass(frozen=True)
class FieldViolation:
    """One broken rule: `field` is the App Mesh (camelCase) path, e.g. `spec.priority`."""

    field: str
    description: str


class InvalidSpec(Exception):
    """A document or spec breaks App Mesh's rules; `violations` lists every one found."""

    def __init__(self, violations: Iterable[FieldViolation]):
        self.violations = list(violations)
        super().__init__(self.violations)

    def __str__(self) -> str:
        return "; ".join(f"{v.field}: {v.description}" for v in self.violations)


# The spec message of each resource kind, by the kind names the admin API uses.
SPEC_TYPES: Mapping[str, type[Message]] = {
    "mesh": spec_pb2.MeshSpec,
    "virtualNode": spec_pb2.VirtualNodeSpec,
    "virtualService": spec_pb2.VirtualServiceSpec,
    "virtualRouter": spec_pb2.VirtualRouterSpec,
    "route": spec_pb2.RouteSpec,
    "virtualGateway": spec_pb2.VirtualGatewaySpec,
    "gatewayRoute": spec_pb2.GatewayRouteSpec,
}
# The spec message of each meshd.v1 kind beyond App Mesh's model; their limits are meshd's
# own (see "meshd.v1 kinds beyond App Mesh" in RULES and CHECKS).
BEYOND_SPEC_TYPES: Mapping[str, type[Message]] = {
    "routePolicy": spec_pb2.RoutePolicySpec,
    "nodePolicy": spec_pb2.NodePolicySpec,
    "rollout": spec_pb2.RolloutSpec,
}

# ---------------------------------------------------------------------------------------
# Per-field rules
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """The limits on one member. For a list, `count` bounds its length and `each` applies
    to its scalar items; `required` on a list means at least one item.

    `stricter` names the parts of the rule ("required", "between", "length", "choices",
    "pattern", "count") that refuse more than App Mesh's API model does, each with the
    reason; a violation of such a part says so. Every other part is the model's own limit
    (tests/test_appmesh_model_limits.py compares them with botocore's `appmesh` model)."""

    required: bool = False
    between: tuple[int, int | None] | None = None  # inclusive; None: no upper bound
    length: tuple[int, int] | None = None
    choices: tuple[str, ...] | None = None
    pattern: tuple[re.Pattern[str], str] | None = None  # (regex, what it means)
    regex: bool = False  # the value is itself a regular expression
    count: tuple[int, int] | None = None
    decimals: int | None = None  # at most this many decimal places (percentages)
    each: Rule | None = None
    unsupported: str | None = None
    stricter: Mapping[str, str] | None = dataclasses.field(default=None, hash=False)


STRICTER = "meshd is stricter than App Mesh here"


def _said(rule: Rule, part: str, description: str) -> str:
    """A violation's description, with the reason when `part` is stricter than App Mesh."""
    why = (rule.stricter or {}).get(part)
    return f"{description}; {STRICTER}: {why}" if why else description


REQUIRED = Rule(required=True)
# meshd.v1's percentages (spec.proto): 0-100 in steps of 0.0001, what the router's parts
# per million can hold exactly.
PERCENT = Rule(between=(0, 100), decimals=4)
REQUIRED_PERCENT = Rule(required=True, between=(0, 100), decimals=4)
PORT = Rule(between=(1, 65535))
REQUIRED_PORT = Rule(required=True, between=(1, 65535))
# App Mesh FilePath: 1-255 characters.
FILE_PATH = Rule(required=True, length=(1, 255))
# App Mesh ResourceName is 1-255 characters. The console allows "letters, numbers, hyphens
# and underscores"; virtual service names are DNS names, so dots too. A name is also an
# etcd key component here, which is another reason to keep `/` and spaces out.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_NAME_WHY = {
    "pattern": "its model takes any 1-255 characters, but a name is an etcd key component and a DNS "
    "name here, so '/', spaces and other punctuation stay out",
}
NAME = Rule(
    required=True,
    length=(1, 255),
    pattern=(NAME_PATTERN, "letters, digits, '-', '_' and '.', not starting with '-' or '.'"),
    stricter=_NAME_WHY,
)
# VirtualServiceBackend.virtualServiceName is a bare string in the model, but it names a
# virtual service, whose name is a ResourceName.
SERVICE_NAME = Rule(
    required=True,
    length=NAME.length,
    pattern=NAME.pattern,
    stricter=_NAME_WHY | {"length": "it names a virtual service, whose name is 1-255 characters"},
)
# CR and LF end an HTTP/1.1 request line or header field and NUL is never valid in one
# (RFC 9112 section 2.2, RFC 9110 section 5.5). A path, rewrite or health-check path is
# written into a request line as given, so one of them there would split the request and
# inject headers; in a match value it could only match a request no client may send. So
# they are refused wherever a path, a rewrite or a value to match is given. App Mesh's
# model puts no pattern on any of these strings.
_NO_CONTROL = r"[^\r\n\x00]*"
NO_CONTROL = (re.compile(_NO_CONTROL), "must not contain CR, LF or NUL")
PATH_START = (re.compile("/" + _NO_CONTROL), "must start with / and not contain CR, LF or NUL")
_CONTROL_WHY = {"pattern": "CR, LF or NUL would split or forge an HTTP/1.1 request (RFC 9112 section 2.2)"}
# App Mesh's API reference says a route prefix "must always start with /"; its model
# checks neither that nor the same of a path or a rewrite, which are request paths too.
_PATH_WHY = {
    "pattern": "a request path starts with / (RFC 9112 section 3.2.1; App Mesh's API reference says so "
    "of a prefix, its model checks nothing) and CR, LF or NUL would split the request",
}
CLEAN = Rule(pattern=NO_CONTROL, stricter=_CONTROL_WHY)
PATH = Rule(length=(1, 255), pattern=PATH_START, stricter=_PATH_WHY)  # HttpPathExact: 1-255
PREFIX = Rule(pattern=PATH_START, stricter=_PATH_WHY)
# App Mesh HeaderMatch / HttpPathExact / HttpPathRegex: 1-255 characters.
HEADER_VALUE = Rule(length=(1, 255), pattern=NO_CONTROL, stricter=_CONTROL_WHY)
HEADER_REGEX = Rule(length=(1, 255), pattern=NO_CONTROL, regex=True, stricter=_CONTROL_WHY)
# App Mesh HeaderName and MethodName: 1-50 characters.
HEADER_NAME = Rule(required=True, length=(1, 50))
# HttpRouteHeaders, GrpcRouteMetadataList, HttpQueryParameters and their gateway route
# copies: 1-10 items. Over the protobuf wire an empty list is no list, which App Mesh
# accepts; in JSON an empty one is refused as App Mesh refuses it (see _shape_violations).
UP_TO_10 = Rule(count=(1, 10))
# App Mesh's default quotas are 50 backends per virtual node. The API model gives no
# listener limit (multiple listeners arrived in 2022); 50 is meshd's own bound.
_FIFTY_WHY = "its model sets no limit; meshd bounds the work one spec can cause at App Mesh's default quota of 50"
UP_TO_50 = Rule(count=(0, 50), stricter={"count": _FIFTY_WHY})
# The model marks these lists required but gives no minimum, so `[]` would pass it. Over
# the protobuf wire an empty list cannot be told from an absent one, which the model
# refuses, so meshd asks for at least one item.
_EMPTY_IS_ABSENT = "an empty list is the same as none over the protobuf wire, and the list is required"
_NO_DURATION = "its model leaves both members of a Duration optional, but one without a unit or a value means nothing"

PROTOCOLS = ("http", "http2", "grpc", "tcp")
GATEWAY_PROTOCOLS = ("http", "http2", "grpc")
IP_PREFERENCES = ("IPv6_PREFERRED", "IPv4_PREFERRED", "IPv4_ONLY", "IPv6_ONLY")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
ENABLED_DISABLED = ("ENABLED", "DISABLED")
HTTP_RETRY_EVENTS = ("server-error", "gateway-error", "client-error", "stream-error")
GRPC_RETRY_EVENTS = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
TCP_RETRY_EVENTS = ("connection-error",)

# meshd issues workload certificates from its own mesh CA, reads App Mesh `file` sources,
# and serves `acm` ones from what `meshctl certificate import` / `meshctl trust import`
# stored under the ARN (meshd.security.acm). SDS is Envoy's secret service: no counterpart.
NOT_HERE = Rule(unsupported="sds is not supported here: leave tls.certificate out for the mesh CA's certificate, "
                            "or use a file source")

# Cloud Map attribute key/value patterns, as the model writes them
# (AwsCloudMapInstanceAttributeKey `^[a-zA-Z0-9!-~]+$`, ...Value
# `^([a-zA-Z0-9!-~][  a-zA-Z0-9!-~]*){0,1}[a-zA-Z0-9!-~]{0,1}$`; `!-~` is all of printable
# ASCII). A value may not start with a space but may end with one.
CLOUD_MAP_KEY = (re.compile(r"[!-~]+"), "printable ASCII without spaces")
CLOUD_MAP_VALUE = (re.compile(r"([!-~][ !-~]*)?[!-~]?"), "printable ASCII, not starting with a space")

# Retry events. The model types each list (HttpRetryPolicyEvents 1-25 items,
# GrpcRetryPolicyEvents 1-5, TcpRetryPolicyEvents 1-1) and enumerates the gRPC and TCP
# events, but leaves an HTTP event a free string of 1-25 characters. App Mesh's API
# reference (HttpRetryPolicy) lists the only HTTP events it defines, the App Mesh
# controller for Kubernetes enumerates the same four, and they are the events meshd's
# router retries on (_fastroute.spec.HTTP_EVENTS); any other string has no meaning here,
# so meshd takes exactly those four and says it is stricter than the model when refusing.
HTTP_RETRY_EVENT = Rule(
    length=(1, 25),
    choices=HTTP_RETRY_EVENTS,
    stricter={"choices": "its model takes any 1-25 characters, but only these events are defined "
              "(App Mesh API reference, HttpRetryPolicy) and they are what meshd retries on"},
)
HTTP_RETRY_RULES = {
    "maxRetries": Rule(required=True, between=(0, None)),
    "perRetryTimeout": REQUIRED,
    "httpRetryEvents": Rule(count=(1, 25), each=HTTP_RETRY_EVENT),
    "tcpRetryEvents": Rule(count=(1, 1), each=Rule(choices=TCP_RETRY_EVENTS)),
}

# message name -> {App Mesh member name -> Rule}
RULES: dict[str, dict[str, Rule]] = {
    "Duration": {
        # Both members are optional in App Mesh's model, but a duration without a unit or
        # a value has no meaning; App Mesh's service rejects them. DurationValue is a
        # `long` with min 0 (int64 in spec.proto).
        "unit": Rule(required=True, choices=("ms", "s"), stricter={"required": _NO_DURATION}),
        "value": Rule(required=True, between=(0, None), stricter={"required": _NO_DURATION}),
    },
    "PortMapping": {"port": REQUIRED_PORT, "protocol": Rule(required=True, choices=PROTOCOLS)},
    "MatchRange": {"start": REQUIRED, "end": REQUIRED},
    "HeaderMatchMethod": {
        "exact": HEADER_VALUE,
        "prefix": HEADER_VALUE,
        "suffix": HEADER_VALUE,
        "regex": HEADER_REGEX,
    },
    "HttpRouteHeader": {"name": HEADER_NAME},
    "GrpcRouteMetadata": {"name": HEADER_NAME},
    "HttpPathMatch": {"exact": PATH, "regex": HEADER_REGEX},
    "HttpQueryParameter": {"name": REQUIRED},
    "QueryParameterMatch": {"exact": CLEAN},
    # TLS
    "ListenerTlsAcmCertificate": {"certificateArn": REQUIRED},
    "ListenerTlsFileCertificate": {"certificateChain": FILE_PATH, "privateKey": FILE_PATH},
    "ListenerTlsSdsCertificate": {"secretName": REQUIRED},
    "ListenerTlsCertificate": {"sds": NOT_HERE},
    "ClientTlsCertificate": {"sds": NOT_HERE},
    "TlsValidationContextAcmTrust": {"certificateAuthorityArns": Rule(required=True, count=(1, 3))},
    "TlsValidationContextFileTrust": {"certificateChain": FILE_PATH},
    "TlsValidationContextSdsTrust": {"secretName": REQUIRED},
    "SubjectAlternativeNameMatchers": {
        "exact": Rule(required=True, each=Rule(length=(1, 254)), stricter={"required": _EMPTY_IS_ABSENT}),
    },
    "SubjectAlternativeNames": {"match": REQUIRED},
    "TlsValidationContextTrust": {"sds": NOT_HERE},
    "TlsValidationContext": {"trust": REQUIRED},
    "ListenerTlsValidationContextTrust": {"sds": NOT_HERE},
    "ListenerTlsValidationContext": {"trust": REQUIRED},
    "ListenerTls": {
        "mode": Rule(required=True, choices=("STRICT", "PERMISSIVE", "DISABLED")),
        "certificate": REQUIRED,
    },
    "ClientPolicyTls": {"ports": Rule(each=PORT), "validation": REQUIRED},
    # Listener parts
    "HealthCheckPolicy": {
        "healthyThreshold": Rule(required=True, between=(2, 10)),
        "unhealthyThreshold": Rule(required=True, between=(2, 10)),
        "intervalMillis": Rule(required=True, between=(5000, 300000)),
        "timeoutMillis": Rule(required=True, between=(2000, 60000)),
        "protocol": Rule(required=True, choices=PROTOCOLS),
        "path": CLEAN,
        "port": PORT,
    },
    "OutlierDetection": {
        "baseEjectionDuration": REQUIRED,
        "interval": REQUIRED,
        "maxEjectionPercent": Rule(required=True, between=(0, 100)),
        "maxServerErrors": Rule(required=True, between=(1, None)),
    },
    "VirtualNodeGrpcConnectionPool": {"maxRequests": Rule(required=True, between=(1, None))},
    "VirtualNodeHttp2ConnectionPool": {"maxRequests": Rule(required=True, between=(1, None))},
    "VirtualNodeHttpConnectionPool": {
        "maxConnections": Rule(required=True, between=(1, None)),
        "maxPendingRequests": Rule(between=(1, None)),
    },
    "VirtualNodeTcpConnectionPool": {"maxConnections": Rule(required=True, between=(1, None))},
    # Logging
    "JsonFormatRef": {"key": Rule(required=True, length=(1, 100)), "value": Rule(required=True, length=(1, 100))},
    "LoggingFormat": {"text": Rule(length=(1, 1000))},
    "FileAccessLog": {"path": FILE_PATH},
    # Mesh
    "EgressFilter": {"type": Rule(required=True, choices=("ALLOW_ALL", "DROP_ALL"))},
    "MeshServiceDiscovery": {"ipPreference": Rule(choices=IP_PREFERENCES)},
    # Virtual node
    "Listener": {"portMapping": REQUIRED},
    "DnsServiceDiscovery": {
        "hostname": REQUIRED,
        "ipPreference": Rule(choices=IP_PREFERENCES),
        "responseType": Rule(choices=("LOADBALANCER", "ENDPOINTS")),
    },
    "AwsCloudMapInstanceAttribute": {
        "key": Rule(required=True, length=(1, 255), pattern=CLOUD_MAP_KEY),
        "value": Rule(required=True, length=(1, 1024), pattern=CLOUD_MAP_VALUE),
    },
    "AwsCloudMapServiceDiscovery": {
        "namespaceName": Rule(required=True, length=(1, 1024)),
        "serviceName": Rule(required=True, length=(1, 1024)),
        "ipPreference": Rule(choices=IP_PREFERENCES),
    },
    "VirtualServiceBackend": {"virtualServiceName": SERVICE_NAME},
    "VirtualNodeSpec": {"listeners": UP_TO_50, "backends": UP_TO_50},
    # Virtual service
    "VirtualNodeServiceProvider": {"virtualNodeName": NAME},
    "VirtualRouterServiceProvider": {"virtualRouterName": NAME},
    # Virtual router and route
    "VirtualRouterListener": {"portMapping": REQUIRED},
    "VirtualRouterSpec": {"listeners": UP_TO_50},
    "WeightedTarget": {"virtualNode": NAME, "weight": Rule(required=True, between=(0, 100)), "port": PORT},
    "RouteAction": {"weightedTargets": Rule(required=True, count=(1, 10))},
    "HttpRouteMatch": {
        "prefix": PREFIX,
        "headers": UP_TO_10,
        "queryParameters": UP_TO_10,
        "method": Rule(choices=HTTP_METHODS),
        "scheme": Rule(choices=("http", "https")),
        "port": PORT,
    },
    "HttpRetryPolicy": HTTP_RETRY_RULES,
    "GrpcRetryPolicy": {
        **HTTP_RETRY_RULES,
        "grpcRetryEvents": Rule(count=(1, 5), each=Rule(choices=GRPC_RETRY_EVENTS)),
    },
    "HttpRoute": {"match": REQUIRED, "action": REQUIRED},
    # A gRPC service and method name are the request's :path ("/<service>/<method>").
    "GrpcRouteMatch": {
        "serviceName": CLEAN,
        "methodName": Rule(length=(1, 50), pattern=NO_CONTROL, stricter=_CONTROL_WHY),
        "metadata": UP_TO_10,
        "port": PORT,
    },
    "GrpcRoute": {"match": REQUIRED, "action": REQUIRED},
    "TcpRouteMatch": {"port": PORT},
    "TcpRoute": {"action": REQUIRED},
    "RouteSpec": {"priority": Rule(between=(0, 1000))},
    # Virtual gateway and gateway route
    "VirtualGatewayListener": {"portMapping": REQUIRED},
    # VirtualGatewayListeners is required with no bounds in the model.
    "VirtualGatewaySpec": {
        "listeners": Rule(required=True, count=(1, 50), stricter={"required": _EMPTY_IS_ABSENT, "count": _FIFTY_WHY}),
    },
    "GatewayRouteVirtualService": {"virtualServiceName": NAME},
    "GatewayRouteTarget": {"virtualService": REQUIRED, "port": PORT},
    "GatewayRouteHostnameMatch": {
        "exact": Rule(length=(1, 253), pattern=NO_CONTROL, stricter=_CONTROL_WHY),
        "suffix": Rule(length=(1, 253), pattern=NO_CONTROL, stricter=_CONTROL_WHY),
    },
    "GatewayRouteHostnameRewrite": {"defaultTargetHostname": Rule(choices=ENABLED_DISABLED)},
    "HttpGatewayRoutePrefixRewrite": {
        "defaultPrefix": Rule(choices=ENABLED_DISABLED),
        "value": PATH,  # HttpGatewayRoutePrefix: 1-255
    },
    # The model leaves `exact` optional, but a path rewrite without a path has nothing to
    # rewrite to.
    "HttpGatewayRoutePathRewrite": {
        "exact": Rule(
            required=True,
            length=PATH.length,
            pattern=PATH.pattern,
            stricter=_PATH_WHY | {"required": "its model leaves it optional, but a path rewrite needs a path"},
        ),
    },
    "HttpGatewayRouteAction": {"target": REQUIRED},
    "HttpGatewayRouteMatch": {
        "prefix": PREFIX,
        "headers": UP_TO_10,
        "queryParameters": UP_TO_10,
        "method": Rule(choices=HTTP_METHODS),
        "port": PORT,
    },
    "HttpGatewayRoute": {"match": REQUIRED, "action": REQUIRED},
    "GrpcGatewayRouteAction": {"target": REQUIRED},
    "GrpcGatewayRouteMatch": {"serviceName": CLEAN, "metadata": UP_TO_10, "port": PORT},
    "GrpcGatewayRoute": {"match": REQUIRED, "action": REQUIRED},
    "GatewayRouteSpec": {"priority": Rule(between=(0, 1000))},
    # -- meshd.v1 kinds beyond App Mesh: meshd's own limits ----------------------------
    "RouteReference": {"virtualRouterName": NAME, "routeName": NAME},
    "FaultInjection": {"match": UP_TO_10},
    "FaultDelay": {"percentage": REQUIRED_PERCENT, "fixedDelay": REQUIRED},
    "FaultAbort": {"percentage": REQUIRED_PERCENT, "httpStatus": Rule(between=(200, 599)),
                   "grpcStatus": Rule(between=(1, 16))},
    "TrafficMirror": {
        "virtualNode": NAME,
        "percentage": REQUIRED_PERCENT,
        "port": PORT,
        "maxInFlight": Rule(between=(1, 10000)),
        "maxBodyBytes": Rule(between=(0, 16 << 20)),
    },
    "RateLimit": {
        "maxTokens": Rule(required=True, between=(1, None)),
        "tokensPerFill": Rule(required=True, between=(1, None)),
        "fillInterval": REQUIRED,
    },
    "RoutePolicySpec": {"route": REQUIRED},
    "ListenerRateLimit": {"port": REQUIRED_PORT, "rateLimit": REQUIRED},
    "LocalityBalancing": {"overprovisioningFactor": Rule(between=(100, 1000))},
    "NodePolicySpec": {"virtualNodeName": NAME, "listenerRateLimits": Rule(count=(0, 50))},
    "RolloutTarget": {"virtualNode": NAME, "port": PORT},
    "RolloutStep": {"weight": Rule(required=True, between=(0, 100)), "minRequests": Rule(between=(0, None))},
    "PrometheusCheck": {"address": Rule(required=True, length=(1, 2048)),
                        "query": Rule(required=True, length=(1, 4096))},
    "RolloutAnalysis": {
        "minSuccessRate": PERCENT,
        "maxLatencyP99Ratio": Rule(between=(1, None)),
        "minRequestsToFail": Rule(between=(1, None)),
    },
    "RolloutSpec": {"route": REQUIRED, "stable": REQUIRED, "canary": REQUIRED,
                    "steps": Rule(required=True, count=(1, 20))},
}


def _scalar_violations(rule: Rule, value, path: str) -> Iterator[FieldViolation]:
    if isinstance(value, float) and not math.isfinite(value):
        yield FieldViolation(path, f"must be a finite number, got {value}")
        return
    if rule.decimals is not None and abs(value * 10**rule.decimals - round(value * 10**rule.decimals)) > 1e-6:
        yield FieldViolation(path, f"at most {rule.decimals} decimal places, got {value}")
    if rule.between is not None:
        lo, hi = rule.between
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            yield FieldViolation(path, _said(rule, "between", f"must be {bound}, got {value}"))
    if rule.length is not None and not rule.length[0] <= len(value) <= rule.length[1]:
        lo, hi = rule.length
        yield FieldViolation(path, _said(rule, "length", f"length must be between {lo} and {hi}, got {len(value)}"))
        return  # what the value says is moot when its length is wrong
    if rule.choices is not None and value not in rule.choices:
        yield FieldViolation(path, _said(rule, "choices", f"must be one of {', '.join(rule.choices)}; got {value!r}"))
    if rule.pattern is not None and not rule.pattern[0].fullmatch(value):
        yield FieldViolation(path, _said(rule, "pattern", f"{rule.pattern[1]}; got {value!r}"))
    if rule.regex:
        # App Mesh's Envoy matches with RE2, which refuses backreferences and lookaround.
        try:
            Regex(value)
        except BadRegex as err:
            yield FieldViolation(path, f"not a valid RE2 regular expression: {err.reason}")


def _join(path: str, member: str) -> str:
    return f"{path}.{member}" if path else member


def _real_oneofs(desc: Descriptor):
    """The oneofs written in the .proto, without the synthetic ones of `optional` fields."""
    return [o for o in desc.oneofs if not (len(o.fields) == 1 and o.name == "_" + o.fields[0].name)]


def _walk(msg: Message, path: str) -> Iterator[FieldViolation]:
    desc = msg.DESCRIPTOR
    rules = RULES.get(desc.name, {})
    for field in desc.fields:
        rule = rules.get(field.json_name, Rule())
        where = _join(path, field.json_name)
        if field.is_repeated:
            items = getattr(msg, field.name)
            if rule.required and not items:
                yield FieldViolation(where, _said(rule, "required", "required"))
            # The lower bound is checked on the JSON (_shape_violations): a message cannot
            # tell an empty list from an absent one.
            if rule.count is not None and len(items) > rule.count[1]:
                yield FieldViolation(where, _said(rule, "count", f"at most {rule.count[1]} items, got {len(items)}"))
            for i, item in enumerate(items):
                if field.message_type is not None:
                    yield from _walk(item, f"{where}[{i}]")
                elif rule.each is not None:
                    yield from _scalar_violations(rule.each, item, f"{where}[{i}]")
        elif not msg.HasField(field.name):
            if rule.required:
                yield FieldViolation(where, _said(rule, "required", "required"))
        elif rule.unsupported:
            yield FieldViolation(where, rule.unsupported)
        elif field.message_type is not None:
            yield from _walk(getattr(msg, field.name), where)
        else:
            yield from _scalar_violations(rule, getattr(msg, field.name), where)
    # An App Mesh union that is present must name exactly one member; proto's oneof already
    # refuses two, so only "none" is left to check.
    for oneof in _real_oneofs(desc):
        if msg.WhichOneof(oneof.name) is None:
            names = ", ".join(f.json_name for f in oneof.fields)
            yield FieldViolation(path, f"exactly one of {names} is required")
    for check in CHECKS.get(desc.name, ()):
        yield from check(msg, path)


# ---------------------------------------------------------------------------------------
# Rules across members
# ---------------------------------------------------------------------------------------

Check = Callable[[Message, str], Iterable[FieldViolation]]


def _listener_protocols(listener, path: str) -> Iterator[FieldViolation]:
    """A listener's timeout and connection pool are the member named by its protocol, and
    its health check probes its own port (App Mesh HealthCheckPolicy.port: "This port must
    match the port defined in the PortMapping for the listener")."""
    mapping = listener.port_mapping
    for member in ("timeout", "connection_pool"):
        if member in listener.DESCRIPTOR.fields_by_name and listener.HasField(member):
            sub = getattr(listener, member)
            chosen = sub.WhichOneof("protocol")
            # An unknown protocol is reported by the PortMapping rule, not again here.
            if chosen and mapping.protocol in PROTOCOLS and chosen != mapping.protocol:
                json = listener.DESCRIPTOR.fields_by_name[member].json_name
                yield FieldViolation(
                    f"{path}.{json}.{chosen}",
                    f"must be the listener's protocol ({mapping.protocol})",
                )
    check = listener.health_check
    if listener.HasField("health_check") and check.HasField("port") and mapping.HasField("port"):
        if check.port != mapping.port:
            yield FieldViolation(f"{path}.healthCheck.port", f"must equal portMapping.port ({mapping.port})")


def _gateway_listener(listener, path: str) -> Iterator[FieldViolation]:
    """A virtual gateway speaks http, http2 or grpc (App Mesh VirtualGatewayPortProtocol)."""
    yield from _listener_protocols(listener, path)
    for member, json in (("port_mapping", "portMapping"), ("health_check", "healthCheck")):
        sub = getattr(listener, member)
        # Other unknown values are already reported by the PROTOCOLS rule.
        if listener.HasField(member) and sub.HasField("protocol") and sub.protocol == "tcp":
            yield FieldViolation(
                f"{path}.{json}.protocol",
                f"must be one of {', '.join(GATEWAY_PROTOCOLS)} on a virtual gateway; got {sub.protocol!r}",
            )


def _unique_listener_ports(spec, path: str) -> Iterator[FieldViolation]:
    """Routes and gateway routes pick a listener by port, so two listeners may not share one."""
    seen = set()
    for i, listener in enumerate(spec.listeners):
        port = listener.port_mapping.port
        if listener.port_mapping.HasField("port") and port in seen:
            yield FieldViolation(f"{path}.listeners[{i}].portMapping.port", f"duplicate listener port {port}")
        seen.add(port)


def _node_discovery(spec, path: str) -> Iterator[FieldViolation]:
    # App Mesh VirtualNodeSpec.serviceDiscovery: "If you specify a listener, then you must
    # specify service discovery information."
    if spec.listeners and not spec.HasField("service_discovery"):
        yield FieldViolation(_join(path, "serviceDiscovery"), "required when listeners are given")


def _path_or_prefix(required: bool) -> Check:
    """A route matches the path by prefix or by `path`, not both; a virtual router route
    must use one of them or match on its listener `port` alone (every path arriving on
    that port, as App Mesh accepts), a gateway route may match on hostname alone."""

    def check(match, path: str) -> Iterator[FieldViolation]:
        has_prefix, has_path = match.HasField("prefix"), match.HasField("path")
        if has_prefix and has_path:
            yield FieldViolation(f"{path}.path", "prefix and path exclude each other")
        elif required and not (has_prefix or has_path or match.HasField("port")):
            yield FieldViolation(f"{path}.prefix", "one of prefix, path or port is required")

    return check


def _grpc_method_needs_service(match, path: str) -> Iterator[FieldViolation]:
    # App Mesh GrpcRouteMatch.methodName: "If you specify a name, you must also specify a
    # serviceName."
    if match.HasField("method_name") and not match.HasField("service_name"):
        yield FieldViolation(f"{path}.methodName", "requires serviceName")


def _retry_events(policy, path: str) -> Iterator[FieldViolation]:
    # App Mesh HttpRetryPolicy: "Specify at least one value for at least one of the types
    # of RetryEvents".
    members = [f for f in policy.DESCRIPTOR.fields if f.name.endswith("_retry_events")]
    if not any(getattr(policy, f.name) for f in members):
        names = ", ".join(f.json_name for f in members)
        yield FieldViolation(path, f"at least one of {names} must list an event")


def _weights_total(action, path: str) -> Iterator[FieldViolation]:
    # App Mesh WeightedTarget: "The total weight for all targets combined must be less than
    # or equal to 100."
    total = sum(t.weight for t in action.weighted_targets)
    if total > 100:
        yield FieldViolation(_join(path, "weightedTargets"), f"weights total {total}, at most 100")


def _logging_format(fmt, path: str) -> Iterator[FieldViolation]:
    # App Mesh LoggingFormat is a union; its `json` member is a list, so proto has no oneof.
    if fmt.HasField("text") == bool(fmt.json):
        yield FieldViolation(path, "exactly one of text, json is required")
    # Refused at write time, not when the first request would be logged.
    for field, err in format_errors(fmt):
        yield FieldViolation(_join(path, field), f"{err.why}: {err.operator}")


def _range_order(match_range, path: str) -> Iterator[FieldViolation]:
    # App Mesh MatchRange: start inclusive, end exclusive; an empty range matches nothing.
    # The model does not relate the two.
    if match_range.HasField("start") and match_range.HasField("end") and match_range.end <= match_range.start:
        yield FieldViolation(
            f"{path}.end",
            f"must be greater than start ({match_range.start}); {STRICTER}: its model does not relate "
            "start and end, but end is exclusive, so such a range matches no value",
        )


def _gateway_rewrite(route, path: str) -> Iterator[FieldViolation]:
    """A prefix rewrite replaces a matched prefix and a path rewrite replaces an exactly
    matched path (App Mesh user guide, gateway routes), so each needs its kind of match."""
    rewrite, match = route.action.rewrite, route.match
    where = f"{path}.action.rewrite"
    if rewrite.HasField("prefix") and rewrite.HasField("path"):
        yield FieldViolation(f"{where}.path", "prefix and path rewrites exclude each other")
    if rewrite.HasField("prefix") and not match.HasField("prefix"):
        yield FieldViolation(f"{where}.prefix", "requires match.prefix")
    if rewrite.HasField("path") and match.path.WhichOneof("match") != "exact":
        yield FieldViolation(f"{where}.path", "requires match.path.exact")


_UNIT_MS = {"ms": 1, "s": 1000}
_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000


def _ms(d) -> int | None:
    """A Duration in milliseconds; None when its unit or value is missing or unknown (the
    Duration rules report that)."""
    if d.unit not in _UNIT_MS or not d.HasField("value"):
        return None
    return d.value * _UNIT_MS[d.unit]


def _duration_within(member: str, lo_ms: int, hi_ms: int) -> Check:
    """A Duration member between lo_ms and hi_ms milliseconds, inclusive."""

    def check(msg, path: str) -> Iterator[FieldViolation]:
        ms = _ms(getattr(msg, member)) if msg.HasField(member) else None
        if ms is not None and not lo_ms <= ms <= hi_ms:
            d = getattr(msg, member)
            yield FieldViolation(f"{path}.{msg.DESCRIPTOR.fields_by_name[member].json_name}",
                                 f"must be between {lo_ms} ms and {hi_ms} ms, got {d.value} {d.unit}")

    return check


def _fault_kind(fault, path: str) -> Iterator[FieldViolation]:
    if not (fault.HasField("delay") or fault.HasField("abort")):
        yield FieldViolation(path, "at least one of delay, abort is required")


def _delay_total(delay, path: str) -> Iterator[FieldViolation]:
    """A delay holds a request and its connection: over an hour it is a hang, not a fault."""
    parts = [_ms(getattr(delay, m)) for m in ("fixed_delay", "jitter") if delay.HasField(m)]
    if None not in parts and sum(parts) > _HOUR_MS:
        yield FieldViolation(f"{path}.fixedDelay",
                             f"fixedDelay plus jitter must be at most 1 hour, got {sum(parts)} ms")


def _unique_rate_limit_ports(spec, path: str) -> Iterator[FieldViolation]:
    """A listener has one bucket: two limits for one port would leave it to pick one."""
    seen = set()
    for i, limit in enumerate(spec.listener_rate_limits):
        if limit.HasField("port") and limit.port in seen:
            yield FieldViolation(f"{path}.listenerRateLimits[{i}].port", f"duplicate port {limit.port}")
        seen.add(limit.port)


def _rollout_shape(spec, path: str) -> Iterator[FieldViolation]:
    """Each step moves the canary forward, so weights strictly increase. The last may be
    below 100: as in Argo Rollouts and Flagger, a rollout whose steps all pass is promoted
    (100% canary) anyway, so steps such as 5, 25, 50 are a complete rollout. Stable and
    canary are two different targets, or there is nothing to move between."""
    weights = [(i, s.weight) for i, s in enumerate(spec.steps) if s.HasField("weight")]
    for (_, before), (i, weight) in zip(weights, weights[1:]):
        if weight <= before:
            yield FieldViolation(f"{path}.steps[{i}].weight",
                                 f"weights must strictly increase; {weight} follows {before}")
    def target(t):
        return (t.virtual_node, t.port if t.HasField("port") else None)
    if spec.stable.HasField("virtual_node") and target(spec.stable) == target(spec.canary):
        yield FieldViolation(f"{path}.canary", "must be another target than stable")


def _prometheus(check, path: str) -> Iterator[FieldViolation]:
    if check.HasField("address"):
        url = urlsplit(check.address)
        if url.scheme not in ("http", "https") or not url.netloc or re.search(r"[\s\x00-\x1f]", check.address):
            yield FieldViolation(f"{path}.address",
                                 f"must be an http:// or https:// URL such as http://prometheus:9090, "
                                 f"got {check.address!r}")
    if not (check.HasField("min") or check.HasField("max")):
        yield FieldViolation(path, "at least one of min, max is required: the query's value is compared with them")
    elif check.HasField("min") and check.HasField("max") and check.min > check.max:
        yield FieldViolation(f"{path}.max", f"must be at least min ({check.min}), got {check.max}")


CHECKS: dict[str, tuple[Check, ...]] = {
    "Listener": (_listener_protocols,),
    "VirtualGatewayListener": (_gateway_listener,),
    "VirtualNodeSpec": (_unique_listener_ports, _node_discovery),
    "VirtualRouterSpec": (_unique_listener_ports,),
    "VirtualGatewaySpec": (_unique_listener_ports,),
    "HttpRouteMatch": (_path_or_prefix(required=True),),
    "HttpGatewayRouteMatch": (_path_or_prefix(required=False),),
    "GrpcRouteMatch": (_grpc_method_needs_service,),
    "HttpRetryPolicy": (_retry_events,),
    "GrpcRetryPolicy": (_retry_events,),
    "RouteAction": (_weights_total,),
    "LoggingFormat": (_logging_format,),
    "MatchRange": (_range_order,),
    "HttpGatewayRoute": (_gateway_rewrite,),
    # meshd.v1 kinds beyond App Mesh
    "FaultInjection": (_fault_kind,),
    "FaultDelay": (_delay_total,),
    "RateLimit": (_duration_within("fill_interval", 1, _DAY_MS),),
    "NodePolicySpec": (_unique_rate_limit_ports,),
    "RolloutSpec": (_rollout_shape,),
    "RolloutAnalysis": (_duration_within("interval", 1000, _HOUR_MS), _duration_within("max_latency_p99", 1, _HOUR_MS)),
    "PrometheusCheck": (_prometheus,),
}

# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def validate_spec(kind: str, spec: Message | Mapping) -> None:
    """Check `spec` (a parsed spec message, or its App Mesh JSON) of resource `kind` against
    App Mesh's limits; raise InvalidSpec listing every violation, under `spec.`."""
    try:
        spec_type = SPEC_TYPES.get(kind) or BEYOND_SPEC_TYPES[kind]
    except KeyError:
        raise ValueError(f"unknown resource kind {kind!r}") from None
    if isinstance(spec, Mapping):
        spec = parse_json(spec_type, spec, root="spec")
    if not isinstance(spec, spec_type):
        raise TypeError(f"{kind} spec must be {spec_type.__name__}, not {type(spec).__name__}")
    violations = list(_walk(spec, "spec"))
    if violations:
        raise InvalidSpec(violations)


def validate_name(field: str, name: str) -> None:
    """Check a resource name (App Mesh ResourceName: 1-255 characters, see NAME_PATTERN)."""
    if not isinstance(name, str):
        raise InvalidSpec([FieldViolation(field, "must be a string")])
    violations = list(_scalar_violations(NAME, name, field))
    if violations:
        raise InvalidSpec(violations)


def parse_json(message_cls: type[Message], doc: Mapping, root: str = ""):
    """Parse App Mesh JSON into `message_cls`, rejecting unknown members; every problem is
    an InvalidSpec violation whose field is the member's path under `root`."""
    violations = list(_shape_violations(message_cls.DESCRIPTOR, doc, root))
    if violations:
        raise InvalidSpec(violations)
    try:
        return json_format.ParseDict(doc, message_cls(), ignore_unknown_fields=False)
    except json_format.ParseError as err:  # a case the shape check does not foresee
        raise InvalidSpec([FieldViolation(root or message_cls.DESCRIPTOR.name, str(err))]) from err


def to_json(message: Message) -> dict:
    """App Mesh JSON of a message, the inverse of `parse_json`: protobuf's JSON mapping,
    except that 64-bit integers are JSON numbers, as App Mesh writes its `long`s (proto3
    JSON writes them as strings, which `parse_json` also reads)."""
    doc = json_format.MessageToDict(message)
    _wide_as_numbers(message.DESCRIPTOR, doc)
    return doc


def _wide_as_numbers(desc: Descriptor, doc: dict) -> None:
    if desc.full_name.startswith("google.protobuf."):
        return  # well-known types keep their own JSON forms
    for f in desc.fields:
        if f.json_name not in doc:
            continue
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value_field = f.message_type.fields_by_name["value"]
            entries = doc[f.json_name]
            for key, item in entries.items():
                entries[key] = _wide_as_number(value_field, item)
        elif f.is_repeated:
            doc[f.json_name] = [_wide_as_number(f, item) for item in doc[f.json_name]]
        else:
            doc[f.json_name] = _wide_as_number(f, doc[f.json_name])


def _wide_as_number(f: FieldDescriptor, value):
    if f.message_type is not None:
        _wide_as_numbers(f.message_type, value)
        return value
    return int(value) if f.type in _WIDE else value


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


_T = FieldDescriptor
# Integer field types and their bounds. proto3 JSON writes 64-bit integers as strings, so
# those accept decimal strings too; 32-bit ones take JSON numbers only, as App Mesh's do.
_INT_BOUNDS = {
    **dict.fromkeys((_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((_T.TYPE_UINT32, _T.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((_T.TYPE_UINT64, _T.TYPE_FIXED64), (0, 2**64 - 1)),
}
_WIDE = {_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64, _T.TYPE_UINT64, _T.TYPE_FIXED64}
_FLOAT_WORDS = {"NaN", "Infinity", "-Infinity"}


def _scalar_shape(field: FieldDescriptor, value, path: str) -> Iterator[FieldViolation]:
    kind = field.type
    if kind in _INT_BOUNDS:
        number = value
        if kind in _WIDE and isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
            number = int(value)
        if not isinstance(number, int) or isinstance(number, bool):
            yield FieldViolation(path, f"must be an integer, got {_json_kind(value)}")
        elif not _INT_BOUNDS[kind][0] <= number <= _INT_BOUNDS[kind][1]:
            lo, hi = _INT_BOUNDS[kind]
            yield FieldViolation(path, f"out of range for this integer type ({lo} to {hi}): {number}")
    elif kind in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) or value in _FLOAT_WORDS):
            yield FieldViolation(path, f"must be a number, got {_json_kind(value)}")
    elif kind == _T.TYPE_BOOL:
        if not isinstance(value, bool):
            yield FieldViolation(path, f"must be a boolean, got {_json_kind(value)}")
    elif kind == _T.TYPE_ENUM:
        names = field.enum_type.values_by_name
        if isinstance(value, str) and value not in names:
            yield FieldViolation(path, f"unknown value {value!r}; one of {', '.join(names)}")
        elif not isinstance(value, (str, int)) or isinstance(value, bool):
            yield FieldViolation(path, f"must be a string, got {_json_kind(value)}")
    elif not isinstance(value, str):  # string, and bytes as base64
        yield FieldViolation(path, f"must be a string, got {_json_kind(value)}")


def _shape_violations(desc: Descriptor, doc, path: str) -> Iterator[FieldViolation]:
    """Compare a JSON value with a message descriptor the way ParseDict would read it, but
    report every mismatch with its path. `null` means "absent", as in ParseDict."""
    if desc.full_name.startswith("google.protobuf."):
        return  # well-known types have their own JSON forms; ParseDict checks them
    if not isinstance(doc, Mapping):
        yield FieldViolation(path or desc.name, f"must be an object, got {_json_kind(doc)}")
        return
    by_name = {f.json_name: f for f in desc.fields} | {f.name: f for f in desc.fields}
    real_oneofs = _real_oneofs(desc)
    oneof_seen: dict[str, str] = {}
    for key, value in doc.items():
        where = _join(path, str(key))
        field = by_name.get(key)
        if field is None:
            known = ", ".join(f.json_name for f in desc.fields)
            yield FieldViolation(where, f"unknown field (known: {known})")
            continue
        if value is None:
            continue
        oneof = field.containing_oneof
        if oneof is not None and oneof in real_oneofs:
            if oneof.name in oneof_seen:
                yield FieldViolation(where, f"only one of {oneof_seen[oneof.name]}, {key} may be set")
                continue
            oneof_seen[oneof.name] = key
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if not isinstance(value, Mapping):
                yield FieldViolation(where, f"must be an object, got {_json_kind(value)}")
                continue
            value_field = field.message_type.fields_by_name["value"]
            for k, item in value.items():
                yield from _value_shape(value_field, item, f"{where}[{k!r}]")
        elif field.is_repeated:
            if not isinstance(value, list):
                yield FieldViolation(where, f"must be a list, got {_json_kind(value)}")
                continue
            yield from _empty_list(desc, field, value, where)
            for i, item in enumerate(value):
                yield from _value_shape(field, item, f"{where}[{i}]")
        else:
            yield from _value_shape(field, value, where)


def _empty_list(desc: Descriptor, field: FieldDescriptor, value: list, path: str) -> Iterator[FieldViolation]:
    """A list App Mesh's model bounds below (HttpRouteHeaders, HttpQueryParameters,
    GrpcRouteMetadataList, the retry event lists: min 1) may be left out but not given
    empty. Only JSON can say "empty": in a message an empty list is an absent one, which
    App Mesh accepts. Required lists are reported as missing by `_walk` instead."""
    rule = RULES.get(desc.name, {}).get(field.json_name)
    if rule is None or rule.required or rule.count is None or len(value) >= rule.count[0]:
        return
    lo, hi = rule.count
    yield FieldViolation(path, f"must have at least {lo} item{'s' if lo > 1 else ''} when given "
                               f"(App Mesh: {lo} to {hi}); leave it out instead")


def _value_shape(field: FieldDescriptor, value, path: str) -> Iterator[FieldViolation]:
    if field.message_type is not None:
        yield from _shape_violations(field.message_type, value, path)
    else:
        yield from _scalar_shape(field, value, path)
