"""`deploy/migrate/aws-export.sh`, the AWS CLI export of an App Mesh mesh, run against meshd's
own App Mesh API (the AWS CLI cannot tell the two apart): its files applied with meshctl to
another cluster give the same mesh, tags included."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meshd.cli.meshctl import APPLY_ORDER, kind_of_document
from tests.awsapi.harness import start_aws_mesh, stop_aws_mesh

pytestmark = [pytest.mark.migration, pytest.mark.awsapi, pytest.mark.etcd]

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "corpus" / "valid"


def _snake(camel: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in camel)


def test_aws_cli_export_script_then_meshctl_apply(etcd, admin, tmp_path):
    source = start_aws_mesh(etcd, tmp_path / "aws")
    try:
        c = source.client()
        docs = sorted((yaml.safe_load(f.read_text()) for f in CORPUS.glob("*.json")),
                      key=lambda d: APPLY_ORDER.index(kind_of_document(d)))
        for doc in docs:  # App Mesh CLI input is boto3's parameters, as the AWS CLI passes them
            getattr(c, f"create_{_snake(kind_of_document(doc).name)}")(**doc)
        env = {**source.cli_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        for mesh in ("shop", "ledger"):
            out = subprocess.run(["bash", str(REPO / "deploy/migrate/aws-export.sh"), mesh, str(tmp_path / mesh),
                                  "--endpoint-url", source.endpoint], env=env, capture_output=True, text=True,
                                 timeout=300, start_new_session=True)
            assert out.returncode == 0, out.stderr
            mine = [d for d in docs if d["meshName"] == mesh]
            assert f"exported {len(mine)} resources" in out.stderr
            applied = subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", admin.address, "apply",
                                      "-f", str(tmp_path / mesh)], capture_output=True, text=True, timeout=120)
            assert applied.returncode == 0, applied.stderr
            assert applied.stdout.count(" created") == len(mine)
            exported = subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", admin.address,
                                       "export", "--mesh", mesh], capture_output=True, text=True, timeout=120)
            got = {tuple(sorted((k, v) for k, v in d.items() if k.endswith("Name"))): d
                   for d in yaml.safe_load_all(exported.stdout) if d}
            for doc in mine:
                key = tuple(sorted((k, v) for k, v in doc.items() if k.endswith("Name")))
                kind = kind_of_document(doc)
                names = {k: v for k, v in doc.items() if k.endswith("Name")}
                original = getattr(c, f"describe_{_snake(kind.name)}")(**names)[kind.name]["spec"]
                assert got[key]["spec"] == original, key
                assert sorted((t["key"], t.get("value", "")) for t in got[key].get("tags", [])) == \
                    sorted((t["key"], t.get("value", "")) for t in doc.get("tags", [])), key
    finally:
        stop_aws_mesh(source)
