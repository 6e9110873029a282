"""Data-plane traffic for the cluster drills: the sample services and mesh of
deploy/quickstart/cluster on a netns cluster, and bounded load generators
(deploy/netns/load.py) running inside the hosts' namespaces, read back when they stop."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from .harness import REPO, NetnsCluster

SAMPLE = REPO / "deploy" / "quickstart" / "cluster"
APPS_DIR = SAMPLE / "hosts"  # MESHD_NETNS_APPS: h1 runs web only, the others web, api-v1, api-v2
SERVICE_HOSTS = ("h2", "h3")
EGRESS = "127.0.0.1:15001"
API = "api.shop.local:9090"


@dataclass
class LoadResult:
    """What one load generator saw: per-second buckets (by send time) and its totals."""

    host: str
    buckets: list[dict]
    summary: dict
    rps: float

    @property
    def failed(self) -> int:
        return sum(self.summary["failed"].values())

    def answered_by(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        """Answers per instance from the buckets that started in [since, until)."""
        out: dict[str, int] = {}
        for b in self.buckets:
            if since <= b["t"] < until:
                for who, n in b["by"].items():
                    out[who] = out.get(who, 0) + n
        return out

    def brief(self) -> str:
        s = self.summary
        return (f"{s['sent']} calls at {s['rps']} rps, {self.failed} failed {s['failed'] or ''}, "
                f"{s['skipped']} not sent, p50 {s['latency_ms']['p50']} ms, p99 {s['latency_ms']['p99']} ms, "
                f"max {s['latency_ms']['max']} ms").replace(" , ", ", ")

    def check(self, *, min_share: float = 0.9) -> None:
        """No failed and no unsent call, and at least min_share of the rate was sent."""
        s = self.summary
        assert self.failed == 0, f"{self.host}: {self.failed} calls failed: {s['failed']}; first: {s['first_failures'][:5]}"
        assert s["skipped"] == 0, f"{self.host}: {s['skipped']} calls not sent (too many in flight)"
        assert s["sent"] >= min_share * self.rps * s["seconds"], f"{self.host}: only {s['sent']} calls sent"


@dataclass
class Load:
    """A running load generator: deploy/netns/load.py in a host's namespace."""

    cluster: NetnsCluster
    host: str
    name: str
    pid: int
    rps: float
    seconds: float
    started: float = field(default_factory=time.monotonic)

    def _ours(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                return b"load.py" in f.read()
        except OSError:
            return False

    def stop(self, timeout: float = 30.0, *, signal_it: bool = True) -> LoadResult:
        """SIGTERM (it stops sending, lets calls in flight end), wait, parse its output.
        With signal_it=False, wait for it to end by itself (its --seconds)."""
        if signal_it and self._ours():
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self._ours() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not self._ours(), f"load generator on {self.host} did not stop within {timeout}s"
        lines = (self.cluster.state / self.host / f"{self.name}.log").read_text().splitlines()
        docs = [json.loads(line) for line in lines if line.startswith("{")]
        summary = next((d["summary"] for d in docs if "summary" in d), None)
        assert summary is not None, f"load generator on {self.host} printed no summary:\n" + "\n".join(lines[-20:])
        return LoadResult(self.host, [d for d in docs if "sec" in d], summary, self.rps)


class Traffic:
    """The sample services (deploy/quickstart/demo.py) on the service hosts, the sample mesh
    applied with meshctl through h1, and load generators on demand."""

    def __init__(self, cluster: NetnsCluster):
        self.cluster = cluster
        self.python = cluster.env["MESHD_PYTHON"]
        self._n = 0

    def start(self) -> "Traffic":
        for h in SERVICE_HOSTS:
            self.cluster.run("bg", h, "services", "--", self.python, str(REPO / "deploy" / "quickstart" / "demo.py"),
                             "serve", f"9101={h}/api-v1", f"9102={h}/api-v2")
        self.meshctl("apply", "-f", str(SAMPLE / "mesh"))
        self.wait_routable("h1", "h3")
        return self

    def meshctl(self, *args: str, context: str = "h1") -> str:
        status = self.cluster.status()
        env = dict(self.cluster.env, MESHCTL_CONFIG=status["meshctl_config"], PYTHONPATH=str(REPO))
        proc = subprocess.run([self.python, "-m", "meshd.cli.meshctl", "--context", context, *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"meshctl {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    def wait_routable(self, *hosts: str, timeout: float = 30.0) -> None:
        """Until a short run of calls through each host's egress (at once) all succeed, answered
        from both service hosts."""
        deadline = time.monotonic() + timeout
        left = list(hosts)
        while left:
            runs = [self.load(h, rps=50, seconds=1.0, deadline=3.0) for h in left]
            results = [run.stop(signal_it=False) for run in runs]
            left = [r.host for r in results if r.failed or {
                h for h in SERVICE_HOSTS if any(w.startswith(h) for w in r.summary["by"])} != set(SERVICE_HOSTS)]
            assert time.monotonic() < deadline or not left, \
                f"no traffic through {left}'s egress within {timeout}s: " + "; ".join(r.brief() for r in results)
            if left:
                time.sleep(0.5)

    def load(self, host: str, *, rps: float = 200.0, seconds: float = 60.0, authority: str = API,
             deadline: float = 10.0) -> Load:
        """Start a load generator; it stops by itself after `seconds` (a bound), or on stop()."""
        self._n += 1
        name = f"load-{self._n}"
        out = self.cluster.run("bg", host, name, "--", self.python, str(REPO / "deploy" / "netns" / "load.py"),
                               "--egress", EGRESS, "--authority", authority, "--rps", str(rps),
                               "--seconds", str(seconds), "--deadline", str(deadline),
                               "--max-calls", str(int(rps * seconds) + 1), "--max-inflight", "5000").stdout
        return Load(self.cluster, host, name, int(out.split()[-1]), rps, seconds)
