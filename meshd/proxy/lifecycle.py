"""The data plane of one meshd, put together: listeners opened and drained, local instances
registered and health-checked, configuration from the watch applied to the view, workload
certificates renewed.

Everything per request runs on one uvloop thread (the ingress, egress and gateway hooks);
configuration arrives from the watch thread via `call_soon_threadsafe`, so routers are only
touched on the loop. Certificates are signed and `file` sources re-read on a thread of their
own (signing may wait on etcd or a remote signer); the loop is only told that credentials
changed, and drops what holds the old contexts.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import queue
import sys
import threading
import time
from typing import Callable, Iterator

import uvloop

from meshd.compile import INGRESS_ATTRIBUTE, Scope
from meshd.dataplane import Engine, H1Engine, TcpEngine
from meshd.health import CheckSpec, HealthChecker
from meshd.loops import supervised
from meshd.meshview import MeshView
from meshd.observe import Metrics, Observer
from meshd.proxy.config import (
    INGRESS_HTTP_ATTRIBUTE, INGRESS_TCP_ATTRIBUTE, BackendPort, LocalApp, RuntimeConfig, split_address,
)
from meshd.proxy.egress import Egress
from meshd.proxy.gateway import GatewayListeners
from meshd.proxy.ingress import Ingress
from meshd.proxy.discovery import DnsDiscovery, targets as dns_targets
from meshd.proxy.dns import DnsResponder, MeshResolver, resolv_conf_nameservers
from meshd.proxy.intercept import InboundInterceptor, Interceptor, listen_addresses
from meshd.proxy.listeners import Listeners
from meshd.proxy.tls import ProxyTls, WorkloadCerts
from meshd.v1 import admin_pb2

log = logging.getLogger("meshd.proxy")

# How long start() waits for the first configuration snapshot before opening listeners anyway.
FIRST_SNAPSHOT_WAIT_SECONDS = 10.0
# Registration retries of an app whose mesh or virtual node is not there (yet): the first
# after half a second, then doubling up to this cap.
REGISTER_RETRY_FIRST_S = 0.5
REGISTER_RETRY_MAX_S = 5.0
# Configuration changes are compiled once the watch has been quiet this long, and at the
# latest this long after the first change (a burst of writes costs one compile). Istio's
# pilot debounces the same way (PILOT_DEBOUNCE_AFTER, 100 ms). Each compile shares the GIL
# with the data-plane loop: at 20 ms, a change every 50 ms compiled every change and the
# loop stalled over 5 ms about 100 times in 10 s; at 100 ms, 2 to 19 times.
CONFIG_QUIET_SECONDS = 0.1
CONFIG_MAX_DELAY_SECONDS = 0.5
GIL_SWITCH_SECONDS = 0.0005
LOOP_LAG_PERIOD_SECONDS = 0.01
THREADS_FOLLOWED_EVERY = 100  # loop-lag ticks: the threads RunQueueWait counts are refreshed each second
GC_FULL_AFTER = 1000
# A local instance that refused the ingress's connection is probed this often until it listens.
REVIVE_PROBE_SECONDS = 0.5
# The certificate thread wakes when a renewal or retry is due, and at least this often (or
# every twelfth of the shortest certificate life, if shorter) to poll `file` sources.
CERT_CHECK_SECONDS = 30.0
CERT_CHECK_MIN_SECONDS = 0.5
# How often the data plane re-reads `acm/` for imported certificates and trust anchors.
ACM_POLL_SECONDS = 1.0


def scopes_of(config: RuntimeConfig) -> dict[str, Scope]:
    """What a meshd with `config` serves, by mesh (MeshView's scopes): its apps' virtual
    nodes with the services their local backend ports name, and its gateways."""
    meshes = {a.mesh for a in config.apps} | {g.mesh for g in config.gateways}
    return {m: Scope(nodes=frozenset(a.virtual_node for a in config.apps if a.mesh == m),
                     gateways=frozenset(g.virtual_gateway for g in config.gateways if g.mesh == m),
                     backends=frozenset(b.virtual_service for a in config.apps if a.mesh == m for b in a.backends))
            for m in sorted(meshes)}


class MeshRuntime:
    """Listeners, hooks and local instances of one meshd's data plane."""

    def __init__(self, config: RuntimeConfig, *, view: MeshView, certs: WorkloadCerts,
                 register: Callable[..., admin_pb2.Instance], deregister: Callable[[str, str, str], None],
                 watch: Callable[[Callable[[], bool]], Iterator[admin_pb2.WatchResponse]], host_name: str,
                 claim_gateway: Callable[[str, str], None] = lambda mesh, gateway: None,
                 observe: Observer | None = None, acm=None):
        self.config = config
        # meshd.security.acm.AcmCache: ACM-named certificates and trust, re-read every
        # ACM_POLL_SECONDS off the loop (None: specs naming ACM ARNs are not served).
        self.acm = acm
        self.observe = observe or Observer(Metrics(version="", host=host_name))
        self.view = view
        self.certs = certs
        self.register = register
        self.deregister = deregister
        self.watch_source = watch
        self.host_name = host_name
        self.loop = uvloop.new_event_loop()
        self.listeners = Listeners()
        self.ingress: Engine | None = None
        self.tls = ProxyTls(certs, view, config.apps, acm=acm)
        self.egress = Egress(view, self.observe, self.tls)
        self.inbound = Ingress(view, self.observe, self.tls, on_unreachable=self._unreachable)
        self._down: set[str] = set()  # local instances found not listening, until they answer
        self._revivals: set[asyncio.Task] = set()
        self._dns: list = []  # DnsResponders (meshd.proxy.dns), when the config asks for one
        # App Mesh DNS service discovery of the nodes of this host's meshes (meshd.proxy.discovery)
        self.discovery = DnsDiscovery(lambda mesh, node, found: self.loop.call_soon_threadsafe(
            self.view.set_discovered, mesh, node, found))
        self._active = True
        # The run-queue wait of the process's Python threads, for the loop-blocked metrics.
        self._run_queue = RunQueueWait()
        self._dns_cache: dict[str, dict] = {}  # loop side: per mesh, discovery.targets' cache
        self._stopping = threading.Event()
        self._config_changed = threading.Event()  # a new configuration was applied
        self._cert_lock = threading.Lock()  # one renewal pass at a time
        self._thread: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._responses: queue.Queue = queue.Queue()
        self.gateways = GatewayListeners(
            config.gateways, loop=self.loop, view=view, egress=self.egress, observe=self.observe, certs=certs,
            config=config, listeners=self.listeners, active=lambda: self._active, claim=claim_gateway, acm=acm)

    @property
    def addresses(self) -> dict[str, str]:
        """Open listeners by name: `ingress`, `ingress_http`, `egress:<node>`, `gateway:<gw>:<port>`, …"""
        return self.listeners.addresses

    @property
    def engines(self) -> list:
        return self.listeners.engines

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> "MeshRuntime":
        # The config thread compiles route tables beside the data-plane loop; both need the
        # GIL, and a thread that wants it waits up to the switch interval (5 ms by default).
        # 0.5 ms bounds what a compile can cost a request waiting on the loop (stalls over
        # 5 ms under a change stream: 7, 6, 7 in three runs at 1 ms; 2, 2, 7 at 0.5 ms).
        if sys.getswitchinterval() > GIL_SWITCH_SECONDS:
            sys.setswitchinterval(GIL_SWITCH_SECONDS)
        self._thread = threading.Thread(target=self.loop.run_forever, name="dataplane", daemon=True)
        self._thread.start()
        self.loop.call_soon_threadsafe(self._watch_lag)
        self.discovery.start()
        # The local nodes' first certificates, here rather than on the loop: signing may wait
        # on etcd or a remote signer, and the ingress needs them before it listens.
        for app in self.config.apps:
            self.certs.ensure(app.mesh, app.virtual_node)
        # The first snapshot before any listener: apps waiting for a restarting meshd connect
        # the moment its egress listens, and without a table they would get no_config.
        self._synced = threading.Event()
        self._watcher = threading.Thread(target=self._pump, name="config-watch", daemon=True)
        self._watcher.start()
        self._configurer = threading.Thread(target=self._configure, name="config-compile", daemon=True)
        self._configurer.start()
        if not self._synced.wait(FIRST_SNAPSHOT_WAIT_SECONDS):
            log.warning("no configuration snapshot yet; serving without one",
                        extra={"waited_s": FIRST_SNAPSHOT_WAIT_SECONDS})
        if self.acm is not None:
            self._acm_refresh()  # before the listeners: an imported certificate is served at once
        self._call(self._start_listeners())
        # What start-up made (modules, the first tables, TLS contexts) lives as long as the
        # process: moved out of the collector's reach, a full collection no longer walks it.
        # Such a collection holds the GIL throughout: 15-25 ms for a 1,000-route mesh here,
        # which stalled the data-plane loop whenever one ran (PEP 442-era `gc.freeze`, as
        # long-running servers use it).
        gc.freeze()
        # And full collections, which walk everything since, run a hundred times less often
        # (after 1,000 middle-generation collections instead of 10): each compile leaves a
        # table behind that survives, and the default made one every few compiles. Garbage
        # without cycles is freed at once by reference counting either way.
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, GC_FULL_AFTER)
        self.health = HealthChecker(self._health_changed)
        self._call(self.health.start())
        self._cert_thread = supervised("cert-renewal", self._cert_loop, self._stopping)
        if self.acm is not None:
            self._acm_thread = supervised("acm-refresh", self._acm_loop, self._stopping)
        self._unregistered = list(self.config.apps)
        self._register_pending()
        self._registrar = supervised("registrar", self._registrar_loop, self._stopping)
        return self

    def _watch_lag(self) -> None:
        """Every LOOP_LAG_PERIOD_SECONDS: how late this timer ran is how long the loop was
        held up (a compile, a slow hook, GIL contention, or no CPU free on the host); exported
        as loop-lag metrics, and less the run-queue wait of the process's Python threads, the
        loop's and those that take the GIL from it (RunQueueWait), as loop-blocked ones."""
        metrics = self.observe.metrics
        worst = [0.0]
        ticks = [0]
        waits = self._run_queue
        waits.follow_python_threads()

        # The process clock, not loop.time(): uvloop's is whole milliseconds, cached at the
        # start of a loop iteration, which would read a 4.1 ms stall as 5 or a 5.9 ms one as 5.
        def tick(due: float) -> None:
            now = time.monotonic()
            lag = max(0.0, now - due)
            metrics.loop_lag.observe(lag)
            metrics.loop_blocked.observe(max(0.0, lag - waits.since_last()))
            ticks[0] += 1
            if ticks[0] % THREADS_FOLLOWED_EVERY == 0:
                waits.follow_python_threads()  # threads started since (a pool's new worker)
            if lag > worst[0]:
                worst[0] = lag
                metrics.loop_lag_max.set(lag)
            if self._active:
                self.loop.call_later(LOOP_LAG_PERIOD_SECONDS, tick, now + LOOP_LAG_PERIOD_SECONDS)
        self.loop.call_later(LOOP_LAG_PERIOD_SECONDS, tick, time.monotonic() + LOOP_LAG_PERIOD_SECONDS)

    def _call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _engine_options(self) -> dict:
        return {"loop": self.loop, "connect_timeout": self.config.connect_timeout_seconds}

    async def _start_listeners(self) -> None:
        host, port = split_address(self.config.ingress)
        opts = self._engine_options()
        self.ingress = Engine(self.inbound.decide, **opts, complete=self.inbound.complete)
        ingress_ssl = self.tls.ingress_context()
        tls_opts = {"ssl_handshake_timeout": self.config.handshake_timeout_seconds}
        srv = await self.ingress.listen(host, port, ssl=ingress_ssl, **tls_opts)
        self.listeners.add(self.ingress, "ingress", f"{host}:{srv.sockets[0].getsockname()[1]}")
        h1_host, h1_port = split_address(self.config.ingress_http) if self.config.ingress_http else (host, 0)
        self.ingress_http = H1Engine(self.inbound.decide, **opts, complete=self.inbound.complete)
        srv = await self.ingress_http.listen(h1_host, h1_port, ssl=ingress_ssl, **tls_opts)
        self.listeners.add(self.ingress_http, "ingress_http", f"{h1_host}:{srv.sockets[0].getsockname()[1]}")
        for app in self.config.apps:
            if app.protocol == "tcp":
                # A TCP app gets an ingress port of its own: the port names the instance.
                tcp_in = TcpEngine(self.inbound.tcp_decide_hook(app), **opts, complete=self.inbound.complete)
                srv = await tcp_in.listen(host, 0, ssl=ingress_ssl)
                self.listeners.add(tcp_in, f"ingress_tcp:{app.virtual_node}:{app.port}",
                                   f"{host}:{srv.sockets[0].getsockname()[1]}")
            h2_backends = [b for b in app.backends if b.protocol == "http2"]
            if app.egress or h2_backends:
                await self._egress_listener(
                    Engine(self.egress.decide_hook(app), self.egress.retry, **opts, complete=self.egress.complete,
                           upstream_idle_timeout=self.config.upstream_idle_seconds,
                           ping_interval=self.config.ping_seconds, ping_timeout=self.config.ping_seconds),
                    app.egress, h2_backends, f"egress:{app.virtual_node}")
            http_backends = [b for b in app.backends if b.protocol == "http"]
            if app.egress_http or http_backends:
                await self._egress_listener(
                    H1Engine(self.egress.decide_hook(app, http=True), self.egress.retry, **opts,
                             complete=self.egress.complete, upstream_idle_timeout=self.config.upstream_idle_seconds),
                    app.egress_http, http_backends, f"egress_http:{app.virtual_node}")
            if app.intercept_egress:
                await self._intercepting_listener(app, opts, Interceptor, app.intercept_egress, "intercept")
            if app.intercept_ingress:
                await self._intercepting_listener(app, opts, InboundInterceptor, app.intercept_ingress,
                                                  "intercept_in")
            tcp_backends = [b for b in app.backends if b.protocol == "tcp"]
            if tcp_backends:
                tcp = TcpEngine(self.egress.tcp_decide_hook(app), **opts, complete=self.egress.tcp_complete)
                for b in tcp_backends:
                    await tcp.listen("127.0.0.1", b.port)
                self.listeners.add(tcp)
        await self.gateways.sync()
        if self.config.dns:
            self._start_dns()

    def _start_dns(self) -> None:
        """The DNS responder: the virtual service names of this host's meshes (meshd.proxy.dns)."""
        meshes = sorted({a.mesh for a in self.config.apps} | {g.mesh for g in self.config.gateways})

        def names():
            out = []
            for m in meshes:
                snap = self.view.snapshot(m)
                if snap is not None:
                    out.extend(snap.services)
            return out
        resolver = MeshResolver(names, resolv_conf_nameservers)
        for host, port in listen_addresses(self.config.dns):
            d = DnsResponder(resolver, host, port).start()
            self._dns.append(d)
            self.listeners.addresses.setdefault("dns", d.address)

    async def _intercepting_listener(self, app: LocalApp, opts: dict, kind, spec: str, name: str) -> None:
        """Where `app`'s redirected outbound (or inbound) connections arrive
        (meshd.proxy.intercept): engines of their own, whose hooks read each connection's
        original destination."""
        timeouts = {"upstream_idle_timeout": self.config.upstream_idle_seconds}
        icpt = kind(app, loop=self.loop, view=self.view, egress=self.egress, observe=self.observe,
                           h2=None, h1=None, tcp=None)
        icpt.h2 = Engine(icpt.http_decide_hook(http=False), self.egress.retry, **opts, complete=self.egress.complete,
                         **timeouts, ping_interval=self.config.ping_seconds, ping_timeout=self.config.ping_seconds)
        icpt.h1 = H1Engine(icpt.http_decide_hook(http=True), self.egress.retry, **opts,
                           complete=self.egress.complete, **timeouts)
        icpt.tcp = TcpEngine(icpt.tcp_decide_hook(), **opts, complete=self.egress.tcp_complete)
        for host, port in listen_addresses(spec, inbound=kind is InboundInterceptor):
            bound = await icpt.listen(host, port)
            self.listeners.addresses.setdefault(f"{name}:{app.virtual_node}", f"{host}:{bound}")
        self.listeners.add(icpt)

    # -- certificates -----------------------------------------------------------------
    def _cert_period(self) -> float:
        life = self.certs.shortest_life()
        period = CERT_CHECK_SECONDS if life is None else min(CERT_CHECK_SECONDS, life / 12)
        return max(CERT_CHECK_MIN_SECONDS, period)

    def _cert_loop(self) -> None:
        """The certificate thread: renew what is due, re-read changed `file` sources."""
        while not self._stopping.is_set():
            wait = max(0.05, self.certs.next_check(self._cert_period()))
            if self._stopping.wait(wait):
                return
            self.renew_certs()

    def _acm_refresh(self) -> bool:
        try:
            return self.acm.refresh()
        except Exception as err:  # noqa: BLE001 - e.g. etcd unavailable: keep what was read
            log.warning("ACM certificates not re-read; keeping the current ones", extra={"error": str(err)})
            return False

    def _acm_loop(self) -> None:
        """Re-read the imported ACM certificates and anchors (one etcd range read of `acm/`)
        every ACM_POLL_SECONDS; listeners pick up a change on their next connection."""
        while not self._stopping.wait(ACM_POLL_SECONDS):
            if self._acm_refresh():
                self.renew_certs()  # log each listener's new state now, not at its next handshake

    def renew_certs(self) -> bool:
        """Renew due workload certificates (a failure keeps the current one and retries with
        backoff) and re-read changed `file` sources; True when any context changed. Blocking:
        runs on the certificate thread, never on the loop."""
        with self._cert_lock:
            changed = bool(self.certs.renew_due())
            changed |= self.tls.refresh()
            changed |= self.gateways.refresh_tls()
        if changed and self._active:
            self.loop.call_soon_threadsafe(self._credentials_changed)
        return changed

    def _credentials_changed(self) -> None:
        """On the loop: new ingress connections start on a new front (old session tickets no
        longer resume), and the egress drops its Targets and bindings, whose client contexts
        (and the TLS sessions pooled per context) belong to the previous certificates.
        Connections already open keep going on theirs."""
        self.tls.rotate()
        self.egress.certificates_renewed()

    async def _egress_listener(self, engine, address: str, backends: list[BackendPort], name: str) -> None:
        """An app's egress: its authority-routed address (when given) and its backend ports."""
        h, p = split_address(address or "127.0.0.1:0")
        srv = await engine.listen(h, p)
        for b in backends:
            await engine.listen(h, b.port)
        self.listeners.add(engine, name if address else "", f"{h}:{srv.sockets[0].getsockname()[1]}")

    # -- local instances --------------------------------------------------------------
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
        adv_host = split_address(self.config.advertise)[0] if self.config.advertise else None

        def at(addr: str) -> str:
            return f"{adv_host}:{split_address(addr)[1]}" if adv_host else addr
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
        self.inbound.local[f"{app.mesh}/{app.virtual_node}/{iid}"] = app
        self.loop.call_soon_threadsafe(self._sync_health_checks)

    # -- configuration ----------------------------------------------------------------
    def _pump(self) -> None:
        """The watch thread: hand Watch responses to the config thread; resume until stopped."""
        while self._active:
            try:
                for resp in self.watch_source(lambda: self._active):
                    self._responses.put(resp)
            except Exception as err:  # noqa: BLE001 - the watch resumes; routing keeps its last table
                log.warning("config watch interrupted; routing on the last table", extra={"error": str(err)})
                time.sleep(0.5)

    def _configure(self) -> None:
        """The config thread: fold responses into the view and compile changed meshes, off
        the data-plane loop. Instance changes go to the loop at once; a configuration change
        is compiled once no other arrives for CONFIG_QUIET_SECONDS (or CONFIG_MAX_DELAY_SECONDS
        after the first), so a burst of writes costs one compile, then the loop only swaps
        the result in."""
        while self._active:
            try:
                resp = self._responses.get(timeout=0.5)
            except queue.Empty:
                continue
            last, synced = resp, resp.snapshot_done
            self._fold(resp)
            if self.view.dirty:
                first = time.monotonic()
                while self._active:
                    wait = min(CONFIG_QUIET_SECONDS, first + CONFIG_MAX_DELAY_SECONDS - time.monotonic())
                    if wait <= 0:
                        break
                    try:
                        resp = self._responses.get(timeout=wait)
                    except queue.Empty:
                        break
                    last, synced = resp, synced or resp.snapshot_done
                    self._fold(resp)
            prepared = self.view.prepare() if self.view.dirty else []
            self.loop.call_soon_threadsafe(self._publish, prepared, last, synced)

    def _fold(self, resp) -> None:
        changes = self.view.apply(resp)
        if changes:
            self.loop.call_soon_threadsafe(self.view.push_endpoints, changes)

    def _publish(self, prepared, resp, synced: bool) -> None:
        """On the loop: swap the compiled generations in, and tell what depends on them."""
        published = self.view.publish(prepared)
        if published:
            self.egress.config_changed()
            self.inbound.config_changed()
            self._sync_health_checks()
            self.gateways.changed()
            self._config_changed.set()
            self._discover()
        self.observe.applied(resp, published, self.view)
        if synced:
            self._synced.set()

    def _discover(self) -> None:
        """Tell DNS discovery which nodes of this host's meshes name a hostname (as published)."""
        wanted = {}
        for mesh in sorted({a.mesh for a in self.config.apps} | {g.mesh for g in self.config.gateways}):
            snap = self.view.snapshot(mesh)
            if snap is not None:
                cache = self._dns_cache.setdefault(mesh, {})
                wanted.update(((mesh, node), t) for node, t in dns_targets(snap, cache).items())
        self.discovery.update(wanted)

    def _sync_health_checks(self) -> None:
        """Run each local instance's App Mesh listener healthCheck; stop checks that went away."""
        for key, app in self.inbound.local.items():
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
        app = self.inbound.local.get(key)
        if app is None:
            return
        log.info("instance health changed", extra={"instance": key, "from": old, "to": new, "detail": detail})
        if key in self._down:
            return  # not listening: published UNHEALTHY; `_revive` publishes the check's verdict
        self._publish_health(app, new)

    def _publish_health(self, app: LocalApp, health: str) -> None:
        self.observe.instance_health(app.mesh, app.virtual_node, app.instance_id, health == "HEALTHY")
        self.loop.run_in_executor(None, lambda: self.register(
            mesh_name=app.mesh, virtual_node_name=app.virtual_node, instance_id=app.instance_id,
            address=app.address, port=app.port, attributes=self._attributes(app), health=health))

    def _unreachable(self, key: str) -> None:
        """The ingress could not connect to local instance `key` (its process died or stopped
        listening). Every meshd keeps routing to an instance until told, and with no App Mesh
        health check (or between its probes) nothing would tell them: each caller would pay
        a failed attempt and a retry per request. So it is published UNHEALTHY now, and
        probed with TCP connects until it listens again (Envoy's passive health: a connect
        failure is the surest sign there is)."""
        app = self.inbound.local.get(key)
        if app is None or key in self._down or not self._active:
            return
        self._down.add(key)
        log.warning("local instance not listening; marked UNHEALTHY until it accepts connections",
                    extra={"instance": key, "address": f"{app.address}:{app.port}"})
        self._publish_health(app, "UNHEALTHY")
        task = self.loop.create_task(self._revive(key, app))
        self._revivals.add(task)
        task.add_done_callback(self._revivals.discard)

    async def _revive(self, key: str, app: LocalApp) -> None:
        """Probe a local instance that refused connections; once it accepts one, publish the
        App Mesh health check's verdict (HEALTHY without a check)."""
        while self._active and self.inbound.local.get(key) is app:
            await asyncio.sleep(REVIVE_PROBE_SECONDS)
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(app.address, app.port),
                                                   REVIVE_PROBE_SECONDS)
            except (OSError, asyncio.TimeoutError):
                continue
            writer.close()
            self._down.discard(key)
            state = self.health.state(key) if key in self.health.keys() else "HEALTHY"
            log.info("local instance listening again", extra={"instance": key, "health": state})
            self._publish_health(app, "UNHEALTHY" if state == "UNHEALTHY" else "HEALTHY")
            return

    def stop(self, grace: float | None = None) -> None:
        """Drain: deregister local instances first, stop accepting, let in-flight finish."""
        grace = self.config.drain_seconds if grace is None else grace
        for key, app in list(self.inbound.local.items()):
            try:
                self.deregister(app.mesh, app.virtual_node, app.instance_id)
            except Exception as err:  # noqa: BLE001 - the lease expires them anyway
                log.warning("could not deregister instance", extra={"instance": key, "error": str(err)})
        self._active = False
        self._stopping.set()
        self._config_changed.set()  # wakes the registrar, which then sees the stop
        self._run_queue.close()

        async def drain():
            for task in list(self._revivals):
                task.cancel()
            await asyncio.gather(*self._revivals, return_exceptions=True)
            await self.health.stop()
            await asyncio.gather(*(e.drain(grace) for e in self.engines), return_exceptions=True)
            for e in self.engines:
                e.close()
        for d in self._dns:
            d.stop()
        self.discovery.stop()
        try:
            self._call(drain(), timeout=grace + 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            if self._thread:
                self._thread.join(5)

    # -- reads ------------------------------------------------------------------------
    def ready(self) -> bool:
        """Serving: every local instance registered, every mesh of this host's apps and
        gateways with a published route table (a sidecar's LIVE)."""
        meshes = {a.mesh for a in self.config.apps} | {g.mesh for g in self.config.gateways}
        return not self._unregistered and all(self.view.live(m) is not None for m in meshes)

    def open_connections(self) -> int:
        """Downstream connections open on every listener of this data plane."""
        return self.listeners.open_connections()

    def in_flight(self) -> dict[str, int]:
        """Requests routed and not yet completed, per "mesh/target node"."""
        return self.egress.in_flight()


class RunQueueWait:
    """The run-queue wait of a set of threads: the time each was ready to run but had no CPU
    (the second field of Linux's /proc/<tid>/schedstat, in ns). `since_last()` is the set's
    wait since the previous call, in seconds; 0 where the kernel does not say. It starts
    empty; `join()` adds the calling thread, `follow_python_threads()` every thread the
    interpreter runs, and a thread that ended drops out.

    The loop's set is every Python thread of the process: those are the threads that take
    the GIL from it (the config threads, the admin API's handlers, the watches). A loop-lag
    timer late by more than their wait was held up by the process itself. Counting the
    others keeps a GIL holder the kernel preempted (ready, no CPU, the loop waiting on the
    GIL) on the host's side of the split, where it belongs; on a host with a CPU free for
    each of them their wait is zero and nothing is taken off. About 0.6 us per thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last: dict[int, int] = {}  # fd -> the last reading
        self._tids: dict[int, int] = {}  # thread id -> fd

    def join(self, tid: int | None = None) -> None:
        """Add the calling thread (or the thread `tid` of this process) to the set."""
        tid = threading.get_native_id() if tid is None else tid
        if tid in self._tids:
            return
        try:
            fd = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
        except OSError:
            return
        with self._lock:
            self._tids[tid] = fd
            self._last[fd] = self._read(fd) or 0

    def follow_python_threads(self) -> None:
        """Add every thread the interpreter runs now (ones already in the set stay)."""
        for t in threading.enumerate():
            if t.native_id is not None and t.native_id not in self._tids:
                self.join(t.native_id)

    @staticmethod
    def _read(fd: int) -> int | None:
        try:
            return int(os.pread(fd, 64, 0).split()[1])
        except (OSError, IndexError, ValueError):
            return None  # the thread has ended

    def since_last(self) -> float:
        waited = 0
        with self._lock:
            for tid, fd in list(self._tids.items()):
                now = self._read(fd)
                if now is None:
                    del self._tids[tid], self._last[fd]
                    os.close(fd)
                    continue
                waited += max(0, now - self._last[fd])
                self._last[fd] = now
        return waited / 1e9

    def close(self) -> None:
        with self._lock:
            fds, self._last, self._tids = list(self._last), {}, {}
        for fd in fds:
            os.close(fd)
