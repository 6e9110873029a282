"""`_fastroute` imports only the stdlib (sans-IO: never grpc, etcd, protobuf, asyncio)."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import _fastroute
from _fastroute import constants

pytestmark = pytest.mark.fastroute
PKG = Path(_fastroute.__file__).parent
FORBIDDEN = {"asyncio", "grpc", "etcd3", "google", "protobuf", "meshd", "registry", "socket", "time"}


def _imports(path: Path):
    text = path.read_text()
    if path.suffix == ".py":
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                yield from (a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                yield node.module
    else:  # Cython: import / cimport / from X (c)import lines
        for m in re.finditer(r"^\s*(?:from\s+(\S+)\s+c?import|c?import\s+([\w.]+))", text, re.M):
            name = m.group(1) or m.group(2)
            if not name.startswith("."):
                yield name


def test_only_stdlib_and_cython_imports():
    files = [p for p in PKG.iterdir() if p.suffix in (".py", ".pyx", ".pxi", ".pxd", ".pyi")]
    assert any(p.suffix == ".pyx" for p in files) and any(p.suffix == ".pxi" for p in files)
    allowed = set(sys.stdlib_module_names) | {"cython", "cpython", "libc", "_fastroute"}
    bad = {(p.name, mod) for p in files for mod in _imports(p) if mod.split(".")[0] not in allowed}
    assert not bad
    used = {mod.split(".")[0] for p in files for mod in _imports(p)}
    assert not used & FORBIDDEN, used & FORBIDDEN  # no clock, no sockets, no IO stacks


def test_the_checker_can_fail(tmp_path):
    bad = tmp_path / "x.pxi"
    bad.write_text("import grpc\nfrom google.protobuf import message\ncimport cython\n")
    assert list(_imports(bad)) == ["grpc", "google.protobuf", "cython"]


def test_c_enums_match_constants():
    """_core.pxd repeats constants.py as C enums; the compiled numbers must agree."""
    from _fastroute import _core

    assert _core._enum_values() == {k: getattr(constants, k) for k in _core._enum_values()}
