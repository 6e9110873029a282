"""Propagation at size: the seeded estate (bench/estate.py) in one etcd, several `meshd run`
processes watching it, and probes that time a change from its write's acknowledgement to
the moment each meshd's traffic follows it (issue 17).

The flip: in the estate's largest mesh, route `flip` of router `flip-router` sends all of
service `flip.<mesh>.local` to node `blue` or all to `green`, each an origin answering with
its name. Every meshd serves a caller node `prober` whose egress a probe thread calls every
PROBE_INTERVAL; a flip has reached a meshd when its answers change name.

The canary: node `canary` has no instance, so calls to `canary.<mesh>.local` fail; one
registered instance (the canary origin) makes them succeed. Meshd folds instance changes in
watch order, so a canary registered behind a stream of other registrations reaches a
router only after every registration before it did: its lag, probed by traffic, bounds
theirs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.estate import KIND_ORDER, Estate, generate
from mesh_harness import SAY, Origin
from meshd.api import kinds as K
from meshd.api.resources import Resources
from meshd.api.validate import parse_json
from meshd.app import instance_on_lease
from meshd.embedded_etcd import free_port
from meshd.lease import HostLease
from meshd.security import ClusterKey
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import admin_pb2_grpc
from registry import Store

# How often each probe calls through its meshd: the resolution of every propagation figure.
PROBE_INTERVAL = 0.005
# The data-plane bound of issue 17 (and issue 12): no loop stall longer than this.
LAG_BOUND = 0.005
# Writers applying the estate at once: etcd commits in parallel, and meshd's Python does not.
APPLY_WORKERS = 8
GRPC_PORT = 9090


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of `values`: a figure that was measured."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# -- the estate ----------------------------------------------------------------------

def flip_documents(mesh: str) -> list[tuple[str, dict]]:
    """What the probes need in `mesh`, beside the estate: the flip and canary services,
    their nodes, and the caller node `prober` whose backends they are."""
    def node(name: str, backends=()) -> tuple[str, dict]:
        return ("VirtualNode", {"meshName": mesh, "virtualNodeName": name, "spec": {
            "listeners": [{"portMapping": {"port": GRPC_PORT, "protocol": "grpc"}}],
            "serviceDiscovery": {"dns": {"hostname": f"{name}.{mesh}.local"}},
            "backends": [{"virtualService": {"virtualServiceName": f"{b}.{mesh}.local"}} for b in backends]}})
    docs = [node("blue"), node("green"), node("canary")]
    for svc, target in (("flip", {"blue": 100, "green": 0}), ("canary", {"canary": 1})):
        docs.append(("VirtualRouter", {"meshName": mesh, "virtualRouterName": f"{svc}-router", "spec": {
            "listeners": [{"portMapping": {"port": GRPC_PORT, "protocol": "grpc"}}]}}))
        docs.append(("Route", {"meshName": mesh, "virtualRouterName": f"{svc}-router", "routeName": svc,
                               "spec": grpc_route(target)}))
        docs.append(("VirtualService", {"meshName": mesh, "virtualServiceName": f"{svc}.{mesh}.local", "spec": {
            "provider": {"virtualRouter": {"virtualRouterName": f"{svc}-router"}}}}))
    docs.append(node("prober", backends=("flip", "canary")))
    return docs


def grpc_route(weights: dict[str, int]) -> dict:
    return {"grpcRoute": {"match": {"serviceName": "echo.Echo"}, "action": {
        "weightedTargets": [{"virtualNode": n, "weight": w} for n, w in weights.items()]}}}


def apply_estate(store: Store, lease: HostLease, estate: Estate, extra: list[tuple[str, dict]]) -> float:
    """Create every document of `estate` and `extra`, one kind after another (what a
    document names exists before it), then register its instances under `lease`; returns
    the seconds it took."""
    resources = Resources(store, host="estate-writer", host_lease=lease)
    docs = [*estate.documents, *extra]
    t0 = time.monotonic()
    with ThreadPoolExecutor(APPLY_WORKERS) as pool:
        for title in dict.fromkeys(kind for kind, _ in sorted(docs, key=lambda d: KIND_ORDER.index(d[0]))):
            kind = K.BY_TITLE[title]
            request = getattr(pb, f"Create{title}Request")
            list(pool.map(lambda doc: resources.create(kind, parse_json(request, doc)),
                          [doc for t, doc in docs if t == title]))
        list(pool.map(lambda i: resources.register_instance(pb.RegisterInstanceRequest(
            mesh_name=i.mesh, virtual_node_name=i.node, instance_id=i.instance_id, address=i.address,
            port=i.port, health="HEALTHY")), estate.instances))
    return time.monotonic() - t0


# -- meshd processes -------------------------------------------------------------------

class MeshdProcess:
    """One `meshd run` process serving the caller node `prober` of `mesh` on its egress;
    `scoped`: it watches that mesh alone and compiles only what `prober` reaches."""

    def __init__(self, etcd_url: str, prefix: str, state: Path, name: str, mesh: str, key: Path,
                 scoped: bool = False):
        self.name = name
        self.admin, self.metrics, self.egress = free_port(), free_port(), free_port()
        state.mkdir(parents=True, exist_ok=True)
        config = state / "meshd.yaml"
        config.write_text("ingress: 127.0.0.1:0\napps:\n"
                          f"  - {{mesh: {mesh}, virtualNode: prober, port: {free_port()}, "
                          f"egress: 127.0.0.1:{self.egress}}}\n")
        self.log_path = state / "meshd.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "meshd.cli.meshd_main", "run", "--insecure-local", "--admin",
                 f"127.0.0.1:{self.admin}", "--etcd", etcd_url, "--etcd-prefix", prefix, "--metrics",
                 f"127.0.0.1:{self.metrics}", "--state-dir", str(state / "state"), "--cluster-key", str(key),
                 "--host-name", name, "--config", str(config), "--log-level", "warning",
                 *(["--scoped"] if scoped else [])],
                stdout=subprocess.DEVNULL, stderr=log)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.egress}", options=[("grpc.enable_retries", 0)])

    def caller(self, service: str):
        """A unary call to /echo.Echo/Say of `service` through this meshd's egress."""
        ch = grpc.insecure_channel(f"127.0.0.1:{self.egress}", options=[
            ("grpc.default_authority", f"{service}:{GRPC_PORT}"), ("grpc.enable_retries", 0)])
        return ch, ch.unary_unary(SAY)

    def scrape(self) -> dict:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=10).read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Probe:
    """A thread calling one service through one meshd every PROBE_INTERVAL, keeping the
    latest answer ("<origin name>" or "error:<code>") and when it first appeared."""

    def __init__(self, meshd: MeshdProcess, service: str):
        self.channel, self._say = meshd.caller(service)
        self.answer, self.since, self.calls = "", 0.0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"probe-{meshd.name}-{service}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self._say(b"probe", timeout=2).split(b":", 1)[0].decode()
            except grpc.RpcError as err:
                answer = f"error:{err.code().name}"
            self.calls += 1
            if answer != self.answer:
                self.answer, self.since = answer, time.monotonic()
            self._stop.wait(PROBE_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.channel.close()


def wait_all(probes: list[Probe], wanted, timeout: float) -> float | None:
    """The monotonic time the last of `probes` began answering `wanted(answer)`, or None if
    one did not within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(wanted(p.answer) for p in probes):
            return max(p.since for p in probes)
        time.sleep(PROBE_INTERVAL / 2)
    return None


def loop_lag(before: dict, after: dict, metric: str = "meshd_dataplane_loop_lag_seconds",
             labels: tuple = ()) -> tuple[int, float]:
    """From two scrapes of one meshd: the loop-lag observations over LAG_BOUND between them,
    and the upper bound of the highest histogram bucket any of them fell in (inf: past the
    last bucket). `metric` may be meshd_dataplane_loop_blocked_seconds: the lag less the
    loop thread's run-queue wait; or another histogram of seconds, of the series `labels`."""
    def bucket(fig: dict, le: str) -> float:
        return fig[(f"{metric}_bucket", tuple(sorted(labels + (("le", le),))))]
    count = (f"{metric}_count", labels)
    total = after[count] - before[count]
    over = total - (bucket(after, str(LAG_BOUND)) - bucket(before, str(LAG_BOUND)))
    bounds = sorted(float(dict(ls)["le"]) for name, ls in after
                    if name == f"{metric}_bucket" and set(labels) <= set(ls))
    worst = 0.0
    for le in bounds:  # the first bucket holding every observation of the window bounds the worst
        if bucket(after, _le(le)) - bucket(before, _le(le)) >= total:
            worst = le
            break
    return int(over), worst


def gc_pauses(before: dict, after: dict) -> tuple[dict[str, int], float]:
    """Like loop_lag, for the meshd's garbage collections of generations 1 and 2: those that
    held the process longer than LAG_BOUND, by generation, and the bound of the longest."""
    counts = {g: loop_lag(before, after, "meshd_gc_pause_seconds", (("generation", g),)) for g in ("1", "2")}
    return {f"gen{g}": n for g, (n, _) in counts.items()}, max(w for _, w in counts.values())


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else str(bound)


# -- the fleet -------------------------------------------------------------------------

@dataclass
class Figures:
    """What one run measured; seconds unless named otherwise."""

    scale: float
    meshds: int
    scoped: bool
    routes: int  # in the largest mesh, where the flip is
    apply_seconds: float = 0.0
    start_seconds: float = 0.0  # the last meshd's start to its first routed probe
    flips: list[float] = field(default_factory=list)
    churn_registrations: int = 0
    churn_seconds: float = 0.0
    churn_rate: float = 0.0
    canaries: list[float] = field(default_factory=list)
    rebuilds_during_churn: int = 0
    # phase -> meshd -> loop stalls over LAG_BOUND, and the bucket bound of the worst stall
    stalls: dict[str, dict[str, int]] = field(default_factory=dict)
    worst_lag: dict[str, dict[str, float]] = field(default_factory=dict)
    # the same for the lag less the loop thread's run-queue wait (no CPU free on the host)
    blocked: dict[str, dict[str, int]] = field(default_factory=dict)
    worst_blocked: dict[str, dict[str, float]] = field(default_factory=dict)
    # the meshds' garbage collections that held them longer than LAG_BOUND, and the longest
    gc_pauses: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # phase -> meshd -> gen -> n
    worst_gc: dict[str, dict[str, float]] = field(default_factory=dict)
    probe_calls: int = 0
    meshd_rss_mb: dict[str, float] = field(default_factory=dict)  # meshd -> RSS at the end of the run

    def summary(self) -> str:
        def pct(xs):
            return f"p50 {percentile(xs, 50) * 1000:.0f} ms, p99 {percentile(xs, 99) * 1000:.0f} ms, " \
                   f"max {max(xs) * 1000:.0f} ms" if xs else "none"
        return (f"scale {self.scale}: {self.meshds} {'scoped ' if self.scoped else ''}meshds, "
                f"{self.routes} routes in the largest mesh; "
                f"estate applied in {self.apply_seconds:.1f} s; route flips ({len(self.flips)}): {pct(self.flips)}; "
                f"churn {self.churn_registrations} registrations in {self.churn_seconds:.1f} s "
                f"({self.churn_rate:.0f}/s), canaries ({len(self.canaries)}): {pct(self.canaries)}, "
                f"table rebuilds during churn {self.rebuilds_during_churn}; loop stalls > "
                f"{LAG_BOUND * 1000:.0f} ms {self.stalls}, worst within {self.worst_lag} s; "
                f"of them blocked by meshd (less run-queue wait) {self.blocked}, worst within "
                f"{self.worst_blocked} s; GC pauses > {LAG_BOUND * 1000:.0f} ms {self.gc_pauses}, worst within "
                f"{self.worst_gc} s; "
                f"probe calls {self.probe_calls}; meshds routing {self.start_seconds:.1f} s after their start, "
                f"RSS at the end {self.meshd_rss_mb} MB")


class Fleet:
    """The estate in etcd under `prefix`, its origins, and `n` meshds watching it."""

    def __init__(self, etcd_url: str, prefix: str, tmp: Path, *, scale: float, n: int = 3, scoped: bool = False):
        self.estate = generate(scale=scale)
        self.mesh = self.estate.largest
        self.figures = Figures(scale=scale, meshds=n, scoped=scoped, routes=self.estate.counts(self.mesh)["Route"])
        self.store = Store([etcd_url], prefix=prefix, timeout=10.0)
        self.lease = HostLease(self.store, ttl=30, rewrite=instance_on_lease)
        self.lease.start()
        self.origins = {name: Origin(name) for name in ("blue", "green", "canary")}
        self.meshds: list[MeshdProcess] = []
        self.probes: list[Probe] = []
        self._channels: list[grpc.Channel] = []
        try:
            self.figures.apply_seconds = apply_estate(self.store, self.lease, self.estate, flip_documents(self.mesh))
            self.resources = Resources(self.store, host="estate-writer", host_lease=self.lease)
            for name in ("blue", "green"):
                self.resources.register_instance(pb.RegisterInstanceRequest(
                    mesh_name=self.mesh, virtual_node_name=name, instance_id=name, address="127.0.0.1",
                    port=self.origins[name].port, health="HEALTHY"))
            key = tmp / "cluster.key"
            ClusterKey.generate(key)
            t0 = time.monotonic()
            self.meshds = [MeshdProcess(etcd_url, prefix, tmp / f"meshd-{i}", f"scale-{i}", self.mesh, key, scoped)
                           for i in range(n)]
            self._admin = grpc.insecure_channel(f"127.0.0.1:{self.meshds[0].admin}")
            grpc.channel_ready_future(self._admin).result(timeout=120)
            self.admin = admin_pb2_grpc.MeshAdminStub(self._admin)
            self.probes = [Probe(m, f"flip.{self.mesh}.local") for m in self.meshds]
            if wait_all(self.probes, lambda a: a == "blue", timeout=180) is None:
                raise AssertionError(f"meshds never routed flip to blue: {[p.answer for p in self.probes]}\n"
                                     + "\n".join(m.log_tail() for m in self.meshds))
            self.figures.start_seconds = time.monotonic() - t0
        except BaseException:
            self.close()
            raise

    def flips(self, count: int, timeout: float = 10.0) -> list[float]:
        """`count` route changes, one at a time: each moves all of flip's weight to the other
        node; its figure is from UpdateRoute's answer to the last meshd's answers changing."""
        current = "blue"
        for _ in range(count):
            new = "green" if current == "blue" else "blue"
            req = parse_json(pb.UpdateRouteRequest, {
                "meshName": self.mesh, "virtualRouterName": "flip-router", "routeName": "flip",
                "spec": grpc_route({current: 0, new: 100})})
            self.admin.UpdateRoute(req, timeout=30)
            acked = time.monotonic()
            seen = wait_all(self.probes, lambda a, new=new: a == new, timeout)
            assert seen is not None, f"flip to {new} not seen within {timeout} s: {[p.answer for p in self.probes]}"
            # A meshd may apply the change before the admin API's answer is back here.
            self.figures.flips.append(max(0.0, seen - acked))
            current = new
        return self.figures.flips

    def churn(self, rate: float, seconds: float, canary_every: float = 0.5, timeout: float = 10.0) -> None:
        """Register instances at `rate` per second for `seconds` across the largest mesh's
        nodes (unreachable addresses: no traffic goes to them), with a canary registered every
        `canary_every` s and timed by traffic through every meshd until its calls succeed,
        then deregistered until they fail again."""
        nodes = sorted({i.node for i in self.estate.instances if i.mesh == self.mesh})
        probes = [Probe(m, f"canary.{self.mesh}.local") for m in self.meshds]
        self.probes.extend(probes)
        generation = ("meshd_config_generation", (("mesh", self.mesh),))
        before = [m.scrape()[generation] for m in self.meshds]
        stop = threading.Event()
        sent = [0]
        # Registrations come from many hosts in a fleet: here several writers straight to
        # etcd, so no meshd under measurement spends its CPU on the admin side of them.
        pool = ThreadPoolExecutor(APPLY_WORKERS)

        def register() -> None:
            pending, t0 = [], time.monotonic()
            while not stop.is_set() and time.monotonic() < t0 + seconds:
                n = sent[0]
                pending.append(pool.submit(self.resources.register_instance, pb.RegisterInstanceRequest(
                    mesh_name=self.mesh, virtual_node_name=nodes[n % len(nodes)], instance_id=f"churn-{n}",
                    address=f"10.251.{n // 250 % 250}.{n % 250 + 1}", port=8080, health="HEALTHY")))
                sent[0] += 1
                time.sleep(max(0.0, t0 + sent[0] / rate - time.monotonic()))
            for f in pending:
                f.result()
            self.figures.churn_seconds = time.monotonic() - t0
        writer = threading.Thread(target=register, name="churn")
        t_end = time.monotonic() + seconds
        writer.start()
        try:
            k = 0
            while time.monotonic() < t_end:
                k += 1
                ident = dict(mesh_name=self.mesh, virtual_node_name="canary", instance_id=f"canary-{k}")
                self.resources.register_instance(pb.RegisterInstanceRequest(
                    **ident, address="127.0.0.1", port=self.origins["canary"].port, health="HEALTHY"))
                acked = time.monotonic()
                seen = wait_all(probes, lambda a: a == "canary", timeout)
                assert seen is not None, f"canary {k} not routed within {timeout} s: {[p.answer for p in probes]}"
                self.figures.canaries.append(max(0.0, seen - acked))
                self.resources.deregister_instance(pb.DeregisterInstanceRequest(**ident))
                assert wait_all(probes, lambda a: a.startswith("error:"), timeout) is not None, \
                    f"canary {k} still routed {timeout} s after its deregistration"
                time.sleep(max(0.0, canary_every - (time.monotonic() - acked)))
        finally:
            stop.set()
            writer.join(seconds + 60)
            pool.shutdown()
        self.figures.churn_registrations = sent[0]
        self.figures.churn_rate = sent[0] / self.figures.churn_seconds if self.figures.churn_seconds else 0.0
        after = [m.scrape()[generation] for m in self.meshds]
        self.figures.rebuilds_during_churn = int(sum(a - b for a, b in zip(after, before)))

    def measure_loop_lag(self, phase: str, work) -> None:
        """Run `work()` and record each meshd's loop stalls over LAG_BOUND meanwhile."""
        before = [m.scrape() for m in self.meshds]
        work()
        f = self.figures
        stalls, worst = f.stalls.setdefault(phase, {}), f.worst_lag.setdefault(phase, {})
        blocked, worst_blocked = f.blocked.setdefault(phase, {}), f.worst_blocked.setdefault(phase, {})
        pauses, worst_gc = f.gc_pauses.setdefault(phase, {}), f.worst_gc.setdefault(phase, {})
        for m, b in zip(self.meshds, before):
            after = m.scrape()
            stalls[m.name], worst[m.name] = loop_lag(b, after)
            blocked[m.name], worst_blocked[m.name] = loop_lag(b, after, "meshd_dataplane_loop_blocked_seconds")
            pauses[m.name], worst_gc[m.name] = gc_pauses(b, after)

    def close(self) -> None:
        for p in self.probes:
            self.figures.probe_calls += p.calls
            p.stop()
        if hasattr(self, "_admin"):
            self._admin.close()
        for m in self.meshds:
            if m.proc.poll() is None:
                self.figures.meshd_rss_mb[m.name] = round(m.rss_mb(), 1)
            m.stop()
        for o in self.origins.values():
            o.stop()
        self.lease.stop(revoke=True)
        self.store.close()


def run(etcd_url: str, prefix: str, tmp: Path, *, scale: float, flips: int, churn_seconds: float,
        churn_rate: float = 100.0, scoped: bool = False, meshds: int = 3) -> Figures:
    """The whole propagation measurement at `scale`: flips, then instance churn, each under
    the probes' traffic with every meshd's loop lag recorded."""
    fleet = Fleet(etcd_url, prefix, tmp, n=meshds, scale=scale, scoped=scoped)
    try:
        fleet.measure_loop_lag("flips", lambda: fleet.flips(flips))
        fleet.measure_loop_lag("churn", lambda: fleet.churn(churn_rate, churn_seconds))
    finally:
        fleet.close()
    return fleet.figures


def scale_from_env(default: float) -> float:
    """MESHD_SCALE overrides a benchmark's size (1.0: issue 17's full estate)."""
    return float(os.environ.get("MESHD_SCALE", default))


__all__ = ["Figures", "Fleet", "LAG_BOUND", "MeshdProcess", "Probe", "percentile", "run", "scale_from_env"]
