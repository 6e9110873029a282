"""Builders for the rollout tests: two in-process meshds (host A calls, host B serves the
stable and canary origins), rollout controller meshds as processes of their own, steady
traffic through the egress, and the rollout's status as it moves."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from mesh_harness import SAY, Origin, shop_config
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.app import Meshd, MeshdConfig
from meshd.embedded_etcd import free_port
from meshd.proxy import LocalApp, RuntimeConfig
from meshd.security import ClusterKey
from meshd.v1 import admin_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
STABLE, CANARY = "api-v1", "api-v2"


class SlowOrigin(Origin):
    """An Origin that stalls every `slow_every`-th call by `slow_by` seconds (0: none)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.slow_every = 0
        self.slow_by = 0.0
        self._n = 0

    def _say(self, request: bytes, context) -> bytes:
        with self.lock:
            self._n += 1
            slow = self.slow_every and self._n % self.slow_every == 0
        if slow:
            time.sleep(self.slow_by)
        return super()._say(request, context)


def _meshd(etcd, prefix, tmp_path, name, apps, key, controller: bool) -> Meshd:
    cfg = MeshdConfig(admin=f"127.0.0.1:{free_port()}", etcd=[etcd.url], etcd_prefix=prefix,
                      state_dir=str(tmp_path / name), host_name=name, cluster_key=str(key), lease_ttl=5,
                      rollout_controller=controller, insecure_local=True,
                      runtime=RuntimeConfig(apps=apps, ingress="127.0.0.1:0", drain_seconds=1.0))
    return Meshd(cfg).start()


class RolloutMesh:
    """web on host A calls api.shop.local, routed by api-router's route `api` to the stable
    (api-v1) and canary (api-v2) origins on host B; 100% stable to begin with."""

    def __init__(self, etcd, prefix, tmp_path, canary: Origin, *, controllers: bool = True):
        self.etcd, self.prefix, self.tmp_path = etcd, prefix, tmp_path
        self.key = tmp_path / "cluster.key"
        ClusterKey.generate(self.key)
        self.origins = {STABLE: Origin(STABLE), CANARY: canary}
        web = LocalApp(mesh="shop", virtual_node="web", port=free_port(), egress="127.0.0.1:0")
        self.a = _meshd(etcd, prefix, tmp_path, "host-a", [web], self.key, controllers)
        self.b = _meshd(etcd, prefix, tmp_path, "host-b",
                        [LocalApp(mesh="shop", virtual_node=n, port=o.port, instance_id=n)
                         for n, o in self.origins.items()], self.key, controllers)
        shop_config(self.a.resources, K, pb, targets={STABLE: 100, CANARY: 0})
        self.resources = self.a.resources
        self.channel = grpc.insecure_channel(self.a.runtime.addresses["egress:web"],
                                             options=[("grpc.default_authority", "api.shop.local:9090"),
                                                      ("grpc.enable_retries", 0)])
        self.call = self.channel.unary_unary(SAY)
        self.controllers: dict[str, subprocess.Popen] = {}

    def wait_routable(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call(b"ping", timeout=5)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def start_controller(self, name: str) -> subprocess.Popen:
        """A `meshd run` process with no data plane, standing for rollout controller."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshd.cli.meshd_main", "run", "--insecure-local",
             "--admin", f"127.0.0.1:{free_port()}", "--etcd", self.etcd.url, "--etcd-prefix", self.prefix,
             "--state-dir", str(self.tmp_path / name), "--host-name", name, "--cluster-key", str(self.key),
             "--lease-ttl", "2", "--metrics", "off", "--log-level", "warning"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(self.tmp_path / f"{name}.log", "wb"),
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.controllers[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.controllers[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def create_rollout(self, steps: list[dict], analysis: dict, name: str = "api"):
        return self.resources.create(K.ROLLOUT, parse_json(pb.CreateRolloutRequest, {
            "meshName": "shop", "rolloutName": name, "spec": {
                "route": {"virtualRouterName": "api-router", "routeName": "api"},
                "stable": {"virtualNode": STABLE}, "canary": {"virtualNode": CANARY},
                "steps": steps, "analysis": analysis}})).rollout

    def rollout(self, name: str = "api"):
        return self.resources.describe(K.ROLLOUT, pb.DescribeRolloutRequest(mesh_name="shop",
                                                                            rollout_name=name)).rollout

    def route(self):
        return self.resources.describe(K.ROUTE, pb.DescribeRouteRequest(
            mesh_name="shop", virtual_router_name="api-router", route_name="api")).route

    def weights(self) -> dict[str, int]:
        return {t.virtual_node: t.weight for t in self.route().spec.grpc_route.action.weighted_targets}

    def close(self) -> None:
        for name, proc in self.controllers.items():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.channel.close()
        self.a.stop()
        self.b.stop()
        for o in self.origins.values():
            o.stop()


@dataclass
class Call:
    at: float         # monotonic start time
    who: str          # the origin that answered, or "" on failure
    code: str = ""    # the gRPC status name of a failure


@dataclass
class Traffic:
    """Calls through the mesh from `workers` threads, each at most `rate / workers` per
    second, until stopped or `max_calls` or `max_seconds` is reached."""

    call: object
    rate: float = 150.0
    workers: int = 6
    max_calls: int = 40_000
    max_seconds: float = 90.0
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.workers)]
        self.started = time.monotonic()
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        gap = self.workers / self.rate
        nxt = time.monotonic()
        while not self._stop.is_set() and len(self.calls) < self.max_calls \
                and time.monotonic() - self.started < self.max_seconds:
            at = time.monotonic()
            try:
                who = self.call(b"x", timeout=5).split(b":", 1)[0].decode()
                c = Call(at, who)
            except grpc.RpcError as err:
                c = Call(at, "", err.code().name)
            with self._lock:
                self.calls.append(c)
            nxt += gap
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def stop(self) -> list[Call]:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        return self.calls

    def between(self, t0: float, t1: float) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if t0 <= c.at < t1]


def wait_for(m: RolloutMesh, until, timeout: float, poll: float = 0.05):
    """Poll the rollout until `until(data)`; returns (data, monotonic time seen)."""
    deadline = time.monotonic() + timeout
    while True:
        r = m.rollout()
        if until(r):
            return r, time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"rollout did not get there in {timeout} s: {r.status}")
        time.sleep(poll)
