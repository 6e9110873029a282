"""The one table of request outcomes: every refusal and failure the data plane can answer
with, mapped to its HTTP status, gRPC status, `x-meshd-reason` token, metric counter, Envoy
response flag and what the router is told about it (linkerd2-proxy keeps one such
error-to-response function; STYLE.md §13).

Two kinds of rows:
- *refusals*, decided by the proxy before or instead of forwarding (`REFUSALS`, handed to
  the engines as `Refusal` values);
- *failures*, synthesized by the engines themselves when an upstream attempt fails. Their
  HTTP and gRPC codes live in the engine's own `FAILURE_RESPONSES` (the engine answers
  without asking the proxy); this table reads them from there and adds the rest.

Router feedback is the rule item 2 of the hardening issue asks for: an outcome caused by
the caller (it reset the stream, went away) or by this host (a local limit, a policy
refusal) says nothing about the upstream endpoint, so it must never reach outlier
detection nor spend the retry budget: its feedback is `RELEASE`, which only ends the
router's decision. Only what the upstream did is fed as a result.
"""
from __future__ import annotations

from dataclasses import dataclass

from _fastroute import constants as C
from meshd.dataplane import FAILURE_RESPONSES, Refusal

# gRPC status codes (grpc/doc/statuscodes.md).
GRPC_INTERNAL, GRPC_UNAVAILABLE, GRPC_PERMISSION_DENIED, GRPC_UNIMPLEMENTED = 13, 14, 7, 12
GRPC_RESOURCE_EXHAUSTED = 8
# A gRPC status as the HTTP status a plain HTTP request is answered with, for a fault abort
# given as a gRPC status (google.rpc.Code's documented HTTP mappings, as grpc-gateway uses).
GRPC_TO_HTTP = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400,
                12: 501, 13: 500, 14: 503, 15: 500, 16: 401}

# Router feedback of an outcome.
RELEASE = -1  # end the decision with no result: no outlier error, no retry, no budget
NONE = -2     # the request never had a router decision (refused before routing)

# Metric counters an outcome is counted in beside the request itself (meshd.observe).
TIMEOUTS, OVERFLOWS, AUTHZ = "timeouts", "overflows", "authz_denials"


@dataclass(frozen=True)
class Outcome:
    """One row: `reason` is the x-meshd-reason token and the access log's reason."""

    reason: str
    http_status: int
    grpc_status: int
    message: str
    feedback: int          # a _fastroute RESULT_* kind, RELEASE or NONE
    counter: str | None    # TIMEOUTS, OVERFLOWS, AUTHZ or None
    flag: str              # Envoy's %RESPONSE_FLAGS% for the access log


def _refusal(reason, http, grpc, message, feedback=NONE, counter=None, flag="-"):
    return Outcome(reason, http, grpc, message, feedback, counter, flag)


def _failure(kind, feedback, counter=None, flag="-"):
    http, grpc, reason = FAILURE_RESPONSES[kind]
    return Outcome(reason, http, grpc, "", feedback, counter, flag)


# Refusals, by reason. `feedback` applies when a decision exists (the route was chosen).
_REFUSALS = (
    _refusal("no_config", 503, GRPC_UNAVAILABLE, "no configuration for this mesh yet", flag="NC"),
    _refusal("no_service", 404, GRPC_UNIMPLEMENTED, "no virtual service by that name", flag="NR"),
    _refusal("no_route", 404, GRPC_UNIMPLEMENTED, "no route matched", flag="NR"),
    _refusal("no_gateway_route", 404, GRPC_UNIMPLEMENTED, "no gateway route matched", flag="NR"),
    _refusal("no_endpoint", 503, GRPC_UNAVAILABLE, "no healthy endpoint", RELEASE, flag="UH"),
    _refusal("bad_request", 400, GRPC_INTERNAL, "request could not be routed", flag="DPE"),
    _refusal("not_a_backend", 403, GRPC_PERMISSION_DENIED,
             "the mesh's egress filter is DROP_ALL and the service is not a backend of this node",
             RELEASE, AUTHZ, "UAEX"),
    _refusal("not_a_mesh_destination", 403, GRPC_PERMISSION_DENIED,
             "the mesh's egress filter is DROP_ALL and the intercepted destination is not in the mesh",
             RELEASE, AUTHZ, "UAEX"),
    _refusal("pool_overflow", 503, GRPC_UNAVAILABLE, "connection pool limit reached", RELEASE, OVERFLOWS, "UO"),
    _refusal("unknown_instance", 404, GRPC_UNAVAILABLE, "no such instance on this host", flag="NR"),
    _refusal("identity_refused", 403, GRPC_PERMISSION_DENIED, "caller identity not allowed", RELEASE, AUTHZ,
             "UAEX"),
    # A route's or a node listener's token bucket is empty (local rate limiting, Envoy's RL).
    _refusal("rate_limited", 429, GRPC_RESOURCE_EXHAUSTED, "local rate limit reached", RELEASE, flag="RL"),
    # An abort the route's fault injection chose (Envoy's FI); its status is the policy's,
    # so the engines get it from `fault_abort`, this row's codes are only its defaults.
    _refusal("fault_abort", 503, GRPC_UNAVAILABLE, "fault injected", RELEASE, flag="FI"),
)

# Engine failures, by the engine's failure kind (Failure.kind, the retry hook's input).
FAILURES = {
    "connect_error": _failure("connect_error", C.RESULT_CONNECT_FAILURE, flag="UF"),
    "refused_stream": _failure("refused_stream", C.RESULT_REFUSED_STREAM, flag="UR"),
    "goaway": _failure("goaway", C.RESULT_RESET, flag="UC"),
    "reset": _failure("reset", C.RESULT_RESET, flag="UR"),
    "timeout": _failure("timeout", C.RESULT_TIMEOUT, TIMEOUTS, "UT"),
    "route_error": _failure("route_error", RELEASE, flag="-"),
    # Envoy's stream idle timeout (SI): no byte either way for the idle time. Either side
    # may be the silent one (a client that stopped sending or reading, an upstream that
    # stopped answering), so the endpoint is not blamed: the decision is released.
    "idle_timeout": _failure("idle_timeout", RELEASE, TIMEOUTS, "SI"),
    "request_idle_timeout": _failure("request_idle_timeout", RELEASE, TIMEOUTS, "SI"),
    "draining": _failure("draining", RELEASE, flag="LR"),
}

# A peer meshd's answer that the request was never processed: its ingress could not
# connect to its local app, or the app refused the stream (RFC 9113 §8.7). The peer answers
# 503 / UNAVAILABLE with the failure's reason, as to any caller (an intercepted or outside
# client of the ingress needs a proper answer, and an HTTP/1.1 hop has no REFUSED_STREAM to
# carry it); the calling meshd's egress, and only it, for an upstream it reached as a meshd
# ingress over mTLS, reads the reason and feeds the router the failure the peer met rather
# than the status: a retry on another endpoint that spends no retry budget (still bounded
# by maxRetries, still a server error to outlier detection), as a connect failure of its
# own would be. A status from any other upstream (pass-through, gateway origins, an
# instance without a meshd) is the status: such a header there proves nothing.
PEER_UNPROCESSED: dict[str, int] = {FAILURES[kind].reason: FAILURES[kind].feedback
                                    for kind in ("connect_error", "refused_stream")}

# The downstream (the caller) reset its stream or closed its connection: the engines
# complete such a request with reason "reset". It is the caller's doing (Envoy: DC).
DOWNSTREAM_RESET = Outcome("reset", 0, -1, "", RELEASE, None, "DC")

OUTCOMES: dict[str, Outcome] = {o.reason: o for o in (*_REFUSALS, *FAILURES.values(), DOWNSTREAM_RESET)}

# The Refusal values the proxy hands to the engines, by reason.
REFUSALS: dict[str, Refusal] = {o.reason: Refusal(o.http_status, o.grpc_status, o.message, o.reason)
                                for o in _REFUSALS}

# Completion reasons -> router feedback; a reason not here (""): the response decides.
FEEDBACK: dict[str, int] = {o.reason: o.feedback for o in OUTCOMES.values()}

# Reason -> metric counter, for the observer.
COUNTERS: dict[str, str] = {o.reason: o.counter for o in OUTCOMES.values() if o.counter}

# Reason -> Envoy response flag, for the access log.
RESPONSE_FLAGS: dict[str, str] = {o.reason: o.flag for o in OUTCOMES.values() if o.flag != "-"}

# The retry hook's failure kinds -> router result kinds.
FAILURE_RESULTS: dict[str, int] = {kind: o.feedback for kind, o in FAILURES.items() if o.feedback >= 0}


def refuse(reason: str) -> Refusal:
    """The Refusal for `reason` (a key of REFUSALS, or a _fastroute decision reason)."""
    return REFUSALS[reason]


# Envoy's response flag of a request its route's fault injection delayed (then answered
# however it was answered): the access log adds it to the reason's flag.
DELAY_INJECTED_FLAG = "DI"
_ABORTS: dict[tuple[int, int], Refusal] = {}


def fault_abort(http_status: int, grpc_status: int) -> Refusal:
    """The answer of an injected abort: the policy's HTTP status (gRPC callers get gRPC's
    mapping of it), or its gRPC status (plain HTTP callers get that status's HTTP mapping).
    One Refusal per status pair, kept: the policies name few."""
    key = (http_status, grpc_status)
    r = _ABORTS.get(key)
    if r is None:
        row = OUTCOMES["fault_abort"]
        http = http_status if http_status > 0 else GRPC_TO_HTTP.get(grpc_status, row.http_status)
        r = _ABORTS[key] = Refusal(http, grpc_status, row.message, row.reason)
    return r


__all__ = ["COUNTERS", "DELAY_INJECTED_FLAG", "DOWNSTREAM_RESET", "FAILURES", "FAILURE_RESULTS", "FEEDBACK", "NONE",
           "OUTCOMES", "Outcome", "PEER_UNPROCESSED", "RELEASE", "REFUSALS", "RESPONSE_FLAGS", "fault_abort", "refuse"]
