"""A virtual gateway's route table: App Mesh gateway routes compiled once, matched per request.

Sans-IO: `compile_gateway` turns a VirtualGatewayData and its GatewayRouteData (protobuf)
into a `GatewayTable`; `GatewayTable.match` takes request values and returns a
`GatewayDecision` (which route, which virtual service, and the authority and path to send
upstream after App Mesh's rewrites). Nothing here awaits, opens a socket or reads a clock.

Sources quoted below (App Mesh API version 2019-01-25):
  [UG]  App Mesh user guide, "Gateway routes"
        (docs.aws.amazon.com/app-mesh/latest/userguide/gateway-routes.html).
  [WT]  aws-app-mesh-examples, walkthroughs/howto-match-and-rewrite-at-ingress/README.md.
  [API] App Mesh API reference: GatewayRouteSpec, HttpGatewayRouteMatch,
        GatewayRouteHostnameMatch, HttpGatewayRoutePrefixRewrite, GatewayRouteHostnameRewrite.
  [CDK] aws-cdk-lib aws_appmesh: CommonGatewayRouteSpecOptions.priority,
        HttpGatewayRouteMatch.rewriteRequestHostname (CloudFormation/CDK's own App Mesh docs).
"""
from __future__ import annotations

from typing import NamedTuple

from _fastroute import Conditions, TableError
from _fastroute.spec import lower_header
from meshd.compile import CompileError, _camel, _header, compile_regex
from meshd.v1 import admin_pb2

# The gateway route kind (GatewayRouteSpec oneof) -> the listener protocol it serves.
ROUTE_PROTOCOLS = {"http_route": "http", "http2_route": "http2", "grpc_route": "grpc"}
PROTOCOLS = frozenset(ROUTE_PROTOCOLS.values())

# Path conditions, most specific first; the order is part of the precedence rule.
_EXACT, _REGEX, _PREFIX, _ANY = 0, 1, 2, 3
# Hostname conditions, most specific first (Envoy's virtual host domain order).
_HOST_EXACT, _HOST_SUFFIX, _HOST_ANY = 0, 1, 2
# How the upstream path is made from the request path.
_KEEP, _DEFAULT_PREFIX, _PREFIX_VALUE, _PATH_EXACT = 0, 1, 2, 3


class GatewayDecision(NamedTuple):
    """Where one request goes: the gateway route that matched and what to send upstream.

    `port` is the target's port (GatewayRouteTarget.port) or None; `authority` and `path`
    are the request's after the route's hostname and path rewrites; `priority` is the
    route's explicit priority or None. A NamedTuple: one is made per request, and a tuple
    is the cheapest immutable record to make.
    """

    route: str
    virtual_service: str
    port: int | None
    authority: str
    path: str
    priority: int | None


class _Route:
    """One gateway route lowered for matching; `rank` is its place in the precedence order."""

    __slots__ = ("name", "protocol", "priority", "path_kind", "path", "regex", "host_kind", "host",
                 "conditions", "service", "target_port", "rewrite_host", "path_rewrite", "path_rewrite_value",
                 "key", "rank")

    def matches(self, host: str, port: int, method: str, path: str, base: str, headers) -> bool:
        """Every condition of the route holds; `base` is `path` without its query string."""
        if self.path_kind == _EXACT:
            if base != self.path:
                return False
        elif self.path_kind == _PREFIX:
            if not path.startswith(self.path):
                return False
        # Envoy's safe_regex: the whole path, less its query string, matches (RE2).
        elif self.path_kind == _REGEX and not self.regex.fullmatch(base):
            return False
        if self.host_kind == _HOST_EXACT:
            if host != self.host:
                return False
        # Envoy's "*<suffix>" domain wildcard, which App Mesh's suffix match becomes, "will
        # not match the empty string" (config.route.v3.VirtualHost.domains): the host must
        # be longer than the suffix.
        elif self.host_kind == _HOST_SUFFIX and not (host.endswith(self.host) and len(host) > len(self.host)):
            return False
        # Method, port, headers/metadata and query parameters: the router core's own check,
        # so gateway routes and virtual-router routes match them the same way.
        return self.conditions.holds(method, port, path, headers)

    def decide(self, authority: str, path: str, q: int) -> GatewayDecision:
        # Positional, in GatewayDecision's field order: route, virtual_service, port,
        # authority, path, priority.
        return GatewayDecision(self.name, self.service, self.target_port,
                               self.service if self.rewrite_host else authority,
                               self._upstream_path(path, q), self.priority)

    def _upstream_path(self, path: str, q: int) -> str:
        kind = self.path_rewrite
        if kind == _KEEP:
            return path
        if kind == _PATH_EXACT:
            # HttpGatewayRoutePathRewrite.exact replaces the exactly matched path; the
            # query string, which an exact path match ignores, travels on.
            return self.path_rewrite_value + ("" if q < 0 else path[q:])
        rest = path[len(self.path):]
        if kind == _PREFIX_VALUE:
            # HttpGatewayRoutePrefixRewrite.value: "The value used to replace the incoming
            # route prefix when rewritten" [API], a plain replacement ([WT]: prefix
            # "/maroon/" with value "/red/" sends "/maroon/tell" as "/red/tell").
            return self.path_rewrite_value + rest
        # The default prefix rewrite: "the matched prefix is rewritten to `/`" [UG], and [UG]'s
        # examples show the slash is not doubled: with prefix "/chapter", "/chapter/page"
        # arrives as "/page" and "/chapter1" as "/1"; [WT]: "/red/tell" matched on "/red" is
        # "rewritten to /tell".
        return rest if rest.startswith("/") else "/" + rest


class _ProtocolIndex:
    """The routes of one protocol, bucketed by path condition, each bucket in rank order."""

    __slots__ = ("exact", "prefix", "prefix_lengths", "tail")

    def __init__(self, routes: list[_Route]):
        self.exact: dict[str, tuple[_Route, ...]] = {}
        self.prefix: dict[str, tuple[_Route, ...]] = {}
        tail: list[_Route] = []
        for r in routes:  # already in rank order
            if r.path_kind == _EXACT:
                self.exact[r.path] = self.exact.get(r.path, ()) + (r,)
            elif r.path_kind == _PREFIX:
                self.prefix[r.path] = self.prefix.get(r.path, ()) + (r,)
            else:
                tail.append(r)
        self.prefix_lengths = tuple(sorted({len(p) for p in self.prefix}, reverse=True))
        #: Routes with a regex path or no path condition: every request is tried on them.
        self.tail = tuple(tail)

    def buckets(self, path: str, base: str) -> list[tuple[_Route, ...]]:
        """The buckets whose routes can match `path`: its exact bucket, the bucket of each
        prefix it starts with, and the regex and condition-free routes."""
        out = []
        bucket = self.exact.get(base)
        if bucket:
            out.append(bucket)
        n = len(path)
        for length in self.prefix_lengths:
            if length <= n:
                bucket = self.prefix.get(path[:length])
                if bucket:
                    out.append(bucket)
        if self.tail:
            out.append(self.tail)
        return out


class GatewayTable:
    """A compiled virtual gateway: `match` per request; `problems` lists the routes left out."""

    def __init__(self, mesh: str, gateway: str, routes: list[_Route], problems: tuple[CompileError, ...]):
        self.mesh, self.gateway, self.problems = mesh, gateway, problems
        ordered = sorted(routes, key=precedence_key)
        for rank, r in enumerate(ordered):
            r.rank = rank
        #: Route names in precedence order, best first.
        self.order: tuple[str, ...] = tuple(r.name for r in ordered)
        self._index = {p: _ProtocolIndex([r for r in ordered if r.protocol == p]) for p in PROTOCOLS}

    def match(self, protocol: str, authority: str, port: int, method: str, path: str,
              headers: dict[str, str]) -> GatewayDecision | None:
        """The best gateway route for a request, or None when none matches.

        `protocol` is the listener's (http, http2 or grpc); `authority` the Host or
        :authority as received; `port` the listener port it arrived on; `path` the :path
        with its query string; `headers` maps lower-case names to values (gRPC metadata too).
        """
        try:
            index = self._index[protocol]
        except KeyError:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}") from None
        host = request_host(authority)
        q = path.find("?")
        base = path if q < 0 else path[:q]
        best = None
        for bucket in index.buckets(path, base):
            for r in bucket:
                # Buckets are in rank order: past the best so far nothing can win.
                if best is not None and r.rank >= best.rank:
                    break
                if r.matches(host, port, method, path, base, headers):
                    best = r
                    break
        return None if best is None else best.decide(authority, path, q)


def precedence_key(r: _Route) -> tuple:
    """The one ordering of gateway routes; the smallest key wins.

    Rule: routes with an explicit priority first, lowest number first ("gateway route match
    is performed in the order of specified value, where 0 is the highest priority, and
    first matched gateway route is selected" [CDK]; GatewayRouteSpec.priority is "The
    ordering of the gateway routes spec", 0 to 1000 [API]). Then, as for virtual-router
    routes (_fastroute.spec.precedence_key), the more specific path: an exact path, then a
    regex, then a prefix, then no path condition; among prefixes the longer one ("a request
    is matched to the route with the longest prefix" [UG]; a gRPC service name is the
    prefix "/<service>/"). The docs order nothing further, so meshd then prefers the more
    specific hostname (exact, then the longer suffix, then none: the order in which Envoy,
    which runs App Mesh gateways, picks a virtual host by domain), then more other
    conditions (headers, metadata, query parameters, method, port), then the route name, so
    the order never depends on the order routes were listed.
    """
    return r.key


def request_host(authority: str) -> str:
    """The host of a Host/:authority value: lower-cased, its port stripped ("[::1]:80" -> "[::1]")."""
    host = authority.lower()
    if host.startswith("["):
        end = host.find("]")
        return host if end < 0 else host[:end + 1]
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host


def compile_gateway(mesh: str, gateway: admin_pb2.VirtualGatewayData,
                    routes: dict[str, admin_pb2.GatewayRouteData]) -> GatewayTable:
    """A virtual gateway and its gateway routes (by name) → a GatewayTable.

    A route that cannot be compiled is left out and reported in `problems`, with the
    resource (`gatewayRoutes/<mesh>/<gateway>/<route>`) and the field path.
    """
    gw = gateway.virtual_gateway_name
    listeners = {lst.port_mapping.port: lst.port_mapping.protocol for lst in gateway.spec.listeners}
    compiled, problems = [], []
    for name, data in sorted(routes.items()):
        resource = f"gatewayRoutes/{mesh}/{gw}/{name}"
        try:
            if data.virtual_gateway_name and data.virtual_gateway_name != gw:
                raise CompileError(resource, "virtualGatewayName", f"belongs to {data.virtual_gateway_name!r}")
            compiled.append(compile_gateway_route(name, data.spec, listeners))
        except CompileError as err:
            problems.append(CompileError(resource, err.field, err.reason))
    return GatewayTable(mesh, gw, compiled, tuple(problems))


def compile_gateway_route(name: str, spec, listeners: dict[int, str]) -> _Route:
    """One GatewayRouteSpec → a matchable route; `listeners` maps the gateway's ports to
    their protocols. Raises CompileError naming the spec field."""
    kind = spec.WhichOneof("route")
    if kind is None:
        raise CompileError("", "spec", "no route kind (httpRoute, http2Route, grpcRoute)")
    base = f"spec.{_camel(kind)}"
    body = getattr(spec, kind)
    m, action = body.match, body.action
    r = _Route()
    r.name, r.protocol = name, ROUTE_PROTOCOLS[kind]
    r.priority = spec.priority if spec.HasField("priority") else None
    port = m.port if m.HasField("port") else None
    _check_listener(r.protocol, port, listeners, base)
    r.path_kind, r.path, r.regex = _ANY, "", None
    method, query = None, ()
    if r.protocol == "grpc":
        if m.HasField("service_name"):
            # A gRPC call's :path is "/<service>/<method>" (gRPC over HTTP/2), so a service
            # name match is that prefix.
            if "/" in m.service_name:
                raise CompileError("", f"{base}.match.serviceName", "must not contain '/'")
            r.path_kind, r.path = _PREFIX, f"/{m.service_name}/"
        conditions = m.metadata
        conditions_path = f"{base}.match.metadata"
    else:
        _http_path(r, m, base)
        method = m.method if m.HasField("method") else None
        query = tuple((qp.name, qp.match.exact if qp.match.HasField("exact") else None)
                      for qp in m.query_parameters)
        conditions = m.headers
        conditions_path = f"{base}.match.headers"
    headers = tuple(_lower(h, f"{conditions_path}[{i}]") for i, h in enumerate(conditions))
    r.conditions = Conditions(method, port, headers, query)
    r.host_kind, r.host = _hostname(m, f"{base}.match.hostname")
    target = action.target
    r.service = target.virtual_service.virtual_service_name
    if not r.service:
        raise CompileError("", f"{base}.action.target.virtualService.virtualServiceName", "required")
    r.target_port = target.port if target.HasField("port") else None
    rewrite = action.rewrite
    # "A matched request by a gateway route is rewritten to the target virtual service's
    # name" by default [UG]; defaultTargetHostname DISABLED "retains the original hostname
    # from the request" [CDK rewriteRequestHostname, default true]. gRPC routes carry the
    # same GatewayRouteHostnameRewrite.
    r.rewrite_host = rewrite.hostname.default_target_hostname != "DISABLED"
    r.path_rewrite, r.path_rewrite_value = _path_rewrite(r, rewrite, base) if r.protocol != "grpc" else (_KEEP, "")
    n_conditions = len(headers) + len(query) + (method is not None) + (port is not None)
    path_len = len(r.path) if r.path_kind in (_EXACT, _PREFIX) else 0
    host_len = len(r.host) if r.host_kind == _HOST_SUFFIX else 0
    # Precedence summary; see `precedence_key` for the rule it encodes.
    r.key = (0 if r.priority is not None else 1, r.priority or 0, r.path_kind, -path_len,
             r.host_kind, -host_len, -n_conditions, r.name)
    r.rank = -1
    return r


def _check_listener(protocol: str, port: int | None, listeners: dict[int, str], base: str) -> None:
    """A route reaches requests only through a listener of its protocol (on its port)."""
    field = f"{base}.match.port"
    if port is None:
        if protocol not in listeners.values():
            raise CompileError("", base, f"no listener of the gateway speaks {protocol}")
    elif port not in listeners:
        raise CompileError("", field, f"no listener of the gateway on port {port}")
    elif listeners[port] != protocol:
        raise CompileError("", field, f"the listener on port {port} speaks {listeners[port]}, not {protocol}")


def _http_path(r: _Route, m, base: str) -> None:
    """HttpGatewayRouteMatch: a prefix, an exact or regex path, or (hostname-only) neither."""
    path_kind = m.path.WhichOneof("match") if m.HasField("path") else None
    if m.HasField("prefix") and path_kind is not None:
        raise CompileError("", f"{base}.match.path", "prefix and path exclude each other")
    if m.HasField("prefix"):
        if not m.prefix.startswith("/"):
            raise CompileError("", f"{base}.match.prefix", "must start with /")
        r.path_kind, r.path = _PREFIX, m.prefix
    elif path_kind == "exact":
        r.path_kind, r.path = _EXACT, m.path.exact
    elif path_kind == "regex":
        r.path_kind, r.regex = _REGEX, compile_regex(m.path.regex, f"{base}.match.path.regex")


def _lower(h, path: str):
    """One header/metadata condition, with the same semantics as virtual-router routes."""
    try:
        return lower_header(path, _header(h, path))
    except TableError as err:
        raise CompileError("", path, f"{err}") from err


def _hostname(m, field: str) -> tuple[int, str]:
    """GatewayRouteHostnameMatch: "The exact host name" or "The specified ending characters
    of the host name" [API], compared without case (DNS names are case-insensitive, RFC
    4343). A leading "*" on a suffix ("*.example.com", Envoy's notation) is accepted."""
    if not m.HasField("hostname"):
        return _HOST_ANY, ""
    which = m.hostname.WhichOneof("match")
    if which is None:
        raise CompileError("", field, "one of exact, suffix is required")
    value = getattr(m.hostname, which).lower()
    if which == "exact":
        return _HOST_EXACT, value
    value = value.lstrip("*")
    if not value:
        raise CompileError("", f"{field}.suffix", "must name more than '*'")
    return _HOST_SUFFIX, value


def _path_rewrite(r: _Route, rewrite, base: str) -> tuple[int, str]:
    """How the upstream path is made (HttpGatewayRouteRewrite prefix/path)."""
    where = f"{base}.action.rewrite"
    if rewrite.HasField("path"):
        if r.path_kind != _EXACT:
            raise CompileError("", f"{where}.path", "requires match.path.exact")
        if rewrite.HasField("prefix"):
            raise CompileError("", f"{where}.path", "prefix and path rewrites exclude each other")
        return _PATH_EXACT, rewrite.path.exact
    which = rewrite.prefix.WhichOneof("rewrite") if rewrite.HasField("prefix") else None
    if which is not None and r.path_kind != _PREFIX:
        raise CompileError("", f"{where}.prefix", "requires match.prefix")
    if which == "value":
        return _PREFIX_VALUE, rewrite.prefix.value
    if r.path_kind != _PREFIX or (which == "default_prefix" and rewrite.prefix.default_prefix == "DISABLED"):
        return _KEEP, ""
    # No prefix rewrite given, or defaultPrefix ENABLED: "the matched prefix is rewritten
    # to `/`, by default" [UG].
    return _DEFAULT_PREFIX, ""


def gateway_targets(snap, gateway: str) -> frozenset[str]:
    """The virtual services the gateway routes of `gateway` target in a MeshSnapshot: under
    an egressFilter DROP_ALL, the services a gateway may call (its backends, in effect)."""
    out = set()
    for (gw, _), data in snap.gateway_routes.items():
        kind = data.spec.WhichOneof("route") if gw == gateway else None
        if kind is not None:
            out.add(getattr(data.spec, kind).action.target.virtual_service.virtual_service_name)
    return frozenset(out)
