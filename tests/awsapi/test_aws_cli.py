"""The AWS CLI (awscli 1.x, a real process) in shell scripts as App Mesh users write them,
pointed at a running meshd with --endpoint-url: what it prints must be what meshd's gRPC
API holds for the same resources, and its refusals must carry App Mesh's error names."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict

from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.awsapi, pytest.mark.etcd]

SCRIPTS = Path(__file__).parent / "scripts"
# The venv's CLI, not whatever `aws` the machine has: the tests pin awscli 1.x.
BIN = str(Path(sys.executable).parent)


def run_script(aws_mesh, name: str, *args: str, env: dict | None = None,
               timeout: float = 240) -> subprocess.CompletedProcess:
    """`bash scripts/<name> args...` with the AWS CLI's environment, bounded by `timeout`.

    The script runs in its own process group, which a timeout kills whole: killing bash
    alone would leave an `aws` child holding the output pipes open."""
    env = dict(env if env is not None else aws_mesh.cli_env())
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    proc = subprocess.Popen(["bash", str(SCRIPTS / name), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{name} ran over {timeout}s; stderr: {err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def bookstore(aws_mesh, tmp_path_factory) -> Path:
    """The output directory of one run of scripts/bookstore.sh."""
    out = tmp_path_factory.mktemp("bookstore")
    done = run_script(aws_mesh, "bookstore.sh", str(out))
    assert done.returncode == 0, done.stderr
    return out


def _epoch(value) -> float:
    """A timestamp as the CLI prints it (epoch seconds, or ISO 8601) or as proto JSON gives
    it (RFC 3339 with a Z), in epoch seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


_INT64 = (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64)


def grpc_json(msg) -> dict:
    """A gRPC resource as proto3 JSON (MessageToDict), its int64 fields back to numbers."""
    return _int64_as_numbers(MessageToDict(msg), msg.DESCRIPTOR)


def _int64_as_numbers(doc: dict, descriptor) -> dict:
    # proto3 JSON writes int64 as a string (App Mesh's `long`s: durations, health check
    # millis, maxRetries; the metadata's version); the CLI prints them as JSON numbers.
    for f in descriptor.fields:
        if f.json_name not in doc:
            continue
        value = doc[f.json_name]
        items = value if f.is_repeated else [value]
        if f.message_type is not None and not f.message_type.full_name.startswith("google.protobuf."):
            for item in items:
                _int64_as_numbers(item, f.message_type)
        elif f.cpp_type in _INT64:
            numbers = [int(v) for v in items]
            doc[f.json_name] = numbers if f.is_repeated else numbers[0]
    return doc


def _comparable(data: dict) -> tuple[dict, dict[str, float]]:
    """One resource's describe output without its timestamps, and the timestamps in epoch
    seconds: proto JSON gives them in RFC 3339, the CLI in epoch seconds (or ISO 8601)."""
    data = json.loads(json.dumps(data))
    stamps = {name: _epoch(data["metadata"].pop(name)) for name in ("createdAt", "lastUpdatedAt")}
    return data, stamps


def assert_same_resource(cli: dict, via_grpc: dict) -> None:
    """The CLI's describe output is the gRPC API's resource: every member equal, and each
    timestamp the same instant (to the millisecond, within the second the brief asks)."""
    cli_data, cli_stamps = _comparable(cli)
    grpc_data, grpc_stamps = _comparable(via_grpc)
    assert cli_data == grpc_data
    for name, at in grpc_stamps.items():
        assert abs(cli_stamps[name] - at) < 1e-3, (name, cli_stamps[name], at)


def test_script_runs_as_written(bookstore):
    # The CLI's JSON of a create and a delete carries what was written.
    mesh = json.loads((bookstore / "create-mesh.json").read_text())["mesh"]
    assert mesh["meshName"] == "bookstore"
    assert mesh["spec"] == {"egressFilter": {"type": "DROP_ALL"}}
    assert mesh["status"] == {"status": "ACTIVE"}
    deleted = json.loads((bookstore / "delete-scratch.json").read_text())["virtualNode"]
    assert deleted["virtualNodeName"] == "scratch"
    assert deleted["spec"] == {"listeners": [{"portMapping": {"port": 9000, "protocol": "tcp"}}],
                               "serviceDiscovery": {"dns": {"hostname": "scratch.bookstore.local"}}}


def test_query_text_is_exactly_the_names(bookstore):
    # What a script captures with $(...): the names alone, tab-separated, one line.
    assert (bookstore / "nodes-before.txt").read_text() == "catalog-v1\tcatalog-v2\tscratch\n"
    assert (bookstore / "nodes-after.txt").read_text() == "catalog-v1\tcatalog-v2\n"
    assert (bookstore / "v2-weight.txt").read_text() == "75\n"


def test_route_after_update_matches_grpc(aws_mesh, bookstore):
    cli = json.loads((bookstore / "describe-route.json").read_text())["route"]
    grpc_route = aws_mesh.grpc_admin.DescribeRoute(pb.DescribeRouteRequest(
        mesh_name="bookstore", virtual_router_name="catalog-router", route_name="catalog-route")).route
    assert_same_resource(cli, grpc_json(grpc_route))
    # Both are what the script sent in route-v2.json, at the second version.
    assert cli["spec"] == json.loads((SCRIPTS / "route-v2.json").read_text())["spec"]
    assert cli["metadata"]["version"] == 2
    assert cli["metadata"]["lastUpdatedAt"] > cli["metadata"]["createdAt"]


def test_virtual_node_matches_grpc(aws_mesh, bookstore):
    cli = json.loads((bookstore / "describe-node.json").read_text())["virtualNode"]
    grpc_node = aws_mesh.grpc_admin.DescribeVirtualNode(pb.DescribeVirtualNodeRequest(
        mesh_name="bookstore", virtual_node_name="catalog-v1")).virtual_node
    assert_same_resource(cli, grpc_json(grpc_node))
    assert cli["spec"] == json.loads((SCRIPTS / "node.json").read_text())["spec"]
    assert cli["metadata"]["uid"] == grpc_node.metadata.uid != ""
    assert cli["metadata"]["arn"].endswith(":mesh/bookstore/virtualNode/catalog-v1")


def test_refusals_exit_non_zero_with_app_mesh_error_names(aws_mesh, bookstore):
    # awscli 1.x exits 255 on an error response (2.x: 254); the script saw the status.
    assert (bookstore / "delete-in-use.rc").read_text().strip() in ("254", "255")
    assert "(ResourceInUseException)" in (bookstore / "delete-in-use.err").read_text()
    assert (bookstore / "describe-missing.rc").read_text().strip() in ("254", "255")
    assert "(NotFoundException)" in (bookstore / "describe-missing.err").read_text()
    # The refused delete left the node in place.
    assert aws_mesh.grpc_admin.DescribeVirtualNode(pb.DescribeVirtualNodeRequest(
        mesh_name="bookstore", virtual_node_name="catalog-v2")).virtual_node.virtual_node_name == "catalog-v2"


def test_paging_returns_every_node(aws_mesh, tmp_path):
    nodes = [f"node-{i}" for i in range(5)]
    done = run_script(aws_mesh, "pages.sh", str(tmp_path), "paged", *nodes)
    assert done.returncode == 0, done.stderr
    # --page-size 1: the CLI asked for one node at a time and still printed them all.
    listed = (tmp_path / "page-size.txt").read_text().split()
    assert sorted(listed) == nodes
    requests = (tmp_path / "page-size.debug").read_text().count("OperationModel(name=ListVirtualNodes)")
    assert requests >= len(nodes)
    # --max-items 2 with --starting-token: three pages, every node once.
    pages = int((tmp_path / "pages").read_text())
    assert pages == 3
    paged = [n["virtualNodeName"] for p in range(1, pages + 1)
             for n in json.loads((tmp_path / f"page-{p}.json").read_text())["virtualNodes"]]
    assert sorted(paged) == nodes


def test_wrong_secret_is_an_invalid_signature(aws_mesh):
    # The same key signs correctly first, so the refusal is the secret's alone.
    key = aws_mesh.key("cli-user", "admin")
    env = aws_mesh.cli_env(key)
    good = run_script(aws_mesh, "list_meshes.sh", env=env, timeout=120)
    assert good.returncode == 0, good.stderr
    env["AWS_SECRET_ACCESS_KEY"] = key.secret[:-1] + ("A" if key.secret[-1] != "A" else "B")
    bad = run_script(aws_mesh, "list_meshes.sh", env=env, timeout=120)
    assert bad.returncode in (254, 255), (bad.returncode, bad.stderr)
    assert "(InvalidSignatureException)" in bad.stderr
    assert bad.stdout == ""
