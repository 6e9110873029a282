"""The one place where App Mesh resources (protobuf) become `_fastroute` route tables.

Past this module nothing sees protobuf: the data plane gets a `_fastroute.Table` and
per-node endpoint lists. Errors carry the resource and the field path
(`routes/shop/api-router/api: spec.httpRoute.match.headers[0].match.regex`); a resource
that cannot be compiled is left out of the table and reported, so one bad route never
takes a whole mesh's routing down.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, field

import _fastroute as fr
from _fastroute._re2 import BadRegex, Regex
from meshd.v1 import admin_pb2

log = logging.getLogger("meshd.compile")

# App Mesh defaults when a spec says nothing (DESIGN.md "Hidden App Mesh defaults").
DEFAULT_PER_REQUEST_MS = 15_000
DEFAULT_IDLE_MS = 300_000
DEFAULT_TRUST_DOMAIN = "meshd.local"
# An instance registered by a meshd names that meshd's ingress (HOST:PORT) here; traffic to
# it goes there over mTLS. Instances without it are reached directly, in plaintext.
INGRESS_ATTRIBUTE = "meshd.ingress"


class CompileError(Exception):
    """A resource that could not be turned into routing input; names the field."""

    def __init__(self, resource: str, field: str, reason: str):
        self.resource, self.field, self.reason = resource, field, reason
        super().__init__(f"{resource}: {field}: {reason}")


@dataclass
class MeshSnapshot:
    """Everything of one mesh that routing needs, as protobuf data messages."""

    name: str
    mesh: admin_pb2.MeshData | None = None
    nodes: dict[str, admin_pb2.VirtualNodeData] = field(default_factory=dict)
    services: dict[str, admin_pb2.VirtualServiceData] = field(default_factory=dict)
    routers: dict[str, admin_pb2.VirtualRouterData] = field(default_factory=dict)
    routes: dict[tuple[str, str], admin_pb2.RouteData] = field(default_factory=dict)
    # Compiled by meshd.gateway for the gateway listeners, not into the route table.
    gateways: dict[str, admin_pb2.VirtualGatewayData] = field(default_factory=dict)
    gateway_routes: dict[tuple[str, str], admin_pb2.GatewayRouteData] = field(default_factory=dict)
    instances: dict[str, dict[str, admin_pb2.Instance]] = field(default_factory=dict)


@dataclass(frozen=True)
class Compiled:
    """A compiled mesh: the table, endpoints per node, and what had to be left out.

    `lowered` is the table as `_fastroute.spec.lower` validated it: `fr.Router(lowered)`
    builds on it without lowering the table a second time."""

    table: fr.Table
    endpoints: dict[str, tuple[fr.Endpoint, ...]]
    problems: tuple[CompileError, ...]
    lowered: fr.spec.Lowered


class RouteCache:
    """compile_route's results kept across compiles of one mesh, by (router, route).

    A snapshot replaces a route's message when the route changes and never mutates it, so
    an entry made from the very same message object is still the route's compiled form
    (or its error). Each compile keeps only the routes it saw: the cache never outgrows
    the mesh. Not thread-safe: one compiling thread owns it.

    `lowering` carries the same reuse one step further: the table's unchanged routes are
    not validated and lowered again (`_fastroute.spec.lower`)."""

    def __init__(self):
        self.lowering = fr.spec.LowerMemo()
        self._entries: dict[tuple[str, str], tuple[object, fr.Route | CompileError]] = {}
        self._next: dict[tuple[str, str], tuple[object, fr.Route | CompileError]] = {}

    def route(self, router: str, name: str, data) -> fr.Route:
        key = (router, name)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is data:
            result = hit[1]
        else:
            try:
                result = compile_route(router, name, data.spec)
            except CompileError as err:
                result = err
        self._next[key] = (data, result)
        if isinstance(result, CompileError):
            raise result
        return result

    def done(self) -> None:
        """End of one compile: forget the routes it did not see."""
        self._entries, self._next = self._next, {}


# The router's ranges (`_fastroute.spec`): durations up to 2**40 ms (about 35 years) and at
# most 1000 retries. App Mesh's `long`s go to 2**63, so a valid App Mesh timeout or retry
# count can be beyond them: such a value is clamped, which changes nothing a request can
# tell (a 35-year timeout never fires; the request's own timeout ends retries first), and
# the route is served rather than refused.
MAX_DURATION_MS = 2**40
MAX_RETRIES = 1000
MAX_SERVER_ERRORS = 2**31  # outlier detection: errors in a row before an ejection
RANGE_BOUND = 2**62  # header match ranges: values beyond it are not told apart


def duration_ms(d, default: int) -> int:
    """App Mesh Duration ({unit: ms|s, value}) in integer milliseconds, at most
    MAX_DURATION_MS; unset → default."""
    if d is None or not d.HasField("value"):
        return default
    return min(d.value * (1000 if d.unit == "s" else 1), MAX_DURATION_MS)


def spiffe_id(trust_domain: str, mesh: str, node: str) -> str:
    return f"spiffe://{trust_domain}/mesh/{mesh}/virtualNode/{node}"


def _header(h, path: str) -> fr.HeaderMatch:
    m = h.match
    kind = m.WhichOneof("match") if h.HasField("match") else None
    kwargs = {}
    if kind == "range":
        kwargs["range"] = tuple(max(-RANGE_BOUND, min(v, RANGE_BOUND)) for v in (m.range.start, m.range.end))
    elif kind is not None:
        kwargs[kind] = getattr(m, kind)
        if kind == "regex":
            compile_regex(m.regex, f"{path}.match.regex")
    return fr.HeaderMatch(name=h.name.lower(), invert=h.invert, **kwargs)


def compile_regex(pattern: str, path: str) -> Regex:
    """A route regex compiled by RE2, the engine the router matches with (Envoy's
    safe_regex); what RE2 cannot run (backreferences, lookaround) is a CompileError."""
    try:
        return Regex(pattern)
    except BadRegex as err:
        raise CompileError("", path, f"regex does not compile: {err.reason}") from err


def _targets(action, path: str) -> tuple[fr.Target, ...]:
    return tuple(
        fr.Target(node=t.virtual_node, weight=t.weight, port=t.port if t.HasField("port") else None)
        for t in action.weighted_targets)


def _retry(policy, grpc: bool) -> fr.RetryPolicy | None:
    if policy is None:
        return None  # the table default: App Mesh's hidden policy
    return fr.RetryPolicy(
        max_retries=min(policy.max_retries, MAX_RETRIES),
        per_retry_timeout_ms=duration_ms(policy.per_retry_timeout if policy.HasField("per_retry_timeout") else None,
                                         DEFAULT_PER_REQUEST_MS),
        http_events=tuple(policy.http_retry_events),
        grpc_events=tuple(policy.grpc_retry_events) if grpc else (),
        tcp_events=tuple(policy.tcp_retry_events),
    )


def _timeouts(t) -> fr.Timeouts | None:
    if t is None:
        return None
    per_request = t.per_request if t.DESCRIPTOR.fields_by_name.get("per_request") and t.HasField("per_request") else None
    idle = t.idle if t.HasField("idle") else None
    return fr.Timeouts(per_request_ms=duration_ms(per_request, DEFAULT_PER_REQUEST_MS),
                       idle_ms=duration_ms(idle, DEFAULT_IDLE_MS))


def compile_route(router: str, name: str, spec) -> fr.Route:
    """One App Mesh RouteSpec → a `_fastroute.Route` (errors name the spec field)."""
    kind = spec.WhichOneof("route")
    if kind is None:
        raise CompileError("", "spec", "no route kind (httpRoute, http2Route, grpcRoute, tcpRoute)")
    r = getattr(spec, kind)
    priority = spec.priority if spec.HasField("priority") else None
    base = f"spec.{_camel(kind)}"
    if kind in ("http_route", "http2_route"):
        m = r.match
        path_kind = m.path.WhichOneof("match") if m.HasField("path") else None
        if path_kind == "regex":
            compile_regex(m.path.regex, f"{base}.match.path.regex")
        match = fr.HttpMatch(
            prefix=m.prefix if m.HasField("prefix") else None,
            path_exact=m.path.exact if path_kind == "exact" else None,
            path_regex=m.path.regex if path_kind == "regex" else None,
            method=m.method if m.HasField("method") else None,
            scheme=m.scheme if m.HasField("scheme") else None,
            port=m.port if m.HasField("port") else None,
            headers=tuple(_header(h, f"{base}.match.headers[{i}]") for i, h in enumerate(m.headers)),
            query=tuple(fr.QueryMatch(name=q.name, exact=q.match.exact if q.match.HasField("exact") else None)
                        for q in m.query_parameters),
        )
        return fr.Route(name=name, protocol="http" if kind == "http_route" else "http2", match=match,
                        targets=_targets(r.action, base), priority=priority,
                        retry=_retry(r.retry_policy if r.HasField("retry_policy") else None, grpc=False),
                        timeouts=_timeouts(r.timeout if r.HasField("timeout") else None))
    if kind == "grpc_route":
        m = r.match
        match = fr.GrpcMatch(
            service_name=m.service_name if m.HasField("service_name") else None,
            method_name=m.method_name if m.HasField("method_name") else None,
            metadata=tuple(_header(h, f"{base}.match.metadata[{i}]") for i, h in enumerate(m.metadata)),
            port=m.port if m.HasField("port") else None,
        )
        return fr.Route(name=name, protocol="grpc", match=match, targets=_targets(r.action, base),
                        priority=priority,
                        retry=_retry(r.retry_policy if r.HasField("retry_policy") else None, grpc=True),
                        timeouts=_timeouts(r.timeout if r.HasField("timeout") else None))
    m = r.match
    tcp_timeout = r.timeout if r.HasField("timeout") else None
    return fr.Route(name=name, protocol="tcp",
                    match=fr.TcpMatch(port=m.port if m.HasField("port") else None),
                    targets=_targets(r.action, base), priority=priority, retry=fr.NO_RETRY,
                    timeouts=fr.Timeouts(per_request_ms=0, idle_ms=duration_ms(
                        tcp_timeout.idle if tcp_timeout is not None and tcp_timeout.HasField("idle") else None,
                        DEFAULT_IDLE_MS)))


def compile_node(mesh: str, name: str, spec, trust_domain: str) -> fr.VirtualNode:
    """A virtual node's balancing-side settings, from its first listener (App Mesh
    applies outlier detection, pools and timeouts per listener; meshd's endpoints of a
    node share one listener port)."""
    outlier, pool, timeouts = None, fr.ConnectionPool(), fr.Timeouts()
    if spec.listeners:
        lst = spec.listeners[0]
        if lst.HasField("outlier_detection"):
            od = lst.outlier_detection
            outlier = fr.OutlierDetection(
                max_server_errors=min(od.max_server_errors, MAX_SERVER_ERRORS),
                interval_ms=duration_ms(od.interval, 10_000),
                base_ejection_ms=duration_ms(od.base_ejection_duration, 30_000),
                max_ejection_percent=od.max_ejection_percent)
        if lst.HasField("connection_pool"):
            cp = lst.connection_pool
            which = cp.WhichOneof("protocol")
            p = getattr(cp, which)
            limits = {}
            for f in ("max_connections", "max_pending_requests", "max_requests"):
                if f in p.DESCRIPTOR.fields_by_name and p.HasField(f):
                    limits[f] = getattr(p, f)
            pool = fr.ConnectionPool(**limits)
        if lst.HasField("timeout"):
            which = lst.timeout.WhichOneof("protocol")
            timeouts = _timeouts(getattr(lst.timeout, which)) or fr.Timeouts()
    return fr.VirtualNode(name=name, outlier=outlier, pool=pool,
                          identity=spiffe_id(trust_domain, mesh, name), timeouts=timeouts)


def listener_timeouts(spec) -> tuple[float, float]:
    """(perRequest, idle) in seconds of a virtual node's first listener (0: none), with App
    Mesh's defaults of 15 s and 300 s: what the node's inbound requests get (the ingress)."""
    t = compile_node("", "", spec, DEFAULT_TRUST_DOMAIN).timeouts
    return t.per_request_ms / 1000, t.idle_ms / 1000


def compile_mesh(snap: MeshSnapshot, trust_domain: str = DEFAULT_TRUST_DOMAIN,
                 cache: RouteCache | None = None) -> Compiled:
    """A mesh snapshot → table + endpoints. Uncompilable resources are left out and reported.
    With `cache` (kept by the caller for this mesh), unchanged routes are not compiled again."""
    cache = cache if cache is not None else RouteCache()
    problems: list[CompileError] = []
    nodes = []
    for name, data in sorted(snap.nodes.items()):
        try:
            nodes.append(compile_node(snap.name, name, data.spec, trust_domain))
        except CompileError as err:
            problems.append(CompileError(f"virtualNodes/{snap.name}/{name}", err.field, err.reason))
    node_names = {n.name for n in nodes}
    routes_by_router: dict[str, list[fr.Route]] = {r: [] for r in snap.routers}
    for (router, name), data in sorted(snap.routes.items()):
        resource = f"routes/{snap.name}/{router}/{name}"
        try:
            route = cache.route(router, name, data)
            missing = [t.node for t in route.targets if t.node not in node_names]
            if missing:
                raise CompileError(resource, "spec", f"targets unknown virtual nodes {missing}")
            if router in routes_by_router:
                routes_by_router[router].append(route)
        except CompileError as err:
            problems.append(CompileError(resource, err.field, err.reason))
    routers = tuple(fr.VirtualRouter(name=r, routes=tuple(routes)) for r, routes in sorted(routes_by_router.items()))
    services = []
    for name, data in sorted(snap.services.items()):
        provider = data.spec.provider
        kind = provider.WhichOneof("provider") if data.spec.HasField("provider") else None
        if kind == "virtual_router" and provider.virtual_router.virtual_router_name in snap.routers:
            rname = provider.virtual_router.virtual_router_name
            ports = tuple(lst.port_mapping.port for lst in snap.routers[rname].spec.listeners)
            services.append(fr.VirtualService(name=name, router=rname, ports=ports))
        elif kind == "virtual_node" and provider.virtual_node.virtual_node_name in node_names:
            nname = provider.virtual_node.virtual_node_name
            ports = tuple(lst.port_mapping.port for lst in snap.nodes[nname].spec.listeners)
            services.append(fr.VirtualService(name=name, node=nname, ports=ports))
        elif kind is not None:
            problems.append(CompileError(f"virtualServices/{snap.name}/{name}", "spec.provider",
                                         "no provider that exists"))
        # App Mesh allows a service without a provider: it exists but routes nowhere, so
        # calls to it are answered "no service" like an unknown name.
    table = fr.Table(services=tuple(services), routers=routers, nodes=tuple(nodes))
    cache.done()
    table, lowered = _drop_invalid(table, problems, snap.name, cache.lowering)
    endpoints = {node: tuple(live_endpoints(insts)) for node, insts in snap.instances.items() if node in node_names}
    endpoints.update((node, tuple(live_endpoints(node_instances(snap, node))))
                     for node in node_names if cloud_map_service(snap.nodes[node]) is not None)
    for err in problems:
        log.warning("resource left out of the route table", extra={"resource": err.resource, "field": err.field,
                                                                   "reason": err.reason})
    return Compiled(table, endpoints, tuple(problems), lowered)


def live_endpoints(instances: dict[str, admin_pb2.Instance]) -> list[fr.Endpoint]:
    """The endpoints of a node's instances, each at its meshd's ingress when it has one (the
    ingress delivers to the instance), else itself. An UNHEALTHY one stays in, marked: the
    router passes it over unless too few are left (its panic threshold)."""
    out = []
    for _, i in sorted(instances.items()):
        healthy = i.health != "UNHEALTHY"       # not yet checked counts as healthy
        via = i.attributes.get(INGRESS_ATTRIBUTE)
        if via:
            host, port = via.rsplit(":", 1)
            out.append(fr.Endpoint(id=i.instance_id, address=host.strip("[]"), port=int(port), healthy=healthy))
        else:
            out.append(fr.Endpoint(id=i.instance_id, address=i.address, port=i.port, healthy=healthy))
    return out


def cloud_map_service(data: admin_pb2.VirtualNodeData) -> tuple[str, str] | None:
    """(namespaceName, serviceName) of a node discovered through `awsCloudMap`, else None."""
    spec = data.spec
    if not spec.HasField("service_discovery") or spec.service_discovery.WhichOneof("discovery") != "aws_cloud_map":
        return None
    cm = spec.service_discovery.aws_cloud_map
    return cm.namespace_name, cm.service_name


def sharing_cloud_map(snap: MeshSnapshot, node: str) -> list[str]:
    """The nodes whose endpoints the instances registered under `node` are part of: itself,
    and when it is discovered through `awsCloudMap`, every node naming the same service."""
    data = snap.nodes.get(node)
    key = cloud_map_service(data) if data is not None else None
    if key is None:
        return [node]
    return sorted(n for n, d in snap.nodes.items() if cloud_map_service(d) == key)


def node_instances(snap: MeshSnapshot, node: str) -> dict[str, admin_pb2.Instance]:
    """The instances `node` routes to. With `awsCloudMap` discovery, as Cloud Map's
    DiscoverInstances answers it: the instances registered under any node of the mesh that
    names the same namespace and service, whose attributes hold every key and value of this
    node's `attributes` filter (no filter: all), and whose address is of the family an
    `ipPreference` of IPv4_ONLY or IPv6_ONLY demands. An instance of another node whose id
    this node already has keeps its node's name in its id ("api-v1/i-1").

    An instance registered under this node itself was declared one of its instances (a
    meshd registers its local apps with no attributes of their own): it stays unless an
    attribute it has contradicts the filter.

    Another node's instance behind a meshd ingress is left out: that ingress serves, and
    proves the identity of, the node the instance is registered under, not this one."""
    data = snap.nodes.get(node)
    key = cloud_map_service(data) if data is not None else None
    if key is None:
        return snap.instances.get(node, {})
    cm = data.spec.service_discovery.aws_cloud_map
    want = [(a.key, a.value) for a in cm.attributes]
    family = {"IPv4_ONLY": 4, "IPv6_ONLY": 6}.get(cm.ip_preference)
    out: dict[str, admin_pb2.Instance] = {}
    for owner in sorted(sharing_cloud_map(snap, node), key=lambda n: n != node):  # its own first
        for iid, inst in sorted(registered_instances(snap, owner).items()):
            if not _discovered(inst, want, family, own=owner == node):
                continue
            if iid in out:
                iid, renamed = f"{owner}/{iid}", admin_pb2.Instance()
                renamed.CopyFrom(inst)
                renamed.instance_id, inst = iid, renamed
            out[iid] = inst
    return out


def registered_instances(snap: MeshSnapshot, node: str) -> dict[str, admin_pb2.Instance]:
    """The instances registered under `node`, without those `routed_instances` added."""
    return {k: i for k, i in snap.instances.get(node, {}).items() if i.virtual_node_name in ("", node)}


def routed_instances(snap: MeshSnapshot, node: str) -> dict[str, admin_pb2.Instance]:
    """What a published snapshot holds for `node`, where the egress looks up the instance
    behind each endpoint: those registered under it and those it routes to."""
    return {**registered_instances(snap, node), **node_instances(snap, node)}


def _discovered(inst: admin_pb2.Instance, want: list[tuple[str, str]], family: int | None, own: bool) -> bool:
    """Does a Cloud Map query (attribute filter, address family) find `inst`? `own`: it is
    registered under the querying node (see node_instances)."""
    attrs = inst.attributes
    if own:
        if any(k in attrs and attrs[k] != v for k, v in want):
            return False
    elif any(attrs.get(k) != v for k, v in want) or any(a.startswith(INGRESS_ATTRIBUTE) for a in attrs):
        return False
    return family is None or _ip_family(inst.address) in (family, None)


def _ip_family(address: str) -> int | None:
    """4 or 6 for an IP address, None for a host name."""
    try:
        return ipaddress.ip_address(address.strip("[]")).version
    except ValueError:
        return None


_ROUTE_PATH = re.compile(r"^routers\[(\d+)\]\.routes\[(\d+)\]")


def _drop_invalid(table: fr.Table, problems: list[CompileError], mesh: str,
                  memo: fr.spec.LowerMemo) -> tuple[fr.Table, fr.spec.Lowered]:
    """Let `_fastroute` validate the table; drop each route it rejects, then try again.
    Returns the table and its lowered form."""
    for _ in range(64):
        try:
            return table, fr.spec.lower(table, memo)
        except fr.TableError as err:
            m = _ROUTE_PATH.match(err.path)
            if not m:
                raise
            ri, rj = int(m.group(1)), int(m.group(2))
            router = table.routers[ri]
            bad = router.routes[rj]
            problems.append(CompileError(f"routes/{mesh}/{router.name}/{bad.name}", err.path, str(err)))
            routes = router.routes[:rj] + router.routes[rj + 1:]
            routers = table.routers[:ri] + (fr.VirtualRouter(router.name, routes),) + table.routers[ri + 1:]
            table = fr.Table(services=table.services, routers=routers, nodes=table.nodes,
                             default_retry=table.default_retry, default_timeouts=table.default_timeouts)
    raise RuntimeError("route table still invalid after dropping 64 routes")


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def services_reaching(snap: MeshSnapshot, node: str) -> frozenset[str]:
    """The virtual services of `snap` whose traffic can reach virtual node `node`: those it
    provides directly, and those whose virtual router has a route targeting it. A TCP
    connection names no service, so the ingress checks a DROP_ALL caller against these."""
    routers = {router for (router, _), data in snap.routes.items()
               if any(t.virtual_node == node for t in _route_targets(data))}
    out = set()
    for name, data in snap.services.items():
        p = data.spec.provider
        kind = p.WhichOneof("provider") if data.spec.HasField("provider") else None
        if (kind == "virtual_node" and p.virtual_node.virtual_node_name == node) or (
                kind == "virtual_router" and p.virtual_router.virtual_router_name in routers):
            out.add(name)
    return frozenset(out)


def _route_targets(data: admin_pb2.RouteData):
    kind = data.spec.WhichOneof("route")
    return getattr(data.spec, kind).action.weighted_targets if kind is not None else ()

