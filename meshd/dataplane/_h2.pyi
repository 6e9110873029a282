"""What Python sees of the HTTP/2 forwarding engine (meshd.dataplane._h2)."""
import asyncio
import ssl
from typing import Any, Callable, Iterable, Optional, Union

FAILURE_RESPONSES: dict[str, tuple[int, int, str]]

def counters() -> dict[str, int]: ...
def seed_trace_ids(seed: bytes) -> None: ...
def trace_context(head: object, bound: int) -> Optional[tuple[bytes, bytes, bytes, bool]]: ...

class Target:
    host: str
    port: int
    ssl: Optional[ssl.SSLContext]
    server_hostname: Optional[str]
    timeout: float
    try_timeout: float
    retry_statuses: Optional[frozenset[int]]
    retry_grpc: Optional[frozenset[int]]
    idle_timeout: Optional[float]   # the route's idle timeout; None: the listener's, 0: none
    context: Any
    key: tuple
    @property
    def rewrite(self) -> tuple[Optional[bytes], list[bytes]]: ...
    @property
    def strip_prefix(self) -> Optional[bytes]: ...
    @property
    def strip_response_prefix(self) -> Optional[bytes]: ...
    def __init__(self, host: str, port: int, ssl: Optional[ssl.SSLContext] = ...,
                 server_hostname: Optional[str] = ...,
                 headers: Iterable[tuple[Union[str, bytes], Union[str, bytes]]] = ...,
                 timeout: float = ..., retry_statuses: Optional[Iterable[int]] = ...,
                 retry_grpc: Optional[Iterable[int]] = ..., context: Any = ...,
                 try_timeout: float = ..., idle_timeout: Optional[float] = ...,
                 strip_prefix: str = ..., strip_response_prefix: str = ...) -> None: ...

class Refusal:
    http_status: int
    grpc_status: int
    message: str
    reason: str
    def __init__(self, http_status: int, grpc_status: int = ..., message: str = ...,
                 reason: str = ...) -> None: ...

class Deferred:
    resolved: bool
    def __init__(self) -> None: ...
    def then(self, fn: Callable[[Union[Target, Refusal]], None]) -> None: ...
    def resolve(self, answer: Union[Target, Refusal]) -> None: ...

class Mirror:
    target: Target
    done: Optional[Callable[[str, int], None]]
    max_body_bytes: int
    timeout: float
    reported: bool              # done has been called
    def __init__(self, target: Target, done: Optional[Callable[[str, int], None]] = ...,
                 max_body_bytes: int = ..., timeout: Optional[float] = ...) -> None: ...
    def report(self, outcome: str, http_status: int = ...) -> None: ...

class Failure:
    kind: str
    http_status: int
    grpc_status: int
    error_code: int
    target: Target
    reason: str

class RequestHead:
    method: str
    scheme: str
    authority: str
    path: str
    headers: dict[str, str]
    raw_headers: list[tuple[bytes, bytes]]
    grpc: bool
    attempt: int
    local_port: Optional[int]
    peer_cert: Optional[bytes]  # the TLS client's certificate (DER) on a TLS listener
    remote_address: str         # the downstream peer, "host:port"
    bytes_received: int         # request body bytes from downstream, so far
    bytes_sent: int             # response body bytes to downstream, so far
    upstream_path: str
    response_headers: dict[str, str]  # the forwarded response head, ":status" included
    context: object             # the hooks' own per-request record; the engine never reads it
    backoff: float              # seconds to wait before the retry the hook returns (router backoff)
    def header(self, name: str) -> Optional[str]: ...  # headers.get(name), no dict built
    def trace_context(self, bound: int) -> Optional[tuple[bytes, bytes, bytes, bool]]: ...
    def rewrite_path(self, path: str) -> None: ...
    def rewrite_authority(self, authority: str) -> None: ...
    def set_header(self, name: str, value: str) -> None: ...
    def mirror_to(self, target: Target, done: Optional[Callable[[str, int], None]] = ...,
                  max_body_bytes: int = ..., timeout: Optional[float] = ...) -> Mirror: ...

Decide = Callable[[RequestHead], Union[Target, Refusal, Deferred]]
Retry = Callable[[RequestHead, Failure], Union[Target, Refusal, None]]

class Pool:
    connections: list[tuple[int, bool]]
    has_tls_session: bool

class Engine:
    open_streams: int
    downstream_connections: int
    buffered_bytes: int         # body bytes held in stream buffers, both directions
    def __init__(self, decide: Decide, retry: Optional[Retry] = ..., *,
                 loop: Optional[asyncio.AbstractEventLoop] = ..., max_concurrent_streams: int = ...,
                 stream_window: int = ..., connection_window: int = ..., max_header_list: int = ...,
                 header_timeout: float = ..., idle_timeout: float = ...,
                 upstream_idle_timeout: float = ..., upstream_max_streams: int = ...,
                 retry_buffer: int = ...,
                 complete: Optional[Callable[[RequestHead, Optional[Target], int, int, str, int], None]] = ...,
                 connect_timeout: float = ..., ping_interval: float = ..., ping_timeout: float = ...,
                 stream_idle_timeout: float = ...) -> None: ...
    def protocol_factory(self) -> asyncio.Protocol: ...
    def listener_factory(self, stream_idle_timeout: Optional[float] = ...) -> Callable[[], asyncio.Protocol]: ...
    async def listen(self, host: str = ..., port: int = ..., ssl: Optional[ssl.SSLContext] = ...,
                     *, stream_idle_timeout: Optional[float] = ..., **kwargs: Any) -> asyncio.Server: ...
    async def drain(self, grace: float = ...) -> int: ...
    def close(self) -> None: ...
    def upstream_connections(self) -> dict[tuple, list[tuple[int, bool]]]: ...
    def pool(self, target: Target) -> Optional[Pool]: ...
