# The header of the RE2 binding: what the router core calls without going through Python.
# The RE2 object is an opaque pointer here, so that C modules can cimport the class
# without C++ headers; only _re2.pyx (C++) knows its type.

cdef class Regex:
    cdef void *_re
    cdef readonly str pattern
    cdef bint full(self, str text, Py_ssize_t end) except -1
    cdef bint _full_wide(self, str text, Py_ssize_t end) except -1
