"""SPIFFE IDs of meshd's principals: virtual nodes, virtual gateways, hosts and users, and
SAN pattern checks.

Forms (SPIFFE ID spec §2: scheme `spiffe`, a trust domain, a path of non-empty segments):
    spiffe://<trust-domain>/mesh/<mesh>/virtualNode/<node>
    spiffe://<trust-domain>/mesh/<mesh>/virtualGateway/<gateway>
    spiffe://<trust-domain>/host/<host-name>
    spiffe://<trust-domain>/user/<name>          (meshctl users with a client certificate)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from meshd.security.errors import InvalidIdentity

DEFAULT_TRUST_DOMAIN = "meshd.local"
# SPIFFE ID spec §2.1: trust domain is lowercase letters, digits, dots, dashes, underscores.
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
# §2.2: path segments use letters, digits, dots, dashes and underscores; never "." or "..".
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,255}")

WORKLOAD = "workload"
GATEWAY = "gateway"
HOST = "host"
USER = "user"
# Identities that belong to one mesh, signed by that mesh's CA; the others by the cluster CA.
MESH_KINDS = (WORKLOAD, GATEWAY)


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A parsed meshd SPIFFE ID. `mesh` and `node` are set for workloads, `mesh` and `name`
    for gateways, `name` otherwise."""

    trust_domain: str
    kind: str  # WORKLOAD, GATEWAY, HOST or USER
    mesh: str = ""
    node: str = ""
    name: str = ""

    @property
    def uri(self) -> str:
        if self.kind == WORKLOAD:
            return f"spiffe://{self.trust_domain}/mesh/{self.mesh}/virtualNode/{self.node}"
        if self.kind == GATEWAY:
            return f"spiffe://{self.trust_domain}/mesh/{self.mesh}/virtualGateway/{self.name}"
        return f"spiffe://{self.trust_domain}/{self.kind}/{self.name}"

    def __str__(self) -> str:
        return self.uri


def check_trust_domain(td: str) -> str:
    if not _TRUST_DOMAIN.fullmatch(td):
        raise InvalidIdentity(f"spiffe://{td}", "trust domain must be lowercase letters, digits, . _ -")
    return td


def _segment(identity: str, value: str, what: str) -> str:
    if not _SEGMENT.fullmatch(value) or value in (".", ".."):
        raise InvalidIdentity(identity, f"{what} {value!r} is not a valid SPIFFE path segment")
    return value


def workload_id(trust_domain: str, mesh: str, node: str) -> SpiffeId:
    """The identity of virtual node `node` of mesh `mesh`."""
    s = SpiffeId(check_trust_domain(trust_domain), WORKLOAD, mesh=mesh, node=node)
    _segment(s.uri, mesh, "mesh")
    _segment(s.uri, node, "virtual node")
    return s


def workload_dns_name(trust_domain: str, mesh: str, node: str) -> str:
    """The DNS name a workload certificate also carries: `<node>.<mesh>.mesh.<trust-domain>`.

    Python's ssl cannot check a URI SAN during the handshake, but OpenSSL checks a DNS name
    against `server_hostname`; a meshd client sets that to the target node's name, so the
    target's identity is verified inside the handshake itself.
    """
    return f"{node}.{mesh}.mesh.{trust_domain}".lower()


def gateway_id(trust_domain: str, mesh: str, gateway: str) -> SpiffeId:
    """The identity of virtual gateway `gateway` of mesh `mesh`: the path names the App Mesh
    resource as a workload's does (`virtualGateway` beside `virtualNode`), so one "*"
    pattern segment never spans both kinds."""
    s = SpiffeId(check_trust_domain(trust_domain), GATEWAY, mesh=mesh, name=gateway)
    _segment(s.uri, mesh, "mesh")
    _segment(s.uri, gateway, "virtual gateway")
    return s


def host_id(trust_domain: str, host: str) -> SpiffeId:
    """The identity of the meshd host `host`."""
    s = SpiffeId(check_trust_domain(trust_domain), HOST, name=host)
    _segment(s.uri, host, "host name")
    return s


def user_id(trust_domain: str, name: str) -> SpiffeId:
    """The identity of an admin API user holding a client certificate."""
    s = SpiffeId(check_trust_domain(trust_domain), USER, name=name)
    _segment(s.uri, name, "user name")
    return s


def parse(identity: str) -> SpiffeId:
    """Parse one of meshd's SPIFFE ID forms; anything else raises InvalidIdentity."""
    if not identity.startswith("spiffe://"):
        raise InvalidIdentity(identity, "not a spiffe:// URI")
    rest = identity[len("spiffe://"):]
    td, _, path = rest.partition("/")
    check_trust_domain(td)
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == "mesh" and parts[2] == "virtualNode":
        return workload_id(td, parts[1], parts[3])
    if len(parts) == 4 and parts[0] == "mesh" and parts[2] == "virtualGateway":
        return gateway_id(td, parts[1], parts[3])
    if len(parts) == 2 and parts[0] == HOST:
        return host_id(td, parts[1])
    if len(parts) == 2 and parts[0] == USER:
        return user_id(td, parts[1])
    raise InvalidIdentity(identity, ("path is none of mesh/<m>/virtualNode/<n>, "
                                     "mesh/<m>/virtualGateway/<g>, host/<h>, user/<u>"))


@lru_cache(maxsize=1024)
def _pattern(pattern: str) -> re.Pattern:
    # "*" stands for one whole path segment (never crosses "/"), so
    # spiffe://td/mesh/m1/virtualNode/* admits every node of m1 and nothing of m2.
    return re.compile("/".join("[^/]+" if seg == "*" else re.escape(seg) for seg in pattern.split("/")))


def matches(identity: str, patterns) -> bool:
    """True when `identity` equals one pattern, a "*" segment matching any one segment.

    App Mesh's subjectAlternativeNames.match.exact entries are patterns without "*".
    """
    return any(_pattern(p).fullmatch(identity) for p in patterns)
