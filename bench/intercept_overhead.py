"""What transparent interception costs: CPU per request of one sidecar meshd serving the same
calls through its intercepting listener and through its explicit egress, measured in the
same run; and the sidecar's resident memory at idle.

    python -m bench.intercept_overhead [--seconds 3] [--runs 6]

A pod (network namespace, tests/sidecar/pods.py) holds meshd A (`meshd run` with both
listeners, its group exempted by `meshd proxy-init`'s rules, DNS captured) and h2load; the
test host runs etcd, meshd B and HAProxy's fast `http-request return` as the origin. h2load
drives a gRPC-shaped unary call at 500 requests/s on one connection, alternately:

- explicit: to 127.0.0.1:15002 (the app's egress) with `:authority: svc.bench.local:9090`;
- intercepted: to `http://svc.bench.local:9090` as an unmodified app would: the name
  resolves through meshd's DNS responder, the connection is redirected by iptables.

The gated figure is meshd A's CPU per request (its CPU-time clock) over all intercepted runs
÷ over all explicit runs. Root is required (network namespaces).
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

import grpc
import yaml

from bench.dataplane import compare
from bench.dataplane.compare import HAPROXY_COMMON, cpu_seconds, free_port
from bench.mesh_compare import Bench

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.sidecar.pods import PYTHON, SIDECAR_GID, Pod, free_index, sweep_orphans  # noqa: E402

GATE = 1.10  # issue 13: the intercepted path costs at most 1.1x the explicit egress's CPU per request
RSS_GATE_MB = 60.0  # issue 13: the sidecar's resident memory at idle
LOAD = ["--rps", "500", "-c", "1", "-m", "32"]
MODES = ("explicit", "intercepted")
SERVICE = "svc.bench.local"


def _docs() -> list[tuple[str, dict]]:
    listener = [{"portMapping": {"port": 9090, "protocol": "grpc"}}]
    return [
        ("Mesh", {"meshName": "bench", "spec": {"egressFilter": {"type": "ALLOW_ALL"}}}),
        ("VirtualNode", {"meshName": "bench", "virtualNodeName": "web", "spec": {
            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": "web.bench.local"}},
            "backends": [{"virtualService": {"virtualServiceName": SERVICE}}]}}),
        ("VirtualNode", {"meshName": "bench", "virtualNodeName": "fast", "spec": {
            "listeners": listener, "serviceDiscovery": {"dns": {"hostname": "fast.bench.local"}}}}),
        ("VirtualRouter", {"meshName": "bench", "virtualRouterName": "r", "spec": {"listeners": listener}}),
        ("Route", {"meshName": "bench", "virtualRouterName": "r", "routeName": "all", "spec": {"grpcRoute": {
            "match": {"serviceName": "echo.Echo"},
            "action": {"weightedTargets": [{"virtualNode": "fast", "weight": 1}]}}}}),
        ("VirtualService", {"meshName": "bench", "virtualServiceName": SERVICE, "spec": {
            "provider": {"virtualRouter": {"virtualRouterName": "r"}}}}),
    ]


class Setup(Bench):
    """The processes (Bench's process handling) and the pod."""

    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.etcd = None
        sweep_orphans()
        self.pod = Pod("bench", free_index())

    def start(self) -> "Setup":
        from meshd.api.validate import parse_json
        from meshd.embedded_etcd import EmbeddedEtcd
        from meshd.security import ClusterKey
        from meshd.v1 import admin_pb2, admin_pb2_grpc

        t, pod = self.tmp, self.pod
        origin = free_port()
        (t / "origin.cfg").write_text(HAPROXY_COMMON + f"""
frontend origin
    bind 127.0.0.1:{origin} proto h2
    http-request return status 200 content-type application/grpc string "ok"
""")
        self._start(["haproxy", "-db", "-f", str(t / "origin.cfg")], origin, "origin")
        self.etcd = EmbeddedEtcd(t / "etcd", host=pod.host_ip, supervise=False).start()
        key = t / "cluster.key"
        ClusterKey.generate(key)
        admin_b = free_port()
        common = ["--etcd", self.etcd.url, "--cluster-key", str(key), "--insecure-local", "--metrics", "off",
                  "--log-level", "warning"]
        (t / "b.yaml").write_text(yaml.safe_dump({"apps": [{"mesh": "bench", "virtualNode": "fast", "port": origin}],
                                                  "ingress": f"{pod.host_ip}:0", "drainSeconds": 0.5}))
        self._start([PYTHON, "-m", "meshd.cli.meshd_main", "run", "--config", str(t / "b.yaml"), "--admin",
                     f"127.0.0.1:{admin_b}", "--state-dir", str(t / "b"), "--host-name", "bench-b", *common],
                    admin_b, "meshd-b", cwd=REPO)
        with grpc.insecure_channel(f"127.0.0.1:{admin_b}") as ch:
            stub = admin_pb2_grpc.MeshAdminStub(ch)
            for title, doc in _docs():
                getattr(stub, f"Create{title}")(parse_json(getattr(admin_pb2, f"Create{title}Request"), doc),
                                                timeout=10)
        env = {"APPMESH_IGNORE_GID": str(SIDECAR_GID), "APPMESH_ENVOY_EGRESS_PORT": "15001", "MESHD_DNS_PORT": "15053"}
        pod.run([PYTHON, "-m", "meshd.cli.meshd_main", "proxy-init"], env=env)
        (t / "a.yaml").write_text(yaml.safe_dump({
            "apps": [{"mesh": "bench", "virtualNode": "web", "port": 8080, "address": pod.ip,
                      "egress": "127.0.0.1:15002", "interceptEgress": 15001}],
            "ingress": f"{pod.ip}:15443", "dns": 15053, "drainSeconds": 0.5}))
        self.a = pod.popen([PYTHON, "-m", "meshd.cli.meshd_main", "run", "--config", str(t / "a.yaml"), "--admin",
                            "127.0.0.1:9902", "--state-dir", str(t / "a"), "--host-name", "bench-a", *common],
                           log=t / "meshd-a.log", gid=SIDECAR_GID)
        return self

    def h2load(self, mode: str, seconds: float, body: Path, load=LOAD) -> int:
        """Requests that succeeded in one run of `mode`."""
        url = (f"http://{SERVICE}:9090/echo.Echo/Say" if mode == "intercepted"
               else "http://127.0.0.1:15002/echo.Echo/Say")
        extra = [] if mode == "intercepted" else ["-H", f":authority: {SERVICE}:9090"]
        duration = [] if "-n" in load else ["-D", str(max(1, round(seconds)))]
        out = self.pod.run(["h2load", *duration, *load, "-d", str(body), "-H",
                            "content-type: application/grpc", "-H", "te: trailers", *extra, url],
                           timeout=seconds + 60, check=False).stdout
        m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
        return int(m.group(1)) if m else 0

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.a.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> None:
        self.pod.close()
        super().stop()


def measure(seconds: float = 3.0, runs: int = 6) -> dict:
    """{"cpu_us": {mode: [per run]}, "ratio": intercepted / explicit over all runs,
    "rss_idle_mb": the sidecar's RSS before any traffic and after a quiet second}."""
    tmp, body = compare.workdir("meshd-intercept-bench-")
    s = Setup(tmp)
    try:
        s.start()
        deadline = time.monotonic() + 60
        while s.h2load("intercepted", 1, body, ["-n", "20", "-c", "1"]) != 20 or \
                s.h2load("explicit", 1, body, ["-n", "20", "-c", "1"]) != 20:
            if time.monotonic() > deadline or s.a.poll() is not None:
                raise RuntimeError(f"the pod's meshd does not route: {(tmp / 'meshd-a.log').read_text()[-2000:]}")
            time.sleep(0.5)
        time.sleep(1.0)
        rss = s.rss_mb()
        cpu = {m: [] for m in MODES}
        total = {m: [0.0, 0] for m in MODES}
        for m in MODES:  # warm both paths' pools and caches
            s.h2load(m, 1, body)
        for i in range(runs):
            for m in (MODES if i % 2 == 0 else MODES[::-1]):  # alternate which goes first
                c0 = cpu_seconds(s.a.pid)
                n = s.h2load(m, seconds, body)
                used = cpu_seconds(s.a.pid) - c0
                cpu[m].append(used / max(n, 1) * 1e6)
                total[m][0] += used
                total[m][1] += n
        per = {m: total[m][0] / max(total[m][1], 1) for m in MODES}
        return {"cpu_us": cpu, "ratio": per["intercepted"] / per["explicit"],
                "requests": {m: total[m][1] for m in MODES}, "rss_idle_mb": rss}
    finally:
        s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=6)
    args = ap.parse_args()
    r = measure(args.seconds, args.runs)
    for m in MODES:
        print(f"# {m}: sidecar CPU µs/request per run: {', '.join(f'{x:.0f}' for x in r['cpu_us'][m])}; "
              f"{r['requests'][m]} requests")
    print(f"GATE intercepted_cpu_vs_explicit {r['ratio']:.3f} <= {GATE} {'PASS' if r['ratio'] <= GATE else 'FAIL'}")
    print(f"GATE sidecar_rss_idle_mb {r['rss_idle_mb']:.1f} <= {RSS_GATE_MB} "
          f"{'PASS' if r['rss_idle_mb'] <= RSS_GATE_MB else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
