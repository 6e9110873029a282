"""The listeners of the virtual gateways one meshd runs: north-south traffic into the mesh.

The local config names the gateways (`gateways: [{mesh, virtualGateway, address}]`). For
each one this opens a listener per listener `portMapping` of the VirtualGateway, on that
port (as App Mesh's gateway Envoy listens on it): protocol http on the HTTP/1.1 relay,
http2 and grpc on the HTTP/2 engine. Listeners follow the gateway's spec: after every
published configuration change, a port that appeared is opened, one that went away (or
changed protocol or TLS) is closed after draining its requests.

Per request the listener matches the gateway's route table (`meshd.gateway`), applies the
decision's hostname and path rewrites to what goes upstream, and hands the request to the
egress routing (meshd.proxy.egress) with the target virtual service: from there on it is routed, retried,
timed out and balanced exactly like an app's egress request, and it reaches the chosen
instance's meshd ingress over mTLS with the gateway's own identity
(`spiffe://<td>/mesh/<mesh>/virtualGateway/<gateway>`).
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from meshd.dataplane import Engine, H1Engine
from meshd.gateway import GatewayTable, compile_gateway
from meshd.observe import GATEWAY
from meshd.proxy.config import GatewayConfig, RuntimeConfig
from meshd.proxy.outcomes import REFUSALS
from meshd.proxy.tls import AcmListenerCredentials, all_sans
from meshd.security import Credentials, spiffe
from meshd.security.errors import TlsConfigError

log = logging.getLogger("meshd.gateway")

# Retry a gateway claim or a listener that could not open after this long.
RETRY_SECONDS = 5.0


@dataclass
class _Open:
    """One open gateway listener and what it was opened for."""

    protocol: str
    tls: bytes  # the listener's serialized `tls`, so a TLS change reopens it
    engine: object
    server: object  # the asyncio Server of its port
    credentials: Credentials | None = None  # its `file` certificate, re-read when replaced


class ListenerTlsError(Exception):
    """A virtual gateway listener's `tls` that meshd cannot serve; names the field."""

    def __init__(self, field: str, reason: str):
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


class GatewayListeners:
    """Opens, follows and closes the listeners of the configured virtual gateways.

    Requests are routed by `egress` (meshd.proxy.egress.Egress) like an app's, with the
    gateway's identity; `listeners` records the open engines and addresses; `active()` is
    False once the data plane is stopping; `claim(mesh, gateway)` records in the registry
    that this host runs the gateway, so a signer will issue it the gateway's certificate
    (meshd.security.hostauth).
    """

    def __init__(self, gateways: list[GatewayConfig], *, loop, view, egress, observe, certs,
                 config: RuntimeConfig, listeners, active: Callable[[], bool], claim: Callable[[str, str], None],
                 acm=None):
        self.loop, self.view, self.egress, self.observe, self.certs = loop, view, egress, observe, certs
        self.acm = acm  # meshd.security.acm.AcmCache: certificates named by ACM ARN
        self.config, self.listeners, self.active = config, listeners, active
        self.gateways = list(gateways)
        self.claim = claim
        self.tables: dict[tuple[str, str], GatewayTable] = {}
        self._open: dict[tuple[str, str, int], _Open] = {}
        self._claimed: set[tuple[str, str]] = set()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._retry_handle = None

    def changed(self) -> None:
        """A new configuration was published: sync the listeners (call on the loop)."""
        if self.gateways:
            self._spawn(self.sync())

    def _spawn(self, coro) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retry_later(self) -> None:
        if self._retry_handle is None and self.active():
            def again():
                self._retry_handle = None
                self.changed()
            self._retry_handle = self.loop.call_later(RETRY_SECONDS, again)

    async def sync(self) -> None:
        """Recompile each gateway's route table; open and close listeners to match its spec."""
        async with self._lock:
            if not self.active():
                return  # stopping: the data plane drains the listeners that are open
            want: dict[tuple[str, str, int], tuple[GatewayConfig, object, int]] = {}
            for g in self.gateways:
                snap = self.view.snapshot(g.mesh)
                vg = snap.gateways.get(g.virtual_gateway) if snap is not None else None
                key = (g.mesh, g.virtual_gateway)
                if vg is None:
                    self.tables.pop(key, None)
                    continue
                routes = {name: r for (gw, name), r in snap.gateway_routes.items() if gw == g.virtual_gateway}
                table = self.tables[key] = compile_gateway(g.mesh, vg, routes)
                for err in table.problems:
                    log.warning("gateway route left out", extra={"resource": err.resource, "field": err.field,
                                                                "reason": err.reason})
                if key not in self._claimed:
                    self._claimed.add(key)  # in flight; dropped again if it fails
                    self._spawn(self._claim(g))
                for i, lst in enumerate(vg.spec.listeners):
                    want[(g.mesh, g.virtual_gateway, lst.port_mapping.port)] = (g, lst, i)
            for key in [k for k in self._open if k not in want or self._stale(self._open[k], want[k][1])]:
                self._close(key)
            for key, (g, lst, i) in want.items():
                if key not in self._open:
                    await self._listen(key, g, lst, i)

    async def _claim(self, g: GatewayConfig) -> None:
        """Claim the gateway, then obtain its certificate, off the loop (both reach etcd)."""
        key = (g.mesh, g.virtual_gateway)

        def work():
            self.claim(g.mesh, g.virtual_gateway)
            self.certs.contexts(g.mesh, g.virtual_gateway, spiffe.GATEWAY)
        try:
            await self.loop.run_in_executor(None, work)
        except Exception as err:  # noqa: BLE001 - e.g. etcd unavailable: try again later
            self._claimed.discard(key)
            log.warning("could not claim the gateway or obtain its certificate",
                        extra={"gateway": f"{g.mesh}/{g.virtual_gateway}", "error": str(err)})
            self._retry_later()

    @staticmethod
    def _stale(o: _Open, lst) -> bool:
        return o.protocol != lst.port_mapping.protocol or o.tls != _tls_bytes(lst)

    async def _listen(self, key, g: GatewayConfig, lst, index: int) -> None:
        cfg = self.config
        protocol, port = lst.port_mapping.protocol, lst.port_mapping.port
        where = f"virtualGateways/{g.mesh}/{g.virtual_gateway}: spec.listeners[{index}]"
        if protocol not in ("http", "http2", "grpc"):
            log.warning("gateway listener protocol not served", extra={"listener": where, "protocol": protocol})
            return
        try:
            creds = listener_credentials(lst, protocol, self.acm,
                                         where=f"listener {port} of virtualGateway {g.virtual_gateway}")
            ctx = creds.server_front() if creds is not None else None
        except ListenerTlsError as err:
            log.warning("gateway listener TLS not supported", extra={"listener": where, "error": str(err)})
            return
        except (OSError, ssl.SSLError) as err:
            # A certificate file may yet appear (a deployment still writing it): try again.
            log.warning("gateway listener TLS files not usable; retrying", extra={"listener": where, "error": str(err)})
            self._retry_later()
            return
        cls = H1Engine if protocol == "http" else Engine
        engine = cls(self._decide(g, protocol, port, _san_exact(lst)), self.egress.retry, loop=self.loop,
                     complete=self.egress.complete, upstream_idle_timeout=cfg.upstream_idle_seconds,
                     connect_timeout=cfg.connect_timeout_seconds,
                     **({"ping_interval": cfg.ping_seconds, "ping_timeout": cfg.ping_seconds}
                        if cls is Engine else {}))
        try:
            server = await engine.listen(g.address, port, ssl=ctx, **(
                {"ssl_handshake_timeout": cfg.handshake_timeout_seconds} if ctx is not None else {}))
        except OSError as err:
            engine.close()
            log.warning("gateway listener could not open; retrying", extra={"listener": where, "error": str(err)})
            self._retry_later()
            return
        self._open[key] = _Open(protocol, _tls_bytes(lst), engine, server, creds)
        self.listeners.add(engine, f"gateway:{g.virtual_gateway}:{port}", f"{g.address}:{port}")
        log.info("gateway listener open", extra={"listener": where, "protocol": protocol,
                                                 "address": f"{g.address}:{port}", "tls": ctx is not None})

    def refresh_tls(self) -> bool:
        """Re-read the `file` certificates of open listeners that were replaced (inode, size,
        mtime). Their listeners hand every new connection to the current context, so
        nothing else changes: False. Blocking file I/O: from the certificate thread."""
        for o in list(self._open.values()):
            if o.credentials is None:
                continue
            try:
                if o.credentials.refresh_files():
                    log.info("gateway listener certificate reloaded",
                             extra={"files": ",".join(p for p in o.credentials.files if p),
                                    "serial": o.credentials.serial})
            except Exception as err:  # noqa: BLE001 - e.g. half-written: keep the current one
                log.warning("gateway listener certificate not reloaded; keeping the current one",
                            extra={"files": ",".join(p for p in o.credentials.files if p), "error": str(err)})
        return False

    def _close(self, key) -> None:
        """Stop accepting on the listener now; let its requests finish within the drain time."""
        o = self._open.pop(key)
        o.server.close()  # the port is free at once, for a listener reopened on it
        name = f"gateway:{key[1]}:{key[2]}"
        self.listeners.addresses.pop(name, None)
        log.info("gateway listener closing", extra={"gateway": f"{key[0]}/{key[1]}", "port": key[2]})

        async def drain():
            await o.engine.drain(self.config.drain_seconds)
            o.engine.close()
            self.listeners.remove(o.engine)
        self._spawn(drain())

    def _decide(self, g: GatewayConfig, protocol: str, port: int, sans: frozenset[str]):
        key = (g.mesh, g.virtual_gateway)
        caller = self.egress.caller(g, protocol == "http")
        begin, route = self.observe.begin, self.egress.route

        def decide(head):
            x = begin(head, GATEWAY, g.mesh, g.virtual_gateway)
            table = self.tables.get(key)
            if table is None:
                return REFUSALS["no_config"]
            # The listener's validation.subjectAlternativeNames: the client certificate
            # (verified in the handshake against the listener's trust) must carry one.
            if sans and not sans.intersection(all_sans(head.peer_cert)):
                return REFUSALS["identity_refused"]
            d = table.match(protocol, head.authority, port, head.method, head.path, head.headers)
            if d is None:
                return REFUSALS["no_gateway_route"]
            if d.path != head.path:
                head.rewrite_path(d.path)
            if d.authority != head.authority:
                head.rewrite_authority(d.authority)
            # The virtual router behind the service matches what the service receives: the
            # rewritten path (App Mesh's gateway Envoy rewrites before the service's routes).
            return route(head, caller, d.virtual_service, d.port or 0, d.path, x)
        return decide


def listener_ssl(lst, protocol: str) -> ssl.SSLContext | None:
    """A virtual gateway listener's App Mesh `tls` as a listener's server context; None for
    plaintext. Each new connection starts on the files' current certificate (see
    `listener_credentials`)."""
    creds = listener_credentials(lst, protocol)
    return creds.server_front() if creds is not None else None


def listener_credentials(lst, protocol: str, acm=None, where: str = "listener") -> Credentials | None:
    """A virtual gateway listener's App Mesh `tls` as credentials read from its files; None
    for plaintext. `refresh_files` follows the files when the operator replaces them.

    Modes (App Mesh ListenerTls.mode): DISABLED serves plaintext; STRICT serves TLS only.
    PERMISSIVE accepts plaintext and TLS on one port in App Mesh; meshd's listeners cannot
    tell them apart on one socket, so it serves TLS, the stricter reading, and says so in
    the log. The certificate must be a `file` source; `validation.trust.file` makes
    clients present a certificate from that trust. Unreadable files raise OSError.
    """
    if not lst.HasField("tls"):
        return None
    tls = lst.tls
    mode = tls.mode or "DISABLED"
    if mode == "DISABLED":
        return None
    if mode not in ("STRICT", "PERMISSIVE"):
        raise ListenerTlsError("tls.mode", f"must be STRICT, PERMISSIVE or DISABLED, got {mode!r}")
    is_acm = tls.certificate.HasField("acm") and acm is not None
    if not (tls.certificate.HasField("file") or is_acm):
        raise ListenerTlsError("tls.certificate", "only a file or acm certificate source is supported")
    if mode == "PERMISSIVE":
        log.warning("gateway listener tls PERMISSIVE is served as TLS only (no plaintext on the same port)")
    trust = (tls.validation.trust.file.certificate_chain
             if tls.HasField("validation") and tls.validation.trust.HasField("file") else "")
    alpn = ("http/1.1",) if protocol == "http" else ("h2",)
    if is_acm:  # ACM: the certificate imported under the ARN, followed as imports arrive
        bundle = Path(trust).read_bytes() if trust else b""
        return AcmListenerCredentials(acm, tls.certificate.acm.certificate_arn, where, bundle, alpn=alpn)
    try:
        return Credentials.from_files(tls.certificate.file.certificate_chain, tls.certificate.file.private_key,
                                      trust, alpn=alpn)
    except TlsConfigError as err:
        # Not usable (yet): the listener stays closed and is tried again, as for any OSError.
        raise OSError(str(err)) from err


def _tls_bytes(lst) -> bytes:
    return lst.tls.SerializeToString(deterministic=True) if lst.HasField("tls") else b""


def _san_exact(lst) -> frozenset[str]:
    if not (lst.HasField("tls") and lst.tls.HasField("validation")):
        return frozenset()
    return frozenset(lst.tls.validation.subject_alternative_names.match.exact)

