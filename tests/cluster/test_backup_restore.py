"""`meshctl backup` / `restore` as a user runs them: the App Mesh corpus, applied, backed up
and restored into an empty prefix, comes back spec for spec and tag for tag."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshd.api import kinds as K
from meshd.cli.meshctl import APPLY_ORDER, kind_of_document
from meshd.v1 import admin_pb2 as pb
from registry import Store


CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "valid"

pytestmark = pytest.mark.etcd


def meshctl(admin, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", admin.address, *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def empty(etcd, etcd_prefix, admin):
    """A second meshd admin API on a prefix of its own: an empty cluster to restore into."""
    store = Store([etcd.url], prefix=etcd_prefix.rstrip("/") + "-restored/", timeout=2.0)
    h = type(admin)(store, host_name="restore-host")  # tests/conftest.py's AdminHarness
    yield h
    h.close()
    store.close()


def _ids(kind, doc):
    return {f: doc[f.split("_")[0] + "".join(p.title() for p in f.split("_")[1:])] for f in kind.id_fields}


def _state(admin, docs):
    """Spec and tags of each corpus resource as `admin` holds it."""
    out = {}
    for doc in docs:
        kind = kind_of_document(doc)
        data = getattr(getattr(admin.stub, f"Describe{kind.title}")(
            getattr(pb, f"Describe{kind.title}Request")(**_ids(kind, doc))), kind.field)
        tags = admin.stub.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=data.metadata.arn)).tags
        out[kind.path(tuple(_ids(kind, doc).values()))] = (data.spec.SerializeToString(deterministic=True),
                                                          sorted((t.key, t.value) for t in tags))
    return out


def test_corpus_round_trips_through_backup_and_restore(admin, empty, tmp_path):
    docs = [json.loads(f.read_text()) for f in sorted(CORPUS.glob("*.json"))]
    assert meshctl(admin, "apply", "-f", str(CORPUS)).returncode == 0
    admin.stub.RegisterInstance(pb.RegisterInstanceRequest(
        mesh_name="shop", virtual_node_name="api-v1", instance_id="i-1", address="10.0.0.5", port=9090,
        attributes={"zone": "a"}))
    backup = tmp_path / "mesh.json"
    out = meshctl(admin, "backup", "-f", str(backup))
    assert out.returncode == 0, out.stderr
    saved = json.loads(backup.read_text())
    assert saved["format"] == "meshd-backup/v1" and saved["revision"] > 0
    assert len(saved["resources"]) == len(docs)
    assert [i["instanceId"] for i in saved["instances"]] == ["i-1"]
    # Documents come in dependency order, so the file also applies as it is.
    order = [K.BY_NAME[kind_of_document(d).name] for d in saved["resources"]]
    assert order == sorted(order, key=APPLY_ORDER.index)

    out = meshctl(empty, "restore", "-f", str(backup), "--instances")
    assert out.returncode == 0, out.stderr
    assert f"{len(docs)} created" in out.stderr
    assert _state(empty, docs) == _state(admin, docs)
    inst = empty.stub.ListInstances(pb.ListInstancesRequest(mesh_name="shop")).instances
    assert [(i.instance_id, i.address, i.port, dict(i.attributes)) for i in inst] == [("i-1", "10.0.0.5", 9090, {"zone": "a"})]

    # Running it again changes nothing (an interrupted restore is simply re-run).
    again = meshctl(empty, "restore", "-f", str(backup))
    assert again.returncode == 0 and f"{len(docs)} unchanged" in again.stderr, again.stderr


def test_restore_refuses_to_overwrite_different_resources_unless_told(admin, empty, tmp_path):
    mesh = CORPUS / "00-mesh-shop.json"
    node = CORPUS / "10-vn-api-v1.json"
    for f in (mesh, node):
        assert meshctl(admin, "apply", "-f", str(f)).returncode == 0
    backup = tmp_path / "mesh.yaml"
    assert meshctl(admin, "backup", "-f", str(backup)).returncode == 0
    changed = json.loads(node.read_text())
    changed["spec"]["listeners"][0]["portMapping"]["port"] = 1234
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    assert meshctl(empty, "apply", "-f", str(mesh)).returncode == 0
    assert meshctl(empty, "apply", "-f", str(tmp_path / "changed.json")).returncode == 0
    refused = meshctl(empty, "restore", "-f", str(backup))
    assert refused.returncode == 1 and "virtualNode/shop/api-v1" in refused.stderr
    forced = meshctl(empty, "restore", "-f", str(backup), "--overwrite")
    assert forced.returncode == 0, forced.stderr
    assert _state(empty, [json.loads(node.read_text())]) == _state(admin, [json.loads(node.read_text())])


def test_backup_of_one_mesh_leaves_the_others_out(admin, tmp_path):
    assert meshctl(admin, "apply", "-f", str(CORPUS)).returncode == 0
    out = meshctl(admin, "backup", "--mesh", "ledger", "-f", "-")
    assert out.returncode == 0, out.stderr
    saved = json.loads(out.stdout)
    assert saved["resources"] and {d["meshName"] for d in saved["resources"]} == {"ledger"}
