# Per-request result objects (built with `new`, skipping __init__) and the retry
# state table.

cdef tuple STATUS_REASONS = _C.STATUS_REASONS

# The retry state table: (state, input) -> (action, next state), inputs being WHY_*
# codes; -1 marks a pair with no row, which is an InvalidTransition (h2-style).
cdef int RETRY_ACTION[N_STATES][N_WHY]
cdef int RETRY_NEXT[N_STATES][N_WHY]


cdef void _init_retry_table():
    cdef int s, w
    for s in range(N_STATES):
        for w in range(N_WHY):
            RETRY_ACTION[s][w] = -1
            RETRY_NEXT[s][w] = -1
    for (s, w), (act, nxt) in {
        (ST_IN_FLIGHT, WHY_SUCCESS): (ACT_FINISH, ST_DONE),
        (ST_IN_FLIGHT, WHY_RETRYABLE): (ACT_RETRY, ST_IN_FLIGHT),
        (ST_IN_FLIGHT, WHY_NOT_RETRYABLE): (ACT_GIVE_UP, ST_DONE),
        (ST_IN_FLIGHT, WHY_RETRIES_EXHAUSTED): (ACT_GIVE_UP, ST_DONE),
        (ST_IN_FLIGHT, WHY_DEADLINE): (ACT_GIVE_UP, ST_DONE),
        (ST_IN_FLIGHT, WHY_BUDGET): (ACT_GIVE_UP, ST_DONE),
    }.items():
        RETRY_ACTION[s][w] = act
        RETRY_NEXT[s][w] = nxt


_init_retry_table()


@cython.final
cdef class Decision:
    """A routing decision; `status` 0 means routed, else `reason` says why not."""

    @staticmethod
    cdef Decision new(int status):
        cdef Decision d = Decision.__new__(Decision)
        d.status = status
        d.reason = <str>STATUS_REASONS[status]
        d.protocol = -1
        d.target_port = -1
        d.fault_grpc_status = -1
        d.mirror_port = -1
        d.state = ST_DONE if status else ST_IN_FLIGHT
        return d

    def __repr__(self):
        return (f"Decision({self.reason}, service={self.service!r}, route={self.route!r}, "
                f"target={self.target!r}, endpoint={self.endpoint!r})")


@cython.final
cdef class RetryDecision:
    """The answer to one attempt's result: finish, retry (after backoff) or give up."""

    @staticmethod
    cdef RetryDecision new(int action, int why, int64_t backoff_ns, int64_t per_try_ns, EndpointState ep):
        cdef RetryDecision r = RetryDecision.__new__(RetryDecision)
        r.action, r.why, r.backoff_ns, r.per_try_timeout_ns, r.endpoint = action, why, backoff_ns, per_try_ns, ep
        return r

    def __repr__(self):
        return f"RetryDecision(action={self.action}, why={self.why}, backoff_ns={self.backoff_ns})"
