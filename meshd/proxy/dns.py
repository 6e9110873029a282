"""A DNS responder for virtual service names: in App Mesh a virtual service name must resolve
to *some* address before an app will connect (Cloud Map, Route 53 or cluster DNS); with
meshd's interception that address only has to exist, so meshd answers for the names itself.

- A and AAAA queries for a virtual service name of a mesh this meshd serves are answered
  with an address allocated to the name: in 240.240.0.0/16 and 2001:2::/48, the ranges
  Istio's DNS proxy auto-allocates from (reserved, so never a real destination). The
  allocation is a function of the set of names (a hash, then the next free address in
  sorted-name order), so every meshd serving the same meshes answers the same; an
  intercepted connection to one of them is routed by its name (HTTP) or port (TCP).
- Every other query is forwarded, as it came, to the host's resolvers (/etc/resolv.conf;
  UDP or TCP as the client asked) and their answer returned.
- A name under a mesh's domain (a suffix of some virtual service name after its first
  label, e.g. `shop.local` for `catalog.shop.local`) that neither the mesh nor the
  upstream knows is answered NXDOMAIN, at once when the upstream cannot be reached.

Wire format and serving are dnslib's (UDP and TCP servers on threads of their own, off the
data-plane loop). `meshd proxy-init` sends the apps' DNS traffic here when MESHD_DNS_PORT
is set (iptables REDIRECT of port 53, meshd's own queries excepted).
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import socketserver
from typing import Callable, Iterable

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import DNSHandler, DNSLogger, DNSServer

log = logging.getLogger("meshd.proxy.dns")

V4_RANGE = ipaddress.ip_network("240.240.0.0/16")
V6_RANGE = ipaddress.ip_network("2001:2::/48")
TTL_SECONDS = 30
FORWARD_TIMEOUT_SECONDS = 2.0
_V6_SLOTS = 1 << 32  # the low 32 bits of the /48 are enough


def allocate(names: Iterable[str]) -> dict[str, tuple[str, str]]:
    """name -> (IPv4, IPv6) address for each name: a hash of the name, then the next free
    slot, taken in sorted order (the same set of names always gets the same addresses)."""
    v4_size = V4_RANGE.num_addresses - 2  # neither the network nor the broadcast address
    used4: set[int] = set()
    used6: set[int] = set()
    out = {}
    for name in sorted({n.lower().rstrip(".") for n in names}):
        h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
        i = h % v4_size
        while i in used4:
            i = (i + 1) % v4_size
        used4.add(i)
        j = h % _V6_SLOTS
        while j in used6:
            j = (j + 1) % _V6_SLOTS
        used6.add(j)
        out[name] = (str(V4_RANGE.network_address + 1 + i), str(V6_RANGE.network_address + 1 + j))
    return out


def domains(names: Iterable[str]) -> set[str]:
    """The mesh domains of virtual service names: each name less its first label."""
    return {n.split(".", 1)[1] for n in names if "." in n}


def resolv_conf_nameservers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The host's resolvers, from resolv.conf."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    out.append((parts[1].split("%", 1)[0], 53))
    except OSError:
        pass
    return out


class MeshResolver:
    """dnslib's resolver interface: answers mesh names, forwards the rest."""

    def __init__(self, names: Callable[[], Iterable[str]], upstreams: Callable[[], list[tuple[str, int]]],
                 timeout: float = FORWARD_TIMEOUT_SECONDS):
        self._names = names
        self._upstreams = upstreams
        self.timeout = timeout
        self._table: tuple = (None, {}, set())  # (names, allocation, domains)
        self.answered = self.forwarded = self.nxdomain = self.failed = 0

    def table(self) -> tuple[dict[str, tuple[str, str]], set[str]]:
        names = frozenset(n.lower().rstrip(".") for n in self._names())
        if self._table[0] != names:
            self._table = (names, allocate(names), domains(names))
        return self._table[1], self._table[2]

    def resolve(self, request: DNSRecord, handler) -> DNSRecord:
        q = request.q
        name = str(q.qname).rstrip(".").lower()
        addresses, mesh_domains = self.table()
        got = addresses.get(name)
        if got is not None:
            reply = request.reply()
            if q.qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(got[0]), ttl=TTL_SECONDS))
            if q.qtype in (QTYPE.AAAA, QTYPE.ANY):
                reply.add_answer(RR(q.qname, QTYPE.AAAA, rdata=AAAA(got[1]), ttl=TTL_SECONDS))
            self.answered += 1
            return reply  # other types: the name exists, with no such record (NODATA)
        mesh_looking = any(name.endswith("." + d) for d in mesh_domains)
        forwarded = self._forward(request, getattr(handler, "protocol", "udp") == "tcp")
        if forwarded is not None and not (mesh_looking and forwarded.header.rcode != RCODE.NOERROR):
            self.forwarded += 1
            return forwarded
        reply = request.reply()
        if mesh_looking:
            reply.header.rcode = RCODE.NXDOMAIN
            self.nxdomain += 1
        else:
            reply.header.rcode = RCODE.SERVFAIL
            self.failed += 1
        return reply

    def _forward(self, request: DNSRecord, tcp: bool) -> DNSRecord | None:
        for host, port in self._upstreams():
            try:
                raw = request.send(host, port, tcp=tcp, timeout=self.timeout,
                                   ipv6=":" in host)
                return DNSRecord.parse(raw)
            except (OSError, ValueError, Exception) as err:  # noqa: BLE001 - dnslib raises its own errors too
                log.debug("upstream resolver failed", extra={"upstream": f"{host}:{port}", "error": str(err)})
        return None


class _QuietLogger(DNSLogger):
    """dnslib's logger prints every query; meshd logs only errors, through logging."""

    def __init__(self):
        super().__init__(log="-recv,-send,-request,-reply,-truncated,-data,-error", prefix=False)

    def log_error(self, handler, e):
        log.info("bad DNS query", extra={"client": f"{handler.client_address}", "error": str(e)})


class _UDP6(socketserver.ThreadingMixIn, socketserver.UDPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True


class _TCP6(socketserver.ThreadingMixIn, socketserver.TCPServer):
    address_family = socket.AF_INET6
    allow_reuse_address = True
    daemon_threads = True


class DnsResponder:
    """UDP and TCP DNS servers on `host:port`, each on a thread of its own."""

    def __init__(self, resolver: MeshResolver, host: str, port: int):
        v6 = ":" in host
        logger = _QuietLogger()
        self.resolver = resolver
        # UDP and TCP on one port. With port 0 the UDP server picks it, and the TCP one may
        # find that port taken by another TCP socket: then both try again.
        for attempt in range(20):
            udp = DNSServer(resolver, address=host, port=port, tcp=False, logger=logger, handler=DNSHandler,
                            server=_UDP6 if v6 else None)
            chosen = udp.server.server_address[1]
            try:
                tcp = DNSServer(resolver, address=host, port=chosen, tcp=True, logger=logger, handler=DNSHandler,
                                server=_TCP6 if v6 else None)
                break
            except OSError:
                udp.server.server_close()
                if port != 0 or attempt == 19:
                    raise
        self.servers = [udp, tcp]
        self.port = chosen
        self.address = f"[{host}]:{self.port}" if v6 else f"{host}:{self.port}"

    def start(self) -> "DnsResponder":
        for s in self.servers:
            s.start_thread()
        return self

    def stop(self) -> None:
        for s in self.servers:
            s.server.shutdown()
            s.server.server_close()


__all__ = ["DnsResponder", "MeshResolver", "allocate", "domains", "resolv_conf_nameservers"]
