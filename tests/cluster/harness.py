"""Drives a netns cluster from the test process: the cluster script, an admin client that
fails over between hosts with a bounded retry budget, and Watch collectors per host."""
from __future__ import annotations

import collections
import ipaddress
import json
import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from meshd.v1 import admin_pb2 as pb
from meshd.v1 import admin_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "netns" / "cluster.sh"
# Codes after which the outcome of a write is unknown, so a retry (with the same client
# token) is the only safe move. Everything else is an answer. CANCELLED is among them: a
# meshd stopping on SIGTERM has been seen to answer an in-flight write that way.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def free_octet(template: str, slots: int = 250) -> int:
    """The first k (from a start that depends on this process) for which the network
    `template.format(k)` overlaps no route in the root namespace yet."""
    out = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=True).stdout
    taken = []
    for line in out.splitlines():
        try:
            taken.append(ipaddress.ip_network(line.split()[0], strict=False))
        except ValueError:
            continue
    start = os.getpid() % 200
    for i in range(slots):
        k = (start + i) % slots
        if not any(ipaddress.ip_network(template.format(k)).overlaps(t) for t in taken):
            return k
    raise RuntimeError(f"no free network of the form {template}")


def free_subnet() -> str:
    """A /24 in 10.213.0.0/16 that no route in the root namespace touches yet."""
    return f"10.213.{free_octet('10.213.{}.0/24')}.0/24"


class NetnsCluster:
    """One cluster built by deploy/netns/cluster.sh, isolated by its own prefix, subnet and state."""

    def __init__(self, state: Path, *, prefix: str, subnet: str, lease_ttl: int, apps: Path | None = None):
        self.state = state
        self.lease_ttl = lease_ttl
        self.env = dict(os.environ, MESHD_NETNS_PREFIX=prefix, MESHD_NETNS_SUBNET=subnet,
                        MESHD_NETNS_STATE=str(state), MESHD_NETNS_LEASE_TTL=str(lease_ttl),
                        MESHD_PYTHON=os.environ.get("MESHD_PYTHON", _python()))
        if apps is not None:  # each meshd's --config: local apps, ingress on the host's address
            self.env["MESHD_NETNS_APPS"] = str(apps)
        self.hosts: dict[str, str] = {}  # host name -> admin address
        self._channels: dict[str, grpc.Channel] = {}

    def run(self, *args: str, timeout: float = 90, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"cluster.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    def up(self, n: int = 3) -> None:
        self.run("up", str(n))
        status = self.status()
        # The operator's credentials that `up` made: its API token on each host's TLS token listener.
        self.hosts = {h["host"]: h["meshd"]["token_admin"] for h in status["hosts"]}
        self._creds = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(Path(status["bundle"]).read_bytes()),
            grpc.access_token_call_credentials(Path(status["operator_token"]).read_text().strip()))

    def down(self) -> str:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
        return self.run("down", "--grace", "1", check=False).stdout

    def status(self) -> dict:
        return json.loads(self.run("status", "--json").stdout)

    def etcd_leader(self) -> str | None:
        for h in self.status()["hosts"]:
            if h["etcd"] and h["etcd"]["leader"]:
                return h["host"]
        return None

    def wait_etcd_healthy(self, timeout: float = 30.0) -> float:
        """Seconds until every member reports health (a quorum with a leader)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if all(h["etcd"]["healthy"] for h in self.status()["hosts"] if h["etcd"]):
                return time.monotonic() - t0
            time.sleep(0.1)
        raise AssertionError(f"etcd not healthy within {timeout}s: {self.status()}")

    def channel(self, host: str) -> grpc.Channel:
        if host not in self._channels:
            self._channels[host] = grpc.secure_channel(self.hosts[host], self._creds)
        return self._channels[host]

    def stub(self, host: str) -> admin_pb2_grpc.MeshAdminStub:
        return admin_pb2_grpc.MeshAdminStub(self.channel(host))

    def etcd_member_used_by(self, host: str) -> set[str]:
        """The hosts whose etcd member `host`'s meshd holds connections to (python-etcd3 picks
        one endpoint at random and fails over from it, so this differs between runs)."""
        pid = (self.state / host / "meshd.pid").read_text().strip()
        ns = self.status()["hosts"][int(host[1:]) - 1]["namespace"]
        out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-tnpH", "state", "established"],
                             capture_output=True, text=True, timeout=10).stdout
        by_ip = {h["ip"]: h["host"] for h in self.status()["hosts"]}
        used = set()
        for line in out.splitlines():
            if f"pid={pid}," not in line:
                continue
            peer = line.split()[3].rsplit(":", 1)
            if peer[1] == "2379":
                used.add(by_ip.get(peer[0].replace("[::ffff:", "").rstrip("]"), peer[0]))
        return used

    def log_tails(self, lines: int = 30) -> str:
        out = []
        for log in sorted(self.state.glob("h*/*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.relative_to(self.state)} (last {len(text)} lines)\n" + "\n".join(text))
        return "\n".join(out)


def _python() -> str:
    import sys
    return sys.executable


@dataclass
class CallStats:
    """Every attempt that failed, by host and code, and the calls that ran out of budget."""

    attempts: int = 0
    failed_attempts: collections.Counter = field(default_factory=collections.Counter)
    gave_up: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"attempts": self.attempts,
                "failed_attempts": {f"{h}:{c}": n for (h, c), n in sorted(self.failed_attempts.items())},
                "gave_up": len(self.gave_up)}


class MeshClient:
    """Calls the admin API through the given hosts in turn, retrying a call whose outcome is
    unknown (UNAVAILABLE, DEADLINE_EXCEEDED) on the next host, with the same request, so a
    write with a client token is applied at most once. The budget is per call:
    at most `attempts` tries of at most `deadline` seconds each, started within `budget`
    seconds of the first."""

    def __init__(self, cluster: NetnsCluster, hosts: list[str], *, deadline: float = 5.0,
                 attempts: int = 40, pause: float = 0.25, budget: float = 10.0):
        self.cluster = cluster
        self.hosts = list(hosts)
        self.deadline = deadline
        self.attempts = attempts
        self.pause = pause
        self.budget = budget
        self.stats = CallStats()
        self._next = 0
        self._lock = threading.Lock()

    def call(self, method: str, request, hosts: list[str] | None = None):
        hosts = hosts or self.hosts
        last = None
        t0 = time.monotonic()
        for i in range(self.attempts):
            if i and time.monotonic() - t0 > self.budget:
                break
            with self._lock:
                host = hosts[(self._next + i) % len(hosts)]
                self.stats.attempts += 1
            try:
                resp = getattr(self.cluster.stub(host), method)(request, timeout=self.deadline)
                with self._lock:
                    self._next += 1  # spread calls over the hosts
                return host, resp
            except grpc.RpcError as err:
                with self._lock:
                    self.stats.failed_attempts[(host, err.code().name)] += 1
                if err.code() not in RETRYABLE:
                    raise
                last = err
                time.sleep(self.pause)
        self.stats.gave_up.append(method)
        raise last


def token() -> str:
    return uuid.uuid4().hex


class WatchCollector:
    """A Watch stream on one host, from a snapshot: the current state by path, and when each
    path's latest event arrived (monotonic clock)."""

    def __init__(self, cluster: NetnsCluster, host: str, mesh: str = ""):
        self.host = host
        self.state: dict[str, pb.ResourceEvent] = {}
        self.arrived: dict[str, float] = {}
        self.deleted: set[str] = set()  # every path a DELETE event arrived for
        self.resets = 0
        self.snapshot_done = threading.Event()
        self.error: Exception | None = None
        self._cond = threading.Condition()
        self._call = cluster.stub(host).Watch(pb.WatchRequest(mesh_name=mesh, resume_revision=0))
        self._thread = threading.Thread(target=self._run, name=f"watch-{host}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for resp in self._call:
                now = time.monotonic()
                with self._cond:
                    if resp.reset:
                        self.resets += 1
                        self.state.clear()
                    for ev in resp.events:
                        if ev.type == pb.ResourceEvent.DELETE:
                            self.state.pop(ev.path, None)
                            self.deleted.add(ev.path)
                        else:
                            self.state[ev.path] = ev
                        self.arrived[ev.path] = now
                    if resp.snapshot_done:
                        self.snapshot_done.set()
                    self._cond.notify_all()
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                self.error = err
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float) -> bool:
        """Wait until predicate(state) holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.state):
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None or not self._thread.is_alive():
                    return predicate(self.state)
                self._cond.wait(left)
            return True

    def version(self, path: str) -> int | None:
        with self._cond:
            ev = self.state.get(path)
        if ev is None:
            return None
        kind = ev.resource.WhichOneof("kind")
        return getattr(ev.resource, kind).metadata.version if kind != "instance" else 0

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(5)
