"""App Mesh's DNS service discovery at run time: a virtual node whose spec names
`serviceDiscovery.dns.hostname` gets the hostname's addresses as endpoints, as Envoy's
STRICT_DNS (`responseType: ENDPOINTS`, the default: every address) and LOGICAL_DNS
(`LOADBALANCER`: one address, kept while the answers still hold it) clusters do for App Mesh.

- Each answer is one synthetic instance, `dns:<address>` at the port of the node's first
  listener, with no ingress attribute: the egress reaches it directly, in plaintext, as an
  origin that runs no meshd. They live in this meshd's view only (`MeshView.set_discovered`,
  beside the instances registered in etcd), never in etcd.
- `ipPreference` (the node's `dns.ipPreference`, else the mesh's `serviceDiscovery`, else
  IPv4_PREFERRED, Envoy's V4_PREFERRED that App Mesh uses by default) picks the queries:
  `*_ONLY` asks one of A/AAAA; `*_PREFERRED` asks the preferred one, and the other only when
  the first has no address.
- A name is asked again when its answer's TTL runs out, bounded to [MIN_TTL_SECONDS,
  MAX_TTL_SECONDS]. NXDOMAIN or no address is an answer (the endpoints go, as Envoy's
  resolver reports it); a timeout, SERVFAIL or unreachable resolver is a failure: the last
  answer stays, and it is asked again after FAILURE_RETRY_FIRST_SECONDS, doubling to
  FAILURE_RETRY_MAX_SECONDS. Failing and recovering are logged once per change.
- Resolution runs on a thread of its own (dnspython, blocking, with a bounded lifetime per
  query); only the change is handed to the data-plane loop.

The resolvers are the host's (/etc/resolv.conf), or the comma-separated `HOST[:PORT]` list in
MESHD_DISCOVERY_NAMESERVERS.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from meshd.proxy.dns import V4_RANGE, V6_RANGE
from meshd.v1 import admin_pb2

log = logging.getLogger("meshd.proxy.discovery")

NAMESERVERS_ENV = "MESHD_DISCOVERY_NAMESERVERS"
INSTANCE_PREFIX = "dns:"
HOSTNAME_ATTRIBUTE = "meshd.dns.hostname"  # on each synthetic instance: the name it came from
DEFAULT_IP_PREFERENCE = "IPv4_PREFERRED"
MIN_TTL_SECONDS = 1.0
MAX_TTL_SECONDS = 60.0
EMPTY_RETRY_SECONDS = 5.0  # NXDOMAIN or no address: Envoy's default dns_refresh_rate
FAILURE_RETRY_FIRST_SECONDS = 1.0
FAILURE_RETRY_MAX_SECONDS = 30.0
QUERY_LIFETIME_SECONDS = 2.0  # one A or AAAA question, retries and TCP fallback included
STOP_WAIT_SECONDS = 0.5

_QUERIES = {"IPv4_ONLY": (("A",), False), "IPv6_ONLY": (("AAAA",), False),
            "IPv4_PREFERRED": (("A", "AAAA"), True), "IPv6_PREFERRED": (("AAAA", "A"), True)}


@dataclass(frozen=True)
class DnsTarget:
    """What one virtual node asks DNS."""

    hostname: str
    port: int
    response_type: str  # ENDPOINTS or LOADBALANCER
    ip_preference: str


class ResolveFailure(Exception):
    """No answer (timeout, SERVFAIL, no resolver reachable): keep the last one."""


def targets(snap, cache: dict | None = None) -> dict[str, DnsTarget]:
    """The DNS-discovered nodes of a mesh snapshot (meshd.compile.MeshSnapshot), by name. A
    node without a listener receives no traffic in App Mesh, so it has no target. With
    `cache` (kept by the caller for this mesh), a node whose message and mesh preference
    are unchanged is not read again: a publish of a 500-node mesh read them all on the
    data-plane loop (1.4 ms)."""
    mesh_pref = snap.mesh.spec.service_discovery.ip_preference if snap.mesh is not None else ""
    out, seen = {}, {}
    for name, node in snap.nodes.items():
        hit = cache.get(name) if cache is not None else None
        if hit is not None and hit[0] is node and hit[1] == mesh_pref:
            target = hit[2]
        else:
            target = _target(node, mesh_pref)
        seen[name] = (node, mesh_pref, target)
        if target is not None:
            out[name] = target
    if cache is not None:
        cache.clear()
        cache.update(seen)
    return out


def _target(node, mesh_pref: str) -> DnsTarget | None:
    sd = node.spec.service_discovery
    if not sd.HasField("dns") or not sd.dns.hostname or not node.spec.listeners:
        return None
    return DnsTarget(sd.dns.hostname.rstrip("."), node.spec.listeners[0].port_mapping.port,
                     sd.dns.response_type or "ENDPOINTS", sd.dns.ip_preference or mesh_pref or DEFAULT_IP_PREFERENCE)


def resolve(resolver: dns.resolver.Resolver, hostname: str, ip_preference: str) -> tuple[list[str], float]:
    """(addresses in answer order, seconds until asked again). Raises ResolveFailure."""
    qtypes, fallback = _QUERIES.get(ip_preference, _QUERIES[DEFAULT_IP_PREFERENCE])
    for qtype in qtypes:
        try:
            answer = resolver.resolve(hostname + ".", qtype, lifetime=QUERY_LIFETIME_SECONDS,
                                      raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return [], EMPTY_RETRY_SECONDS  # the name is not there, for A and AAAA alike
        except dns.exception.DNSException as err:
            raise ResolveFailure(f"{qtype} {hostname}: {type(err).__name__}: {err}") from err
        rrset = answer.rrset
        addresses = [r.address for r in rrset] if rrset is not None else []
        # Never meshd's own answers for virtual service names (meshd.proxy.dns): the egress itself.
        addresses = [a for a in addresses if ipaddress.ip_address(a) not in V4_RANGE
                     and ipaddress.ip_address(a) not in V6_RANGE]
        if addresses or not fallback:
            ttl = rrset.ttl if rrset is not None and addresses else EMPTY_RETRY_SECONDS
            return addresses, min(MAX_TTL_SECONDS, max(MIN_TTL_SECONDS, float(ttl)))
    return [], EMPTY_RETRY_SECONDS


def choose(target: DnsTarget, addresses: list[str], current: Iterable[str]) -> list[str]:
    """The addresses that become endpoints: all (ENDPOINTS), or one (LOADBALANCER): the one in
    use while the answers still hold it, else the first answer."""
    if target.response_type != "LOADBALANCER":
        return sorted(set(addresses))
    kept = [a for a in current if a in addresses]
    return kept[:1] or addresses[:1]


def instances(mesh: str, node: str, target: DnsTarget, addresses: Iterable[str]) -> dict[str, admin_pb2.Instance]:
    """Synthetic instances for the chosen addresses (health UNKNOWN: routed to, never checked)."""
    return {INSTANCE_PREFIX + a: admin_pb2.Instance(
        mesh_name=mesh, virtual_node_name=node, instance_id=INSTANCE_PREFIX + a, address=a, port=target.port,
        health="UNKNOWN", attributes={HOSTNAME_ATTRIBUTE: target.hostname}) for a in addresses}


def make_resolver(spec: str | None = None) -> dns.resolver.Resolver:
    """The host's resolver, or one asking `spec` ("HOST[:PORT],…", [v6]:PORT for IPv6 with a port)."""
    spec = os.environ.get(NAMESERVERS_ENV, "") if spec is None else spec
    if not spec.strip():
        try:
            return dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            spec = "127.0.0.1"
    r = dns.resolver.Resolver(configure=False)
    servers = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item.startswith("["):
            host, _, port = item[1:].partition("]")
            port = port.lstrip(":")
        elif item.count(":") == 1:
            host, port = item.split(":")
        else:
            host, port = item, ""
        servers.append(dns.nameserver.Do53Nameserver(host, int(port) if port else 53))
    r.nameservers = servers
    return r


@dataclass
class _Entry:
    target: DnsTarget
    due: float = 0.0
    chosen: tuple[str, ...] = ()
    failing: bool = False
    backoff: float = FAILURE_RETRY_FIRST_SECONDS
    published: bool = False  # this target's instances handed over at least once


class DnsDiscovery:
    """Resolves the wanted (mesh, node) targets on its own thread; hands each change of a
    node's chosen addresses to `publish(mesh, node, instances)` (which must be thread-safe:
    the runtime passes one that schedules the change on the data-plane loop)."""

    def __init__(self, publish: Callable[[str, str, dict], None], resolver: dns.resolver.Resolver | None = None):
        self._publish = publish
        self._resolver = resolver
        self._wanted: dict[tuple[str, str], DnsTarget] | None = None
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.resolutions = self.failures = 0

    def update(self, wanted: dict[tuple[str, str], DnsTarget]) -> None:
        """The targets now wanted (any thread): new and changed ones are asked at once, ones
        gone lose their endpoints."""
        with self._lock:
            self._wanted = dict(wanted)
        self._wake.set()

    def start(self) -> "DnsDiscovery":
        self._thread = threading.Thread(target=self._run, name="dns-discovery", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            # Not for a query in flight (up to QUERY_LIFETIME_SECONDS): the daemon thread
            # drops its answer once it sees the stop.
            self._thread.join(STOP_WAIT_SECONDS)

    def _run(self) -> None:
        if self._resolver is None:
            self._resolver = make_resolver()
        while not self._stopping.is_set():
            self._take_wanted()
            now = time.monotonic()
            for key, entry in sorted(self._entries.items()):
                if self._stopping.is_set():
                    return
                if entry.due <= now:
                    self._resolve(key, entry)
            due = min((e.due for e in self._entries.values()), default=now + MAX_TTL_SECONDS)
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()

    def _take_wanted(self) -> None:
        with self._lock:
            wanted, self._wanted = self._wanted, None
        if wanted is None:
            return
        for key in sorted(set(self._entries) - set(wanted)):
            entry = self._entries.pop(key)
            if entry.chosen:
                self._publish(key[0], key[1], {})
        for key, target in wanted.items():
            entry = self._entries.get(key)
            if entry is None or entry.target != target:
                self._entries[key] = _Entry(target, chosen=entry.chosen if entry is not None else ())

    def _resolve(self, key: tuple[str, str], entry: _Entry) -> None:
        mesh, node = key
        t = entry.target
        self.resolutions += 1
        try:
            addresses, ttl = resolve(self._resolver, t.hostname, t.ip_preference)
        except ResolveFailure as err:
            if self._stopping.is_set():
                return
            self.failures += 1
            entry.due = time.monotonic() + entry.backoff
            entry.backoff = min(FAILURE_RETRY_MAX_SECONDS, entry.backoff * 2)
            if not entry.failing:
                entry.failing = True
                log.warning("DNS discovery failed; keeping the last answer", extra={
                    "mesh": mesh, "virtual_node": node, "hostname": t.hostname, "error": str(err),
                    "endpoints": len(entry.chosen)})
            return
        if self._stopping.is_set():
            return  # the loop may be gone
        if entry.failing:
            entry.failing = False
            log.info("DNS discovery answers again", extra={"mesh": mesh, "virtual_node": node,
                                                           "hostname": t.hostname})
        entry.backoff = FAILURE_RETRY_FIRST_SECONDS
        entry.due = time.monotonic() + ttl
        chosen = tuple(choose(t, addresses, entry.chosen))
        if chosen != entry.chosen or not entry.published:
            entry.chosen, entry.published = chosen, True
            self._publish(mesh, node, instances(mesh, node, t, chosen))
            log.info("DNS discovery endpoints changed", extra={"mesh": mesh, "virtual_node": node,
                                                               "hostname": t.hostname, "addresses": list(chosen)})
