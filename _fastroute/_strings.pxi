# Allocation-free string tests on the request's values: hashing, comparing, header,
# range and query checks, read straight from the str's code units.

cdef uint64_t FNV_OFFSET = 14695981039346656037ULL
cdef uint64_t FNV_PRIME = 1099511628211ULL


cdef inline uint64_t fnv_step(uint64_t h, Py_UCS4 c) noexcept nogil:
    # FNV-1a over code points (Fowler/Noll/Vo, draft-eastlake-fnv): the path hash is
    # built one character at a time, so every prefix length gets its hash for free.
    return (h ^ <uint64_t>c) * FNV_PRIME


cdef uint64_t fnv_str(str s):
    """FNV-1a of a whole str; the build-time twin of the hot path's rolling hash."""
    cdef uint64_t h = FNV_OFFSET
    cdef Py_ssize_t i, n = PyUnicode_GET_LENGTH(s)
    cdef int kind = PyUnicode_KIND(s)
    cdef void *data = PyUnicode_DATA(s)
    for i in range(n):
        h = fnv_step(h, PyUnicode_READ(kind, data, i))
    return h


cdef inline bint substr_eq(str s, Py_ssize_t start, str t) noexcept:
    """s[start:start+len(t)] == t, without slicing; the caller checked the bounds."""
    cdef Py_ssize_t i, n = PyUnicode_GET_LENGTH(t)
    cdef int ks = PyUnicode_KIND(s), kt = PyUnicode_KIND(t)
    cdef void *ds = PyUnicode_DATA(s)
    cdef void *dt = PyUnicode_DATA(t)
    if ks == kt:
        return memcmp(<char *>ds + start * ks, dt, n * ks) == 0
    for i in range(n):
        if PyUnicode_READ(ks, ds, start + i) != PyUnicode_READ(kt, dt, i):
            return False
    return True


cdef object slow_str(object v):
    """Requests may carry bytes; latin-1 maps every byte, so decoding never fails.

    Out of line: only odd inputs reach it, and it allocates.
    """
    if type(v) is bytes:
        return (<bytes>v).decode("latin-1")
    return None


cdef bint parse_int(str s, int64_t *out) noexcept:
    """Strict integer parse for range matches: optional sign, then 1 to 18 ASCII digits."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s), i = 0
    cdef int kind = PyUnicode_KIND(s)
    cdef void *data = PyUnicode_DATA(s)
    cdef uint32_t c
    cdef bint neg = False
    cdef int64_t v = 0
    if n == 0:
        return False
    c = PyUnicode_READ(kind, data, 0)
    if c == 43 or c == 45:  # ASCII '+', '-'
        neg = c == 45
        i = 1
    if not 1 <= n - i <= 18:
        return False
    while i < n:
        c = PyUnicode_READ(kind, data, i)
        if c < 48 or c > 57:  # ASCII '0'..'9'
            return False
        v = v * 10 + <int64_t>(c - 48)
        i += 1
    out[0] = -v if neg else v
    return True


cdef bint header_ok(_Header h, dict headers) except -1:
    """One header/metadata condition; a missing header matches only when inverted."""
    cdef PyObject *p = NULL
    cdef object v
    cdef str s
    cdef bint matched
    cdef int64_t n = 0
    if headers is not None:
        p = PyDict_GetItem(headers, h.name)
    if p == NULL:
        return h.invert
    v = <object>p
    if type(v) is not str:
        v = slow_str(v)
        if v is None:
            return h.invert
    s = <str>v
    if h.kind == HM_EXACT:
        matched = s == h.value
    elif h.kind == HM_PREFIX:
        matched = PyUnicode_Tailmatch(s, h.value, 0, PY_SSIZE_T_MAX, -1) == 1
    elif h.kind == HM_SUFFIX:
        matched = PyUnicode_Tailmatch(s, h.value, 0, PY_SSIZE_T_MAX, 1) == 1
    elif h.kind == HM_REGEX:
        matched = h.regex.full(s, PyUnicode_GET_LENGTH(s))
    elif h.kind == HM_RANGE:
        matched = parse_int(s, &n) and h.lo <= n < h.hi
    else:
        matched = True
    return matched != h.invert


cdef bint query_ok(str name, object exact, str path) except -1:
    """App Mesh queryParameters: the first `name[=value]` pair; raw, not decoded."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(path)
    cdef Py_ssize_t q = PyUnicode_FindChar(path, u'?', 0, n, 1)
    cdef Py_ssize_t i, j, k, vstart
    cdef Py_ssize_t name_len = PyUnicode_GET_LENGTH(name)
    if q < 0:
        return False
    i = q + 1
    while i <= n:
        j = PyUnicode_FindChar(path, u'&', i, n, 1)
        if j < 0:
            j = n
        k = PyUnicode_FindChar(path, u'=', i, j, 1)
        if k < 0:
            k = j
        if k - i == name_len and substr_eq(path, i, name):
            if exact is None:
                return True
            vstart = k + 1 if k < j else j
            return j - vstart == PyUnicode_GET_LENGTH(<str>exact) and substr_eq(path, vstart, <str>exact)
        i = j + 1
    return False
