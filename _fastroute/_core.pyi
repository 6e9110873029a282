"""The surface of the compiled router core that Python sees (see _core.pxd for all of it)."""
from collections.abc import Iterable, Mapping

from .spec import Endpoint, LHeader, Lowered, Table

class CompiledRetry:
    max_retries: int
    per_try_ns: int
    transport: int
    @property
    def http_codes(self) -> frozenset[int]: ...
    @property
    def grpc_codes(self) -> frozenset[int]: ...

class TokenBucket:
    max_tokens: int
    tokens_per_fill: int
    fill_interval_ns: int
    tokens: int
    def __init__(self, max_tokens: int, tokens_per_fill: int, fill_interval_ms: int) -> None: ...
    def take(self, now_ns: int) -> bool: ...

class EndpointState:
    id: str
    address: str
    port: int
    pool_key: tuple[str, str]
    healthy: bool
    active: int
    errors: int
    first_error_ns: int
    ejected_until_ns: int
    times_ejected: int
    priority: int  # locality distance from the router: 0 (same sub-zone) to 3 (another region)

class Decision:
    status: int
    reason: str
    protocol: int
    service: str | None
    route: str | None
    target: str | None
    target_port: int
    endpoint: EndpointState | None
    pool_key: tuple[str, str] | None
    retry: CompiledRetry | None
    per_request_timeout_ns: int
    idle_timeout_ns: int
    per_try_timeout_ns: int
    deadline_ns: int
    attempt: int
    state: int
    router: str | None  # the matched route's virtual router
    fault_delay_ns: int  # 0: none; deadline_ns counts from after it
    fault_http_status: int  # FAULT_ABORT's HTTP answer, 0: none
    fault_grpc_status: int  # FAULT_ABORT's gRPC answer, -1: none
    mirror: str | None  # the node a copy of this request goes to
    mirror_endpoint: EndpointState | None
    mirror_port: int  # -1: the node's only listener

class RetryDecision:
    action: int
    why: int
    backoff_ns: int
    per_try_timeout_ns: int
    endpoint: EndpointState | None

class Router:
    matches_headers: bool  # a route has header conditions: decide needs the headers
    locality: tuple[str, str, str]
    def __init__(self, table: Table | Lowered, seed: int = 1,
                 locality: tuple[str, str, str] = ("", "", ""), base: Router | None = None,
                 endpoints: Mapping[str, Iterable[Endpoint]] | None = None) -> None: ...
    def decide(self, protocol: int, authority: str | bytes, port: int, method: str | bytes,
               scheme: str | bytes, path: str | bytes, headers: dict[str, str | bytes] | None,
               now_ns: int) -> Decision: ...
    def result(self, decision: Decision, kind: int, code: int, now_ns: int) -> RetryDecision: ...
    def release(self, decision: Decision) -> None: ...
    def adopt(self, old: Router) -> None: ...
    def shared_with(self, other: Router) -> tuple[frozenset[str], frozenset[str]]: ...
    def set_endpoints(self, node: str, endpoints: Iterable[Endpoint]) -> None: ...
    def add_endpoint(self, node: str, endpoint: Endpoint) -> None: ...
    def remove_endpoint(self, node: str, endpoint_id: str) -> bool: ...
    def endpoints(self, node: str) -> list[EndpointState]: ...
    def node_limits(self, node: str) -> tuple[int, int, int]: ...
    def ejected(self, node: str, now_ns: int) -> int: ...

class Conditions:
    def __init__(self, method: str | None = None, port: int | None = None, headers: Iterable[LHeader] = (),
                 query: Iterable[tuple[str, str | None]] = ()) -> None: ...
    def holds(self, method: str, port: int, path: str, headers: dict[str, str | bytes] | None) -> bool: ...

