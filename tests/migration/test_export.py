"""`meshctl export` as a user runs it: a mesh written out as App Mesh CLI input (to stdout,
or as files with --dir) and applied to another cluster gives the same resources, tags
included. The App Mesh corpus (every spec field, two meshes) is the mesh."""
from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from registry import Store

pytestmark = [pytest.mark.migration, pytest.mark.etcd]

CORPUS = Path(__file__).parents[1] / "corpus" / "valid"


def meshctl(address: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", address, *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def second(etcd):
    """Another cluster: its own admin API over its own key prefix of the suite's etcd."""
    from tests.conftest import AdminHarness

    store = Store([etcd.url], prefix=f"/meshd-export/{uuid.uuid4().hex}/v1/", timeout=2.0)
    h = AdminHarness(store)
    yield h
    h.close()
    store.close()


def _key(doc: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in doc.items() if k.endswith("Name")))


def _export(address: str, mesh: str) -> list[dict]:
    out = meshctl(address, "export", "--mesh", mesh)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


def test_export_then_apply_elsewhere_gives_the_same_mesh(admin, second, tmp_path):
    applied = meshctl(admin.address, "apply", "-f", str(CORPUS))
    assert applied.returncode == 0, applied.stderr
    for mesh in ("shop", "ledger"):
        exported = _export(admin.address, mesh)
        # Every corpus document of this mesh is there, as written (specs in App Mesh JSON).
        corpus = [yaml.safe_load(f.read_text()) for f in sorted(CORPUS.glob("*.json"))]
        mine = [d for d in corpus if d["meshName"] == mesh]
        assert sorted(map(_key, exported)) == sorted(map(_key, mine))
        for doc in mine:
            got = next(e for e in exported if _key(e) == _key(doc))
            assert {t["key"]: t.get("value", "") for t in got.get("tags", [])} == \
                {t["key"]: t.get("value", "") for t in doc.get("tags", [])}, _key(doc)
        out_dir = tmp_path / mesh
        written = meshctl(admin.address, "export", "--mesh", mesh, "--dir", str(out_dir))
        assert written.returncode == 0, written.stderr
        assert len(list(out_dir.glob("*.json"))) == len(mine)
        again = meshctl(second.address, "apply", "-f", str(out_dir))
        assert again.returncode == 0, again.stderr
        assert _export(second.address, mesh) == exported
    # Nothing differs: apply of the export onto the original changes nothing.
    same = meshctl(admin.address, "diff", "--exit-code", "-f", str(tmp_path / "shop"))
    assert same.returncode == 0, same.stdout


def test_export_names_a_missing_mesh(admin):
    out = meshctl(admin.address, "export", "--mesh", "nowhere")
    assert out.returncode == 1 and "NOT_FOUND" in out.stderr and "mesh nowhere" in out.stderr


@pytest.mark.parametrize("form", ["cloudformation", "k8s"])
def test_export_as_a_template_or_manifests_and_apply_them_elsewhere(admin, second, tmp_path, form):
    applied = meshctl(admin.address, "apply", "-f", str(CORPUS))
    assert applied.returncode == 0, applied.stderr
    out = meshctl(admin.address, "export", "--mesh", "shop", "-o", form, "--dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    (written,) = list(tmp_path.glob("*.yaml"))
    again = meshctl(second.address, "apply", "-f", str(written))
    assert again.returncode == 0, again.stderr
    got, want = _export(second.address, "shop"), _export(admin.address, "shop")
    if form == "k8s":  # the controller's CRDs have no tags: everything else survives
        want = [{k: v for k, v in d.items() if k != "tags"} for d in want]
    assert got == want


def test_apply_controller_manifests_with_meshctl(admin):
    manifests = Path(__file__).parent / "k8s" / "v1beta2-howto.yaml"
    converted = meshctl(admin.address, "convert", "-f", str(manifests), "-o", "json")
    assert converted.returncode == 0, converted.stderr
    docs = yaml.safe_load(converted.stdout)
    assert "skipped:" in converted.stderr and "Deployment" in converted.stderr
    out = meshctl(admin.address, "apply", "-f", str(manifests))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(" created") == len(docs)
    mesh = docs[0]["meshName"]
    exported = _export(admin.address, mesh)
    assert sorted(map(_key, exported)) == sorted(map(_key, docs))
    # The controller's names: <name>_<namespace> for nodes (unless spec.awsName says otherwise).
    nodes = [d["virtualNodeName"] for d in docs if set(d) == {"meshName", "virtualNodeName", "spec"}]
    assert "front_howto-k8s" in nodes, nodes
