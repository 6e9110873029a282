"""meshd.security stays a library: it imports neither the admin API, nor gRPC servers, nor
the data plane (the composition root wires it in)."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.identity

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "meshd" / "security"
FORBIDDEN = ("meshd.api", "meshd.app", "meshd.dataplane", "meshd.cli", "grpc", "_fastroute")


def test_no_forbidden_imports_in_source():
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names
                          if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]
    assert offenders == []


def test_importing_the_package_loads_none_of_them():
    code = ("import sys, meshd.security; "
            "print(sorted(m for m in sys.modules if m.startswith(('meshd.api', 'meshd.app', 'meshd.dataplane', 'meshd.cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parents[1]).stdout.strip()
    assert out == "[]"
