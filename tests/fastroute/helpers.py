"""Builders of the router-core suite: both implementations, tables and requests."""
from __future__ import annotations

from _fastroute import _core, reference
from _fastroute import constants as C
from _fastroute.spec import Endpoint, HttpMatch, Route, Table, Target, VirtualNode, VirtualRouter, VirtualService

IMPLS = {"cython": _core.Router, "reference": reference.Router}


def http_route(name, prefix="/", *, targets=(("a", 1),), priority=None, **match):
    """An HTTP route on `prefix` (or a path_exact/path_regex given in `match`)."""
    if "path_exact" in match or "path_regex" in match:
        prefix = None
    return Route(name, "http", HttpMatch(prefix=prefix, **match),
                 tuple(Target(n, w) for n, w in targets), priority=priority)


class Build:
    """Factory for small valid tables, like h2's frame factory.

    `build(routes)` puts `routes` on router "r" behind service "svc.local" (port 80),
    with nodes named in the targets, each with `n_endpoints` endpoints e0..eN.
    """

    def __init__(self, Router):
        self.Router = Router

    def table(self, routes, nodes=None, services=None, **kw):
        names = sorted({t.node for r in routes for t in r.targets} | {"a"})
        nodes = nodes or tuple(VirtualNode(n) for n in names)
        services = services or (VirtualService("svc.local", router="r", ports=(80,)),)
        return Table(services=services, routers=(VirtualRouter("r", tuple(routes)),), nodes=nodes, **kw)

    def __call__(self, routes, *, n_endpoints=3, seed=1, **kw):
        t = self.table(routes, **kw)
        router = self.Router(t, seed=seed)
        for n in t.nodes:
            router.set_endpoints(n.name, endpoints(n.name, n_endpoints))
        return router


def endpoints(node, n):
    """`n` endpoints of `node` with ids node-0..node-(n-1)."""
    return [Endpoint(f"{node}-{k}", f"10.0.0.{k}", 8080) for k in range(n)]


def http(router, path="/", headers=None, *, method="GET", authority="svc.local", port=80, scheme="http",
         now_ns=10**12, protocol=C.PROTO_HTTP):
    """Decide an HTTP request with sensible defaults."""
    return router.decide(protocol, authority, port, method, scheme, path, headers or {}, now_ns)


def summary(d):
    """The comparable content of a decision (both implementations expose the same)."""
    ep = d.endpoint
    return (d.status, d.reason, d.protocol, d.service, d.route, d.target, d.target_port,
            None if ep is None else ep.id, d.pool_key, d.per_request_timeout_ns, d.idle_timeout_ns,
            d.per_try_timeout_ns, d.deadline_ns, d.attempt, d.state,
            None if d.retry is None else (d.retry.max_retries, d.retry.per_try_ns),
            d.router, d.fault_delay_ns, d.fault_http_status, d.fault_grpc_status, d.mirror,
            None if d.mirror_endpoint is None else d.mirror_endpoint.id, d.mirror_port)
