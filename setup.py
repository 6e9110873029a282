"""Build script: the Cython extensions (router core, its RE2 binding, HTTP/2 engine, span
encoder); metadata lives in pyproject.toml."""
from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    # One extension module that `include`s its parts, so cdef calls stay inside one C module.
    Extension("_fastroute._core", ["_fastroute/_core.pyx"]),
    # RE2's API is C++; kept out of _core so the router core stays a C module, and the
    # router calls it through the class's vtable (`_re2.pxd`).
    Extension("_fastroute._re2", ["_fastroute/_re2.pyx"], language="c++", libraries=["re2"]),
    Extension("meshd.dataplane._h2", ["meshd/dataplane/_h2.pyx"], libraries=["nghttp2"]),
    Extension("meshd.observe._spans", ["meshd/observe/_spans.pyx"]),
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
)
