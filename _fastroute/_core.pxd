# The header of the compiled router core: every cdef class's fields and cdef methods.
# Python sees the surface described in _core.pyi; the numbers match constants.py.
cimport cython
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

from _fastroute._re2 cimport Regex


cdef enum:
    PROTO_HTTP = 0
    PROTO_HTTP2 = 1
    PROTO_GRPC = 2
    PROTO_TCP = 3
    N_PROTOCOLS = 4

    ROUTED = 0
    NO_SERVICE = 1
    NO_ROUTE = 2
    NO_ENDPOINT = 3
    BAD_REQUEST = 4
    FAULT_ABORT = 5
    RATE_LIMITED = 6

    RESULT_HTTP = 0
    RESULT_GRPC = 1
    RESULT_RESET = 2
    RESULT_CONNECT_FAILURE = 3
    RESULT_REFUSED_STREAM = 4
    RESULT_TIMEOUT = 5
    RESULT_TCP_DONE = 6

    ACT_FINISH = 0
    ACT_RETRY = 1
    ACT_GIVE_UP = 2

    WHY_SUCCESS = 0
    WHY_RETRYABLE = 1
    WHY_NOT_RETRYABLE = 2
    WHY_RETRIES_EXHAUSTED = 3
    WHY_DEADLINE = 4
    WHY_BUDGET = 5
    N_WHY = 6

    ST_IN_FLIGHT = 0
    ST_DONE = 1
    N_STATES = 2

    LB_ROUND_ROBIN = 0
    LB_LEAST_REQUEST = 1

    HM_PRESENT = 0
    HM_EXACT = 1
    HM_PREFIX = 2
    HM_SUFFIX = 3
    HM_REGEX = 4
    HM_RANGE = 5

    PK_EXACT = 0
    PK_REGEX = 1
    PK_PREFIX = 2
    PK_ANY = 3

    MAX_TARGETS = 10
    BUDGET_WINDOW_S = 10
    N_HTTP_CODES = 600
    N_PRIORITIES = 4
    MAX_TRIED = 8


cdef struct Rng:
    uint64_t state


cdef struct Tried:
    # The endpoints a decision's attempts used, the last MAX_TRIED of them (the oldest is
    # overwritten first). Borrowed pointers compared by identity only, never dereferenced:
    # an endpoint freed since (removed from its node) can only make a new state at the same
    # address look tried, which costs that retry its first choice, never its correctness.
    void *eps[MAX_TRIED]
    int n                            # slots filled, up to MAX_TRIED
    int next                         # the slot the next endpoint takes


@cython.final
cdef class _Header:
    cdef str name
    cdef int kind
    cdef str value
    cdef int64_t lo, hi
    cdef Regex regex                 # HM_REGEX only
    cdef bint invert


@cython.final
cdef class CompiledRetry:
    cdef readonly int max_retries
    cdef readonly int64_t per_try_ns
    cdef readonly uint32_t transport
    cdef uint32_t grpc_mask
    cdef unsigned char http_codes[N_HTTP_CODES]


@cython.final
cdef class _Budget:
    cdef int64_t stamps[BUDGET_WINDOW_S]
    cdef int64_t requests[BUDGET_WINDOW_S]
    cdef int64_t retries[BUDGET_WINDOW_S]
    cdef inline int _bucket(self, int64_t now_ns) noexcept
    cdef inline void request(self, int64_t now_ns) noexcept
    cdef bint allows_retry(self, int64_t now_ns) noexcept
    cdef void retry(self, int64_t now_ns) noexcept


@cython.final
cdef class TokenBucket:
    # Envoy's local rate limit: starts full; every whole fill interval since `last_fill_ns`
    # adds tokens_per_fill, up to max_tokens. The first take sets the interval grid.
    cdef readonly int64_t max_tokens, tokens_per_fill, fill_interval_ns
    cdef readonly int64_t tokens
    cdef int64_t last_fill_ns        # -1: never taken
    cdef bint _take(self, int64_t now_ns) noexcept


@cython.final
cdef class EndpointState:
    cdef readonly str id
    cdef readonly str address
    cdef readonly int port
    cdef readonly tuple pool_key
    cdef readonly bint healthy       # the instance's health check; False: passed over unless panic
    cdef readonly int64_t active
    cdef readonly int64_t errors
    cdef readonly int64_t first_error_ns
    cdef readonly int64_t ejected_until_ns
    cdef readonly int64_t times_ejected
    cdef readonly int priority       # locality distance from the router, 0 (same sub-zone) to 3


@cython.final
cdef class _Node:
    cdef str name
    cdef str identity
    cdef int lb
    cdef Py_ssize_t rr
    cdef int64_t max_errors, interval_ns, base_ejection_ns, max_ejection_percent
    cdef int64_t max_connections, max_pending, max_requests
    cdef int64_t per_request_ns, idle_ns
    cdef list endpoints
    cdef Py_ssize_t healthy          # endpoints whose health check passes
    cdef int64_t ejected_until_ns    # no endpoint is ejected from then on
    # Read by every pick, so beside the fields above; the counts after it only when set.
    cdef bint by_priority            # locality is on and more than one priority is present
    cdef bint locality               # locality-aware balancing is on (NodePolicy)
    cdef int64_t overprovisioning    # Envoy's overprovisioning factor, in percent
    cdef Py_ssize_t per_priority[N_PRIORITIES]          # endpoints of each priority
    cdef Py_ssize_t healthy_per_priority[N_PRIORITIES]  # of which health-checked healthy
    # What a later generation reads to share this node (Router's `base`): the LNode it was
    # compiled from, and the endpoints object its table was built with (None: none).
    cdef object lowered
    cdef object source
    cdef void recount(self)


@cython.final
cdef class _Route:
    cdef str name
    cdef str router                  # its virtual router: (router, name) names it across tables
    cdef Py_ssize_t rank
    cdef int path_kind
    cdef Regex regex                 # PK_REGEX only
    cdef object method
    cdef object scheme
    cdef int port
    cdef tuple headers
    cdef tuple query
    cdef int n_targets
    cdef int64_t total
    # The policy fields every routed request reads, ahead of the target arrays.
    cdef TokenBucket bucket          # the route's rate limit, else None
    cdef bint fault                  # fault injection is on: fault_headers, then the draws
    cdef int mirror_node             # the mirror's node (index in the router's nodes), else -1
    cdef int64_t cum[MAX_TARGETS]
    cdef int target_ports[MAX_TARGETS]
    # Targets as indexes in the router's list of nodes, not the nodes: a generation that
    # shares this route with the one before has nodes of its own where they changed.
    cdef int node_ids[MAX_TARGETS]
    cdef CompiledRetry retry
    cdef int64_t per_request_ns, idle_ns
    cdef _Budget budget
    cdef tuple fault_headers
    cdef int64_t delay_pm, delay_fixed_ns, delay_jitter_ns  # delay_pm < 0: no delay
    cdef int64_t abort_pm            # < 0: no abort
    cdef int abort_http, abort_grpc  # the abort's answer: 0 / -1 when not that kind
    cdef int64_t mirror_pm
    cdef int mirror_port


@cython.final
cdef class Conditions:
    cdef _Route _route               # only its condition fields are set


@cython.final
cdef class _Index:
    # Open-addressing hash table from (length, hash of the path's first `length`
    # characters) to a bucket of routes; slots with val < 0 are empty.
    cdef uint64_t *keys
    cdef int32_t *lens
    cdef int32_t *vals
    cdef Py_ssize_t mask
    cdef list bucket_paths   # str per bucket, to confirm a hash hit
    cdef list bucket_routes  # list of _Route per bucket, best first
    cdef list bucket_exact   # bool per bucket: exact path (True) or prefix
    cdef int32_t *prefix_lengths  # distinct prefix lengths, ascending
    cdef Py_ssize_t n_prefix_lengths
    cdef Py_ssize_t max_exact
    cdef Py_ssize_t max_len
    cdef list regex
    cdef list any
    cdef void _insert(self, str path, bint exact, list routes) except *
    cdef inline list _probe(self, str path, Py_ssize_t length, uint64_t h, bint exact)


@cython.final
cdef class _Part:
    # One virtual router's compiled routes and indexes, shared by the generations whose
    # lowering kept the router (the same LRoute and LIndex lists).
    cdef str name
    cdef list lroutes        # the LRoutes it was compiled from
    cdef list lindexes       # and the LIndexes
    cdef list routes         # _Route per LRoute
    cdef list indexes        # _Index per protocol
    cdef dict by_name        # route name -> _Route
    cdef bint matches_headers


@cython.final
cdef class _Service:
    cdef str name
    cdef list indexes      # _Index per protocol when the provider is a router, else None
    cdef _Node node        # the provider node, else None
    cdef _Budget budget    # retry budget of node-provider requests


@cython.final
cdef class Decision:
    cdef readonly int status
    cdef readonly str reason
    cdef readonly int protocol
    cdef readonly object service
    cdef readonly object route
    cdef readonly object target
    cdef readonly int target_port
    cdef readonly EndpointState endpoint
    cdef readonly object pool_key
    cdef readonly CompiledRetry retry
    cdef readonly int64_t per_request_timeout_ns
    cdef readonly int64_t idle_timeout_ns
    cdef readonly int64_t per_try_timeout_ns
    cdef readonly int64_t deadline_ns
    cdef readonly int attempt
    cdef readonly int state
    cdef readonly object router              # the matched route's virtual router
    cdef readonly int64_t fault_delay_ns     # injected delay before forwarding (or aborting)
    cdef readonly int fault_http_status      # FAULT_ABORT's answer (0: none)
    cdef readonly int fault_grpc_status      # FAULT_ABORT's answer (-1: none)
    cdef readonly object mirror              # node a copy of the request goes to, else None
    cdef readonly EndpointState mirror_endpoint
    cdef readonly int mirror_port
    cdef _Node _node
    cdef _Budget _budget
    cdef Tried _tried                # what a retry's pick avoids (Envoy's previous_hosts)

    @staticmethod
    cdef Decision new(int status)


@cython.final
cdef class RetryDecision:
    cdef readonly int action
    cdef readonly int why
    cdef readonly int64_t backoff_ns
    cdef readonly int64_t per_try_timeout_ns
    cdef readonly EndpointState endpoint

    @staticmethod
    cdef RetryDecision new(int action, int why, int64_t backoff_ns, int64_t per_try_ns, EndpointState ep)


@cython.final
cdef class Router:
    cdef readonly bint matches_headers  # a route has header conditions: decide needs the headers
    cdef list _services          # _Service per low.services entry
    cdef Rng rng
    cdef readonly tuple locality     # (region, zone, sub_zone) of this router's host
    cdef object _low
    cdef list _nodes
    cdef dict _node_by_name
    cdef list _parts             # _Part per virtual router, in the table's order
    cdef dict _part_by_name
    cdef Py_ssize_t _serial      # this generation, among the routers of this process
    cdef Py_ssize_t _base_serial # the generation it was built on (`base`), else 0
    cdef list _fresh_nodes       # what it did not share with its base: what adopt must merge
    cdef list _fresh_parts
    cdef dict _authority         # str -> _Service
    cdef dict _authority_port    # str -> int: the port an authority names (0: none)
    cdef dict _ports             # int -> _Service
    cdef CompiledRetry _default_retry
    cdef void _decide(self, Decision d, int protocol, str authority, object port_obj, int port,
                      str method, str scheme, str path, dict headers, int64_t now_ns) except *
    cdef _Service _service_slow(self, str authority, int *port)
    cdef _Route _match(self, _Index ix, str method, str scheme, int port, str path, dict headers)
    cdef _Route _match_regex(self, _Index ix, _Route best, str method, str scheme, int port, str path,
                             dict headers)
    cdef _Route _scan(self, list bucket, _Route best, str method, str scheme, int port, str path,
                      dict headers)
    cdef EndpointState _pick(self, _Node node, int64_t now_ns, const Tried *avoid)
    cdef EndpointState _pick_priority(self, _Node node, int64_t now_ns, const Tried *avoid)
    cdef bint _fault(self, Decision d, _Route route, dict headers) except -1
    cdef void _outlier(self, _Node node, EndpointState ep, bint server_error, int64_t now_ns)
    cdef _Node _node(self, str name)
