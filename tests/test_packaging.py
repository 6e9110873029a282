"""Packaging as a user meets it: the sdist builds the compiled router core from source and
installs both console scripts; the installed package imports without the source tree."""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_sdist_builds_and_installs_the_compiled_core(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (sdist,) = dist.glob("meshd-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    top = names[0].split("/")[0]
    for needed in ("proto/meshd/v1/admin.proto", "_fastroute/_core.pyx", "_fastroute/_core.pxd",
                   "meshd/v1/admin_pb2.py", "registry/store.py", "setup.py"):
        assert f"{top}/{needed}" in names, needed
    assert not any(n.endswith((".so", ".c")) for n in names), "the sdist must build from source"
    target = tmp_path / "site"
    # --no-deps: the dependencies are already in this environment; what is checked is that
    # building from the sdist compiles the extension and installs the packages and scripts.
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(sdist)],
                   check=True, capture_output=True, timeout=600)
    assert list((target / "_fastroute").glob("_core*.so")), "compiled router core missing"
    for script in ("meshd", "meshctl"):
        assert (target / "bin" / script).exists()
    # Import from the installed copy only (cwd elsewhere, the target first on the path).
    probe = ("import _fastroute._core as c, meshd.v1.admin_pb2, registry, meshd.cli.meshctl; "
             "assert c.__file__.endswith('.so'), c.__file__; print(c.__file__)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout
    help_out = subprocess.run([sys.executable, str(target / "bin" / "meshctl"), "--help"], cwd=tmp_path,
                              capture_output=True, text=True, env={"PYTHONPATH": str(target)}, timeout=60)
    assert help_out.returncode == 0 and "apply" in help_out.stdout
