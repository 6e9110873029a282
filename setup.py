"""Build script: the Cython extensions (router core, HTTP/2 engine, span encoder); metadata
lives in pyproject.toml."""
from Cython.Build import cythonize
from setuptools import Extension, setup

EXTENSIONS = [
    # One extension module that `include`s its parts, so cdef calls stay inside one C module.
    Extension("_fastroute._core", ["_fastroute/_core.pyx"]),
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
