"""Integer codes shared by both router implementations and their callers.

The Cython core declares the same numbers as C enums in `_core.pxd`; a test checks
that the two lists agree.
"""
from __future__ import annotations

# Listener protocol of a request: selects which route list of a router applies
# (App Mesh keeps httpRoute, http2Route, grpcRoute and tcpRoute apart).
PROTO_HTTP = 0
PROTO_HTTP2 = 1
PROTO_GRPC = 2
PROTO_TCP = 3
PROTOCOLS = {"http": PROTO_HTTP, "http2": PROTO_HTTP2, "grpc": PROTO_GRPC, "tcp": PROTO_TCP}

# Decision.status: 0 means routed; the rest are "no route" decisions, not exceptions.
ROUTED = 0
NO_SERVICE = 1  # authority and port name no virtual service
NO_ROUTE = 2  # the provider is a router and no route matched
NO_ENDPOINT = 3  # the chosen target node has no live instance
BAD_REQUEST = 4  # an argument of the wrong type (never raised, answered)
FAULT_ABORT = 5  # the route's fault injection answers the request itself (Decision.fault_*_status)
RATE_LIMITED = 6  # the route's token bucket is empty
STATUS_REASONS = ("routed", "no_service", "no_route", "no_endpoint", "bad_request", "fault_abort",
                  "rate_limited")

# Result kinds fed back after each attempt (`Router.result`).
RESULT_HTTP = 0  # code = HTTP status
RESULT_GRPC = 1  # code = gRPC status (0 = OK)
RESULT_RESET = 2  # stream/connection reset by the peer
RESULT_CONNECT_FAILURE = 3  # could not connect
RESULT_REFUSED_STREAM = 4  # HTTP/2 REFUSED_STREAM (RFC 9113 section 8.7)
RESULT_TIMEOUT = 5  # the per-try timeout fired
RESULT_TCP_DONE = 6  # a TCP session ended normally

# Actions of a RetryDecision.
ACT_FINISH = 0  # the attempt succeeded: answer the client
ACT_RETRY = 1  # wait backoff_ns, then send again to decision.endpoint
ACT_GIVE_UP = 2  # answer the client with the last failure
ACTIONS = ("finish", "retry", "give_up")

# Why a retry was or was not made (RetryDecision.reason).
WHY_SUCCESS = 0
WHY_RETRYABLE = 1
WHY_NOT_RETRYABLE = 2
WHY_RETRIES_EXHAUSTED = 3
WHY_DEADLINE = 4
WHY_BUDGET = 5
WHY_REASONS = ("success", "retryable", "not_retryable", "retries_exhausted", "deadline", "budget")

# Request lifecycle states (the retry state table's rows).
ST_IN_FLIGHT = 0
ST_DONE = 1

# Load-balancing policies of a virtual node.
LB_ROUND_ROBIN = 0
LB_LEAST_REQUEST = 1
LB_POLICIES = {"round_robin": LB_ROUND_ROBIN, "least_request": LB_LEAST_REQUEST}

# Panic mode (Envoy's healthy_panic_threshold, 50% by default, which App Mesh keeps):
# when fewer than this percent of a node's endpoints are available (health-checked
# healthy and not ejected), balance across all of them rather than pile the whole
# load on the few left, which would fail them too (a cascading failure).
PANIC_THRESHOLD_PERCENT = 50

# Header/metadata match kinds.
HM_PRESENT = 0
HM_EXACT = 1
HM_PREFIX = 2
HM_SUFFIX = 3
HM_REGEX = 4
HM_RANGE = 5

# Path match kinds, in precedence order (lower wins): exact path over regex over
# prefix over "no path condition" (the specificity rule).
PK_EXACT = 0
PK_REGEX = 1
PK_PREFIX = 2
PK_ANY = 3

# Retry backoff: Envoy's fully jittered exponential back-off, base 25 ms and a cap of
# 10x base (Envoy config.route.v3.RetryPolicy.RetryBackOff): retry N waits a uniform
# draw from [0, min((2^N - 1) * base, cap)).
BACKOFF_BASE_NS = 25_000_000
BACKOFF_CAP_NS = 250_000_000
BACKOFF_MAX_EXP = 16  # 2^16 * 25 ms is far past the cap; keeps the shift bounded

# Retry budget, per route: retries <= 20% of requests + 10 per second, over a sliding
# window of 10 one-second buckets (Linkerd's retry budget: retryRatio 0.2,
# minRetriesPerSecond 10, ttl 10s). Written as integers: 100*retries <= 20*requests
# + 100*10*10.
BUDGET_PERCENT = 20
BUDGET_MIN_PER_S = 10
BUDGET_WINDOW_S = 10
NS_PER_S = 1_000_000_000

# gRPC codes that count as server errors for outlier detection: those Envoy maps to a
# 5xx (Grpc::Utility::grpcToHttpStatus): UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
# INTERNAL, UNAVAILABLE, DATA_LOSS.
GRPC_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})

# xorshift64* (Vigna 2016) seed used when the caller passes 0, which xorshift cannot hold.
RNG_ZERO_SEED = 0x9E3779B97F4A7C15
RNG_MULT = 0x2545F4914F6CDD1D
MASK64 = (1 << 64) - 1

# Fault injection and mirroring draw `rng % PER_MILLION < per_million`: percentages as
# integer parts per million, never floats.
PER_MILLION = 1_000_000

# Locality-aware balancing (Envoy's priority failover): an endpoint's priority is its
# locality distance from the router, 0 (same region, zone and sub-zone) to 3 (another
# region). Priority loads are integer percentages of a draw in [0, 100).
N_PRIORITIES = 4
PRIORITY_LOAD_TOTAL = 100

# Envoy's previous_hosts retry predicate: a decision remembers the endpoints its attempts
# used, the last MAX_TRIED of them, and a retry picks another while one is usable.
MAX_TRIED = 8

# Largest `now_ns` accepted: keeps now + timeouts inside a signed 64-bit integer.
MAX_NOW_NS = 2**62
