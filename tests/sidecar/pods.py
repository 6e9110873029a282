"""Pods for the sidecar tests: a network namespace holding an app and its meshd sidecar,
joined to the test host (the root namespace) by a veth pair, the way a Kubernetes pod or an
ECS awsvpc task holds its containers.

    pod = Pod("p1", index=3)
    pod.run(["meshd", "proxy-init"], env={...})          # inside the namespace
    proc = pod.popen([...])                                  # a long-running process there
    pod.close()

Inside the pod, /etc/resolv.conf names a resolver on the host side of the link (`ip netns
exec` mounts /etc/netns/<name>/resolv.conf over /etc/resolv.conf), as a pod's names the
cluster DNS; `meshd proxy-init` then sends the apps' queries to meshd's DNS responder.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.cluster.harness import free_octet

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# The sidecar runs with this group (App Mesh's IgnoredUID is 1337; the tests keep uid 0,
# which can read the interpreter under /root, and ignore the group instead).
SIDECAR_GID = 1337
_PREFIX = f"sp{os.getpid()}"


def sweep_orphans() -> None:
    """Remove pods of earlier runs whose pytest process is gone (killed before teardown)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    for m in re.finditer(r"^(sp(\d+)-\w+)", out, re.M):
        if int(m.group(2)) != os.getpid() and not os.path.exists(f"/proc/{m.group(2)}"):
            subprocess.run(["ip", "netns", "del", m.group(1)], capture_output=True, timeout=10)
            shutil.rmtree(f"/etc/netns/{m.group(1)}", ignore_errors=True)


def free_index() -> int:
    """A /30 index in 10.231.0.0/16 (third octet) that no root-namespace route touches."""
    return free_octet("10.231.{}.0/30", 240)


def connect(a: "Pod", b: "Pod", k: int) -> tuple[str, str]:
    """A direct link between two pods, as two hosts on one network: 10.232.<k>.1 in `a`,
    10.232.<k>.2 in `b` (their addresses on it, returned)."""
    ends = (f"l{_PREFIX[2:]}{k}a"[:15], f"l{_PREFIX[2:]}{k}b"[:15])
    Pod._sh("ip", "link", "add", ends[0], "netns", a.name, "type", "veth", "peer", "name", ends[1], "netns", b.name)
    addrs = (f"10.232.{k}.1", f"10.232.{k}.2")
    for pod, end, addr in ((a, ends[0], addrs[0]), (b, ends[1], addrs[1])):
        Pod._sh("ip", "netns", "exec", pod.name, "ip", "addr", "add", f"{addr}/30", "dev", end)
        Pod._sh("ip", "netns", "exec", pod.name, "ip", "link", "set", end, "up")
    return addrs


class Pod:
    """A network namespace with a veth link to the root namespace: the host side is
    10.231.<index>.1 (fd00:231:<index>::1), the pod side .2 (::2), the pod's default routes
    go through the link."""

    def __init__(self, name: str, index: int):
        self.name = f"{_PREFIX}-{name}"
        self.host_ip, self.ip = f"10.231.{index}.1", f"10.231.{index}.2"
        self.host_ip6, self.ip6 = f"fd00:231:{index}::1", f"fd00:231:{index}::2"
        self.link = f"v{_PREFIX[2:]}{name}"[:15]
        self.procs: list[subprocess.Popen] = []
        try:
            self._up()
        except BaseException:
            self.close()
            raise

    def _up(self) -> None:
        sh = self._sh
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", self.name)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.link)
        sh("ip", "-6", "addr", "add", f"{self.host_ip6}/64", "dev", self.link, "nodad")
        sh("ip", "link", "set", self.link, "up")
        ns = ("ip", "netns", "exec", self.name)
        sh(*ns, "ip", "link", "set", "lo", "up")
        sh(*ns, "ip", "addr", "add", f"{self.ip}/30", "dev", "eth0")
        sh(*ns, "ip", "-6", "addr", "add", f"{self.ip6}/64", "dev", "eth0", "nodad")
        sh(*ns, "ip", "link", "set", "eth0", "up")
        sh(*ns, "ip", "route", "add", "default", "via", self.host_ip)
        sh(*ns, "ip", "-6", "route", "add", "default", "via", self.host_ip6)
        etc = Path("/etc/netns") / self.name
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
        (etc / "resolv.conf").write_text(f"nameserver {self.host_ip}\noptions timeout:2 attempts:1\n")

    @staticmethod
    def _sh(*cmd: str) -> None:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")

    def argv(self, cmd: list[str], *, gid: int | None = None) -> list[str]:
        """`cmd` run inside the pod (with group `gid` when given)."""
        pre = ["ip", "netns", "exec", self.name]
        if gid is not None:
            pre += ["setpriv", f"--regid={gid}", "--clear-groups", "--"]
        return [*pre, *cmd]

    def run(self, cmd: list[str], *, env: dict | None = None, timeout: float = 60, gid: int | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(self.argv(cmd, gid=gid), capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})}, cwd=REPO)
        if check and p.returncode != 0:
            raise AssertionError(f"{cmd} in {self.name} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def popen(self, cmd: list[str], *, log: Path, env: dict | None = None, gid: int | None = None) -> subprocess.Popen:
        out = open(log, "ab")
        try:
            p = subprocess.Popen(self.argv(cmd, gid=gid), stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                 env={**os.environ, **(env or {})})
        finally:
            out.close()
        self.procs.append(p)
        return p

    def iptables(self, *args: str, family: int = 4) -> str:
        cmd = "iptables" if family == 4 else "ip6tables"
        return self.run([cmd, "-w", "5", *args]).stdout

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.link], capture_output=True, timeout=30)
        shutil.rmtree(Path("/etc/netns") / self.name, ignore_errors=True)
