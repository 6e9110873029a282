"""The package boundaries of STYLE.md, checked on the source: who may import whom."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules(path: Path) -> set[str]:
    """The full names of the modules a Python source file imports."""
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _imports(path: Path) -> set[str]:
    """Top-level module names (and meshd subpackages) imported by a Python source file."""
    out = set()
    for name in _modules(path):
        parts = name.split(".")
        out.add(parts[0])
        if parts[0] == "meshd" and len(parts) > 1:
            out.add(".".join(parts[:2]))
    return out


def _sources(pkg: str):
    return [p for p in (ROOT / pkg).rglob("*.py")]


@pytest.mark.parametrize("path", _sources("registry"), ids=str)
def test_registry_knows_nothing_of_meshd(path):
    bad = {m for m in _imports(path) if m.split(".")[0] in ("meshd", "_fastroute", "grpc_status")}
    assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("path", _sources("meshd/api"), ids=str)
def test_admin_api_does_not_import_the_data_plane(path):
    bad = {m for m in _imports(path) if m in ("meshd.dataplane", "meshd.app")}
    # The one part of the router core it may use is the regex engine (`_fastroute._re2`),
    # so that validation refuses exactly the patterns the router cannot run.
    bad |= {m for m in _modules(path) if m.split(".")[0] == "_fastroute" and m != "_fastroute._re2"}
    assert not bad, f"{path} imports {bad}"


def test_only_the_composition_root_wires_api_and_registry_together():
    wiring = []
    for path in _sources("meshd"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("meshd/api/", "meshd/v1/", "meshd/cli/", "meshd/security/", "meshd/dataplane/")):
            continue
        imports = _imports(path)
        if "meshd.api" in imports and ("meshd.dataplane" in imports or "meshd.embedded_etcd" in imports):
            wiring.append(rel)
    assert wiring == ["meshd/app.py"]


def test_fastroute_imports_only_the_stdlib():
    stdlib = set(sys.stdlib_module_names) | {"_fastroute", "cython", "libc", "cpython"}
    for path in (ROOT / "_fastroute").rglob("*"):
        if path.suffix not in (".py", ".pyx", ".pxi", ".pxd"):
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from", "cimport"):
                top = words[1].split(".")[0].rstrip(",")
                assert top in stdlib or top == "", f"{path}: {line.strip()}"


def _full_imports(path: Path) -> set[str]:
    """Full dotted names of the modules a source file imports (`from a.b import c` -> a.b)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_engines_and_observers_do_not_call_back_into_the_proxy():
    """The engines and the observer are called by meshd.proxy, never the other way round;
    the observer reads only the outcomes table, a leaf module."""
    for pkg, allowed in (("meshd/dataplane", set()), ("meshd/observe", {"meshd.proxy.outcomes"})):
        for path in _sources(pkg):
            bad = {m for m in _full_imports(path) if m.startswith("meshd.proxy")} - allowed
            assert not bad, f"{path} imports {bad}"


def test_outcomes_table_is_a_leaf():
    mods = _full_imports(ROOT / "meshd/proxy/outcomes.py")
    assert {m for m in mods if m.startswith("meshd.")} <= {"meshd.dataplane"}


def test_proxy_modules_import_no_cycle():
    """The proxy's modules form a DAG (the old runtime and gateway listener imported each
    other); lifecycle, the wiring, is imported by no other proxy module."""
    mods = {p.stem: {m.rsplit(".", 1)[1] for m in _full_imports(p) if m.startswith("meshd.proxy.")}
            for p in (ROOT / "meshd/proxy").glob("*.py") if p.stem != "__init__"}
    assert not any("lifecycle" in deps for name, deps in mods.items() if name != "lifecycle")
    seen, done = set(), set()

    def visit(m, trail):
        assert m not in seen or m in done, f"import cycle: {' -> '.join(trail + [m])}"
        if m in done:
            return
        seen.add(m)
        for dep in mods.get(m, ()):
            visit(dep, trail + [m])
        done.add(m)
    for m in mods:
        visit(m, [])


def test_production_code_does_not_use_the_reference_model():
    # `_fastroute.reference` is the plain-Python model the router core is tested against;
    # what runs in meshd uses the compiled core (e.g. `_fastroute.Conditions`).
    users = [p.relative_to(ROOT).as_posix() for p in _sources("meshd") + _sources("registry")
             if any(m.startswith("_fastroute.reference") for m in _modules(p))]
    assert users == []
