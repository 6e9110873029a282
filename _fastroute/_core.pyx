# cython: language_level=3
"""The compiled router core of meshd: one extension module that includes its parts.

Sans-IO: values in (service, port, method, path, a header dict, now_ns), decisions out.
It never reads the clock, never awaits and imports only the stdlib. The header of
every cdef class is `_core.pxd`; `reference.py` is its plain-Python twin.
"""
cimport cython
from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from cpython.unicode cimport (PyUnicode_DATA, PyUnicode_FindChar, PyUnicode_GET_LENGTH, PyUnicode_KIND,
                              PyUnicode_READ, PyUnicode_Tailmatch)
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcmp

from collections import OrderedDict

from . import constants as _C
from .errors import BadResult, InvalidTransition, UnknownHandle, UnknownNode
from .spec import Lowered, RateLimit, check_locality, locality_priority, lower, lower_rate_limit

cdef extern from *:
    Py_ssize_t PY_SSIZE_T_MAX

# Tuning numbers come from constants.py, the single place both implementations read.
cdef uint64_t RNG_MULT = _C.RNG_MULT
cdef uint64_t RNG_ZERO_SEED = _C.RNG_ZERO_SEED
MASK64 = _C.MASK64
cdef int64_t NS_PER_S = _C.NS_PER_S
cdef int64_t BACKOFF_BASE_NS = _C.BACKOFF_BASE_NS
cdef int64_t BACKOFF_CAP_NS = _C.BACKOFF_CAP_NS
cdef int BACKOFF_MAX_EXP = _C.BACKOFF_MAX_EXP
cdef int64_t BUDGET_PERCENT = _C.BUDGET_PERCENT
cdef int64_t BUDGET_MIN_PER_S = _C.BUDGET_MIN_PER_S
cdef int64_t MAX_NOW_NS = _C.MAX_NOW_NS
cdef Py_ssize_t PANIC_THRESHOLD_PERCENT = _C.PANIC_THRESHOLD_PERCENT
cdef uint64_t PER_MILLION = _C.PER_MILLION
cdef int64_t PRIORITY_LOAD_TOTAL = _C.PRIORITY_LOAD_TOTAL
cdef uint32_t GRPC_SERVER_ERRORS_MASK = sum(1 << c for c in _C.GRPC_SERVER_ERRORS)

include "_strings.pxi"
include "_table.pxi"
include "_decision.pxi"
include "_router.pxi"


def _enum_values():
    """The C enum values that constants.py also defines, for the test comparing them."""
    return {
        "PROTO_HTTP": PROTO_HTTP,
        "PROTO_HTTP2": PROTO_HTTP2,
        "PROTO_GRPC": PROTO_GRPC,
        "PROTO_TCP": PROTO_TCP,
        "ROUTED": ROUTED,
        "NO_SERVICE": NO_SERVICE,
        "NO_ROUTE": NO_ROUTE,
        "NO_ENDPOINT": NO_ENDPOINT,
        "BAD_REQUEST": BAD_REQUEST,
        "FAULT_ABORT": FAULT_ABORT,
        "RATE_LIMITED": RATE_LIMITED,
        "N_PRIORITIES": N_PRIORITIES,
        "MAX_TRIED": MAX_TRIED,
        "RESULT_HTTP": RESULT_HTTP,
        "RESULT_GRPC": RESULT_GRPC,
        "RESULT_RESET": RESULT_RESET,
        "RESULT_CONNECT_FAILURE": RESULT_CONNECT_FAILURE,
        "RESULT_REFUSED_STREAM": RESULT_REFUSED_STREAM,
        "RESULT_TIMEOUT": RESULT_TIMEOUT,
        "RESULT_TCP_DONE": RESULT_TCP_DONE,
        "ACT_FINISH": ACT_FINISH,
        "ACT_RETRY": ACT_RETRY,
        "ACT_GIVE_UP": ACT_GIVE_UP,
        "WHY_SUCCESS": WHY_SUCCESS,
        "WHY_RETRYABLE": WHY_RETRYABLE,
        "WHY_NOT_RETRYABLE": WHY_NOT_RETRYABLE,
        "WHY_RETRIES_EXHAUSTED": WHY_RETRIES_EXHAUSTED,
        "WHY_DEADLINE": WHY_DEADLINE,
        "WHY_BUDGET": WHY_BUDGET,
        "ST_IN_FLIGHT": ST_IN_FLIGHT,
        "ST_DONE": ST_DONE,
        "LB_ROUND_ROBIN": LB_ROUND_ROBIN,
        "LB_LEAST_REQUEST": LB_LEAST_REQUEST,
        "HM_PRESENT": HM_PRESENT,
        "HM_EXACT": HM_EXACT,
        "HM_PREFIX": HM_PREFIX,
        "HM_SUFFIX": HM_SUFFIX,
        "HM_REGEX": HM_REGEX,
        "HM_RANGE": HM_RANGE,
        "PK_EXACT": PK_EXACT,
        "PK_REGEX": PK_REGEX,
        "PK_PREFIX": PK_PREFIX,
        "PK_ANY": PK_ANY,
        "BUDGET_WINDOW_S": BUDGET_WINDOW_S,
    }
