"""Route tables and requests for the router-core benchmarks, sized by route count."""
from __future__ import annotations

from _fastroute import constants as C
from _fastroute.spec import (
    Endpoint, Fault, FaultAbort, FaultDelay, GrpcMatch, HeaderMatch, HttpMatch, LocalityLb, Mirror, RateLimit, Route,
    Table, Target, VirtualNode, VirtualRouter, VirtualService,
)


def mixed_table(n_routes: int) -> Table:
    """A table of `n_routes` routes: a third prefix, a third prefix+header, a third gRPC.

    HTTP routes live on one router and gRPC routes on another, so the matcher faces
    every route of its protocol in one place: the worst case for a linear scan.
    """
    http, grpc = [], []
    for i in range(n_routes):
        targets = (Target(f"n{i % 4}", 3), Target(f"n{(i + 1) % 4}", 1))
        if i % 3 == 0:
            http.append(Route(f"p{i}", "http", HttpMatch(prefix=f"/svc{i}/"), targets))
        elif i % 3 == 1:
            hm = (HeaderMatch("x-tenant", exact=f"t{i % 7}"), HeaderMatch("x-canary", prefix="on"))
            http.append(Route(f"h{i}", "http", HttpMatch(prefix=f"/svc{i}/", method="GET", headers=hm), targets))
        else:
            m = GrpcMatch(service_name=f"pkg.Svc{i}", method_name="Get")
            grpc.append(Route(f"g{i}", "grpc", m, targets))
    http.append(Route("root", "http", HttpMatch(prefix="/"), (Target("n0", 1),)))
    return Table(
        services=(
            VirtualService("web.local", router="web", ports=(80,)),
            VirtualService("rpc.local", router="rpc", ports=(50051,)),
        ),
        routers=(VirtualRouter("web", tuple(http)), VirtualRouter("rpc", tuple(grpc))),
        nodes=tuple(VirtualNode(f"n{j}", lb="round_robin" if j % 2 else "least_request") for j in range(4)),
    )


def make_router(cls, n_routes: int, seed: int = 1):
    """A router of class `cls` over `mixed_table(n_routes)`, 3 endpoints per node."""
    r = cls(mixed_table(n_routes), seed=seed)
    for j in range(4):
        r.set_endpoints(f"n{j}", [Endpoint(f"n{j}-{k}", f"10.0.{j}.{k}", 8080) for k in range(3)])
    return r


def request(n_routes: int) -> tuple:
    """A header-matched HTTP request that hits a route near the middle of the table."""
    i = 1 + 3 * ((n_routes // 3) // 2)
    headers = {"x-tenant": f"t{i % 7}", "x-canary": "on-1", "user-agent": "bench", "accept": "*/*"}
    return (C.PROTO_HTTP, "web.local:80", 80, "GET", "http", f"/svc{i}/items/42?page=2", headers, 10**12)


def grpc_request(n_routes: int) -> tuple:
    """A gRPC request to a service/method route of the table."""
    i = 2 + 3 * ((n_routes // 3) // 2)
    return (C.PROTO_GRPC, "rpc.local:50051", 50051, "POST", "http", f"/pkg.Svc{i}/Get", {"te": "trailers"}, 10**12)


POLICY_HERE = ("r1", "z1", "h1")
POLICY_PLACES = (POLICY_HERE, ("r1", "z1", "h2"), ("r1", "z2", "h3"), ("r2", "z9", "h4"))


def make_policy_router(cls, rate_limit=RateLimit(2**40, 1, 1), abort_per_million=0, seed=3):
    """A router over one route with every RoutePolicy, each draw always taken (a header-
    gated delay with jitter, an abort of `abort_per_million`, a mirror of every request,
    `rate_limit`), to two nodes of 8 endpoints at every locality distance, one local
    endpoint down so that each priority pick weighs several priorities. `policy_request`
    routes through it."""
    fault = Fault(delay=FaultDelay(1_000_000, 5, jitter_ms=3), abort=FaultAbort(abort_per_million, http_status=503),
                  headers=(HeaderMatch("x-tenant", prefix="t"),))
    route = Route("p", "http", HttpMatch(prefix="/"), (Target("a", 1), Target("b", 1)), fault=fault,
                  mirror=Mirror("b", 1_000_000, port=9000), rate_limit=rate_limit)
    nodes = (VirtualNode("a"), VirtualNode("b", lb="least_request", locality=LocalityLb(overprovisioning_percent=100)))
    table = Table(services=(VirtualService("policy.local", router="web", ports=(80,)),),
                  routers=(VirtualRouter("web", (route,)),), nodes=nodes)
    r = cls(table, seed=seed, locality=POLICY_HERE)
    for n in ("a", "b"):
        r.set_endpoints(n, [Endpoint(f"{n}-{k}", f"10.0.0.{k}", 8080, healthy=k != 0, locality=POLICY_PLACES[k % 4])
                            for k in range(8)])
    return r


def policy_request() -> tuple:
    """A request that meets the fault's header condition of `make_policy_router`'s route."""
    return (C.PROTO_HTTP, "policy.local", 80, "GET", "http", "/items/42", {"x-tenant": "t1"}, 10**12)
