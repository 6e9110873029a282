"""Transparent interception: an app's outbound TCP connections, redirected to meshd by
iptables (`meshd proxy-init`), routed as if the app had called meshd's egress itself.

The app dials `catalog.shop.local:9080` as it always did; the kernel's REDIRECT sends the
connection to this listener instead, and `SO_ORIGINAL_DST` says where it was going. What
happens next follows App Mesh's Envoy, whose egress listener matches filter chains by the
original destination port:

- a port some virtual service of the mesh listens on with protocol `tcp` (its router's or
  node's listener): the connection is routed to that service, byte for byte; the client
  may be the first to speak or not;
- a port some virtual service listens on with `http`, `http2` or `grpc`: the first bytes
  say the protocol (the HTTP/2 preface, or an HTTP/1.1 request line), and each request is
  routed by its `Host`/`:authority`, with the original port added when the name has none
  (so `name:port` selects the service listening there). A request for a name the mesh does
  not know goes on to the original destination under the mesh's `ALLOW_ALL` egress filter
  and is refused under `DROP_ALL`;
- any other port: under `ALLOW_ALL` the connection passes through to its original
  destination unchanged; under `DROP_ALL` it is closed.

Each outcome is counted in `meshd_intercepted_total` (mesh, source node, protocol,
outcome). A connection that was not redirected (the app dialled this port itself) is
served as an explicit egress: HTTP routed by authority, anything else closed.

The listener accepts on the data-plane loop, reads the original destination (one
getsockopt), peeks at the first bytes when the port calls for it, and hands the socket to
the HTTP/2, HTTP/1.1 or TCP engine (`loop.connect_accepted_socket`): from then on it is
those engines' connection, with `original_dst` on its request heads.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import re
import socket
import struct

from meshd.dataplane import Refusal, Target, TcpTarget
from meshd.observe import EGRESS, INGRESS, TCP
from meshd.proxy.config import INTERNAL_HEADER_PREFIX, split_address
from meshd.proxy.outcomes import REFUSALS

log = logging.getLogger("meshd.proxy.intercept")

# <linux/netfilter_ipv4.h> SO_ORIGINAL_DST and <linux/netfilter_ipv6/ip6_tables.h>
# IP6T_SO_ORIGINAL_DST: the same number, at the IPv4 and IPv6 levels. Python's socket module
# names neither.
SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# An HTTP/1.x request line starts with a method token (RFC 9110 §9.1, §5.6.2) and a space;
# methods in use are far shorter than this.
_H1_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20} ")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")
SNIFF_BYTES = len(H2_PREFACE)
# How long a connection to an HTTP port may stay silent before it is treated as opaque TCP
# (Envoy's listener_filters_timeout is 15 s; a client of an HTTP service speaks first).
SNIFF_TIMEOUT_SECONDS = 10.0
# Original destinations passed through, whose Targets (and so upstream pools) are kept.
MAX_PASSTHROUGH_TARGETS = 1024

# Protocols, as counted.
HTTP2, HTTP1, TCP_PROTO, TLS = "http2", "http", "tcp", "tls"
# Outcomes, as counted.
ROUTED, PASSTHROUGH, REFUSED, DIRECT, INBOUND = "routed", "passthrough", "refused", "direct", "inbound"


def original_dst(sock: socket.socket) -> tuple[str, int] | None:
    """(address, port) the client dialled before netfilter redirected it here, or None when
    the connection was not redirected (no NAT entry: the client dialled this port)."""
    try:
        if sock.family == socket.AF_INET6:
            try:
                raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
            except OSError:
                # An IPv4 client of a dual-stack socket: its NAT entry is an IPv4 one.
                raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        else:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOPROTOOPT, errno.EINVAL):
            return None
        raise
    family = struct.unpack_from("=H", raw)[0]
    if family == socket.AF_INET6:
        port, = struct.unpack_from("!H", raw, 2)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    port, = struct.unpack_from("!H", raw, 2)
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


def redirected_dst(sock: socket.socket) -> tuple[str, int] | None:
    """The original destination of a connection REDIRECT brought here, or None when it came
    straight to this port. (Conntrack answers SO_ORIGINAL_DST for connections it did not
    rewrite too, with this socket's own address: delivering to that would loop.)"""
    dst = original_dst(sock)
    if dst is None:
        return None
    here = sock.getsockname()[:2]
    if dst[1] == here[1] and _same_host(dst[0], here[0]):
        return None
    return dst


def sniff(data: bytes) -> str | None:
    """The protocol the first bytes of a connection speak: HTTP2 (the client preface), HTTP1
    (a request line: method, space, and a request-target of RFC 9112 §3.2's forms), TLS (a
    handshake record), TCP (anything else); None while too few bytes have come to tell."""
    if not data:
        return None
    if data[0] == 0x16:
        return TLS
    n = min(len(data), len(H2_PREFACE))
    if data[:n] == H2_PREFACE[:n]:
        return HTTP2 if n >= 16 else None  # "PRI * HTTP/2.0\r\n" names it
    m = _H1_METHOD.match(data)
    if m is None:
        if len(data) < 21 and _TOKEN.fullmatch(data):
            return None  # a method token still arriving
        return TCP_PROTO
    target = data[m.end():m.end() + 8]
    if m.group() == b"CONNECT " or target[:1] in (b"/", b"*"):
        return HTTP1 if target else None
    for scheme in (b"http://", b"https://"):
        k = min(len(target), len(scheme))
        if target[:k].lower() == scheme[:k]:
            return HTTP1 if k == len(scheme) else None
    return TCP_PROTO  # "SET key value", "hello world": a word and a space are not HTTP


class PortTable:
    """Per original destination port, what the mesh serves there for one caller: the TCP
    virtual services (the caller's backends first), and whether any HTTP-family service
    listens there. Rebuilt when the mesh's snapshot changes."""

    def __init__(self, snap, backends: frozenset[str]):
        self.tcp: dict[int, list[str]] = {}
        self.http: set[int] = set()
        for name, data in sorted(snap.services.items()):
            provider = data.spec.provider
            kind = provider.WhichOneof("provider") if data.spec.HasField("provider") else None
            if kind == "virtual_router":
                owner = snap.routers.get(provider.virtual_router.virtual_router_name)
            elif kind == "virtual_node":
                owner = snap.nodes.get(provider.virtual_node.virtual_node_name)
            else:
                continue
            if owner is None:
                continue
            for lst in owner.spec.listeners:
                port, protocol = lst.port_mapping.port, lst.port_mapping.protocol.lower()
                if protocol == "tcp":
                    self.tcp.setdefault(port, []).append(name)
                else:
                    self.http.add(port)
        for port, names in self.tcp.items():
            # App Mesh configures a node's sidecar for its backends: they win a shared port.
            names.sort(key=lambda n: (n not in backends, n))

    def tcp_service(self, port: int) -> str | None:
        """The TCP virtual service on `port`: the caller's backend, or the only service there."""
        names = self.tcp.get(port)
        if not names:
            return None
        return names[0]


class Interceptor:
    """The intercepting listener of one local app: accepts redirected connections and hands
    each to the engine its original destination and first bytes call for."""

    def __init__(self, app, *, loop, view, egress, observe, h2, h1, tcp):
        self.app = app
        self.loop = loop
        self.view = view
        self.egress = egress
        self.observe = observe
        self.h2, self.h1, self.tcp = h2, h1, tcp
        self.sockets: list[socket.socket] = []
        self._accepting: list[asyncio.Task] = []
        self._pending: set[asyncio.Task] = set()
        self._tables: tuple = (None, None)  # (snapshot, PortTable)
        self._counts = observe.metrics.intercepted
        self._passthrough: dict[tuple[str, int], Target] = {}
        self.closing = False

    # -- listening ---------------------------------------------------------------------
    async def listen(self, host: str, port: int) -> int:
        """Accept on host:port (an IPv6 host also takes IPv4 clients); returns the port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and ipaddress.ip_address(host).is_unspecified:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sockets.append(sock)
        self._accepting.append(self.loop.create_task(self._accept(sock)))
        return sock.getsockname()[1]

    async def _accept(self, sock: socket.socket) -> None:
        while not self.closing:
            try:
                conn, _ = await self.loop.sock_accept(sock)
            except asyncio.CancelledError:
                return
            except OSError as err:
                if self.closing:
                    return
                # EMFILE and the like: say so, breathe, keep the listener.
                log.warning("intercepting listener accept failed", extra={"error": str(err)})
                await asyncio.sleep(0.1)
                continue
            task = self.loop.create_task(self._dispatch(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    # -- one connection ----------------------------------------------------------------
    def _table(self) -> PortTable | None:
        snap = self.view.snapshot(self.app.mesh)
        if snap is None:
            return None
        if self._tables[0] is not snap:
            node = snap.nodes.get(self.app.virtual_node)
            backends = frozenset(b.virtual_service.virtual_service_name for b in (node.spec.backends if node else ()))
            self._tables = (snap, PortTable(snap, backends))
        return self._tables[1]

    def allow_all(self) -> bool:
        """Is the mesh's egress filter ALLOW_ALL (App Mesh's default)? False while the mesh is
        not known (no configuration yet, or deleted): nothing passes through unseen, as
        Envoy has no listener before its first configuration."""
        snap = self.view.snapshot(self.app.mesh)
        mesh = snap.mesh if snap is not None else None
        return mesh is not None and mesh.spec.egress_filter.type != "DROP_ALL"

    def count(self, protocol: str, outcome: str) -> None:
        key = (self.app.mesh, self.app.virtual_node, protocol, outcome)
        self._counts[key] = self._counts.get(key, 0) + 1

    def passthrough_target(self, dst: tuple[str, int]) -> Target:
        """The plaintext Target of an original destination (kept: its pool is reused)."""
        t = self._passthrough.get(dst)
        if t is None:
            if len(self._passthrough) >= MAX_PASSTHROUGH_TARGETS:
                self._passthrough.clear()
            t = self._passthrough[dst] = Target(dst[0], dst[1], strip_prefix=INTERNAL_HEADER_PREFIX)
        return t

    async def _dispatch(self, conn: socket.socket) -> None:
        try:
            conn.setblocking(False)
            dst = redirected_dst(conn)
            table = self._table()
            if dst is not None and table is not None:
                service = table.tcp_service(dst[1])
                if service is not None:
                    await self._hand(conn, self.tcp, dst)
                    return
                if dst[1] not in table.http:
                    if self.allow_all():
                        await self._hand(conn, self.tcp, dst)
                    else:
                        self.count(TCP_PROTO, REFUSED)
                        conn.close()
                    return
            protocol = await self._sniff(conn)
            if protocol == HTTP2:
                await self._hand(conn, self.h2, dst)
            elif protocol == HTTP1:
                await self._hand(conn, self.h1, dst)
            elif dst is not None and self.allow_all():
                await self._hand(conn, self.tcp, dst)  # TLS or opaque bytes to an HTTP port
            else:
                self.count(protocol or TCP_PROTO, REFUSED if dst is not None else DIRECT)
                conn.close()
        except Exception as err:  # noqa: BLE001 - one connection's failure never stops the listener
            log.info("intercepted connection dropped", extra={"error": str(err)})
            conn.close()

    async def _sniff(self, conn: socket.socket) -> str | None:
        """Wait for the first bytes (within SNIFF_TIMEOUT_SECONDS) and name their protocol;
        they stay in the socket for the engine to read."""
        deadline = self.loop.time() + SNIFF_TIMEOUT_SECONDS
        fd = conn.fileno()
        while True:
            try:
                data = conn.recv(SNIFF_BYTES, socket.MSG_PEEK)
            except BlockingIOError:
                data = None
            if data == b"":
                return None  # closed before a byte
            if data:
                protocol = sniff(data)
                if protocol is not None or len(data) >= SNIFF_BYTES:
                    return protocol or TCP_PROTO
            left = deadline - self.loop.time()
            if left <= 0:
                return TCP_PROTO if data else None
            ready = self.loop.create_future()
            self.loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
            try:
                await asyncio.wait_for(ready, min(left, 0.05) if data else left)
            except asyncio.TimeoutError:
                pass
            finally:
                self.loop.remove_reader(fd)

    async def _hand(self, conn: socket.socket, engine, dst) -> None:
        """The connection becomes `engine`'s, with its original destination on its heads."""
        def factory():
            proto = engine.protocol_factory()
            proto.original_dst = dst
            return proto
        await self.loop.connect_accepted_socket(factory, conn)

    # -- the engines' routing hooks -------------------------------------------------------
    def http_decide_hook(self, http: bool):
        """The decide hook of intercepted HTTP/2 (http=False) or HTTP/1.1 requests."""
        app, egress = self.app, self.egress
        caller = egress.caller(app, http)
        begin, route = self.observe.begin, egress.route
        mesh, node = app.mesh, app.virtual_node
        proto = HTTP1 if http else HTTP2
        no_service = REFUSALS["no_service"]
        counts = self._counts
        routed, refused = (mesh, node, proto, ROUTED), (mesh, node, proto, REFUSED)

        def decide(head):
            x = begin(head, EGRESS, mesh, node)
            dst = head.original_dst
            authority = head.authority
            if dst is None:
                return route(head, caller, authority, 0, head.path, x)
            if authority and authority.rfind(":") <= authority.rfind("]"):
                authority = f"{authority}:{dst[1]}"  # no port named: the one dialled
            r = route(head, caller, authority, 0, head.path, x)
            if r is not no_service:
                key = refused if r.__class__ is Refusal else routed
                counts[key] = counts.get(key, 0) + 1
                return r
            # Not a mesh name: the original destination, as App Mesh's ALLOW_ALL passes it.
            if not self.allow_all():
                self.count(proto, REFUSED)
                return REFUSALS["not_a_mesh_destination"]
            self.count(proto, PASSTHROUGH)
            return self.passthrough_target(dst)
        return decide

    def tcp_decide_hook(self):
        """The decide hook of intercepted TCP connections: the service on the original port,
        or the original destination itself (ALLOW_ALL)."""
        app, egress = self.app, self.egress

        def decide(head):
            dst = head.original_dst
            table = self._table()
            service = table.tcp_service(dst[1]) if table is not None and dst is not None else None
            if service is not None:
                r = egress.tcp_route(head, app, service)
                self.count(TCP_PROTO, ROUTED if isinstance(r, TcpTarget) else REFUSED)
                return r
            x = self.observe.begin(head, TCP, app.mesh, app.virtual_node)
            self.observe.routed(x, None, None, None)
            if dst is None or not self.allow_all():
                self.count(TCP_PROTO, REFUSED)
                return REFUSALS["not_a_mesh_destination"]
            self.count(TCP_PROTO, PASSTHROUGH)
            return TcpTarget(self.passthrough_target(dst))
        return decide

    # -- stopping ---------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        self.closing = True
        for t in self._accepting:
            t.cancel()
        for s in self.sockets:
            s.close()
        self.sockets = []

    async def drain(self, grace: float = 5.0):
        self.stop_accepting()
        await asyncio.gather(*(e.drain(grace) for e in (self.h2, self.h1, self.tcp)), return_exceptions=True)

    def close(self) -> None:
        self.stop_accepting()
        for t in list(self._pending):
            t.cancel()
        for e in (self.h2, self.h1, self.tcp):
            e.close()

    @property
    def downstream_connections(self) -> int:
        return sum(e.downstream_connections for e in (self.h2, self.h1, self.tcp))


class InboundInterceptor(Interceptor):
    """The intercepting listener of one app's inbound side: connections from outside the
    mesh to the app's ports (APPMESH_APP_PORTS), redirected to meshd's ingress port. Calls
    between meshds never come this way (they dial the ingress meshd advertises); what does
    is delivered to the original destination, the app, as App Mesh's Envoy delivers it:
    HTTP requests through the HTTP engines (internal `x-meshd-*` headers dropped), other
    bytes relayed as they are. A port whose node listener requires mTLS (`STRICT`) refuses
    such callers: they have no mesh identity."""

    def _listener(self, port: int):
        snap = self.view.snapshot(self.app.mesh)
        node = snap.nodes.get(self.app.virtual_node) if snap is not None else None
        for lst in (node.spec.listeners if node is not None else ()):
            if lst.port_mapping.port == port:
                return lst
        return None

    async def _dispatch(self, conn: socket.socket) -> None:
        try:
            conn.setblocking(False)
            dst = redirected_dst(conn)
            if dst is None:  # dialled the ingress port itself: not a redirected connection
                self.count(TCP_PROTO, DIRECT)
                conn.close()
                return
            lst = self._listener(dst[1])
            if lst is not None and lst.HasField("tls") and lst.tls.mode == "STRICT":
                self.count(TCP_PROTO, REFUSED)
                conn.close()
                return
            if lst is not None and lst.port_mapping.protocol.lower() == "tcp":
                await self._hand(conn, self.tcp, dst)
                return
            protocol = await self._sniff(conn)
            engine = {HTTP2: self.h2, HTTP1: self.h1}.get(protocol, self.tcp)
            if protocol is None:
                conn.close()
                return
            await self._hand(conn, engine, dst)
        except Exception as err:  # noqa: BLE001 - one connection's failure never stops the listener
            log.info("intercepted inbound connection dropped", extra={"error": str(err)})
            conn.close()

    def http_decide_hook(self, http: bool):
        proto = HTTP1 if http else HTTP2

        def decide(head):
            self.observe.begin(head, INGRESS, self.app.mesh, self.app.virtual_node, counted=False)
            self.count(proto, INBOUND)
            return self.passthrough_target(head.original_dst)
        return decide

    def tcp_decide_hook(self):
        def decide(head):
            self.observe.begin(head, TCP, self.app.mesh, self.app.virtual_node, counted=False)
            self.count(TCP_PROTO, INBOUND)
            return TcpTarget(self.passthrough_target(head.original_dst))
        return decide


def _same_host(a: str, b: str) -> bool:
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return a == b
    if getattr(x, "ipv4_mapped", None):
        x = x.ipv4_mapped
    if getattr(y, "ipv4_mapped", None):
        y = y.ipv4_mapped
    return x == y or (x.is_unspecified or y.is_unspecified)


def listen_addresses(spec: str, *, inbound: bool = False) -> list[tuple[str, int]]:
    """The addresses of `interceptEgress` (or `interceptIngress`, inbound): "HOST:PORT", or
    a bare port for where iptables REDIRECT sends: locally made connections to loopback
    (127.0.0.1, and ::1 when the host has IPv6), arriving ones to the address of the
    interface they came in on (every address: "::" taking IPv4 too, or 0.0.0.0)."""
    if spec.isdigit():
        port = int(spec)
        v6 = socket.has_ipv6 and _has_ipv6_loopback()
        if inbound:
            return [("::", port)] if v6 else [("0.0.0.0", port)]
        return [("127.0.0.1", port), ("::1", port)] if v6 else [("127.0.0.1", port)]
    host, port = split_address(spec)
    return [(host, port)]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


__all__ = ["InboundInterceptor", "Interceptor", "PortTable", "listen_addresses", "original_dst", "sniff"]
