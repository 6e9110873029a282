# cython: language_level=3
"""RE2 regular expressions for route matching: time linear in the text, as Envoy's safe_regex.

App Mesh hands route regexes to Envoy, which runs them with RE2 (config.type.matcher.v3
RegexMatcher, google_re2); a backtracking engine such as Python's `re` takes time
exponential in the text for patterns like `/(a+)+$`, so one route could stall a host.
This binds libre2 directly (Debian's libre2-dev) rather than the google-re2 wheel, so the
router core stays stdlib-only at the Python level and calls the match without Python
objects in between. Everything that compiles or matches a route regex (router core,
reference model, meshd's compiler, the gateway and the admin API) uses this one class, so
what the API accepts is exactly what the data plane can run.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_Clear
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_GET_LENGTH

from .errors import BadRegex

__all__ = ["BadRegex", "Regex"]

cdef extern from "Python.h":
    Py_ssize_t PY_SSIZE_T_MAX
    bint PyUnicode_IS_ASCII(object)
    # Declared here without Cython's `except NULL`: a NULL (a lone surrogate) is handled.
    const char *utf8_and_size "PyUnicode_AsUTF8AndSize"(object, Py_ssize_t *)

cdef extern from "<string>" namespace "std" nogil:
    cdef cppclass string:
        const char *c_str()

cdef extern from "re2/re2.h" namespace "re2" nogil:
    cdef cppclass StringPiece:
        StringPiece()
        StringPiece(const char *data, size_t size)

    cdef cppclass Options "re2::RE2::Options":
        Options()
        void set_log_errors(bint)
        void set_never_capture(bint)

    ctypedef enum Anchor "re2::RE2::Anchor":
        ANCHOR_BOTH "re2::RE2::ANCHOR_BOTH"

    cdef cppclass RE2:
        RE2(const StringPiece &pattern, const Options &options)
        bint ok()
        int error_code()
        const string &error()
        bint Match(const StringPiece &text, size_t startpos, size_t endpos, Anchor anchor,
                   StringPiece *submatch, int nsubmatch)

# RE2::ErrorCode, in its order, as the stable codes BadRegex carries.
ERROR_CODES = (
    "no_error", "internal", "bad_escape", "bad_char_class", "bad_char_range", "missing_bracket",
    "missing_paren", "unexpected_paren", "trailing_backslash", "repeat_argument", "repeat_size",
    "repeat_op", "bad_perl_op", "bad_utf8", "bad_named_capture", "pattern_too_large",
)


cdef class Regex:
    """A compiled RE2 pattern; `fullmatch` tells whether a whole str matches it.

    Raises BadRegex for what RE2 cannot compile, which includes what only a backtracking
    engine can run: backreferences (`\\1`) and lookaround (`(?=`, `(?!`, `(?<=`, `(?<!`).
    The text is matched as UTF-8, so `.` is one code point, as in Python's `re` on str.
    """

    def __cinit__(self, str pattern):
        cdef Options options
        cdef bytes raw
        cdef RE2 *compiled
        # Errors are raised, not also logged to stderr; groups only need to group here, so
        # RE2 need not track submatches.
        options.set_log_errors(False)
        options.set_never_capture(True)
        try:
            raw = pattern.encode("utf-8")
        except UnicodeEncodeError as err:
            raise BadRegex(pattern, "bad_utf8", "not valid Unicode text") from err
        compiled = new RE2(StringPiece(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw)), options)
        if not compiled.ok():
            code = compiled.error_code()
            reason = compiled.error().c_str().decode("utf-8", "replace")
            del compiled
            raise BadRegex(pattern, ERROR_CODES[code] if 0 <= code < len(ERROR_CODES) else "internal", reason)
        self._re = compiled
        self.pattern = pattern

    def __dealloc__(self):
        cdef RE2 *compiled = <RE2 *>self._re
        del compiled

    def __reduce__(self):
        return (Regex, (self.pattern,))

    def __repr__(self):
        return f"Regex({self.pattern!r})"

    def fullmatch(self, str text, Py_ssize_t endpos=PY_SSIZE_T_MAX):
        """True when `text` (only its first `endpos` characters, as `re`'s endpos) matches
        the whole pattern: Envoy's safe_regex is a full match of the value."""
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
        return self.full(text, min(max(endpos, 0), n))

    cdef bint full(self, str text, Py_ssize_t end) except -1:
        """text[:end] matches the whole pattern; the caller keeps 0 <= end <= len(text).

        An ASCII str is its own UTF-8, so the common case passes RE2 the str's own
        characters: no copy, no slice, no match object.
        """
        if not PyUnicode_IS_ASCII(text):
            return self._full_wide(text, end)
        return (<RE2 *>self._re).Match(StringPiece(<const char *>PyUnicode_DATA(text), end), 0, end,
                                       ANCHOR_BOTH, NULL, 0)

    cdef bint _full_wide(self, str text, Py_ssize_t end) except -1:
        # Out of line: the str's UTF-8 form is made once and cached on the str by CPython.
        cdef Py_ssize_t size, i = 0, b = 0
        cdef bytes keep = None
        cdef const char *p = utf8_and_size(text, &size)
        if p == NULL:
            # A lone surrogate has no strict UTF-8 form; encoded as its three bytes, it is
            # still one character to `.` (RE2 reads [E0-EF][80-BF][80-BF] as one), as in `re`.
            PyErr_Clear()
            keep = text.encode("utf-8", "surrogatepass")
            p, size = PyBytes_AS_STRING(keep), PyBytes_GET_SIZE(keep)
        if end == PyUnicode_GET_LENGTH(text):
            b = size
        else:
            # The byte offset of character `end`: continuation bytes are 10xxxxxx.
            while i < end:
                b += 1
                while b < size and (<unsigned char>p[b] & 0xC0) == 0x80:
                    b += 1
                i += 1
        return (<RE2 *>self._re).Match(StringPiece(p, b), 0, b, ANCHOR_BOTH, NULL, 0)
