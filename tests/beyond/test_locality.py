"""Locality-aware balancing across netns hosts (deploy/netns/cluster.py): h1 (zone a) calls
api-v1, which has one instance on h2 (zone a) and one on h3 (zone b). Each host's meshd
takes its locality from its own data-plane config, and registers its instances with it.

Traffic from h1 stays in zone a; when h2's instance dies it fails over to h3 with no failed
call (the route retries UNAVAILABLE and connection errors); when h2's instance is back,
traffic returns to it; a NodePolicy turning locality off spreads it over both zones. And a
sidecar finds its locality where ECS tells it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

import _fastroute as fr

from beyond.harness import wait_until
from builders import create, node_spec
from cluster.harness import NetnsCluster, free_subnet
from cluster.traffic import REPO, SAMPLE, Traffic
from meshd.embedded_etcd import free_port
from meshd.proxy.config import parse_locality
from meshd.security import ClusterKey
from meshd.sidecar import locality
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import admin_pb2_grpc

pytestmark = [pytest.mark.beyond]

ZONES = {"h1": "r1/za", "h2": "r1/za", "h3": "r1/zb"}
APP_PORT = 9101
RPS = 200


def _host_config(host: str) -> str:
    apps = [{"mesh": "shop", "virtualNode": "web", "port": 8080, "instanceId": f"{host}-web",
             "egress": "127.0.0.1:15001"}] if host == "h1" else [
        {"mesh": "shop", "virtualNode": "api-v1", "port": APP_PORT, "instanceId": f"{host}-api-v1"}]
    return json.dumps({"ingress": "${HOST_IP}:15443", "advertise": "${HOST_IP}:15443", "drainSeconds": 2,
                       "locality": ZONES[host], "apps": apps}, indent=1)


@pytest.fixture
def zoned(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("the netns hosts need root (network namespaces); CI runs as root")
    apps = tmp_path / "apps"
    apps.mkdir()
    for host in ZONES:  # JSON is YAML: the cluster script fills in ${HOST_IP} per host
        (apps / f"{host}.yaml").write_text(_host_config(host))
    c = NetnsCluster(tmp_path / "netns", prefix=f"ml{os.getpid()}", subnet=free_subnet(), lease_ttl=10, apps=apps)
    try:
        c.up(3)
        yield c
    finally:
        c.down()


def _serve(cluster: NetnsCluster, host: str, python: str) -> int:
    out = cluster.run("bg", host, f"api-{time.monotonic_ns()}", "--", python,
                      str(REPO / "deploy" / "quickstart" / "demo.py"), "serve", f"{APP_PORT}={host}/api-v1").stdout
    return int(out.split()[-1])


def _answered(traffic: Traffic, seconds: float = 1.0):
    return traffic.load("h1", rps=RPS, seconds=seconds, deadline=5.0).stop(signal_it=False)


def _wait_answers(traffic: Traffic, *who: str, timeout: float = 60.0):
    """Until a one-second run from h1 is answered by `who` (all of them, no other), with no
    failure."""
    deadline = time.monotonic() + timeout
    while True:
        r = _answered(traffic)
        if not r.failed and set(r.summary["by"]) == set(who):
            return
        assert time.monotonic() < deadline, f"not answered by {who} alone within {timeout}s: {r.brief()}"
        time.sleep(0.5)


@pytest.mark.cluster
@pytest.mark.dataplane
@pytest.mark.etcd
@pytest.mark.timeout(240)
def test_stays_in_zone_fails_over_and_returns(zoned, tmp_path):
    traffic = Traffic(zoned)
    h2_app = _serve(zoned, "h2", traffic.python)
    _serve(zoned, "h3", traffic.python)
    mesh = tmp_path / "mesh"
    mesh.mkdir()
    for doc in sorted(SAMPLE.glob("mesh/*.json")):
        if "api-v2" not in doc.name:
            (mesh / doc.name).write_text(doc.read_text())
    route = json.loads((SAMPLE / "mesh" / "30-route-api.json").read_text())
    route["spec"]["grpcRoute"]["action"]["weightedTargets"] = [{"virtualNode": "api-v1", "weight": 100}]
    (mesh / "30-route-api.json").write_text(json.dumps(route))
    traffic.meshctl("apply", "-f", str(mesh))

    # In zone: every call from h1 is answered by h2's instance, none by h3's.
    _wait_answers(traffic, "h2/api-v1")
    steady = _answered(traffic, seconds=3.0)
    steady.check()
    assert steady.summary["by"] == {"h2/api-v1": steady.summary["ok"]}, steady.summary["by"]

    # The zone's instance dies mid-load: the calls go to zone b, none fails.
    run = traffic.load("h1", rps=RPS, seconds=6.0, deadline=5.0)
    time.sleep(2.0)
    killed_at = time.monotonic()
    os.kill(h2_app, signal.SIGKILL)
    failover = run.stop(signal_it=False)
    failover.check()
    after = failover.answered_by(since=killed_at + 1.0)
    assert after and set(after) == {"h3/api-v1"}, after
    assert failover.answered_by(until=killed_at - 1.0).keys() == {"h2/api-v1"}

    # Back: once h2's meshd sees its instance listen again, traffic returns to zone a.
    _serve(zoned, "h2", traffic.python)
    _wait_answers(traffic, "h2/api-v1")
    back = _answered(traffic, seconds=3.0)
    back.check()
    assert back.summary["by"] == {"h2/api-v1": back.summary["ok"]}, back.summary["by"]

    # The node's NodePolicy turns locality-aware balancing off: both zones share the calls.
    policy = tmp_path / "node-policy.json"
    policy.write_text(json.dumps({"kind": "NodePolicy", "meshName": "shop", "nodePolicyName": "api-v1",
                                  "spec": {"virtualNodeName": "api-v1", "locality": {"enabled": False}}}))
    traffic.meshctl("apply", "-f", str(policy))
    _wait_answers(traffic, "h2/api-v1", "h3/api-v1")


@pytest.fixture
def task_metadata():
    """An HTTP server answering as ECS's task metadata endpoint v4 does at <uri>/task."""
    task = {"TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/shop/0b69d5c0d35f4d2b9d6e5f0c9a3c6d21",
            "AvailabilityZone": "eu-west-1b", "Family": "api"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            body = json.dumps(task).encode()
            self.send_response(200 if self.path == "/v4/abc/task" else 404)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v4/abc"
    server.shutdown()
    server.server_close()


def test_sidecar_locality_from_the_environment(task_metadata):
    ecs = {"ECS_CONTAINER_METADATA_URI_V4": task_metadata}
    assert locality(ecs) == ("eu-west-1", "eu-west-1b", "")
    assert locality({**ecs, "MESHD_LOCALITY": "r9/z9/rack-3"}) == ("r9", "z9", "rack-3")
    assert locality({"MESHD_LOCALITY": "r9/z9"}) == ("r9", "z9", "")
    assert locality({}) == ("", "", "")
    with pytest.raises(ValueError):
        locality({"MESHD_LOCALITY": "r9"})


@pytest.mark.etcd
def test_meshd_run_registers_its_instances_with_its_locality(etcd, etcd_prefix, tmp_path):
    """`meshd run --locality` as a real process: the instance its data plane registers
    carries the flag's locality; a malformed flag stops it at once (exit 2)."""
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    config = tmp_path / "meshd.yaml"
    config.write_text(json.dumps({"ingress": "127.0.0.1:0", "apps": [
        {"mesh": "shop", "virtualNode": "api-v1", "port": free_port(), "instanceId": "i-1"}]}))
    admin = f"127.0.0.1:{free_port()}"
    base = [sys.executable, "-m", "meshd.cli.meshd_main", "run", "--insecure-local", "--admin", admin,
            "--etcd", etcd.url, "--etcd-prefix", etcd_prefix, "--cluster-key", str(key), "--host-name", "h1",
            "--state-dir", str(tmp_path / "state"), "--metrics", "off", "--config", str(config)]
    bad = subprocess.run([*base, "--locality", "eu-west-1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--locality" in bad.stderr, bad.stderr
    proc = subprocess.Popen([*base, "--locality", "eu-west-1/eu-west-1a/rack-7"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    channel = grpc.insecure_channel(admin)
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = admin_pb2_grpc.MeshAdminStub(channel)
        create(stub, "Mesh", meshName="shop")
        create(stub, "VirtualNode", meshName="shop", virtualNodeName="api-v1", spec=node_spec())

        def instances():
            return stub.ListInstances(pb.ListInstancesRequest(mesh_name="shop"), timeout=10).instances
        wait_until("the app's instance registered", lambda: len(instances()) == 1, timeout=30)
        [inst] = instances()
        assert (inst.instance_id, inst.locality.region, inst.locality.zone, inst.locality.sub_zone) == (
            "i-1", "eu-west-1", "eu-west-1a", "rack-7")
    finally:
        channel.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_hosts_of_one_zone_share_its_load():
    """A locality without a sub-zone leaves it empty rather than naming the host: every
    meshd of a zone is then at distance 0 from every other, and a caller spreads its calls
    over the whole zone's instances instead of piling them on the ones beside it (Istio
    leaves the sub-zone unset unless told; a host-level preference is opt-in, by giving one)."""
    here = parse_locality("eu-west-1/eu-west-1a")
    assert here == ("eu-west-1", "eu-west-1a", "")
    table = fr.Table(
        services=(fr.VirtualService("api.shop.local", node="api"),),
        nodes=(fr.VirtualNode("api"),))
    router = fr.Router(table, seed=7, locality=here)
    on = {"h1": parse_locality("eu-west-1/eu-west-1a"), "h2": parse_locality("eu-west-1/eu-west-1a"),
          "h3": parse_locality("eu-west-1/eu-west-1b")}
    router.set_endpoints("api", [fr.Endpoint(h, "10.0.0.%d" % i, 9090, locality=where)
                                 for i, (h, where) in enumerate(on.items(), 1)])
    picked = Counter()
    for n in range(600):
        d = router.decide(fr.constants.PROTO_GRPC, "api.shop.local", 0, "POST", "http", "/a.B/C", None, n)
        picked[d.endpoint.id] += 1
        router.result(d, fr.constants.RESULT_GRPC, 0, n)
    assert picked == {"h1": 300, "h2": 300}, picked
