"""The data plane of one meshd: local apps and their instances, the egress and ingress
listeners, and the routing hooks that put `_fastroute` decisions into the HTTP/2 engine.

Layers, as along the data path (STYLE.md "Name by layer"):
- *logical*: the app's egress listener calls `decide`, which asks the mesh's live router for
  the virtual service, route and weighted target node;
- *concrete*: the router picks an endpoint of the target node (balancing, outlier ejection);
- *endpoint*: an instance registered by some meshd, reached through that meshd's ingress
  over mTLS with the caller node's workload certificate; `server_hostname` is the target
  node's DNS name, so OpenSSL verifies the target's identity inside the handshake.

The ingress checks the caller's identity (its certificate's SPIFFE ID, from the mesh CA)
and, with the mesh's egressFilter DROP_ALL, that the caller declared the service as a
backend, then delivers to the local instance the request names. A virtual gateway's
listeners (meshd.gateway_listener) route through the same `_route` as the egress, calling
with the gateway's identity. Everything per request runs on one uvloop thread;
configuration arrives from the watch thread via `call_soon_threadsafe`, so routers are
only touched on the loop.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import uvloop
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from _fastroute import constants as C
from meshd.compile import INGRESS_ATTRIBUTE, services_reaching

# Beside `meshd.ingress` (HTTP/2 and gRPC), an instance names its meshd's HTTP/1.1 ingress,
# and a TCP app its own TCP ingress port (TCP carries no header to name the instance).
INGRESS_HTTP_ATTRIBUTE = "meshd.ingress.http"
INGRESS_TCP_ATTRIBUTE = "meshd.ingress.tcp"
from meshd.dataplane import Engine, H1Engine, Refusal, Target, TcpEngine, TcpTarget
from meshd.gateway import gateway_targets
from meshd.gateway_listener import GatewayConfig, GatewayListeners
from meshd.health import CheckSpec, HealthChecker
from meshd.loops import supervised
from meshd.meshview import MeshView
from meshd.observe import EGRESS, INGRESS, TCP, Metrics, Observer
from meshd.observe.metrics import UNKNOWN
from meshd.security import client_context, make_csr, server_context, spiffe
from meshd.v1 import admin_pb2

log = logging.getLogger("meshd.runtime")

# How long start() waits for the first configuration snapshot before opening listeners anyway.
FIRST_SNAPSHOT_WAIT_SECONDS = 10.0
# Registration retries of an app whose mesh or virtual node is not there (yet): the first
# after half a second, then doubling up to this cap.
REGISTER_RETRY_FIRST_S = 0.5
REGISTER_RETRY_MAX_S = 5.0

INSTANCE_HEADER = "x-meshd-instance"
SERVICE_HEADER = "x-meshd-service"
# gRPC status codes (grpc/doc/statuscodes.md) used by refusals.
UNIMPLEMENTED, UNAVAILABLE, PERMISSION_DENIED, INTERNAL = 12, 14, 7, 13

# The one table of routing outcomes -> synthetic answers (STYLE §13); the engine's own
# transport failures are in meshd.dataplane.FAILURE_RESPONSES.
REFUSALS = {
    "no_config": Refusal(503, UNAVAILABLE, "no configuration for this mesh yet", "no_config"),
    "no_service": Refusal(404, UNIMPLEMENTED, "no virtual service by that name", "no_service"),
    "no_route": Refusal(404, UNIMPLEMENTED, "no route matched", "no_route"),
    "no_gateway_route": Refusal(404, UNIMPLEMENTED, "no gateway route matched", "no_gateway_route"),
    "no_endpoint": Refusal(503, UNAVAILABLE, "no healthy endpoint", "no_endpoint"),
    "bad_request": Refusal(400, INTERNAL, "request could not be routed", "bad_request"),
    "not_a_backend": Refusal(403, PERMISSION_DENIED, "the mesh's egress filter is DROP_ALL and the "
                                                    "service is not a backend of this node", "not_a_backend"),
    "pool_overflow": Refusal(503, UNAVAILABLE, "connection pool limit reached", "pool_overflow"),
    "unknown_instance": Refusal(404, UNAVAILABLE, "no such instance on this host", "unknown_instance"),
    "identity_refused": Refusal(403, PERMISSION_DENIED, "caller identity not allowed", "identity_refused"),
}


@dataclass
class BackendPort:
    """A local port mapped to one virtual service, for apps that cannot set the authority.

    protocol: "http2" (HTTP/2 and gRPC), "http" (HTTP/1.1) or "tcp".
    """

    port: int
    virtual_service: str
    protocol: str = "http2"


@dataclass
class LocalApp:
    """One local application instance of a virtual node, served by this meshd."""

    mesh: str
    virtual_node: str
    port: int
    address: str = "127.0.0.1"
    instance_id: str = ""
    egress: str = ""  # HOST:PORT of this app's HTTP/2 and gRPC egress listener
    egress_http: str = ""  # HOST:PORT of this app's HTTP/1.1 egress listener
    backends: list[BackendPort] = field(default_factory=list)
    protocol: str = "http2"  # how the app itself speaks: http2 (and gRPC), http or tcp

    @property
    def principal(self) -> tuple[str, str]:
        """(SPIFFE kind, name) of the identity its calls carry; a GatewayConfig has one too."""
        return spiffe.WORKLOAD, self.virtual_node


@dataclass
class RuntimeConfig:
    """meshd's local data-plane configuration (`--config`, YAML)."""

    apps: list[LocalApp] = field(default_factory=list)
    gateways: list[GatewayConfig] = field(default_factory=list)
    ingress: str = "127.0.0.1:15443"
    ingress_http: str = ""  # HTTP/1.1 ingress; default: the ingress host, any free port
    advertise: str = ""  # how other meshds reach the ingress; default: the ingress address
    drain_seconds: float = 5.0
    upstream_idle_seconds: float = 60.0  # pooled upstream connections close after this idle time
    # An upstream not usable within this (TCP, TLS, HTTP/2 SETTINGS) fails the attempt with
    # connection-error, which retry policies retry elsewhere (Envoy's connect_timeout).
    connect_timeout_seconds: float = 5.0
    # Pooled HTTP/2 connections to other meshds with requests in flight: PING after this
    # long without a byte from the peer, and close (retrying its requests) when the PING is
    # not answered within as long again. 0 turns it off.
    ping_seconds: float = 2.0

    @staticmethod
    def load(path: str) -> "RuntimeConfig":
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
        apps = []
        for a in doc.get("apps", []):
            apps.append(LocalApp(
                mesh=a["mesh"], virtual_node=a["virtualNode"], port=int(a["port"]),
                address=a.get("address", "127.0.0.1"), instance_id=a.get("instanceId", ""),
                egress=a.get("egress", ""), egress_http=a.get("egressHttp", ""), protocol=a.get("protocol", "http2"),
                backends=[BackendPort(int(b["port"]), b["virtualService"], b.get("protocol", "http2"))
                          for b in a.get("backends", [])]))
        gateways = [GatewayConfig(mesh=g["mesh"], virtual_gateway=g["virtualGateway"],
                                  address=g.get("address", "0.0.0.0")) for g in doc.get("gateways", [])]
        return RuntimeConfig(apps=apps, gateways=gateways, ingress=doc.get("ingress", "127.0.0.1:15443"),
                             ingress_http=doc.get("ingressHttp", ""),
                             advertise=doc.get("advertise", ""), drain_seconds=float(doc.get("drainSeconds", 5.0)),
                             connect_timeout_seconds=float(doc.get("connectTimeoutSeconds", 5.0)),
                             ping_seconds=float(doc.get("pingSeconds", 2.0)))


def _split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class NodeTls:
    """A virtual node's TLS contexts: the ingress's server side, the egress's client side."""

    server: object
    client: object
    identity: str
    client_http: object = None
    client_tcp: object = None
    chain_pem: bytes = b""
    key_pem: bytes = b""
    bundle_pem: bytes = b""


class WorkloadCerts:
    """TLS contexts for the virtual nodes this meshd serves, renewed before they expire.

    `sign(identity, csr_pem) -> (chain_pem, bundle_pem)` is given by the composition root:
    local signing with the cluster key, or SignCertificate through a signer's admin API.
    """

    def __init__(self, trust_domain: str, sign: Callable[[str, bytes], tuple[bytes, bytes]], *,
                 clock: Callable[[], float] = time.time):
        self.trust_domain = trust_domain
        self.sign = sign
        self.clock = clock
        self._certs: dict[tuple[str, str], tuple[NodeTls, float]] = {}
        self.issued = 0

    def renew_due(self) -> bool:
        """Renew every certificate past two thirds of its life; True when any was renewed
        (cached upstream targets then have to pick the new client contexts up)."""
        now = self.clock()
        renewed = False
        for key, (_, renew_at) in list(self._certs.items()):
            if now >= renew_at:
                self.contexts(*key)
                renewed = True
        return renewed

    def contexts(self, mesh: str, node: str, kind: str = spiffe.WORKLOAD) -> "NodeTls":
        """(server context, client context) for `node` (a virtual gateway's name with kind
        spiffe.GATEWAY), issuing or renewing when due."""
        key = (mesh, node, kind)
        now = self.clock()
        got = self._certs.get(key)
        if got is not None and now < got[1]:
            return got[0]
        make_id = spiffe.gateway_id if kind == spiffe.GATEWAY else spiffe.workload_id
        identity = make_id(self.trust_domain, mesh, node).uri
        key_pem, csr_pem = make_csr(identity)
        chain, bundle = self.sign(identity, csr_pem)
        leaf = x509.load_pem_x509_certificate(chain)
        lifetime = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds()
        # Two thirds into the lifetime, on this object's clock: remaining life minus a third.
        remaining = leaf.not_valid_after_utc.timestamp() - time.time()
        renew_at = now + remaining - lifetime / 3
        server = server_context(chain, key_pem, bundle, alpn=("h2", "http/1.1"))
        clients = {}
        for name, alpn in (("h2", ("h2",)), ("http", ("http/1.1",)), ("tcp", ())):
            c = client_context(chain, key_pem, bundle, alpn=alpn)
            # Verify the target's identity in the handshake: its DNS name against server_hostname.
            c.check_hostname = True
            clients[name] = c
        pair = NodeTls(server, clients["h2"], identity, clients["http"], clients["tcp"], chain, key_pem, bundle)
        self._certs[key] = (pair, renew_at)
        self.issued += 1
        log.info("workload certificate issued", extra={"identity": identity})
        return pair


class _Load:
    """Requests this meshd has in flight to one (mesh, target node), against the node's
    connection-pool limit; outlives table generations (their requests end under the next)."""

    __slots__ = ("n",)

    def __init__(self):
        self.n = 0


class _Binding:
    """What one routing outcome (virtual service, route, endpoint) means for one caller in
    one generation of the table: whether the caller may call the service, the Target, the
    metric series and the target node's load and limit. Made by the first request with
    that outcome, then one dict lookup per request until the next generation."""

    __slots__ = ("caller", "live", "allowed", "target", "series", "load", "limit")

    def __init__(self, caller, live, allowed, target, series, load, limit):
        self.caller = caller
        self.live = live
        self.allowed = allowed
        self.target = target
        self.series = series
        self.load = load
        self.limit = limit


class _Caller:
    """One calling listener's routing state: an app's egress (HTTP/2 and gRPC, or HTTP/1.1),
    or a gateway listener; its bindings for the live generation of its mesh's table."""

    __slots__ = ("app", "http", "live", "bindings")

    def __init__(self, app, http: bool):
        self.app = app      # a LocalApp, or the GatewayConfig of a gateway listener
        self.http = http    # HTTP/1.1: its requests go to the HTTP/1.1 ingress
        self.live = None
        self.bindings: dict[tuple, _Binding] = {}


class _Admission:
    """The ingress's verdict on one (local instance, caller certificate, service) within one
    generation of the mesh's table: the caller's name for metrics, the series, and the
    Refusal or the Target of the local instance. Made by the first such request."""

    __slots__ = ("live", "app", "source", "series", "answer")

    def __init__(self, live, app, source, series, answer):
        self.live = live
        self.app = app
        self.source = source
        self.series = series
        self.answer = answer


# Bindings kept per caller and generation: the table's (service, route, endpoint) outcomes
# are bounded by the configuration, but endpoints churn; past this the cache starts over.
_MAX_BINDINGS = 4096


class MeshRuntime:
    """Listeners, hooks and local instances of one meshd's data plane."""

    def __init__(self, config: RuntimeConfig, *, view: MeshView, certs: WorkloadCerts,
                 register: Callable[..., admin_pb2.Instance], deregister: Callable[[str, str, str], None],
                 watch: Callable[[Callable[[], bool]], Iterator[admin_pb2.WatchResponse]], host_name: str,
                 claim_gateway: Callable[[str, str], None] = lambda mesh, gateway: None,
                 observe: Observer | None = None):
        self.config = config
        self.observe = observe or Observer(Metrics(version="", host=host_name))
        self.view = view
        self.certs = certs
        self.register = register
        self.deregister = deregister
        self.watch_source = watch
        self.host_name = host_name
        self.loop = uvloop.new_event_loop()
        self.engines: list[Engine] = []
        self.ingress: Engine | None = None
        self.addresses: dict[str, str] = {}
        self._loads: dict[tuple[str, str], _Load] = {}
        self._admissions: dict[tuple, _Admission] = {}
        self._targets: dict[tuple, Target] = {}
        self._local: dict[str, LocalApp] = {}  # "mesh/node/instance" -> app
        self._peer_ids: dict[bytes, str | None] = {}
        self._file_contexts: dict[tuple, object] = {}
        self._file_cert_names: dict[str, set[str]] = {}
        self._active = True
        self._stopping = threading.Event()
        self._config_changed = threading.Event()  # a new configuration was applied
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        # Per caller, the virtual services its DROP_ALL admission allows; rebuilt per config.
        self._declared: dict[tuple, frozenset[str]] = {}
        self.gateways = GatewayListeners(self, config.gateways, claim=claim_gateway)

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> "MeshRuntime":
        self._thread = threading.Thread(target=self.loop.run_forever, name="dataplane", daemon=True)
        self._thread.start()
        # The first snapshot before any listener: apps waiting for a restarting meshd connect
        # the moment its egress listens, and without a table they would get no_config.
        self._synced = threading.Event()
        self._watcher = threading.Thread(target=self._pump, name="config-watch", daemon=True)
        self._watcher.start()
        if not self._synced.wait(FIRST_SNAPSHOT_WAIT_SECONDS):
            log.warning("no configuration snapshot yet; serving without one",
                        extra={"waited_s": FIRST_SNAPSHOT_WAIT_SECONDS})
        self._call(self._start_listeners())
        self.health = HealthChecker(self._health_changed)
        self._call(self.health.start())
        self.loop.call_soon_threadsafe(self._renew_certs)
        self._unregistered = list(self.config.apps)
        self._register_pending()
        self._registrar = supervised("registrar", self._registrar_loop, self._stopping)
        return self

    def _call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start_listeners(self) -> None:
        host, port = _split(self.config.ingress)
        opts = {"loop": self.loop, "connect_timeout": self.config.connect_timeout_seconds}
        self.ingress = Engine(self._ingress_decide, **opts, complete=self.observe.end)
        ingress_ssl = self._ingress_ssl()
        srv = await self.ingress.listen(host, port, ssl=ingress_ssl)
        self.addresses["ingress"] = f"{host}:{srv.sockets[0].getsockname()[1]}"
        self.engines.append(self.ingress)
        h1_host, h1_port = _split(self.config.ingress_http) if self.config.ingress_http else (host, 0)
        self.ingress_http = H1Engine(self._ingress_decide, **opts, complete=self.observe.end)
        srv = await self.ingress_http.listen(h1_host, h1_port, ssl=ingress_ssl)
        self.addresses["ingress_http"] = f"{h1_host}:{srv.sockets[0].getsockname()[1]}"
        self.engines.append(self.ingress_http)
        for app in self.config.apps:
            if app.protocol == "tcp":
                # A TCP app gets an ingress port of its own: the port names the instance.
                tcp_in = TcpEngine(self._tcp_ingress_decide(app), **opts, complete=self.observe.end)
                srv = await tcp_in.listen(host, 0, ssl=ingress_ssl)
                self.addresses[f"ingress_tcp:{app.virtual_node}:{app.port}"] = f"{host}:{srv.sockets[0].getsockname()[1]}"
                self.engines.append(tcp_in)
            h2_backends = [b for b in app.backends if b.protocol == "http2"]
            if app.egress or h2_backends:
                await self._egress_listener(
                    Engine(self._egress_decide(app), self._retry, **opts, complete=self._complete,
                           upstream_idle_timeout=self.config.upstream_idle_seconds,
                           ping_interval=self.config.ping_seconds, ping_timeout=self.config.ping_seconds),
                    app.egress, h2_backends, f"egress:{app.virtual_node}")
            http_backends = [b for b in app.backends if b.protocol == "http"]
            if app.egress_http or http_backends:
                await self._egress_listener(
                    H1Engine(self._egress_decide(app, http=True), self._retry, **opts,
                             complete=self._complete, upstream_idle_timeout=self.config.upstream_idle_seconds),
                    app.egress_http, http_backends, f"egress_http:{app.virtual_node}")
            tcp_backends = [b for b in app.backends if b.protocol == "tcp"]
            if tcp_backends:
                tcp = TcpEngine(self._tcp_decide(app), **opts, complete=self.observe.end)
                for b in tcp_backends:
                    await tcp.listen("127.0.0.1", b.port)
                self.engines.append(tcp)
        await self.gateways.sync()

    def _renew_certs(self) -> None:
        """Every 30 s: renew workload certificates that are due, in the background of the loop.
        New handshakes use the new certificates; connections already open keep theirs."""
        try:
            if self.certs.renew_due():
                self._targets.clear()
        except Exception as err:  # noqa: BLE001 - keep the current certificates, try again later
            log.warning("workload certificate renewal failed", extra={"error": str(err)})
        if self._active:
            self.loop.call_later(30.0, self._renew_certs)

    async def _egress_listener(self, engine, address: str, backends: list[BackendPort], name: str) -> None:
        """An app's egress: its authority-routed address (when given) and its backend ports."""
        h, p = _split(address or "127.0.0.1:0")
        srv = await engine.listen(h, p)
        if address:
            self.addresses[name] = f"{h}:{srv.sockets[0].getsockname()[1]}"
        for b in backends:
            await engine.listen(h, b.port)
        self.engines.append(engine)

    def _registrar_loop(self) -> None:
        # meshd may start before its apps' virtual nodes are applied: keep trying, bounded
        # only by the runtime's life, and say why while it waits. The wait doubles up to
        # REGISTER_RETRY_MAX_S, so a host configured for a mesh that does not exist does not
        # hammer etcd; a configuration change (the mesh or node may be there now) retries at
        # once and starts the backoff over.
        wait = REGISTER_RETRY_FIRST_S
        while self._unregistered and not self._stopping.is_set():
            if self._config_changed.wait(wait):
                self._config_changed.clear()
                wait = REGISTER_RETRY_FIRST_S
            else:
                wait = min(wait * 2, REGISTER_RETRY_MAX_S)
            if self._stopping.is_set():
                return
            self._register_pending()

    def _register_pending(self) -> None:
        for app in list(self._unregistered):
            try:
                self._register(app)
                self._unregistered.remove(app)
            except Exception as err:  # noqa: BLE001 - e.g. the virtual node is not applied yet
                log.info("instance not registered yet", extra={"node": app.virtual_node, "reason": str(err)})

    def _attributes(self, app: LocalApp) -> dict[str, str]:
        """Where other meshds reach this instance: the ingress per protocol, at the
        advertised host (the ports are this meshd's own)."""
        adv_host = _split(self.config.advertise)[0] if self.config.advertise else None

        def at(addr: str) -> str:
            return f"{adv_host}:{_split(addr)[1]}" if adv_host else addr
        attrs = {INGRESS_ATTRIBUTE: self.config.advertise or self.addresses["ingress"],
                 INGRESS_HTTP_ATTRIBUTE: at(self.addresses["ingress_http"])}
        tcp = self.addresses.get(f"ingress_tcp:{app.virtual_node}:{app.port}")
        if tcp:
            attrs[INGRESS_TCP_ATTRIBUTE] = at(tcp)
        return attrs

    def _register(self, app: LocalApp) -> None:
        iid = app.instance_id or f"{self.host_name}-{app.virtual_node}-{app.port}"
        app.instance_id = iid
        self.register(mesh_name=app.mesh, virtual_node_name=app.virtual_node, instance_id=iid,
                      address=app.address, port=app.port, attributes=self._attributes(app))
        self._local[f"{app.mesh}/{app.virtual_node}/{iid}"] = app
        self.loop.call_soon_threadsafe(self._sync_health_checks)

    def _pump(self) -> None:
        """Feed Watch responses to the view on the loop thread; resume until stopped."""
        while self._active:
            try:
                for resp in self.watch_source(lambda: self._active):
                    self.loop.call_soon_threadsafe(self._apply, resp)
            except Exception as err:  # noqa: BLE001 - the watch resumes; routing keeps its last table
                log.warning("config watch interrupted; routing on the last table", extra={"error": str(err)})
                time.sleep(0.5)

    def _apply(self, resp) -> None:
        self.view.apply(resp)
        published = self.view.flush()
        if published:
            self._targets.clear()
            self._declared.clear()
            self._sync_health_checks()
            self.gateways.changed()
            self._config_changed.set()
        self.observe.applied(resp, published, self.view)
        if resp.snapshot_done:
            self._synced.set()

    def _sync_health_checks(self) -> None:
        """Run each local instance's App Mesh listener healthCheck; stop checks that went away."""
        for key, app in self._local.items():
            snap = self.view.snapshot(app.mesh)
            node = snap.nodes.get(app.virtual_node) if snap else None
            policy = next((lst.health_check for lst in node.spec.listeners if lst.HasField("health_check")),
                          None) if node is not None else None
            if policy is None:
                if key in self.health.keys():
                    self.health.remove(key)
                continue
            self.health.add(key, app.address, app.port, CheckSpec(
                protocol=policy.protocol, path=policy.path or "/",
                port=policy.port if policy.HasField("port") else None,
                interval_ms=policy.interval_millis, timeout_ms=policy.timeout_millis,
                healthy_threshold=policy.healthy_threshold, unhealthy_threshold=policy.unhealthy_threshold))

    def _health_changed(self, key: str, old: str, new: str, detail: str) -> None:
        """An instance turned HEALTHY or UNHEALTHY: publish it, so every meshd's route table
        drops (or takes back) the instance. The etcd write runs off the loop."""
        app = self._local.get(key)
        if app is None:
            return
        log.info("instance health changed", extra={"instance": key, "from": old, "to": new, "detail": detail})
        self.observe.instance_health(app.mesh, app.virtual_node, app.instance_id, new == "HEALTHY")
        self.loop.run_in_executor(None, lambda: self.register(
            mesh_name=app.mesh, virtual_node_name=app.virtual_node, instance_id=app.instance_id,
            address=app.address, port=app.port, attributes=self._attributes(app), health=new))

    def stop(self, grace: float | None = None) -> None:
        """Drain: deregister local instances first, stop accepting, let in-flight finish."""
        grace = self.config.drain_seconds if grace is None else grace
        for key, app in list(self._local.items()):
            try:
                self.deregister(app.mesh, app.virtual_node, app.instance_id)
            except Exception as err:  # noqa: BLE001 - the lease expires them anyway
                log.warning("could not deregister instance", extra={"instance": key, "error": str(err)})
        self._active = False
        self._stopping.set()
        self._config_changed.set()  # wakes the registrar, which then sees the stop

        async def drain():
            await self.health.stop()
            await asyncio.gather(*(e.drain(grace) for e in self.engines), return_exceptions=True)
            for e in self.engines:
                e.close()
        try:
            self._call(drain(), timeout=grace + 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            if self._thread:
                self._thread.join(5)

    # -- TLS --------------------------------------------------------------------------
    def _ingress_ssl(self):
        """The ingress's server context: SNI names the target node; its certificate answers."""
        import ssl  # noqa: PLC0415

        front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        front.minimum_version = ssl.TLSVersion.TLSv1_2
        front.set_alpn_protocols(["h2"])
        by_name = {}
        for app in self.config.apps:
            name = spiffe.workload_dns_name(self.certs.trust_domain, app.mesh, app.virtual_node)
            by_name[name] = (app.mesh, app.virtual_node)
        pairs = {name: self.certs.contexts(*mn) for name, mn in by_name.items()}
        if pairs:
            first = next(iter(pairs.values()))
            # The front needs a certificate of its own for handshakes without a known SNI.
            front = first.server

        def select(ssl_obj, server_name, _ctx):
            name = (server_name or "").lower()
            mn = by_name.get(name) or self._file_cert_owner(name)
            if mn is None:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            ssl_obj.context = self._server_context(*mn)
            return None
        front.sni_callback = select
        return front

    # -- App Mesh `file` certificate sources ---------------------------------------------
    def _listener_tls(self, mesh: str, node: str):
        snap = self.view.snapshot(mesh)
        spec = snap.nodes.get(node) if snap else None
        for lst in (spec.spec.listeners if spec is not None else ()):
            if lst.HasField("tls"):
                return lst.tls
        return None

    def _server_context(self, mesh: str, node: str):
        """The ingress's context for `node`: the mesh CA certificate, or the listener's App
        Mesh `file` certificate, verifying callers with the listener's `file` trust when set."""
        base = self.certs.contexts(mesh, node)
        tls = self._listener_tls(mesh, node)
        cert = tls.certificate.file if tls is not None and tls.certificate.HasField("file") else None
        trust = (tls.validation.trust.file if tls is not None and tls.HasField("validation")
                 and tls.validation.trust.HasField("file") else None)
        if cert is None and trust is None:
            return base.server
        key = ("server", mesh, node, cert.certificate_chain if cert else "", cert.private_key if cert else "",
               trust.certificate_chain if trust else "")
        ctx = self._file_contexts.get(key)
        if ctx is None:
            chain = _read(cert.certificate_chain) if cert else base.chain_pem
            key_pem = _read(cert.private_key) if cert else base.key_pem
            bundle = (_read(trust.certificate_chain) + b"\n" + base.bundle_pem) if trust else base.bundle_pem
            ctx = self._file_contexts[key] = server_context(chain, key_pem, bundle, alpn=("h2", "http/1.1"))
        return ctx

    def _file_cert_owner(self, server_name: str):
        """The local node whose App Mesh `file` listener certificate carries `server_name`
        (a caller verifying the operator's PKI asks for that name, not the mesh's)."""
        for app in self.config.apps:
            tls = self._listener_tls(app.mesh, app.virtual_node)
            if tls is None or not tls.certificate.HasField("file"):
                continue
            path = tls.certificate.file.certificate_chain
            names = self._file_cert_names.get(path)
            if names is None:
                names = self._file_cert_names[path] = {n.lower() for n in _all_sans(
                    x509.load_pem_x509_certificate(_read(path)).public_bytes(Encoding.DER))}
            if server_name in names:
                return app.mesh, app.virtual_node
        return None

    def _client_policy(self, app: LocalApp, service: str):
        """The caller's App Mesh client policy TLS for `service`: the backend's, else backendDefaults."""
        snap = self.view.snapshot(app.mesh)
        kind, name = app.principal
        node = (snap.gateways if kind == spiffe.GATEWAY else snap.nodes).get(name) if snap else None
        if node is None:
            return None
        for b in getattr(node.spec, "backends", ()):  # a virtual gateway has backendDefaults only
            vs = b.virtual_service
            if vs.virtual_service_name == service and vs.HasField("client_policy") and vs.client_policy.HasField("tls"):
                return vs.client_policy.tls
        bd = node.spec.backend_defaults
        if node.spec.HasField("backend_defaults") and bd.HasField("client_policy") and bd.client_policy.HasField("tls"):
            return bd.client_policy.tls
        return None

    def _client_context(self, app: LocalApp, service: str, target_node: str, alpn: tuple[str, ...]):
        """(context, server_hostname) for calling `target_node`. With the caller's client policy
        naming `file` sources, those are used as-is (App Mesh semantics); the expected server
        name is then the policy's first DNS subjectAlternativeName, and with none given, any
        certificate from the policy's trust is accepted."""
        kind, name = app.principal
        base = self.certs.contexts(app.mesh, name, kind)
        dns = spiffe.workload_dns_name(self.certs.trust_domain, app.mesh, target_node)
        policy = self._client_policy(app, service)
        cert = policy.certificate.file if policy is not None and policy.certificate.HasField("file") else None
        trust = (policy.validation.trust.file if policy is not None and policy.HasField("validation")
                 and policy.validation.trust.HasField("file") else None)
        if cert is None and trust is None:
            return {("h2",): base.client, ("http/1.1",): base.client_http}.get(alpn, base.client_tcp), dns
        sans = [n for n in policy.validation.subject_alternative_names.match.exact] if policy.HasField("validation") else []
        name = next((n for n in sans if not n.startswith("spiffe://")), None)
        key = ("client", alpn, app.mesh, app.principal, service, cert.certificate_chain if cert else "",
               trust.certificate_chain if trust else "", name)
        ctx = self._file_contexts.get(key)
        if ctx is None:
            chain = _read(cert.certificate_chain) if cert else base.chain_pem
            key_pem = _read(cert.private_key) if cert else base.key_pem
            bundle = (_read(trust.certificate_chain) + b"\n" + base.bundle_pem) if trust else base.bundle_pem
            ctx = client_context(chain, key_pem, bundle, alpn=alpn)
            ctx.check_hostname = name is not None
            self._file_contexts[key] = ctx
        return ctx, (name or dns)

    def _peer_identity(self, der: bytes | None) -> str | None:
        if der is None:
            return None
        got = self._peer_ids.get(der, False)
        if got is not False:
            return got
        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]
        except x509.ExtensionNotFound:
            uris = []
        ident = uris[0] if len(uris) == 1 else None
        if len(self._peer_ids) > 10_000:
            self._peer_ids.clear()
        self._peer_ids[der] = ident
        return ident

    def open_connections(self) -> int:
        """Downstream connections open on every listener of this data plane."""
        return sum(e.downstream_connections for e in self.engines)

    # -- egress -----------------------------------------------------------------------
    def in_flight(self) -> dict[str, int]:
        """Requests routed and not yet completed, per "mesh/target node"."""
        return {f"{mesh}/{node}": load.n for (mesh, node), load in self._loads.items()}

    @staticmethod
    def caller(app, http: bool) -> _Caller:
        """The routing state of one listener calling as `app` (a LocalApp, or a gateway's
        GatewayConfig), for `_route`."""
        return _Caller(app, http)

    def _egress_decide(self, app: LocalApp, http: bool = False):
        backend_ports = {b.port: b.virtual_service for b in app.backends}
        caller = _Caller(app, http)
        begin, route = self.observe.begin, self._route
        mesh, node = app.mesh, app.virtual_node

        def decide(head):
            x = begin(head, EGRESS, mesh, node)
            port = head.local_port
            authority = backend_ports[port] if port in backend_ports else head.authority
            return route(head, caller, authority, 0, head.path, x)
        return decide

    def _route(self, head, caller: _Caller, authority: str, port: int, path: str, x):
        """Route one request of `caller` to the virtual service `authority` names: the route,
        target node and endpoint, the Target at that endpoint's ingress, and the state the
        retry and completion hooks use (on `x`, the request's Exchange from Observer.begin).
        The per-request path: the router's decision, then one lookup of its binding."""
        live = self.view.live(caller.app.mesh)
        if live is None:
            return REFUSALS["no_config"]
        if live is not caller.live:
            caller.live, caller.bindings = live, {}
        router = live.router
        now = time.monotonic_ns()
        d = router.decide(C.PROTO_HTTP if caller.http else (C.PROTO_GRPC if head.grpc else C.PROTO_HTTP2),
                          authority, port, head.method, head.scheme, path,
                          head.headers if router.matches_headers else None, now)
        if d.status != C.ROUTED:
            return REFUSALS[d.reason]
        ep = d.endpoint
        b = caller.bindings.get((d.service, d.route, ep))
        if b is None:
            b = self._bind(caller, live, d, x)
            if b.__class__ is Refusal:
                router.result(d, C.RESULT_CONNECT_FAILURE, 0, now)
                return b
        self.observe.bound(x, b.series, d.target, ep.id)
        if not b.allowed:
            router.result(d, C.RESULT_HTTP, 403, now)
            return REFUSALS["not_a_backend"]
        load = b.load
        if load.n >= b.limit:
            router.result(d, C.RESULT_HTTP, 503, now)
            return REFUSALS["pool_overflow"]
        load.n += 1
        x.decision, x.binding = d, b
        return b.target

    def _bind(self, caller: _Caller, live, d, x):
        """The binding of decision `d` for `caller` (kept), or the Refusal when its endpoint
        cannot be reached (not kept: the instance may yet appear)."""
        app = caller.app
        allowed = self._allowed(live, app, d.service)
        target = None
        if allowed:
            target = self._protocol_target(live, app, d, "http") if caller.http else self._target(live, app, d)
            if target.__class__ is Refusal:
                self.observe.routed(x, d.service, d.route, d.target, d.endpoint.id)
                return target
        load = self._loads.get((app.mesh, d.target))
        if load is None:
            load = self._loads[(app.mesh, d.target)] = _Load()
        b = _Binding(caller, live, allowed, target, self.observe.series(x, d.service, d.route, d.target), load,
                     live.router.node_limits(d.target)[2])
        if len(caller.bindings) >= _MAX_BINDINGS:
            caller.bindings.clear()
        caller.bindings[(d.service, d.route, d.endpoint)] = b
        return b

    def _tcp_decide(self, app: LocalApp):
        backend_ports = {b.port: b.virtual_service for b in app.backends if b.protocol == "tcp"}

        def decide(head):
            x = self.observe.begin(head, TCP, app.mesh, app.virtual_node)
            live = self.view.live(app.mesh)
            if live is None:
                return self._refuse("no_config")
            service = backend_ports.get(head.local_port, "")
            now = time.monotonic_ns()
            d = live.router.decide(C.PROTO_TCP, service, 0, "", "", "", None, now)
            if d.status != C.ROUTED:
                return self._refuse(d.reason)
            self.observe.routed(x, d.service, d.route, d.target)
            allowed = self._allowed(live, app, d.service)
            live.router.result(d, C.RESULT_TCP_DONE, 0, now)
            if not allowed:
                return self._refuse("not_a_backend")
            t = self._protocol_target(live, app, d, "tcp")
            return t if isinstance(t, Refusal) else TcpTarget(t)
        return decide

    def _tcp_ingress_decide(self, app: LocalApp):
        """A TCP app's own ingress port: every connection goes to the app. It is written to
        the app's access log but not counted again (the caller's meshd counts it, direction tcp)."""
        target = Target(app.address, app.port)

        def decide(head):
            self.observe.begin(head, INGRESS, app.mesh, app.virtual_node, counted=False)
            return self._admit(app, head.peer_cert, None)[1] or target
        return decide

    def _protocol_target(self, live, app: LocalApp, d, protocol: str):
        """A Target at the chosen instance's meshd ingress for `protocol` (http or tcp)."""
        snap = self.view.snapshot(app.mesh)
        inst = (snap.instances.get(d.target, {}) if snap else {}).get(d.endpoint.id)
        attr = INGRESS_HTTP_ATTRIBUTE if protocol == "http" else INGRESS_TCP_ATTRIBUTE
        via = inst.attributes.get(attr) if inst is not None else None
        if inst is None:
            return self._refuse("no_endpoint")
        if not via:  # an instance without a meshd: reached directly, in plaintext
            return Target(inst.address, inst.port,
                          retry_statuses=d.retry.http_codes if protocol == "http" and d.retry is not None else None)
        key = (live.generation, protocol, app.mesh, app.principal, d.target, d.endpoint.id, via)
        t = self._targets.get(key)
        if t is None:
            host, port = _split(via)
            ctx, hostname = self._client_context(app, d.service or "", d.target,
                                                 ("http/1.1",) if protocol == "http" else ())
            t = Target(host, port, ssl=ctx, server_hostname=hostname,
                       headers=((INSTANCE_HEADER, f"{app.mesh}/{d.target}/{d.endpoint.id}"),
                                (SERVICE_HEADER, d.service or "")) if protocol == "http" else (),
                       timeout=d.per_request_timeout_ns / 1e9 if protocol == "http" else 0.0,
                       retry_statuses=d.retry.http_codes if protocol == "http" and d.retry is not None else None)
            self._targets[key] = t
        return t

    def _allowed(self, live, app: LocalApp, service) -> bool:
        snap = self.view.snapshot(app.mesh)
        mesh = snap.mesh if snap is not None else None
        if mesh is None or mesh.spec.egress_filter.type != "DROP_ALL":
            return True
        if app.principal[0] == spiffe.GATEWAY:
            # A gateway only calls the virtual service its matched gateway route targets.
            return True
        node = snap.nodes.get(app.virtual_node)
        if node is None:
            return False
        return any(b.virtual_service.virtual_service_name == service for b in node.spec.backends)

    def _target(self, live, app: LocalApp, d) -> Target:
        ep = d.endpoint
        key = (live.generation, app.mesh, app.principal, d.target, ep.id, ep.address, ep.port,
               d.per_request_timeout_ns, d.per_try_timeout_ns, d.route, d.service)
        t = self._targets.get(key)
        if t is not None:
            return t
        retry = d.retry
        # Through a meshd ingress (mTLS) when the instance names one; else directly, in plaintext.
        snap = self.view.snapshot(app.mesh)
        inst = (snap.instances.get(d.target, {}) if snap else {}).get(ep.id)
        via_ingress = inst is not None and INGRESS_ATTRIBUTE in inst.attributes
        ssl_ctx, hostname = self._client_context(app, d.service or "", d.target, ("h2",)) if via_ingress else (None, None)
        t = Target(ep.address, ep.port, ssl=ssl_ctx, server_hostname=hostname,
                   headers=((INSTANCE_HEADER, f"{app.mesh}/{d.target}/{ep.id}"), (SERVICE_HEADER, d.service or "")),
                   timeout=d.per_request_timeout_ns / 1e9,
                   try_timeout=d.per_try_timeout_ns / 1e9 if retry is not None and retry.max_retries else 0.0,
                   retry_statuses=retry.http_codes if retry is not None else None,
                   retry_grpc=retry.grpc_codes if retry is not None else None)
        self._targets[key] = t
        return t

    def _refuse(self, reason: str) -> Refusal:
        return REFUSALS[reason]

    _FAILURE_KINDS = {"connect_error": C.RESULT_CONNECT_FAILURE, "refused_stream": C.RESULT_REFUSED_STREAM,
                      "reset": C.RESULT_RESET, "goaway": C.RESULT_RESET, "timeout": C.RESULT_TIMEOUT}

    def _retry(self, head, failure):
        x = head.context
        b = x.binding if x is not None else None
        if b is None:
            return None
        if failure.kind == "status":
            if failure.grpc_status >= 0:
                rd = self._feed(x, b, C.RESULT_GRPC, failure.grpc_status)
            else:
                rd = self._feed(x, b, C.RESULT_HTTP, failure.http_status)
        else:
            rd = self._feed(x, b, self._FAILURE_KINDS.get(failure.kind, C.RESULT_RESET), 0)
        if rd.action != C.ACT_RETRY:
            x.fed = True  # this attempt's result is in; the engine answers with it
            return None
        self.observe.retried(x, failure.kind if failure.kind != "status" else
                             f"grpc_{failure.grpc_status}" if failure.grpc_status >= 0 else f"http_{failure.http_status}")
        # The router chose another endpoint, in the generation the request started in.
        caller, d = b.caller, x.decision
        if caller.http:
            return self._protocol_target(b.live, caller.app, d, "http")
        return self._target(b.live, caller.app, d)

    def _feed(self, x, b: _Binding, kind: int, code: int):
        """Hand an attempt's result to the router; count an outlier ejection it caused."""
        d = x.decision
        ep = d.endpoint
        ejected = ep.times_ejected if ep is not None else 0
        rd = b.live.router.result(d, kind, code, time.monotonic_ns())
        if ep is not None and ep.times_ejected != ejected:
            self.observe.ejected(x.mesh, d.target)
        return rd

    def _complete(self, head, target, status, grpc_status, reason, duration_ns) -> None:
        self.observe.end(head, target, status, grpc_status, reason, duration_ns)
        x = head.context
        b = x.binding if x is not None else None
        if b is None:
            return
        x.binding = None
        b.load.n -= 1
        if x.fed or x.decision.state != C.ST_IN_FLIGHT:
            return
        if reason == "request_timeout":
            kind, code = C.RESULT_TIMEOUT, 0
        elif reason == "reset" or reason == "connect_error":
            kind, code = C.RESULT_RESET, 0
        elif grpc_status >= 0:
            kind, code = C.RESULT_GRPC, grpc_status
        else:
            kind, code = C.RESULT_HTTP, status
        self._feed(x, b, kind, code)

    # -- ingress ----------------------------------------------------------------------
    def _ingress_decide(self, head):
        x = self.observe.begin(head, INGRESS)
        dest = head.header(INSTANCE_HEADER) or ""
        app = self._local.get(dest)
        if app is None:
            return REFUSALS["unknown_instance"]
        x.mesh, x.local = app.mesh, app.virtual_node
        service = head.header(SERVICE_HEADER) or ""
        key = (dest, head.peer_cert, service)
        a = self._admissions.get(key)
        if a is None or a.live is not self.view.live(app.mesh) or a.app is not app:
            a = self._admission(key, app, head.peer_cert, service, x)
        x.source = a.source
        self.observe.bound(x, a.series, app.virtual_node, app.instance_id)
        return a.answer

    def _admission(self, key: tuple, app: LocalApp, peer_cert: bytes | None, service: str, x) -> _Admission:
        """Check a caller at the ingress (`_admit`) and keep the verdict for this generation
        of the mesh's table: a connection's requests present one certificate object."""
        live = self.view.live(app.mesh)
        sid, refusal = self._admit(app, peer_cert, service)
        snap = self.view.snapshot(app.mesh)
        # The caller names the service: a label only when the mesh has it (bounded series).
        x.source = (sid.name if sid.kind == spiffe.GATEWAY else sid.node) if sid is not None else UNKNOWN
        series = self.observe.series(x, service if snap is not None and service in snap.services else UNKNOWN, "",
                                     app.virtual_node)
        a = _Admission(live, app, x.source, series, refusal or Target(app.address, app.port))
        if len(self._admissions) >= _MAX_BINDINGS:
            self._admissions.clear()
        self._admissions[key] = a
        return a

    def _admit(self, app: LocalApp, peer_cert: bytes | None, service: str | None):
        """May this caller reach `app` through the ingress? (caller's SpiffeId or None,
        a Refusal or None). `service` is the virtual service the caller routed by; None for
        a TCP connection, which names none: under DROP_ALL the caller must then declare a
        backend whose traffic can reach the app's node."""
        tls = self._listener_tls(app.mesh, app.virtual_node)
        if tls is not None and tls.HasField("validation") and tls.validation.trust.HasField("file"):
            # The operator's own PKI (App Mesh `file` trust) verified the caller in the
            # handshake; its subjectAlternativeNames, when given, must name the caller.
            exact = list(tls.validation.subject_alternative_names.match.exact)
            if exact and not set(exact) & set(_all_sans(peer_cert)):
                return None, REFUSALS["identity_refused"]
            return None, None
        caller = self._peer_identity(peer_cert)
        try:
            sid = spiffe.parse(caller) if caller else None
        except Exception:  # noqa: BLE001 - an unparsable identity is refused below
            sid = None
        if (sid is None or sid.kind not in spiffe.MESH_KINDS or sid.mesh != app.mesh
                or not self._ingress_allows(app, caller)):
            return None, REFUSALS["identity_refused"]
        snap = self.view.snapshot(app.mesh)
        if snap is None or snap.mesh is None or snap.mesh.spec.egress_filter.type != "DROP_ALL":
            return sid, None
        if service is None:
            ok = bool(self._allowed_services(snap, sid) & self._allowed_services(snap, None, app.virtual_node))
        else:
            ok = service in self._allowed_services(snap, sid)
        return sid, None if ok else REFUSALS["not_a_backend"]

    def _allowed_services(self, snap, sid, node: str = "") -> frozenset[str]:
        """Under DROP_ALL: the services caller `sid` may call (a node's backends; a gateway's
        gateway-route targets), or with sid None those whose traffic reaches local `node`.
        Kept until the next configuration is published, not rebuilt per request."""
        key = (snap.name, sid.kind, sid.name or sid.node) if sid is not None else (snap.name, "reaching", node)
        got = self._declared.get(key)
        if got is None:
            if sid is None:
                got = services_reaching(snap, node)
            elif sid.kind == spiffe.GATEWAY:
                got = gateway_targets(snap, sid.name)
            else:
                caller = snap.nodes.get(sid.node)
                got = frozenset(b.virtual_service.virtual_service_name
                                for b in caller.spec.backends) if caller is not None else frozenset()
            self._declared[key] = got
        return got

    def _ingress_allows(self, app: LocalApp, caller: str) -> bool:
        """App Mesh listener tls.validation.subjectAlternativeNames.match.exact, when set."""
        snap = self.view.snapshot(app.mesh)
        node = snap.nodes.get(app.virtual_node) if snap else None
        if node is None:
            return True
        for lst in node.spec.listeners:
            v = lst.tls.validation if lst.HasField("tls") and lst.tls.HasField("validation") else None
            if v is not None and v.HasField("subject_alternative_names"):
                exact = list(v.subject_alternative_names.match.exact)
                if exact and caller not in exact:
                    return False
        return True


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _all_sans(der: bytes | None) -> list[str]:
    if der is None:
        return []
    try:
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in san]


__all__ = ["LocalApp", "MeshRuntime", "RuntimeConfig", "WorkloadCerts"]
