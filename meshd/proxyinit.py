"""`meshd proxy-init`: the iptables rules that send an app's traffic through meshd, read from
the environment App Mesh's route manager (ECS `proxyConfiguration`, the EKS controller's
`proxyinit` init container) already sets:

    APPMESH_START_ENABLED         "1": set the rules up (anything else: leave them alone)
    APPMESH_IGNORE_UID            the proxy's uid: its own connections are never redirected
    APPMESH_IGNORE_GID            the same, by group
    APPMESH_APP_PORTS             the app's ports: inbound connections to them go to meshd
    APPMESH_ENVOY_INGRESS_PORT    where inbound connections are sent (default 15000)
    APPMESH_ENVOY_EGRESS_PORT     where outbound connections are sent (default 15001)
    APPMESH_EGRESS_IGNORED_IP     addresses (and CIDRs) outbound traffic to which is left alone
    APPMESH_EGRESS_IGNORED_PORTS  destination ports outbound traffic to which is left alone
    APPMESH_ENABLE_IPV6           "1": the same rules for IPv6 (ip6tables)
    MESHD_DNS_PORT                meshd's own addition: send the app's DNS queries (port 53,
                                  UDP and TCP) to meshd's DNS responder on this port

The rules, in the nat table of each family, are App Mesh's own shape:

    MESHD_EGRESS   RETURN for the ignored uid, gid, ports and addresses, then REDIRECT every
                   other TCP connection to the egress port;
                   OUTPUT jumps to it for TCP to any address that is not local.
    MESHD_INGRESS  REDIRECT TCP to the app's ports to the ingress port;
                   PREROUTING jumps to it for TCP from any address that is not local.
    MESHD_DNS      (with MESHD_DNS_PORT) RETURN for the ignored uid and gid, then REDIRECT
                   port 53 to the DNS port; OUTPUT jumps to it for UDP and TCP port 53,
                   before the egress jump.

Setting them up is idempotent: chains whose rules are already exactly these are left
untouched (their counters too), others are replaced in one iptables-restore transaction;
each step is reported. `--clean` removes the jumps and the chains; `--show` prints them with
their packet counters. The rules are Debian's iptables (nf_tables backend) commands: this
module composes them, the kernel does the work.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass, field

EGRESS_CHAIN, INGRESS_CHAIN, DNS_CHAIN = "MESHD_EGRESS", "MESHD_INGRESS", "MESHD_DNS"
CHAINS = (EGRESS_CHAIN, INGRESS_CHAIN, DNS_CHAIN)
DEFAULT_INGRESS_PORT, DEFAULT_EGRESS_PORT = 15000, 15001
# iptables' multiport match takes at most 15 ports per rule.
_MULTIPORT_MAX = 15


class InitError(ValueError):
    """A setting proxy-init cannot use, or an iptables failure; says which."""


@dataclass
class InitConfig:
    """The route manager's settings (App Mesh's environment variable names)."""

    enabled: bool = True
    ignore_uid: int | None = None
    ignore_gid: int | None = None
    app_ports: list[int] = field(default_factory=list)
    ingress_port: int = DEFAULT_INGRESS_PORT
    egress_port: int = DEFAULT_EGRESS_PORT
    egress_ignored_ips: list[str] = field(default_factory=list)
    egress_ignored_ports: list[int] = field(default_factory=list)
    ipv6: bool = False
    dns_port: int | None = None

    @staticmethod
    def from_env(env: dict[str, str] | None = None) -> "InitConfig":
        env = os.environ if env is None else env
        return InitConfig(
            enabled=env.get("APPMESH_START_ENABLED", "1").strip() == "1",
            ignore_uid=_id(env, "APPMESH_IGNORE_UID"), ignore_gid=_id(env, "APPMESH_IGNORE_GID"),
            app_ports=_ports(env, "APPMESH_APP_PORTS"),
            ingress_port=env_port(env, "APPMESH_ENVOY_INGRESS_PORT", DEFAULT_INGRESS_PORT),
            egress_port=env_port(env, "APPMESH_ENVOY_EGRESS_PORT", DEFAULT_EGRESS_PORT),
            egress_ignored_ips=_addresses(env, "APPMESH_EGRESS_IGNORED_IP"),
            egress_ignored_ports=_ports(env, "APPMESH_EGRESS_IGNORED_PORTS"),
            ipv6=env.get("APPMESH_ENABLE_IPV6", "0").strip() == "1",
            dns_port=env_port(env, "MESHD_DNS_PORT", 0) or None)


def _values(env, name: str) -> list[str]:
    return [v.strip() for v in env.get(name, "").split(",") if v.strip()]


def _id(env, name: str) -> int | None:
    v = env.get(name, "").strip()
    if not v:
        return None
    if not v.isdigit():
        raise InitError(f"{name}: a numeric id is required, got {v!r}")
    return int(v)


def env_port(env, name: str, default: int, error=None) -> int:
    """A port number from environment variable `name` (`default` when unset); anything else
    raises `error` (InitError) naming the variable."""
    v = env.get(name, "").strip()
    if not v:
        return default
    if not v.isdigit() or not 0 < int(v) <= 65535:
        raise (error or InitError)(f"{name}: a port number (1-65535) is required, got {v!r}")
    return int(v)


def _ports(env, name: str) -> list[int]:
    out = []
    for v in _values(env, name):
        if not v.isdigit() or not 0 < int(v) <= 65535:
            raise InitError(f"{name}: {v!r} is not a port number (1-65535)")
        if int(v) not in out:
            out.append(int(v))
    return out


def _addresses(env, name: str) -> list[str]:
    out = []
    for v in _values(env, name):
        try:
            net = ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise InitError(f"{name}: {v!r} is not an IP address or CIDR") from None
        if str(net) not in out:
            out.append(str(net))
    return out


def rules(cfg: InitConfig, family: int) -> dict[str, list[str]]:
    """The nat rules of one address family (4 or 6) in `iptables -S` form, by chain: the
    two meshd chains' contents, and the jump rules of OUTPUT and PREROUTING."""
    ignored = []
    if cfg.ignore_uid is not None:
        ignored.append(f"-m owner --uid-owner {cfg.ignore_uid} -j RETURN")
    if cfg.ignore_gid is not None:
        ignored.append(f"-m owner --gid-owner {cfg.ignore_gid} -j RETURN")
    egress = [f"-A {EGRESS_CHAIN} {r}" for r in ignored]
    for i in range(0, len(cfg.egress_ignored_ports), _MULTIPORT_MAX):
        ports = ",".join(str(p) for p in cfg.egress_ignored_ports[i:i + _MULTIPORT_MAX])
        egress.append(f"-A {EGRESS_CHAIN} -p tcp -m multiport --dports {ports} -j RETURN")
    for net in cfg.egress_ignored_ips:
        if ipaddress.ip_network(net).version == family:
            egress.append(f"-A {EGRESS_CHAIN} -d {net} -p tcp -j RETURN")
    egress.append(f"-A {EGRESS_CHAIN} -p tcp -j REDIRECT --to-ports {cfg.egress_port}")
    ingress = []
    for i in range(0, len(cfg.app_ports), _MULTIPORT_MAX):
        ports = ",".join(str(p) for p in cfg.app_ports[i:i + _MULTIPORT_MAX])
        ingress.append(f"-A {INGRESS_CHAIN} -p tcp -m multiport --dports {ports} "
                       f"-j REDIRECT --to-ports {cfg.ingress_port}")
    dns, output = [], []
    if cfg.dns_port is not None:
        dns = [f"-A {DNS_CHAIN} {r}" for r in ignored]
        dns += [f"-A {DNS_CHAIN} -p {p} -m {p} --dport 53 -j REDIRECT --to-ports {cfg.dns_port}"
                for p in ("udp", "tcp")]
        output = [f"-A OUTPUT -p {p} -m {p} --dport 53 -j {DNS_CHAIN}" for p in ("udp", "tcp")]
    output.append(f"-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j {EGRESS_CHAIN}")
    return {
        EGRESS_CHAIN: egress,
        INGRESS_CHAIN: ingress,
        DNS_CHAIN: dns,
        "OUTPUT": output,
        "PREROUTING": [f"-A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j {INGRESS_CHAIN}"],
    }


class Iptables:
    """The nat table of one family, through Debian's iptables commands."""

    def __init__(self, family: int):
        self.family = family
        self.cmd = "iptables" if family == 4 else "ip6tables"
        if shutil.which(self.cmd) is None:
            raise InitError(f"{self.cmd} not found: install Debian's iptables package")

    def _run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [self.cmd, "-w", "5", "-t", "nat", *args] if stdin is None else [f"{self.cmd}-restore", "-w", "5",
                                                                                   "--noflush"]
        p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
        if check and p.returncode != 0:
            raise InitError(f"{' '.join(cmd)}: {p.stderr.strip() or f'exit {p.returncode}'}")
        return p

    def chain(self, name: str) -> list[str] | None:
        """The rules of a chain in -S form (without its -N line), None when it does not exist."""
        p = self._run("-S", name, check=False)
        if p.returncode != 0:
            return None
        return [line for line in p.stdout.splitlines() if line.startswith("-A ")]

    def has(self, rule: str) -> bool:
        """Is this -A rule in its chain?"""
        return self._run("-C", *rule.split()[1:], check=False).returncode == 0

    def replace_chains(self, chains: dict[str, list[str]]) -> None:
        """Create (or flush) the chains and fill them, in one transaction."""
        lines = ["*nat", *(f":{name} - [0:0]" for name in chains)]
        for body in chains.values():
            lines.extend(body)
        self._run(stdin="\n".join([*lines, "COMMIT", ""]))

    def insert(self, rule: str, position: int) -> None:
        chain, *spec = rule.split()[1:]
        self._run("-I", chain, str(position), *spec)

    def delete(self, rule: str) -> None:
        self._run("-D", *rule.split()[1:])

    def drop_chain(self, name: str) -> None:
        self._run("-F", name)
        self._run("-X", name)

    def listing(self, name: str) -> str:
        return self._run("-L", name, "-n", "-v", "--line-numbers", check=False).stdout


def families(cfg: InitConfig) -> list[int]:
    return [4, 6] if cfg.ipv6 else [4]


def setup(cfg: InitConfig, say=print) -> bool:
    """Make the rules exactly `rules(cfg)`; True when anything changed."""
    changed = False
    for fam in families(cfg):
        ipt = Iptables(fam)
        want = rules(cfg, fam)
        chains = {c: want[c] for c in (EGRESS_CHAIN, INGRESS_CHAIN)}
        if cfg.dns_port is not None:
            chains[DNS_CHAIN] = want[DNS_CHAIN]
        have = {c: ipt.chain(c) for c in chains}
        if have == chains:
            say(f"{ipt.cmd}: {', '.join(chains)} already hold these rules; unchanged")
        else:
            ipt.replace_chains(chains)
            changed = True
            for c, body in chains.items():
                old = have[c]
                what = "created" if old is None else "replaced" if old else "filled"
                say(f"{ipt.cmd}: {what} {c}:" + "".join(f"\n    {r}" for r in body) if body else
                    f"{ipt.cmd}: {what} {c} (empty)")
        for chain in ("OUTPUT", "PREROUTING"):
            for position, jump in enumerate(want[chain], 1):
                if ipt.has(jump):
                    say(f"{ipt.cmd}: jump present: {jump}")
                else:
                    # In this order at the chain's head: DNS is captured before the egress
                    # jump would send TCP port 53 to the egress port.
                    ipt.insert(jump, position)
                    changed = True
                    say(f"{ipt.cmd}: added {jump}")
    return changed


def clean(cfg: InitConfig, say=print) -> bool:
    """Remove the jumps and the chains (what any earlier setup made); True when anything was there."""
    removed = False
    for fam in families(cfg):
        ipt = Iptables(fam)
        want = rules(InitConfig(**{**vars(cfg), "dns_port": cfg.dns_port or 53}), fam)
        for jump in (*want["OUTPUT"], *want["PREROUTING"]):
            while ipt.has(jump):  # a rule added twice by hand is removed twice
                ipt.delete(jump)
                removed = True
                say(f"{ipt.cmd}: removed {jump}")
        for chain in CHAINS:
            if ipt.chain(chain) is not None:
                ipt.drop_chain(chain)
                removed = True
                say(f"{ipt.cmd}: removed chain {chain}")
    if not removed:
        say("no meshd interception rules were present")
    return removed


def show(cfg: InitConfig, say=print) -> None:
    """Print the chains and jumps, with packet counters: what to look at when traffic does
    not go where it should."""
    for fam in families(cfg):
        ipt = Iptables(fam)
        for chain in ("OUTPUT", "PREROUTING", *CHAINS):
            say(f"# {ipt.cmd} -t nat -L {chain}")
            say(ipt.listing(chain).rstrip() or "(no such chain)")


__all__ = ["InitConfig", "InitError", "clean", "rules", "setup", "show"]
