# cython: freethreading_compatible = False
"""HTTP/2 forwarding engine of the data plane: libnghttp2 sessions on asyncio transports, relaying streams between downstream clients and pooled upstream connections."""
# One extension module that `include`s its parts, so cdef calls stay inside one C module
# (the uvloop/asyncpg pattern). Read the parts in this order:
#   _api.pxi       values crossing into Python: Target, Refusal, Failure, RequestHead, counters
#   _exchange.pxi  one request/response relay between a downstream and an upstream stream
#   _conn.pxi      nghttp2 sessions on transports: server side, client side, the callbacks
#   _engine.pxi    the Engine: configuration, pools, listeners, sweeper, drain
cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from meshd.dataplane._nghttp2 cimport *

import asyncio
import logging
import ssl as _ssl

_log = logging.getLogger("meshd.dataplane")

include "_api.pxi"
include "_exchange.pxi"
include "_conn.pxi"
include "_engine.pxi"
