"""The data plane's HTTP/2 forwarding engine (libnghttp2 via Cython) and its routing-hook values.

Contract, in one place (see Engine's docstring for options):

    engine = Engine(decide, retry=None)
    server = await engine.listen("127.0.0.1", 15001, ssl=None)   # or ssl=ctx with ALPN h2

    decide(head: RequestHead) -> Target | Refusal | Deferred    # exactly once per request
    retry(head: RequestHead, failure: Failure) -> Target | Refusal | None

Deferred (both HTTP engines): the answer comes later. The hook returns `d = Deferred()` and
calls `d.resolve(Target or Refusal)` once, on the engine's loop (a fault delay resolves it
from `loop.call_later`, a queued request when a connection frees up). Meanwhile the request
is parked: nothing goes upstream, its body is held within the stream's flow-control window
(HTTP/2) or the high-water mark (HTTP/1.1). The listener's stream idle timeout and the
caller's grpc-timeout keep running; the route's timeout (Target.timeout) counts from the
resolution, as Envoy's router timer starts after the fault filter. A client that resets or
leaves while parked completes the request (the completion hook, target None, reason
"reset"); the later resolution is then ignored. A Target answered directly costs nothing
extra.

``head`` has method, scheme, authority, path (str), headers ({name: value}), raw_headers,
grpc (content-type application/grpc*), attempt, local_port. Nothing else from Python runs
per request.

Mirroring (both HTTP engines; Envoy's request mirror policy): from the decide hook (or before
resolving its Deferred), `head.mirror_to(target, done, max_body_bytes=65536, timeout=None)`
asks for a copy of the request at `target`, and the hook returns the original's answer as
usual. Once the request has ended, and only if it was forwarded to a Target, the copy goes out
over the engine's own pools (HTTP/2: a new stream; HTTP/1.1: a pooled keep-alive connection):
the same method, path and headers as the original sends (set_header fields included, the
target's own rewrites applied), `:authority`/Host suffixed with `-shadow`, the whole body
and trailers. Its answer is read and dropped. The original never waits for the copy and the
copy never takes flow-control credit from it: the engine keeps its own copy of the body, at
most max_body_bytes. `done(outcome, http_status)` is called exactly once, on the loop:
    "ok"         the mirror answered (http_status: its status)
    "failed"     connect error, reset, connection lost
    "timeout"    no whole answer within `timeout` s (None: the target's Target.timeout; 0: none)
    "too_large"  the body went past max_body_bytes; nothing was sent (streaming gRPC too)
    "cancelled"  the request was refused, or its client left before it ended
Copies in flight are bounded by the caller: count mirror_to calls against done calls and
skip mirror_to (counting a drop) when at the limit.

Timeouts (App Mesh's `timeout` blocks): Target(timeout=) is the route's perRequest (0: none),
Target(idle_timeout=) the route's idle; a listener's idle is Engine/H1Engine(stream_idle_timeout=)
or listen(stream_idle_timeout=), TcpEngine(idle_timeout=) or listen(idle_timeout=). The
route's wins. The idle timeouts default to App Mesh's 300 s; Target's timeouts to none.
"""
import os

from meshd.dataplane._h2 import (
    FAILURE_RESPONSES,
    Deferred,
    Engine,
    Failure,
    Mirror,
    Refusal,
    RequestHead,
    Target,
    counters,
    seed_trace_ids,
    trace_context,
)
from meshd.dataplane.h1 import H1Engine, H1RequestHead
from meshd.dataplane.tcp import ConnectionHead, TcpEngine, TcpTarget

__all__ = ["ConnectionHead", "Deferred", "Engine", "FAILURE_RESPONSES", "Failure", "H1Engine", "H1RequestHead",
           "Mirror", "Refusal", "RequestHead", "Target", "TcpEngine", "TcpTarget", "counters", "trace_context"]

seed_trace_ids(os.urandom(8))
