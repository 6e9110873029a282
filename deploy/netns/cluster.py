#!/usr/bin/env python3
"""Builds an N-host meshd cluster on one Linux machine out of network namespaces.

Each host is a namespace (`<prefix>-h1`, `<prefix>-h2`, ...) with one interface, `eth0`,
on a private test subnet. The hosts' veth pairs meet at a bridge that lives in a namespace
of its own (`<prefix>-net`), so the root namespace's firewall (Docker's FORWARD DROP, for
example) never sees the bridged traffic. One more veth pair, `<prefix>-up`, joins the root
namespace to that bridge at the subnet's last usable address, which is how the operator
(and the test suite) reach the hosts' admin APIs. Every host runs its own etcd member (the
first ETCD_MEMBERS hosts form one static cluster) and its own `meshd run`.

The admin API is authenticated: `up` creates a cluster key (`meshd init`) that every host
signs its own certificate with, and an operator API token (`meshd grant-admin`); it writes
a meshctl config with one context per host (`<state>/meshctl.yaml`, token listener, trust
bundle), so `MESHCTL_CONFIG=<state>/meshctl.yaml meshctl --context h2 get meshes` works.

A host can also run local apps: with MESHD_NETNS_APPS naming a directory, `<dir>/<host>.yaml`
(or, without one, `<dir>/default.yaml`) is that host's `meshd run --config` (RuntimeConfig: `apps:`, `ingress:`,
`advertise:` ...), with ${HOST_IP} and ${HOST} replaced by the host's address and name, so
its ingress listens on, and advertises, the host's namespace address. `bg` starts any other
process (the sample services, a load generator) detached inside a host's namespace; `down`
stops it with everything else there.

Only the standard library is used, so the script starts fast and needs nothing beyond
iproute2, etcd and meshd. Processes are started detached and remembered by pid files; they
are signalled only by pid, and only after checking that the pid still runs a command line
naming this cluster's state directory. `down` finds what to remove from the namespace names
alone, so it also cleans up after an `up` that failed half-way, and running it twice is fine.

Configuration (environment):
  MESHD_NETNS_PREFIX      name prefix of namespaces and the root-side link (default "meshd")
  MESHD_NETNS_SUBNET      IPv4 test subnet (default 10.213.0.0/24); host i gets the i-th address
  MESHD_NETNS_STATE       state directory (default /tmp/meshd-netns-<prefix>)
  MESHD_NETNS_LEASE_TTL   meshd --lease-ttl (default 10)
  MESHD_NETNS_ETCD_MEMBERS  how many hosts run an etcd member (default 3, at most N)
  MESHD_NETNS_ADMIN_PORT  admin API port on every host, mTLS (default 7000); the bearer-token
                          listener is on the next port (7001)
  MESHD_NETNS_APPS        a directory of per-host data-plane configs, <host>.yaml or default.yaml
  MESHD_NETNS_MESHD       the meshd command (default "<this python> -m meshd.cli.meshd_main",
                          with this checkout first on PYTHONPATH)
  MESHD_NETNS_MESHD_ARGS, MESHD_NETNS_ETCD_ARGS  extra arguments, split like a shell would
  MESHD_ETCD_BIN          the etcd binary (default: PATH, then /usr/bin/etcd)
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
METRICS_PORT = 9464  # each host's meshd serves /metrics on its netns address (meshctl top/graph scrape it)
# Linux interface names are at most 15 bytes; "<prefix>-up" must fit.
MAX_PREFIX = 12
# The checkout this script belongs to: its meshd is the one the hosts run.
REPO = Path(__file__).resolve().parents[2]


class ClusterError(Exception):
    """A step failed; the message says which and what to look at."""


@dataclass
class Host:
    name: str  # h1, h2, ...
    ns: str  # the network namespace
    ip: str
    etcd: bool  # whether this host runs an etcd member


@dataclass
class Config:
    prefix: str
    subnet: str
    state: str
    lease_ttl: int
    etcd_members: int
    admin_port: int
    meshd_cmd: list[str]
    meshd_args: list[str]
    etcd_bin: str
    etcd_args: list[str]
    apps_dir: str = ""
    hosts: list[Host] = field(default_factory=list)

    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}-net"

    @property
    def root_link(self) -> str:
        return f"{self.prefix}-up"

    @property
    def root_ip(self) -> str:
        net = ipaddress.ip_network(self.subnet)
        return str(net[-2])

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name or h.ns == name:
                return h
        raise ClusterError(f"no host {name!r}; hosts are {', '.join(h.name for h in self.hosts) or 'none (is the cluster up?)'}")

    def host_dir(self, h: Host) -> Path:
        return Path(self.state) / h.name

    def etcd_endpoints(self, first: Host | None = None) -> list[str]:
        """Client URLs of every member; `first`'s own member leads when it has one."""
        members = [h for h in self.hosts if h.etcd]
        if first is not None and first.etcd:
            members = [first] + [m for m in members if m is not first]
        return [f"http://{m.ip}:{ETCD_CLIENT_PORT}" for m in members]

    def admin(self, h: Host) -> str:
        return f"{h.ip}:{self.admin_port}"

    def token_admin(self, h: Host) -> str:
        return f"{h.ip}:{self.admin_port + 1}"

    @property
    def cluster_key(self) -> Path:
        return Path(self.state) / "cluster.key"

    @property
    def operator_token(self) -> Path:
        return Path(self.state) / "operator.token"

    @property
    def bundle(self) -> Path:
        return Path(self.state) / "bundle.pem"

    @property
    def meshctl_config(self) -> Path:
        return Path(self.state) / "meshctl.yaml"


def _default_etcd() -> str:
    explicit = os.environ.get("MESHD_ETCD_BIN")
    if explicit:
        return explicit
    return shutil.which("etcd") or "/usr/bin/etcd"


def config_from_env(env=os.environ) -> Config:
    prefix = env.get("MESHD_NETNS_PREFIX", "meshd")
    if not re.fullmatch(r"[a-z][a-z0-9]*", prefix) or len(prefix) > MAX_PREFIX:
        raise ClusterError(f"MESHD_NETNS_PREFIX must be 1-{MAX_PREFIX} lower-case letters/digits, got {prefix!r}")
    subnet = env.get("MESHD_NETNS_SUBNET", "10.213.0.0/24")
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as err:
        raise ClusterError(f"MESHD_NETNS_SUBNET: {err}") from err
    if net.version != 4 or not net.is_private or net.num_addresses < 8:
        raise ClusterError("MESHD_NETNS_SUBNET must be a private IPv4 subnet of at least 8 addresses")
    meshd_cmd = shlex.split(env.get("MESHD_NETNS_MESHD", "")) or [sys.executable, "-m", "meshd.cli.meshd_main"]
    return Config(
        prefix=prefix, subnet=str(net),
        state=env.get("MESHD_NETNS_STATE", f"/tmp/meshd-netns-{prefix}"),
        lease_ttl=int(env.get("MESHD_NETNS_LEASE_TTL", "10")),
        etcd_members=int(env.get("MESHD_NETNS_ETCD_MEMBERS", "3")),
        admin_port=int(env.get("MESHD_NETNS_ADMIN_PORT", "7000")),
        meshd_cmd=meshd_cmd, meshd_args=shlex.split(env.get("MESHD_NETNS_MESHD_ARGS", "")),
        etcd_bin=_default_etcd(), etcd_args=shlex.split(env.get("MESHD_NETNS_ETCD_ARGS", "")),
        apps_dir=os.path.abspath(env["MESHD_NETNS_APPS"]) if env.get("MESHD_NETNS_APPS") else "",
    )


def load(cfg: Config) -> Config:
    """The running cluster's description, written by `up`, with this environment's paths."""
    path = Path(cfg.state) / "cluster.json"
    if not path.exists():
        return cfg
    saved = json.loads(path.read_text())
    cfg.hosts = [Host(**h) for h in saved["hosts"]]
    for key in ("subnet", "lease_ttl", "etcd_members", "admin_port", "meshd_cmd", "meshd_args",
                "etcd_bin", "etcd_args", "apps_dir"):
        setattr(cfg, key, saved.get(key, getattr(cfg, key)))
    return cfg


# -- small wrappers ---------------------------------------------------------------------------
def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def namespaces() -> list[str]:
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def our_namespaces(prefix: str) -> list[str]:
    pattern = re.compile(rf"{re.escape(prefix)}-(h\d+|net)")
    return [ns for ns in namespaces() if pattern.fullmatch(ns)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _pidfile(cfg: Config, h: Host, what: str) -> Path:
    return cfg.host_dir(h) / f"{what}.pid"


def _marker(cfg: Config, h: Host, what: str) -> str:
    # Both commands name their data directory, which is unique to this cluster and host.
    return str(cfg.host_dir(h) / what)


def running_pid(cfg: Config, h: Host, what: str) -> int | None:
    """The pid of this host's etcd or meshd if it is still that process, else None."""
    try:
        pid = int(_pidfile(cfg, h, what).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if _alive(pid) and _marker(cfg, h, what) in _cmdline(pid):
        return pid
    return None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left


def process_env() -> dict[str, str]:
    """The environment of everything started in a host: this checkout first on PYTHONPATH,
    so the hosts run this checkout's meshd even where another one is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                      if p and p != str(REPO)]])
    env.setdefault("ETCD_UNSUPPORTED_ARCH", os.uname().machine)
    return env


def _spawn(cfg: Config, h: Host, what: str, argv: list[str]) -> int:
    log = open(cfg.host_dir(h) / f"{what}.log", "ab")
    env = process_env()
    # `ip netns exec` enters the namespace and execs the command, so the pid is the command's.
    proc = subprocess.Popen(["ip", "netns", "exec", h.ns, *argv], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True, env=env)
    log.close()
    _pidfile(cfg, h, what).write_text(str(proc.pid))
    # Forget the child: it must outlive this command, and is reaped by init once we exit.
    proc.returncode = 0
    return proc.pid


# -- processes --------------------------------------------------------------------------------
def etcd_argv(cfg: Config, h: Host) -> list[str]:
    peers = ",".join(f"{m.name}=http://{m.ip}:{ETCD_PEER_PORT}" for m in cfg.hosts if m.etcd)
    client = f"http://{h.ip}:{ETCD_CLIENT_PORT}"
    return [
        cfg.etcd_bin, "--name", h.name, "--data-dir", _marker(cfg, h, "etcd"),
        "--listen-client-urls", f"{client},http://127.0.0.1:{ETCD_CLIENT_PORT}",
        "--advertise-client-urls", client,
        "--listen-peer-urls", f"http://{h.ip}:{ETCD_PEER_PORT}",
        "--initial-advertise-peer-urls", f"http://{h.ip}:{ETCD_PEER_PORT}",
        "--initial-cluster", peers, "--initial-cluster-token", f"{cfg.prefix}-netns",
        # Ignored once the data directory exists, so a restarted member rejoins as itself.
        "--initial-cluster-state", "new",
        # Pre-vote (off by default in etcd 3.4) stops a member that comes back from a
        # partition with a higher term from deposing a healthy leader.
        "--pre-vote",
        "--logger", "zap", "--log-outputs", "stderr",
        *cfg.etcd_args,
    ]


def dataplane_config(cfg: Config, h: Host) -> Path | None:
    """Render the host's data-plane config from MESHD_NETNS_APPS (None: the host has none)."""
    if not cfg.apps_dir:
        return None
    template = Path(cfg.apps_dir) / f"{h.name}.yaml"
    if not template.exists():
        template = Path(cfg.apps_dir) / "default.yaml"
    if not template.exists():
        return None
    out = cfg.host_dir(h) / "meshd.yaml"
    out.write_text(template.read_text().replace("${HOST_IP}", h.ip).replace("${HOST}", h.name))
    return out


def meshd_argv(cfg: Config, h: Host) -> list[str]:
    dataplane = dataplane_config(cfg, h)
    return [
        *cfg.meshd_cmd, "run", "--etcd", ",".join(cfg.etcd_endpoints(first=h)),
        "--admin", cfg.admin(h), "--admin-token", cfg.token_admin(h), "--host-name", h.name,
        "--metrics", f"{h.ip}:{METRICS_PORT}", "--cluster-key", str(cfg.cluster_key),
        "--state-dir", _marker(cfg, h, "meshd"), "--lease-ttl", str(cfg.lease_ttl),
        *(["--config", str(dataplane)] if dataplane else []),
        *cfg.meshd_args,
    ]


def etcd_healthy(h: Host, timeout: float = 1.0) -> bool:
    # etcd 3.4's /health is true only while the member sees a leader (a quorum).
    try:
        with urllib.request.urlopen(f"http://{h.ip}:{ETCD_CLIENT_PORT}/health", timeout=timeout) as resp:
            return b'"health":"true"' in resp.read().replace(b" ", b"")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def etcd_member(h: Host, timeout: float = 1.0) -> dict | None:
    """This member's id and the leader it sees (etcd's JSON gateway), or None if it won't say."""
    try:
        req = urllib.request.Request(f"http://{h.ip}:{ETCD_CLIENT_PORT}/v3/maintenance/status", data=b"{}",
                                     method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.loads(resp.read())
        return {"id": body["header"]["member_id"], "leader": body.get("leader", "0")}
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def move_leader(cfg: Config, h: Host, timeout: float = 10.0) -> None:
    """Hand etcd leadership to `h`'s member (before maintenance elsewhere, or in a drill)."""
    me = etcd_member(h)
    if me is None:
        raise ClusterError(f"etcd on {h.name} does not answer")
    if me["leader"] == me["id"]:
        return
    leader = next((m for m in cfg.hosts if m.etcd and (etcd_member(m) or {}).get("id") == me["leader"]), None)
    if leader is None:
        raise ClusterError("no reachable etcd leader")
    req = urllib.request.Request(f"http://{leader.ip}:{ETCD_CLIENT_PORT}/v3/maintenance/transfer-leadership",
                                 data=json.dumps({"targetID": me["id"]}).encode(), method="POST")
    try:
        urllib.request.urlopen(req, timeout=timeout).close()
    except (urllib.error.URLError, OSError) as err:
        raise ClusterError(f"moving the etcd leader to {h.name} failed: {err}") from err
    _wait(f"etcd leadership on {h.name}", lambda: (etcd_member(h) or {}).get("leader") == me["id"], timeout)


def listening(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def admin_listening(cfg: Config, h: Host, timeout: float = 0.5) -> bool:
    return listening(h.ip, cfg.admin_port, timeout)


def _wait(what: str, ready, timeout: float, log: Path | None = None, pid_check=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if pid_check is not None and not pid_check():
            raise ClusterError(f"{what} exited" + (f"; see {log}" if log else ""))
        time.sleep(0.1)
    raise ClusterError(f"{what} not ready within {timeout:.0f}s" + (f"; see {log}" if log else ""))


def start(cfg: Config, h: Host, what: str, wait: float = 30.0) -> int:
    """Start this host's etcd or meshd (no-op if running); wait until it answers."""
    pid = running_pid(cfg, h, what)
    if pid is None:
        if what == "etcd" and not h.etcd:
            raise ClusterError(f"{h.name} runs no etcd member")
        cfg.host_dir(h).mkdir(parents=True, exist_ok=True)
        pid = _spawn(cfg, h, what, etcd_argv(cfg, h) if what == "etcd" else meshd_argv(cfg, h))
    if wait:
        # Our own child's pid, not running_pid(): until it has exec'd, its command line is
        # still this script's and would not name the state directory.
        alive = lambda: _alive(pid)  # noqa: E731
        # An etcd member counts as started once it accepts clients: it cannot be healthy
        # before a quorum is up, which is the caller's to wait for (after a full outage).
        port = ETCD_CLIENT_PORT if what == "etcd" else cfg.admin_port
        _wait(f"{what} on {h.name}", lambda: listening(h.ip, port), wait,
              cfg.host_dir(h) / f"{what}.log", alive)
    return pid


def stop(cfg: Config, h: Host, what: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> bool:
    """Signal this host's etcd or meshd and wait for it to exit (SIGKILL after `timeout`)."""
    pid = running_pid(cfg, h, what)
    if pid is None:
        return False
    _signal(pid, sig)
    if _wait_gone([pid], timeout):
        _signal(pid, signal.SIGKILL)
        _wait_gone([pid], 5)
    return True


# -- network ----------------------------------------------------------------------------------
def _check_subnet_free(cfg: Config) -> None:
    net = ipaddress.ip_network(cfg.subnet)
    for line in ip("-4", "route", "show").stdout.splitlines():
        dest = line.split()[0]
        if dest == "default":
            continue
        try:
            other = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            continue
        if other.overlaps(net):
            raise ClusterError(f"subnet {cfg.subnet} overlaps the route '{line.strip()}' in the root "
                               "namespace; choose another with MESHD_NETNS_SUBNET")


def build_network(cfg: Config) -> None:
    sw = cfg.switch_ns
    ip("netns", "add", sw)
    ip("-n", sw, "link", "set", "lo", "up")
    ip("-n", sw, "link", "add", "br0", "type", "bridge")
    ip("-n", sw, "link", "set", "br0", "up")
    for h in cfg.hosts:
        ip("netns", "add", h.ns)
        ip("-n", h.ns, "link", "set", "lo", "up")
        # The switch side is named after the host, the host side is eth0: both names are
        # local to their namespace, so clusters with different prefixes never collide.
        ip("-n", sw, "link", "add", h.name, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
        ip("-n", sw, "link", "set", h.name, "master", "br0", "up")
        ip("-n", h.ns, "addr", "add", f"{h.ip}/{cfg.prefixlen}", "dev", "eth0")
        ip("-n", h.ns, "link", "set", "eth0", "up")
    ip("link", "add", cfg.root_link, "type", "veth", "peer", "name", "up0", "netns", sw)
    ip("-n", sw, "link", "set", "up0", "master", "br0", "up")
    ip("addr", "add", f"{cfg.root_ip}/{cfg.prefixlen}", "dev", cfg.root_link)
    ip("link", "set", cfg.root_link, "up")


def link_up(cfg: Config, h: Host) -> bool:
    out = ip("-n", cfg.switch_ns, "-o", "link", "show", h.name, check=False).stdout
    return "state UP" in out or (",UP" in out and "state DOWN" not in out)


def cut(cfg: Config, h: Host) -> None:
    """Partition the host: its switch-side veth goes down, so nothing gets in or out."""
    ip("-n", cfg.switch_ns, "link", "set", h.name, "down")


def restore(cfg: Config, h: Host) -> None:
    ip("-n", cfg.switch_ns, "link", "set", h.name, "up")


# -- commands ---------------------------------------------------------------------------------
def up(cfg: Config, n: int, *, meshd: bool = True, timeout: float = 60.0) -> Config:
    if n < 1 or n > 250:
        raise ClusterError("host count must be 1-250")
    present = our_namespaces(cfg.prefix)
    if present:
        raise ClusterError(f"namespaces {', '.join(present)} exist already; run `down` first")
    _check_subnet_free(cfg)
    if not (os.access(cfg.etcd_bin, os.X_OK) or shutil.which(cfg.etcd_bin)):
        raise ClusterError(f"etcd binary {cfg.etcd_bin} not found: install Debian's etcd-server or set MESHD_ETCD_BIN")
    net = ipaddress.ip_network(cfg.subnet)
    if n + 2 > net.num_addresses - 1:
        raise ClusterError(f"{cfg.subnet} is too small for {n} hosts")
    members = max(1, min(cfg.etcd_members, n))
    cfg.hosts = [Host(f"h{i}", f"{cfg.prefix}-h{i}", str(net[i]), i <= members) for i in range(1, n + 1)]
    state = Path(cfg.state)
    state.mkdir(parents=True, exist_ok=True)
    for h in cfg.hosts:
        # A new cluster: etcd data left by an earlier one would name other members.
        shutil.rmtree(cfg.host_dir(h), ignore_errors=True)
    for old in (cfg.cluster_key, cfg.operator_token, cfg.bundle, cfg.meshctl_config):
        old.unlink(missing_ok=True)
    try:
        build_network(cfg)
        saved = {k: v for k, v in asdict(cfg).items() if k != "state"}
        (state / "cluster.json").write_text(json.dumps(saved, indent=2) + "\n")
        deadline = time.monotonic() + timeout
        _meshd_tool(cfg, "init", "--cluster-key", str(cfg.cluster_key))
        etcds = {h.name: start(cfg, h, "etcd", wait=0) for h in cfg.hosts if h.etcd}
        for h in cfg.hosts:
            if h.etcd:
                _wait(f"etcd on {h.name}", lambda h=h: etcd_healthy(h), max(1.0, deadline - time.monotonic()),
                      cfg.host_dir(h) / "etcd.log", lambda h=h: _alive(etcds[h.name]))
        if meshd:
            meshds = {h.name: start(cfg, h, "meshd", wait=0) for h in cfg.hosts}
            for h in cfg.hosts:
                _wait(f"meshd on {h.name}", lambda h=h: admin_listening(cfg, h), max(1.0, deadline - time.monotonic()),
                      cfg.host_dir(h) / "meshd.log", lambda h=h: _alive(meshds[h.name]))
            write_credentials(cfg)
    except BaseException:
        down(cfg)
        raise
    return cfg


def _meshd_tool(cfg: Config, *args: str) -> str:
    """Run a one-shot meshd subcommand in the root namespace (it reaches etcd over the up link)."""
    proc = subprocess.run([*cfg.meshd_cmd, *args], capture_output=True, text=True, timeout=60, env=process_env())
    if proc.returncode != 0:
        raise ClusterError(f"meshd {args[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def write_credentials(cfg: Config) -> None:
    """An operator token (cluster admin), the trust bundle, and a meshctl config with one
    context per host on its token listener."""
    if not cfg.operator_token.exists():
        token = _meshd_tool(cfg, "grant-admin", "--principal", f"{cfg.prefix}-operator",
                            "--etcd", ",".join(cfg.etcd_endpoints())).splitlines()[-1]
        fd = os.open(cfg.operator_token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    token = cfg.operator_token.read_text().strip()
    bundle = cfg.host_dir(cfg.hosts[0]) / "meshd" / "identity" / "bundle.pem"
    shutil.copyfile(bundle, cfg.bundle)
    lines = [f"current: {cfg.hosts[0].name}", "contexts:"]
    for h in cfg.hosts:
        lines.append(f"  {h.name}: {{server: '{cfg.token_admin(h)}', ca: '{cfg.bundle}', token: '{token}'}}")
    fd = os.open(cfg.meshctl_config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")


def down(cfg: Config, *, grace: float = 3.0, purge: bool = False) -> list[str]:
    """Remove every trace of the cluster with this prefix; safe to repeat, and after a failed up."""
    removed = []
    nss = our_namespaces(cfg.prefix)
    pids: set[int] = set()
    for ns in nss:
        out = ip("netns", "pids", ns, check=False).stdout
        pids.update(int(p) for p in out.split() if p.isdigit())
    for h in cfg.hosts:
        for what in ("meshd", "etcd"):
            pid = running_pid(cfg, h, what)
            if pid:
                pids.add(pid)
    pids.discard(os.getpid())
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    for pid in _wait_gone(sorted(pids), grace):
        _signal(pid, signal.SIGKILL)
    _wait_gone(sorted(pids), 5)
    if ip("link", "show", cfg.root_link, check=False).returncode == 0:
        ip("link", "del", cfg.root_link, check=False)
        removed.append(cfg.root_link)
    for ns in nss:
        if ip("netns", "del", ns, check=False).returncode == 0:
            removed.append(ns)
    for h in cfg.hosts:
        for what in ("meshd", "etcd"):
            _pidfile(cfg, h, what).unlink(missing_ok=True)
    state = Path(cfg.state)
    (state / "cluster.json").unlink(missing_ok=True)
    if purge and state.exists():
        shutil.rmtree(state, ignore_errors=True)
    return removed


def background(cfg: Config, h: Host, name: str, argv: list[str]) -> int:
    """Start argv detached in the host's namespace, output to <state>/<host>/<name>.log; its pid."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name) or name in ("etcd", "meshd"):
        raise ClusterError(f"bg: name must be lower-case letters, digits and '-', not etcd/meshd: {name!r}")
    if not argv:
        raise ClusterError("bg: no command")
    cfg.host_dir(h).mkdir(parents=True, exist_ok=True)
    return _spawn(cfg, h, name, argv)


# -- the demo ---------------------------------------------------------------------------------
SAMPLE = REPO / "deploy" / "quickstart" / "cluster"  # hosts/<host>.yaml and the mesh, App Mesh JSON


def _python_tool(cfg: Config, argv: list[str], ns: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run this Python (meshctl, the load generator) in the root namespace or a host's."""
    env = dict(process_env(), MESHCTL_CONFIG=str(cfg.meshctl_config))
    env.pop("MESHCTL_SERVER", None)
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return subprocess.run([*prefix, sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=env)


def demo(cfg: Config, seconds: float, rps: float) -> int:
    """Three hosts with the sample services and mesh, and cross-host traffic from h1 and h3."""
    if not cfg.apps_dir:
        cfg.apps_dir = str(SAMPLE / "hosts")
    print(f"== up: 3 hosts, data plane from {cfg.apps_dir}", flush=True)
    up(cfg, 3)
    _print_status(cfg, status(cfg))
    # The sample's default.yaml gives every host but h1 an api-v1 and an api-v2 instance.
    for h in cfg.hosts[1:]:
        background(cfg, h, "services", [sys.executable, str(REPO / "deploy" / "quickstart" / "demo.py"), "serve",
                                        f"9101={h.name}/api-v1", f"9102={h.name}/api-v2"])
    print(f"\n== meshctl --context h1 apply -f {SAMPLE / 'mesh'}", flush=True)
    applied = _python_tool(cfg, ["-m", "meshd.cli.meshctl", "--context", "h1", "apply", "-f", str(SAMPLE / "mesh")])
    print(applied.stdout + applied.stderr, end="", flush=True)
    if applied.returncode != 0:
        return 1
    load = [str(REPO / "deploy" / "netns" / "load.py"), "--egress", "127.0.0.1:15001", "--authority",
            "api.shop.local:9090", "--quiet"]
    deadline = time.monotonic() + 30
    while _python_tool(cfg, [*load, "--rps", "20", "--seconds", "1"], cfg.hosts[0].ns).returncode != 0:
        if time.monotonic() > deadline:
            raise ClusterError("api.shop.local not routable from h1 within 30 s; see the logs in " + cfg.state)
        time.sleep(0.5)
    print("\n== meshctl --context h3 instance list --mesh shop   (every instance, by host)", flush=True)
    print(_python_tool(cfg, ["-m", "meshd.cli.meshctl", "--context", "h3", "instance", "list", "--mesh", "shop"]).stdout,
          end="", flush=True)
    callers = [cfg.hosts[0], cfg.hosts[-1]]
    print(f"\n== traffic: {rps:g} calls/s for {seconds:g} s from " + " and ".join(h.name for h in callers)
          + ", each through its own meshd (route api: api-v1 80, api-v2 20; instances on h2 and h3)", flush=True)
    procs = {h.name: subprocess.Popen(["ip", "netns", "exec", h.ns, sys.executable, *load, "--table",
                                       "--rps", str(rps), "--seconds", str(seconds)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=process_env())
             for h in callers}
    # While the traffic runs: what every meshd's /metrics says, per route and target, and
    # who calls whom; then the load generators' own counts of who answered.
    time.sleep(min(2.0, seconds / 4))
    for view in (["top", "--once", "--interval", "3"], ["graph", "--interval", "3"]):
        print(f"\n== meshctl --context h1 {' '.join(view)} --mesh shop", flush=True)
        shown = _python_tool(cfg, ["-m", "meshd.cli.meshctl", "--context", "h1", *view, "--mesh", "shop"])
        print(shown.stdout + shown.stderr, end="", flush=True)
    rc = 0
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=seconds + 60)
        print(f"-- from {name}:\n{out}", end="", flush=True)
        rc |= proc.returncode
    print(f"\nThe cluster stays up: eval \"$(deploy/netns/cluster.sh env)\"; meshctl --context h2 get routes "
          "--mesh shop --router api-router; deploy/netns/cluster.sh kill-meshd h2; ...; deploy/netns/cluster.sh down",
          flush=True)
    return rc


def status(cfg: Config) -> list[dict]:
    nss = set(namespaces())
    rows = []
    for h in cfg.hosts:
        epid, mpid = running_pid(cfg, h, "etcd"), running_pid(cfg, h, "meshd")
        member = etcd_member(h, 0.5) if epid else None
        rows.append({
            "host": h.name, "namespace": h.ns, "ip": h.ip, "present": h.ns in nss,
            "link": "up" if h.ns in nss and link_up(cfg, h) else "down",
            "etcd": None if not h.etcd else {"pid": epid, "healthy": bool(epid) and etcd_healthy(h, 0.5),
                                             "leader": bool(member) and member["leader"] == member["id"]},
            "meshd": {"pid": mpid, "admin": cfg.admin(h), "token_admin": cfg.token_admin(h),
                      "listening": bool(mpid) and admin_listening(cfg, h)},
        })
    return rows


def _print_status(cfg: Config, rows: list[dict]) -> None:
    print(f"cluster {cfg.prefix}: subnet {cfg.subnet}, operator address {cfg.root_ip}, state {cfg.state}")
    header = ("HOST", "NAMESPACE", "IP", "LINK", "ETCD", "MESHD")
    lines = [header]
    for r in rows:
        e = r["etcd"]
        etcd = "-" if e is None else (f"pid {e['pid']} " + ("healthy" if e["healthy"] else "unhealthy")
                                      + (" leader" if e["leader"] else "") if e["pid"] else "stopped")
        m = r["meshd"]
        meshd = (f"pid {m['pid']} " + ("serving " if m["listening"] else "not listening ") + m["admin"]) if m["pid"] else "stopped"
        lines.append((r["host"], r["namespace"] if r["present"] else r["namespace"] + " (missing)", r["ip"], r["link"], etcd, meshd))
    widths = [max(len(str(x[i])) for x in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cluster.sh", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("Configuration (environment):")[1].join(("environment:", "")))
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="build the namespaces and start N hosts' etcd members and meshds")
    u.add_argument("n", type=int, nargs="?", default=3)
    u.add_argument("--no-meshd", action="store_true", help="start etcd only")
    u.add_argument("--timeout", type=float, default=60.0)
    d = sub.add_parser("down", help="stop everything and delete the namespaces and links (idempotent)")
    d.add_argument("--purge", action="store_true", help="also delete the state directory (data and logs)")
    d.add_argument("--grace", type=float, default=3.0, help="seconds between SIGTERM and SIGKILL (default 3)")
    s = sub.add_parser("status", help="hosts, links and processes")
    s.add_argument("--json", action="store_true")
    sub.add_parser("env", help="print shell exports: etcd endpoints, admin addresses, MESHCTL_CONFIG")
    for verb, what, text in (("kill", "SIGKILL", "kill -9"), ("stop", "SIGTERM", "stop (SIGTERM, wait)"),
                             ("start", None, "start")):
        for proc in ("etcd", "meshd"):
            c = sub.add_parser(f"{verb}-{proc}", help=f"{text} {proc} on one host")
            c.add_argument("host")
            if verb == "start":
                c.add_argument("--no-wait", action="store_true")
    for verb, text in (("cut", "partition a host: take its veth down"), ("restore", "bring a cut host's veth back"),
                       ("move-leader", "make this host's etcd member the leader")):
        sub.add_parser(verb, help=text).add_argument("host")
    m = sub.add_parser("demo", help="up 3 hosts with the sample services and mesh (deploy/quickstart/cluster), "
                                    "then show cross-host traffic from h1 and h3; the cluster stays up")
    m.add_argument("--seconds", type=float, default=10.0)
    m.add_argument("--rps", type=float, default=200.0)
    e = sub.add_parser("exec", help="run a command inside a host's namespace")
    e.add_argument("host")
    e.add_argument("argv", nargs=argparse.REMAINDER)
    b = sub.add_parser("bg", help="start a command detached inside a host's namespace; prints its pid "
                                  "(output: <state>/<host>/<name>.log; `down` stops it)")
    b.add_argument("host")
    b.add_argument("name")
    b.add_argument("argv", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if os.geteuid() != 0:
            raise ClusterError("network namespaces need root")
        cfg = config_from_env()
        if args.command == "up":
            cfg = up(cfg, args.n, meshd=not args.no_meshd, timeout=args.timeout)
            _print_status(cfg, status(cfg))
            return 0
        if args.command == "demo":
            return demo(cfg, args.seconds, args.rps)
        cfg = load(cfg)
        if args.command == "down":
            removed = down(cfg, grace=args.grace, purge=args.purge)
            print("removed: " + (", ".join(removed) if removed else "nothing (already down)"))
            return 0
        if not cfg.hosts:
            raise ClusterError(f"no cluster {cfg.prefix} is up (no {cfg.state}/cluster.json)")
        if args.command == "status":
            rows = status(cfg)
            if args.json:
                print(json.dumps({"prefix": cfg.prefix, "subnet": cfg.subnet, "operator_ip": cfg.root_ip,
                                  "state": cfg.state, "lease_ttl": cfg.lease_ttl, "bundle": str(cfg.bundle),
                                  "operator_token": str(cfg.operator_token),
                                  "meshctl_config": str(cfg.meshctl_config), "hosts": rows}, indent=2))
            else:
                _print_status(cfg, rows)
            return 0
        if args.command == "env":
            print(f"export MESHD_ETCD={shlex.quote(','.join(cfg.etcd_endpoints()))}")
            print(f"export MESHD_NETNS_ADMINS={shlex.quote(','.join(cfg.admin(h) for h in cfg.hosts))}")
            # One context per host (`meshctl --context h2 ...`); the current one is h1.
            print(f"export MESHCTL_CONFIG={shlex.quote(str(cfg.meshctl_config))}")
            print("unset MESHCTL_SERVER")
            return 0
        h = cfg.host(args.host)
        if args.command == "exec":
            cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            return subprocess.call(["ip", "netns", "exec", h.ns, *(cmd or ["bash"])], env=process_env())
        if args.command == "bg":
            print(background(cfg, h, args.name, args.argv[1:] if args.argv[:1] == ["--"] else args.argv))
            return 0
        if args.command == "cut":
            cut(cfg, h)
        elif args.command == "restore":
            restore(cfg, h)
        elif args.command == "move-leader":
            move_leader(cfg, h)
        else:
            verb, what = args.command.split("-")
            if verb == "start":
                start(cfg, h, what, wait=0 if args.no_wait else 30.0)
            elif not stop(cfg, h, what, signal.SIGKILL if verb == "kill" else signal.SIGTERM):
                print(f"{what} on {h.name} was not running")
        return 0
    except ClusterError as err:
        print(f"cluster: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
