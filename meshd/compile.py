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
from dataclasses import dataclass, field, replace

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
    # MeshView holds a route as its serialized RouteData (bytes): compiled once per change,
    # it is parsed then and the message dropped (a message of its own costs about 1 kB,
    # and one taken from a Watch response keeps that whole response alive). A scoped
    # view's `scoped` parses the routes in scope in place: a sidecar of a 10,000-route
    # mesh then holds little more than a sidecar of a small one.
    routes: dict[tuple[str, str], admin_pb2.RouteData | bytes] = field(default_factory=dict)
    # The same routes by virtual router (router -> route name -> data), when the holder
    # keeps them so (MeshView does: a group is replaced, never changed, once a compile
    # has seen it): a compile then tells an unchanged router by the identity of its group,
    # without a walk over the mesh's routes. None: `compile_mesh` groups `routes` itself.
    route_groups: dict[str, dict[str, admin_pb2.RouteData]] | None = None
    # Compiled by meshd.gateway for the gateway listeners, not into the route table.
    gateways: dict[str, admin_pb2.VirtualGatewayData] = field(default_factory=dict)
    gateway_routes: dict[tuple[str, str], admin_pb2.GatewayRouteData] = field(default_factory=dict)
    instances: dict[str, dict[str, admin_pb2.Instance]] = field(default_factory=dict)
    # meshd.v1 kinds beyond App Mesh, by their names.
    route_policies: dict[str, admin_pb2.RoutePolicyData] = field(default_factory=dict)
    node_policies: dict[str, admin_pb2.NodePolicyData] = field(default_factory=dict)
    # A scoped snapshot (`scoped`) lacks routers that reach its local nodes: under DROP_ALL,
    # where the ingress asks, it carries the services reaching each local node
    # (services_reaching), worked out on the whole mesh.
    reaching: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class MirrorLimits:
    """What a route's mirror is allowed on each meshd, beyond the router's per-request draw
    (TrafficMirror): copies outstanding at once, and the largest body copied."""

    max_in_flight: int = 64
    max_body_bytes: int = 65_536


@dataclass(frozen=True)
class Compiled:
    """A compiled mesh: the table, endpoints per node, and what had to be left out.

    `lowered` is the table as `_fastroute.spec.lower` validated it: `fr.Router(lowered)`
    builds on it without lowering the table a second time. `mirrors` holds the per-meshd
    bounds of each mirrored route, by (router, route); `listener_limits` the token bucket of
    each rate-limited virtual node listener, by (node, port) (NodePolicy): the proxy applies
    both, the router knows neither."""

    table: fr.Table
    endpoints: dict[str, tuple[fr.Endpoint, ...]]
    problems: tuple[CompileError, ...]
    lowered: fr.spec.Lowered
    mirrors: dict[tuple[str, str], MirrorLimits] = field(default_factory=dict)
    listener_limits: dict[tuple[str, int], fr.spec.RateLimit] = field(default_factory=dict)


class RouteCache:
    """What one compile of a mesh made, kept for the next compile of the same mesh, so that a
    change costs what it changed rather than what the mesh holds.

    A snapshot replaces a resource's message when the resource changes and never mutates
    it, so whatever was made from the very same message objects is still right:
    - a virtual router's compiled routes, while its group of route messages (the very same
      dict, or an equal one), its RoutePolicies and the mesh's node names are unchanged;
      within a changed router, each route whose message is the same (`route`,
      `with_policy`), including its error;
    - a virtual node's compiled form, with its NodePolicy's listener limits and problems;
    - a virtual service's, while its provider's message is the same;
    - a node's endpoints, while its instance messages are the same.
    Each compile keeps only what it saw: the cache never outgrows the mesh. Not thread-safe:
    one compiling thread owns it.

    `lowering` carries the same reuse one step further: unchanged routers, nodes and
    services are not validated and lowered again (`_fastroute.spec.lower`)."""

    def __init__(self):
        self.lowering = fr.spec.LowerMemo()
        # router -> route name -> (its data, its fr.Route or CompileError)
        self._entries: dict[str, dict[str, tuple]] = {}
        self._next: dict[str, dict[str, tuple]] = {}
        # router -> route name -> (the route, its policy's (name, data), mirror node known, the result)
        self._policies: dict[str, dict[str, tuple]] = {}
        self._next_policies: dict[str, dict[str, tuple]] = {}
        # router -> (its group of route data, its policies, the node names, the result)
        self._routers: dict[str, tuple] = {}
        self._next_routers: dict[str, tuple] = {}
        self._node_names: frozenset[str] = frozenset()
        # node -> (its data, its policy's (name, data), the trust domain, the result)
        self._nodes: dict[str, tuple] = {}
        self._next_nodes: dict[str, tuple] = {}
        # service -> (its data, provider kind, provider name, provider data, provider known, the result)
        self._services: dict[str, tuple] = {}
        self._next_services: dict[str, tuple] = {}
        # node -> (its instances as (id, message) pairs, their endpoints)
        self._endpoints: dict[str, tuple] = {}
        self._next_endpoints: dict[str, tuple] = {}

    def endpoints(self, node: str, instances: dict) -> tuple[fr.Endpoint, ...]:
        """`live_endpoints(instances)`, kept while the node's instance messages are the same
        objects (a snapshot replaces an instance's message when it changes). The same tuple
        object while they are: `fr.Router(base=...)` keeps the node's live endpoints then."""
        items = tuple(instances.items())
        hit = self._endpoints.get(node)
        if (hit is not None and len(hit[0]) == len(items)
                and all(a[0] == b[0] and a[1] is b[1] for a, b in zip(hit[0], items))):
            result = hit[1]
        else:
            result = tuple(live_endpoints(instances))
        self._next_endpoints[node] = (items, result)
        return result

    def node_names(self, names: frozenset[str]) -> frozenset[str]:
        """The mesh's compiled node names: the last compile's set itself when equal, so that
        `router` compares them by identity (once per compile, not once per router)."""
        if names != self._node_names:
            self._node_names = names
        return self._node_names

    def node(self, name: str, data, policy, trust_domain: str, build):
        """`build()`'s (node or None, listener limits, problems, Cloud Map service) for a
        virtual node, or the last one while its message, its policy and the trust domain
        are the same."""
        hit = self._nodes.get(name)
        if hit is not None and hit[0] is data and hit[1] == policy and hit[2] == trust_domain:
            result = hit[3]
        else:
            result = build()
        self._next_nodes[name] = (data, policy, trust_domain, result)
        return result

    def service(self, name: str, data, snap: MeshSnapshot, node_names: frozenset[str]):
        """A virtual service's fr.VirtualService, or a CompileError when its provider does
        not exist, or None when it has none (App Mesh allows that: it routes nowhere)."""
        hit = self._services.get(name)
        if hit is not None and hit[0] is data:
            kind, pname = hit[1], hit[2]
        else:
            provider = data.spec.provider
            kind = provider.WhichOneof("provider") if data.spec.HasField("provider") else None
            pname = (provider.virtual_router.virtual_router_name if kind == "virtual_router"
                     else provider.virtual_node.virtual_node_name if kind == "virtual_node" else None)
        if kind == "virtual_router":
            pdata = snap.routers.get(pname)
            known = pdata is not None
        elif kind == "virtual_node":
            pdata = snap.nodes.get(pname)
            known = pname in node_names
        else:
            pdata, known = None, False
        if hit is not None and hit[0] is data and hit[3] is pdata and hit[4] == known:
            result = hit[5]
        elif kind is not None and not known:
            result = CompileError(f"virtualServices/{snap.name}/{name}", "spec.provider", "no provider that exists")
        elif kind is not None:
            ports = tuple(lst.port_mapping.port for lst in pdata.spec.listeners)
            result = fr.VirtualService(name=name, ports=ports, **{kind[len("virtual_"):]: pname})
        else:
            result = None
        self._next_services[name] = (data, kind, pname, pdata, known, result)
        return result

    def router(self, router: str, group: dict, policies: dict | None, node_names: frozenset[str], build):
        """A virtual router's compiled routes: `build()`'s result, or the last one while its
        group of routes (the same dict, or one of the same messages), its policies and the
        mesh's node names are unchanged. A change to one route then compiles one router's
        routes, not the mesh's; the routes of a kept router stay cached as they were."""
        hit = self._routers.get(router)
        if (hit is not None and hit[2] is node_names and (hit[0] is group or hit[0] == group)
                and hit[1] == policies):
            if router in self._entries:
                self._next[router] = self._entries[router]
            if router in self._policies:
                self._next_policies[router] = self._policies[router]
            result = hit[3]
        else:
            result = build()
        self._next_routers[router] = (group, policies, node_names, result)
        return result

    def route(self, router: str, name: str, data) -> fr.Route:
        """A route's compiled form (its message, or the message serialized: parsed here)."""
        hit = self._entries.get(router, {}).get(name)
        if hit is not None and hit[0] is data:
            result = hit[1]
        else:
            try:
                result = compile_route(router, name, route_data(data).spec)
            except CompileError as err:
                result = err
        self._next.setdefault(router, {})[name] = (data, result)
        if isinstance(result, CompileError):
            raise result
        return result

    def with_policy(self, router: str, name: str, route: fr.Route, policy, nodes) -> fr.Route:
        """`route` with its RoutePolicy (`policy`, a RoutePolicyData) applied; the same Route
        object while the route, the policy and its mirror node's existence are unchanged
        (so the lowering memo keeps it too). Raises CompileError naming the policy's field."""
        mirror_known = policy.spec.mirror.virtual_node in nodes if policy.spec.HasField("mirror") else True
        hit = self._policies.get(router, {}).get(name)
        if hit is not None and hit[0] is route and hit[1] is policy and hit[2] == mirror_known:
            result = hit[3]
        else:
            try:
                result = replace(route, **route_policy(policy.spec, nodes))
            except CompileError as err:
                result = err
        self._next_policies.setdefault(router, {})[name] = (route, policy, mirror_known, result)
        if isinstance(result, CompileError):
            raise result
        return result

    def done(self) -> None:
        """End of one compile: forget what it did not see."""
        self._entries, self._next = self._next, {}
        self._policies, self._next_policies = self._next_policies, {}
        self._routers, self._next_routers = self._next_routers, {}
        self._nodes, self._next_nodes = self._next_nodes, {}
        self._services, self._next_services = self._next_services, {}
        self._endpoints, self._next_endpoints = self._next_endpoints, {}


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
    has_per_request = t.DESCRIPTOR.fields_by_name.get("per_request") and t.HasField("per_request")
    per_request = t.per_request if has_per_request else None
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


PER_MILLION = 1_000_000
# TrafficMirror's defaults (meshd.v1 spec.proto).
DEFAULT_MIRROR = MirrorLimits()


def per_million(msg, field_name: str, path: str) -> int:
    """A meshd.v1 percentage (a double in [0, 100], at most 4 decimals) as an integer count
    per million, the router's unit: integers end to end past this point (STYLE.md §11).
    Unset means every request (100%)."""
    if not msg.HasField(field_name):
        return PER_MILLION
    value = getattr(msg, field_name)
    if not 0 <= value <= 100:
        raise CompileError("", f"{path}.{_camel(field_name)}", f"must be 0-100, got {value}")
    return round(value * PER_MILLION / 100)


def rate_limit(rl, path: str) -> fr.spec.RateLimit:
    """A RateLimit message as the router's token bucket: maxTokens and fillInterval are
    required, tokensPerFill defaults to 1 (as Envoy's TokenBucket)."""
    if rl.max_tokens <= 0:
        raise CompileError("", f"{path}.maxTokens", "required, at least 1")
    if not rl.HasField("fill_interval") or duration_ms(rl.fill_interval, 0) <= 0:
        raise CompileError("", f"{path}.fillInterval", "required, at least 1 ms")
    fill = rl.tokens_per_fill if rl.HasField("tokens_per_fill") else 1
    if fill <= 0:
        raise CompileError("", f"{path}.tokensPerFill", "must be at least 1")
    return fr.spec.RateLimit(max_tokens=rl.max_tokens, tokens_per_fill=fill,
                        fill_interval_ms=duration_ms(rl.fill_interval, 0))


def route_policy(spec, nodes) -> dict:
    """A RoutePolicySpec as the fields of `_fastroute.Route` it sets (fault, mirror,
    rate_limit); `nodes` are the table's node names, which a mirror must name."""
    out: dict = {}
    if spec.HasField("fault"):
        f, base = spec.fault, "spec.fault"
        delay = abort = None
        if f.HasField("delay"):
            d = f.delay
            delay = fr.spec.FaultDelay(per_million=per_million(d, "percentage", f"{base}.delay"),
                                  fixed_ms=duration_ms(d.fixed_delay if d.HasField("fixed_delay") else None, 0),
                                  jitter_ms=duration_ms(d.jitter if d.HasField("jitter") else None, 0))
        if f.HasField("abort"):
            a = f.abort
            which = a.WhichOneof("status")
            if which is None:
                raise CompileError("", f"{base}.abort", "one of httpStatus or grpcStatus is required")
            abort = fr.spec.FaultAbort(per_million=per_million(a, "percentage", f"{base}.abort"),
                                  **{which: getattr(a, which)})
        headers = tuple(_header(h, f"{base}.match[{i}]") for i, h in enumerate(f.match))
        out["fault"] = fr.spec.Fault(delay=delay, abort=abort, headers=headers)
    if spec.HasField("mirror"):
        m = spec.mirror
        if m.virtual_node not in nodes:
            raise CompileError("", "spec.mirror.virtualNode", f"unknown virtual node {m.virtual_node!r}")
        out["mirror"] = fr.spec.Mirror(node=m.virtual_node, per_million=per_million(m, "percentage", "spec.mirror"),
                                  port=m.port if m.HasField("port") else None)
    if spec.HasField("rate_limit"):
        out["rate_limit"] = rate_limit(spec.rate_limit, "spec.rateLimit")
    return out


def mirror_limits(spec) -> MirrorLimits:
    """The per-meshd bounds of a RoutePolicy's mirror (TrafficMirror's defaults when unset)."""
    m = spec.mirror
    return MirrorLimits(
        max_in_flight=m.max_in_flight if m.HasField("max_in_flight") else DEFAULT_MIRROR.max_in_flight,
        max_body_bytes=m.max_body_bytes if m.HasField("max_body_bytes") else DEFAULT_MIRROR.max_body_bytes)


def node_policy(spec, listener_ports) -> tuple[fr.spec.LocalityLb, dict[int, fr.spec.RateLimit]]:
    """A NodePolicySpec: the node's locality balancing, and the token bucket of each of its
    listeners (by port, which must be one of `listener_ports`)."""
    loc = spec.locality
    locality = fr.spec.LocalityLb(
        enabled=loc.enabled if loc.HasField("enabled") else True,
        overprovisioning_percent=(loc.overprovisioning_factor if loc.HasField("overprovisioning_factor")
                                  else fr.spec.LocalityLb().overprovisioning_percent))
    limits = {}
    for i, lrl in enumerate(spec.listener_rate_limits):
        path = f"spec.listenerRateLimits[{i}]"
        if lrl.port not in listener_ports:
            raise CompileError("", f"{path}.port", f"no listener of the node on port {lrl.port}")
        limits[lrl.port] = rate_limit(lrl.rate_limit, f"{path}.rateLimit")
    return locality, limits


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
    With `cache` (kept by the caller for this mesh), what did not change is not compiled
    again; with the snapshot's `route_groups` too, finding what changed costs a look at
    each router, node and service, not at each route."""
    cache = cache if cache is not None else RouteCache()
    problems: list[CompileError] = []
    node_policies = {p.spec.virtual_node_name: (name, p) for name, p in sorted(snap.node_policies.items())}
    nodes, listener_limits, cloud_map = [], {}, []
    for name, data in sorted(snap.nodes.items()):
        policy = node_policies.get(name)
        node, limits, node_problems, discovered = cache.node(
            name, data, policy, trust_domain,
            lambda: _compile_node_with_policy(snap.name, name, data, policy, trust_domain))
        problems.extend(node_problems)
        if node is None:
            continue
        listener_limits.update(limits)
        if discovered:
            cloud_map.append(name)
        nodes.append(node)
    node_names = cache.node_names(frozenset(n.name for n in nodes))
    policies: dict[str, dict[str, tuple]] = {}
    for pname, p in sorted(snap.route_policies.items()):
        policies.setdefault(p.spec.route.virtual_router_name, {})[p.spec.route.route_name] = (pname, p)
    groups = snap.route_groups if snap.route_groups is not None else group_routes(snap.routes)
    mirrors: dict[tuple[str, str], MirrorLimits] = {}
    routers = []
    for router in sorted(groups.keys() | snap.routers.keys()):
        group, mine = groups.get(router, _NO_ROUTES), policies.get(router)
        routes, router_problems, router_mirrors = cache.router(
            router, group, mine, node_names,
            lambda: _router_routes(snap.name, router, sorted(group.items()), mine or {}, node_names, cache))
        problems.extend(router_problems)
        mirrors.update(router_mirrors)
        if router in snap.routers:
            routers.append(routes)
    services = []
    for name, data in sorted(snap.services.items()):
        service = cache.service(name, data, snap, node_names)
        if isinstance(service, CompileError):
            problems.append(service)
        elif service is not None:
            services.append(service)
        # App Mesh allows a service without a provider: it exists but routes nowhere, so
        # calls to it are answered "no service" like an unknown name.
    table = fr.Table(services=tuple(services), routers=tuple(routers), nodes=tuple(nodes))
    endpoints = {node: cache.endpoints(node, insts) for node, insts in snap.instances.items() if node in node_names}
    cache.done()
    flat_policies = {(router, route): pname for router, mine in policies.items() for route, (pname, _) in mine.items()}
    table, lowered = _drop_invalid(table, problems, snap.name, cache.lowering, flat_policies, mirrors)
    endpoints.update((node, tuple(live_endpoints(node_instances(snap, node)))) for node in cloud_map)
    for err in problems:
        log.warning("resource left out of the route table", extra={"resource": err.resource, "field": err.field,
                                                                   "reason": err.reason})
    return Compiled(table, endpoints, tuple(problems), lowered, mirrors, listener_limits)


_NO_ROUTES: dict = {}


def group_routes(routes: dict[tuple[str, str], object]) -> dict[str, dict[str, object]]:
    """A snapshot's routes by virtual router: router -> route name -> data."""
    groups: dict[str, dict[str, object]] = {}
    for (router, name), data in routes.items():
        groups.setdefault(router, {})[name] = data
    return groups


def _compile_node_with_policy(mesh: str, name: str, data, policy, trust_domain: str) -> tuple:
    """A virtual node with its NodePolicy: (fr.VirtualNode or None when it cannot be
    compiled, its listener limits by (node, port), the problems, whether it is discovered
    through Cloud Map)."""
    try:
        node = compile_node(mesh, name, data.spec, trust_domain)
    except CompileError as err:
        return None, {}, [CompileError(f"virtualNodes/{mesh}/{name}", err.field, err.reason)], False
    limits, problems = {}, []
    if policy is not None:
        pname, p = policy
        try:
            locality, by_port = node_policy(p.spec, {lst.port_mapping.port for lst in data.spec.listeners})
            node = replace(node, locality=locality)
            limits = {(name, port): rl for port, rl in by_port.items()}
        except CompileError as err:
            problems.append(CompileError(f"nodePolicies/{mesh}/{pname}", err.field, err.reason))
    return node, limits, problems, cloud_map_service(data) is not None


def _router_routes(mesh: str, router: str, items: list, policies: dict, node_names: set[str],
                   cache: RouteCache) -> tuple[fr.VirtualRouter, list[CompileError], dict]:
    """One virtual router's routes compiled, with their RoutePolicies: (the router, the
    problems of its routes and policies, the mirror bounds of its mirrored routes)."""
    problems, mirrors, routes = [], {}, []
    for name, data in items:
        resource = f"routes/{mesh}/{router}/{name}"
        try:
            route = cache.route(router, name, data)
            missing = [t.node for t in route.targets if t.node not in node_names]
            if missing:
                raise CompileError(resource, "spec", f"targets unknown virtual nodes {missing}")
        except CompileError as err:
            problems.append(CompileError(resource, err.field, err.reason))
            continue
        if policies.get(name) is not None:
            # A policy that cannot be applied is reported and left out: the route itself
            # still serves, as it did before the policy was written.
            pname, policy = policies[name]
            try:
                route = cache.with_policy(router, name, route, policy, node_names)
                if route.mirror is not None:
                    mirrors[(router, name)] = mirror_limits(policy.spec)
            except CompileError as err:
                problems.append(CompileError(f"routePolicies/{mesh}/{pname}", err.field, err.reason))
        routes.append(route)
    return fr.VirtualRouter(name=router, routes=tuple(routes)), problems, mirrors


def live_endpoints(instances: dict[str, admin_pb2.Instance]) -> list[fr.Endpoint]:
    """The endpoints of a node's instances, each at its meshd's ingress when it has one (the
    ingress delivers to the instance), else itself. An UNHEALTHY one stays in, marked: the
    router passes it over unless too few are left (its panic threshold). Each carries its
    instance's locality, which the router compares with its own (locality-aware balancing)."""
    out = []
    for _, i in sorted(instances.items()):
        healthy = i.health != "UNHEALTHY"       # not yet checked counts as healthy
        via = i.attributes.get(INGRESS_ATTRIBUTE)
        loc = (i.locality.region, i.locality.zone, i.locality.sub_zone)
        if via:
            host, port = via.rsplit(":", 1)
            out.append(fr.Endpoint(id=i.instance_id, address=host.strip("[]"), port=int(port), healthy=healthy,
                                   locality=loc))
        else:
            out.append(fr.Endpoint(id=i.instance_id, address=i.address, port=i.port, healthy=healthy, locality=loc))
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


_ROUTE_PATH = re.compile(r"^routers\[(\d+)\]\.routes\[(\d+)\](\.(?:fault|mirror|rate_limit)\b)?")


def _drop_invalid(table: fr.Table, problems: list[CompileError], mesh: str, memo: fr.spec.LowerMemo,
                  policies: dict[tuple[str, str], str], mirrors: dict) -> tuple[fr.Table, fr.spec.Lowered]:
    """Let `_fastroute` validate the table; drop each route it rejects, then try again. A
    route rejected for its RoutePolicy's fields (`policies`: the policy's name by route)
    loses the policy, reported as the policy's problem, not the route. Returns the table
    and its lowered form."""
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
            if m.group(3):
                resource = f"routePolicies/{mesh}/{policies.get((router.name, bad.name), '')}"
                kept = (replace(bad, fault=None, mirror=None, rate_limit=None),)
                mirrors.pop((router.name, bad.name), None)
            else:
                resource, kept = f"routes/{mesh}/{router.name}/{bad.name}", ()
            problems.append(CompileError(resource, err.path, str(err)))
            routes = router.routes[:rj] + kept + router.routes[rj + 1:]
            routers = table.routers[:ri] + (fr.VirtualRouter(router.name, routes),) + table.routers[ri + 1:]
            table = fr.Table(services=table.services, routers=routers, nodes=table.nodes,
                             default_retry=table.default_retry, default_timeouts=table.default_timeouts)
    raise RuntimeError("route table still invalid after dropping 64 routes")


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def services_reaching(snap: MeshSnapshot, node: str, table: fr.Table | None = None) -> frozenset[str]:
    """The virtual services of `snap` whose traffic can reach virtual node `node`: those it
    provides directly, and those whose virtual router has a route targeting it, or whose
    copies a RoutePolicy mirrors to it. A TCP connection names no service, so the ingress
    checks a DROP_ALL caller against these. With the mesh's compiled `table`, from its
    routes (what can carry traffic) rather than by parsing the snapshot's."""
    if node in snap.reaching:
        return snap.reaching[node]
    if table is not None:
        routers = {vr.name for vr in table.routers for rt in vr.routes
                   if any(t.node == node for t in rt.targets) or (rt.mirror is not None and rt.mirror.node == node)}
        return frozenset(s.name for s in table.services if s.node == node or s.router in routers)
    routers = {router for (router, _), data in snap.routes.items()
               if any(t.virtual_node == node for t in _route_targets(route_data(data)))}
    routers.update(p.spec.route.virtual_router_name for p in snap.route_policies.values()
                   if p.spec.HasField("mirror") and p.spec.mirror.virtual_node == node)
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



@dataclass(frozen=True)
class Scope:
    """What one meshd serves in a mesh: its local apps' virtual nodes (with the services
    their local configuration names as backends) and the virtual gateways it runs."""

    nodes: frozenset[str] = frozenset()
    gateways: frozenset[str] = frozenset()
    backends: frozenset[str] = frozenset()


def scoped(snap: MeshSnapshot, scope: Scope) -> MeshSnapshot:
    """The part of `snap` a meshd serving `scope` routes with, as App Mesh configures a
    node's Envoy for its backends only (Istio's Sidecar egress hosts, for the same reason):
    - outbound: the virtual services its nodes name as backends and its gateways' routes
      target, the routers behind them with their routes, the nodes those routes (and their
      RoutePolicies' mirrors) target, and nodes sharing a Cloud Map service with one;
    - inbound: the local nodes with the services whose traffic reaches them (`reaching`),
      and under a DROP_ALL egress filter the nodes and gateways that may call them, whose
      backends the ingress checks.
    Resources out of scope are left out, so they are neither compiled nor held. Routes
    held serialized (a scoped view's) are parsed when their router is kept, in `snap` too."""
    def provider(service: str) -> tuple[str | None, str | None]:
        data = snap.services.get(service)
        if data is None or not data.spec.HasField("provider"):
            return None, None
        p = data.spec.provider
        kind = p.WhichOneof("provider")
        if kind == "virtual_router":
            return p.virtual_router.virtual_router_name, None
        return None, p.virtual_node.virtual_node_name if kind == "virtual_node" else None

    def backends(node: str) -> set[str]:
        data = snap.nodes.get(node)
        return {b.virtual_service.virtual_service_name for b in data.spec.backends} if data is not None else set()

    gateway_routes = {key: data for key, data in snap.gateway_routes.items() if key[0] in scope.gateways}
    services = set(scope.backends).union(*(backends(n) for n in scope.nodes))
    services.update(_gateway_route_target(data) for data in gateway_routes.values())
    routers = {r for r in (provider(s)[0] for s in services) if r in snap.routers}
    routes = {key: data for key, data in snap.routes.items() if key[0] in routers}
    for key, data in routes.items():
        if isinstance(data, bytes):
            # parsed once, in place: later compiles see the same message (RouteCache keeps it)
            routes[key] = snap.routes[key] = route_data(data)
    policies = {name: p for name, p in snap.route_policies.items()
                if (p.spec.route.virtual_router_name, p.spec.route.route_name) in routes}
    nodes = set(scope.nodes) | {n for n in (provider(s)[1] for s in services) if n is not None}
    nodes.update(t.virtual_node for data in routes.values() for t in _route_targets(data))
    nodes.update(p.spec.mirror.virtual_node for p in policies.values() if p.spec.HasField("mirror"))
    reaching = {}
    if snap.mesh is not None and snap.mesh.spec.egress_filter.type == "DROP_ALL":
        reaching = {n: services_reaching(snap, n) for n in scope.nodes}
        inbound = set().union(*reaching.values())
        nodes.update(n for n in snap.nodes if backends(n) & inbound)
        gateway_routes.update((key, data) for key, data in snap.gateway_routes.items()
                              if _gateway_route_target(data) in inbound)
    nodes = {each for n in nodes if n in snap.nodes for each in sharing_cloud_map(snap, n)}
    gateways = {gw for gw, _ in gateway_routes} | set(scope.gateways)
    return replace(snap, nodes={n: snap.nodes[n] for n in nodes},
                   services={s: snap.services[s] for s in services if s in snap.services},
                   routers={r: snap.routers[r] for r in routers}, routes=routes,
                   gateways={g: d for g, d in snap.gateways.items() if g in gateways}, gateway_routes=gateway_routes,
                   route_policies=policies,
                   node_policies={k: p for k, p in snap.node_policies.items() if p.spec.virtual_node_name in nodes},
                   instances={n: dict(i) for n, i in snap.instances.items() if n in nodes}, reaching=reaching,
                   route_groups=None)


def route_data(data: admin_pb2.RouteData | bytes) -> admin_pb2.RouteData:
    """A MeshSnapshot's route as a message, parsed if it is held serialized."""
    return admin_pb2.RouteData.FromString(data) if isinstance(data, bytes) else data


def _gateway_route_target(data: admin_pb2.GatewayRouteData) -> str:
    kind = data.spec.WhichOneof("route")
    return getattr(data.spec, kind).action.target.virtual_service.virtual_service_name if kind is not None else ""
