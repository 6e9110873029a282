"""The surface of the compiled router core that Python sees (see _core.pxd for all of it)."""
from collections.abc import Iterable

from .spec import Endpoint, LHeader, Lowered, Table

class CompiledRetry:
    max_retries: int
    per_try_ns: int
    transport: int
    @property
    def http_codes(self) -> frozenset[int]: ...
    @property
    def grpc_codes(self) -> frozenset[int]: ...

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

class RetryDecision:
    action: int
    why: int
    backoff_ns: int
    per_try_timeout_ns: int
    endpoint: EndpointState | None

class Router:
    matches_headers: bool  # a route has header conditions: decide needs the headers
    def __init__(self, table: Table | Lowered, seed: int = 1) -> None: ...
    def decide(self, protocol: int, authority: str | bytes, port: int, method: str | bytes,
               scheme: str | bytes, path: str | bytes, headers: dict[str, str | bytes] | None,
               now_ns: int) -> Decision: ...
    def result(self, decision: Decision, kind: int, code: int, now_ns: int) -> RetryDecision: ...
    def release(self, decision: Decision) -> None: ...
    def adopt(self, old: Router) -> None: ...
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

