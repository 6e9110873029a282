"""meshctl as a user runs it (a real process) against a real meshd admin API and etcd:
the App Mesh corpus round-trips through apply -> describe, invalid documents are refused
naming the field, and diff/get/delete/instance behave."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meshd.api.validate import parse_json
from meshd.cli.meshctl import kind_of_document
from meshd.v1 import admin_pb2 as pb

CORPUS = Path(__file__).parent / "corpus"
VALID = sorted((CORPUS / "valid").glob("*.json"))
INVALID_CASES = yaml.safe_load((CORPUS / "invalid" / "cases.yaml").read_text())

pytestmark = pytest.mark.etcd


def meshctl(admin, *args, input=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", admin.address, *args],
                          capture_output=True, text=True, timeout=120, input=input)


def _describe(stub, kind, doc):
    ids = {f: doc[_camel(f)] for f in kind.id_fields}
    return getattr(getattr(stub, f"Describe{kind.title}")(getattr(pb, f"Describe{kind.title}Request")(**ids)), kind.field)


def _camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def test_corpus_round_trips_through_apply_and_describe(admin, tmp_path):
    # Shuffle the file names so that apply's own dependency ordering is what makes it work.
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for i, f in enumerate(reversed(VALID)):
        (shuffled / f"{i:02d}-{f.name.split('-', 1)[1]}").write_text(f.read_text())
    out = meshctl(admin, "apply", "-f", str(shuffled))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(" created") == len(VALID)
    for f in VALID:
        doc = json.loads(f.read_text())
        kind = kind_of_document(doc)
        data = _describe(admin.stub, kind, doc)
        assert data.spec == parse_json(kind.spec_cls, doc["spec"]), f.name
        assert data.metadata.version == 1
        if doc.get("tags"):
            tags = admin.stub.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=data.metadata.arn)).tags
            assert {(t.key, t.value) for t in tags} == {(t["key"], t.get("value", "")) for t in doc["tags"]}
    # Applying again changes nothing; diff agrees.
    again = meshctl(admin, "apply", "-f", str(CORPUS / "valid"))
    assert again.returncode == 0 and again.stdout.count(" unchanged") == len(VALID)
    diff = meshctl(admin, "diff", "--exit-code", "-f", str(CORPUS / "valid"))
    assert diff.returncode == 0 and "would be" not in diff.stdout


@pytest.mark.parametrize("name", sorted(INVALID_CASES))
def test_invalid_documents_are_refused_naming_the_field(admin, name):
    case = INVALID_CASES[name]
    before = _everything(admin.store)
    out = meshctl(admin, "apply", "-f", str(CORPUS / "invalid" / name))
    assert out.returncode != 0
    assert case["field"] in out.stderr, out.stderr
    # Nothing was written, of any kind: not the refused resource, nor a parent, tag or
    # record made on its behalf (every key under this meshd's prefix is as it was).
    assert _everything(admin.store) == before


def _everything(store) -> list[tuple[str, bytes, int]]:
    """Every key under the store's prefix with its value and last-modified revision."""
    items, _ = store.scan("")
    return [(i.path, i.value, i.mod_revision) for i in items]


def test_apply_updates_and_diff_shows_changes(admin, tmp_path):
    doc = {"meshName": "m", "spec": {}}
    node = {"meshName": "m", "virtualNodeName": "n",
            "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                     "serviceDiscovery": {"dns": {"hostname": "n.m.local"}}}}
    f = tmp_path / "m.yaml"
    f.write_text(yaml.safe_dump_all([doc, node]))
    assert meshctl(admin, "apply", "-f", str(f)).returncode == 0
    node["spec"]["listeners"][0]["portMapping"]["port"] = 9090
    f.write_text(yaml.safe_dump_all([doc, node]))
    diff = meshctl(admin, "diff", "--exit-code", "-f", str(f))
    assert diff.returncode == 1
    assert "virtualNode/m/n (would be updated from version 1)" in diff.stdout
    assert "-    port: 8080" in diff.stdout and "+    port: 9090" in diff.stdout
    out = meshctl(admin, "apply", "-f", str(f))
    assert "virtualNode/m/n updated (version 2)" in out.stdout
    got = meshctl(admin, "get", "vn", "n", "--mesh", "m", "-o", "json")
    data = json.loads(got.stdout)
    assert data["spec"]["listeners"][0]["portMapping"]["port"] == 9090 and data["metadata"]["version"] == 2
    table = meshctl(admin, "get", "virtualnodes", "--mesh", "m")
    assert table.stdout.splitlines()[0].split() == ["NAME", "MESH", "VERSION", "AGE", "UPDATED"]
    assert table.stdout.splitlines()[1].split()[:3] == ["n", "m", "2"]
    as_yaml = yaml.safe_load(meshctl(admin, "-o", "yaml", "get", "meshes").stdout)
    assert [m["meshName"] for m in as_yaml["meshes"]] == ["m"]


def test_errors_print_the_server_reason_and_exit_nonzero(admin, tmp_path):
    out = meshctl(admin, "delete", "mesh", "ghost")
    assert out.returncode == 1 and "NOT_FOUND: mesh ghost not found" in out.stderr
    f = tmp_path / "route.json"
    f.write_text(json.dumps({"meshName": "nomesh", "virtualRouterName": "r", "routeName": "x",
                             "spec": {"httpRoute": {"match": {"prefix": "/"},
                                                    "action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}}))
    out = meshctl(admin, "apply", "-f", str(f))
    assert out.returncode == 1 and "NOT_FOUND" in out.stderr and "mesh nomesh" in out.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = meshctl(admin, "apply", "-f", str(bad))
    assert out.returncode == 1 and "not valid JSON or YAML" in out.stderr
    unreachable = subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", "127.0.0.1:1",
                                  "--timeout", "2", "get", "meshes"], capture_output=True, text=True, timeout=60)
    assert unreachable.returncode == 1 and "cannot reach meshd" in unreachable.stderr


def test_delete_in_use_and_instances_through_meshctl(admin, tmp_path):
    docs = [{"meshName": "m", "spec": {}},
            {"meshName": "m", "virtualNodeName": "n", "spec": {}},
            {"meshName": "m", "virtualServiceName": "s.m.local",
             "spec": {"provider": {"virtualNode": {"virtualNodeName": "n"}}}}]
    f = tmp_path / "docs.json"
    f.write_text(json.dumps(docs))
    assert meshctl(admin, "apply", "-f", str(f)).returncode == 0
    out = meshctl(admin, "delete", "vn", "n", "--mesh", "m")
    assert out.returncode == 1 and "FAILED_PRECONDITION" in out.stderr and "virtualService s.m.local" in out.stderr
    out = meshctl(admin, "instance", "register", "--mesh", "m", "--node", "n", "--id", "i-1",
                  "--address", "127.0.0.1", "--port", "8080", "--attribute", "zone=a")
    assert out.returncode == 0, out.stderr
    listed = json.loads(meshctl(admin, "instance", "list", "--mesh", "m", "-o", "json").stdout)
    assert [(i["instanceId"], i["port"], i["attributes"]) for i in listed["instances"]] == [("i-1", 8080, {"zone": "a"})]
    assert meshctl(admin, "instance", "deregister", "--mesh", "m", "--node", "n", "--id", "i-1").returncode == 0
    assert meshctl(admin, "delete", "vs", "s.m.local", "--mesh", "m").returncode == 0
    assert meshctl(admin, "delete", "vn", "n", "--mesh", "m").returncode == 0
