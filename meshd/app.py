"""The composition root: wires etcd (embedded or external), the registry, the host lease,
the security library, the host identity and the admin API into one running meshd. No
other module wires packages together."""
from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import registry
from meshd.api import kinds as K
from meshd.api.auth import Access, build_rules
from meshd.api.resources import ApiConfig, ClusterIdentity, Resources
from meshd.api.security_service import Security
from meshd.api.server import AdminServer, Listener, ListenerError, is_loopback
from meshd.embedded_etcd import EmbeddedEtcd
from meshd.hostrecord import HostRecord
from meshd.identity import HostIdentity, IdentityError
from meshd.lease import HostLease
from meshd.meshview import MeshView
from meshd.observe import Metrics, MetricsServer, ObserveConfig, Observer, make_metrics_push, make_tracer
from meshd.observe.accesslog import AccessLogs
from meshd.proxy import MeshRuntime, RuntimeConfig, WorkloadCerts
from meshd.proxy.lifecycle import scopes_of
from meshd.rollout import Controller, RolloutCache, RolloutStats, host_audit
from meshd.security import AuditLog, KeyRef, MeshCA, Roles, Tokens, spiffe
from meshd.security.accesskeys import AccessKeys
from meshd.security.acm import AcmCache, read_material
from meshd.security.certs import utcnow
from meshd.security.hostauth import claim_gateway
from meshd.security.errors import SecurityError
from meshd.v1 import admin_pb2, security_pb2, security_pb2_grpc

log = logging.getLogger("meshd")

DEFAULT_ADMIN = "127.0.0.1:7000"
DEFAULT_STATE_DIR = "/var/lib/meshd"
DEFAULT_CLUSTER_KEY = "/etc/meshd/cluster.key"


@dataclass
class MeshdConfig:
    """Everything `meshd run` can be told; defaults give a working single-host mesh."""

    admin: str = DEFAULT_ADMIN
    admin_token: str = ""  # TLS listener for bearer-token callers; empty: none
    insecure_local: bool = False  # serve --admin as plaintext (loopback only)
    etcd: list[str] = field(default_factory=list)  # empty: start the embedded etcd
    state_dir: str = DEFAULT_STATE_DIR
    host_name: str = field(default_factory=socket.gethostname)
    # Where this host runs, (region, zone, sub_zone) (`--locality`): its routers prefer nearby
    # endpoints and the instances registered through it carry it. Empty: none.
    locality: tuple[str, str, str] = ("", "", "")
    lease_ttl: int = 10
    etcd_timeout: float = 3.0
    etcd_prefix: str = registry.store.DEFAULT_PREFIX
    cluster: str = "local"
    # The cluster's AWS identity in ARNs and owners; "": the one its first meshd recorded
    # in etcd, else the default (aws, us-east-1, 000000000000). A value that differs from
    # the recorded one stops this meshd at start (meshd.api.resources.establish_aws_identity).
    aws_partition: str = ""
    aws_region: str = ""
    aws_account: str = ""
    # App Mesh quota name (meshd.api.resources.QUOTAS) -> the most per parent; absent: unlimited.
    quotas: dict[str, int] = field(default_factory=dict)
    embedded_etcd_port: int = 2379
    embedded_peer_port: int = 2380
    cluster_key: str = DEFAULT_CLUSTER_KEY
    trust_domain: str = "meshd.local"
    join_token: str = ""
    join_server: str = ""
    signer: str = ""
    audit_max_entries: int = 10_000
    cert_ttl_hours: float = 24.0  # lifetime of workload and host certificates signed here
    # The data plane: local apps (--config), listener addresses.
    runtime: RuntimeConfig | None = None
    egress: str = ""
    ingress: str = ""
    advertise: str = ""
    # Embedded (several meshds in one process, as in tests) /metrics takes any free port;
    # `meshd run` defaults to DEFAULT_METRICS. Meshd.metrics_address tells which.
    observe: ObserveConfig = field(default_factory=lambda: ObserveConfig(metrics="127.0.0.1:0"))
    # App Mesh's REST-JSON API with SigV4 (meshd.awsapi), HOST:PORT; empty: not served.
    aws_api: str = ""
    aws_api_rate: float = 100.0  # requests/s per access key (bursts of twice that); 0: unlimited
    # Stand for election as rollout controller (meshd.rollout); every meshd with a data plane
    # publishes its rollout statistics either way.
    rollout_controller: bool = True
    # A sidecar's view (issue 17): watch only the meshes of the local apps and gateways, and
    # compile only what they reach (meshd.compile.scoped), as App Mesh configures an Envoy
    # for its node's backends. Off: every mesh is compiled whole, and under an ALLOW_ALL
    # egress filter an app may call any virtual service of its mesh.
    scoped: bool = False


def instance_on_lease(value: bytes, lease_id: int) -> bytes:
    """An Instance record re-written under a new host lease: the lease it names, and when."""
    inst = admin_pb2.Instance()
    inst.ParseFromString(value)
    inst.lease_id = lease_id
    inst.registered_at.GetCurrentTime()
    return inst.SerializeToString(deterministic=True)


def _listen_ip(address: str) -> list[str]:
    host = address.rsplit(":", 1)[0].strip("[]")
    return [host] if host and host not in ("0.0.0.0", "::", "localhost") else []


class Meshd:
    """One meshd process's parts, started and stopped in dependency order."""

    def __init__(self, config: MeshdConfig, *, clock: Callable[[], datetime] = utcnow):
        """`clock` is the wall clock of the security library this meshd serves from (token
        expiry, certificate validity, role and audit times): tests pass one they can move,
        instead of waiting for real time to pass."""
        self.config = config
        self.clock = clock
        self.etcd: EmbeddedEtcd | None = None
        self.store: registry.Store | None = None
        self.lease: HostLease | None = None
        self.identity: HostIdentity | None = None
        self.admin: AdminServer | None = None
        self.runtime: MeshRuntime | None = None
        self.resources: Resources | None = None
        self.host_record: HostRecord | None = None
        self.observer: Observer | None = None
        self.metrics_server: MetricsServer | None = None
        self.metrics_push = None
        self.aws_api = None
        self.access_keys = None
        self.rollouts: RolloutCache | None = None
        self.rollout_stats: RolloutStats | None = None
        self.rollout_controller: Controller | None = None
        self._stopped = threading.Event()

    def start(self) -> "Meshd":
        cfg = self.config
        if cfg.aws_api and cfg.insecure_local and not is_loopback(cfg.aws_api):
            # Refused before anything starts, as the plaintext admin listener is.
            raise ListenerError(f"plaintext App Mesh API refused on {cfg.aws_api}: --insecure-local binds "
                                "loopback only; serve it with TLS (a host certificate) elsewhere")
        endpoints = list(cfg.etcd)
        if not endpoints:
            data = Path(cfg.state_dir) / "etcd"
            self.etcd = EmbeddedEtcd(data, client_port=cfg.embedded_etcd_port,
                                     peer_port=cfg.embedded_peer_port).start()
            endpoints = [self.etcd.url]
            log.info("embedded etcd ready", extra={"url": self.etcd.url, "data_dir": str(data)})
        self.store = registry.Store(endpoints, prefix=cfg.etcd_prefix, timeout=cfg.etcd_timeout)
        # Before anything is served: a meshd whose ARNs would differ from its peers' stops here.
        # With etcd away it starts anyway (as it does without etcd) and reads the identity later.
        aws = ClusterIdentity(self.store, partition=cfg.aws_partition, region=cfg.aws_region,
                              account=cfg.aws_account)
        try:
            aws.get()
        except registry.Unavailable as err:
            log.warning("cluster AWS identity not read yet: etcd is unavailable", extra={"error": str(err)})
        self.lease = HostLease(self.store, ttl=cfg.lease_ttl, rewrite=instance_on_lease)
        self.lease.start()

        cluster_key = KeyRef(cfg.cluster_key)
        ca = MeshCA(self.store, cluster_key, trust_domain=cfg.trust_domain,
                    default_ttl=timedelta(hours=cfg.cert_ttl_hours), clock=self.clock)
        tokens, roles = Tokens(self.store, clock=self.clock), Roles(self.store, clock=self.clock)
        audit = AuditLog(self.store, max_entries=cfg.audit_max_entries, clock=self.clock)
        # SigV4 access keys: one cache (and its etcd watch) for MeshSecurity and the REST API.
        self.access_keys = AccessKeys(self.store, cluster_key, clock=self.clock)

        def give_mesh_a_ca(kind, data):
            # Each mesh gets its CA when it is created; a meshd without the cluster key
            # leaves that to the first signer that issues a certificate in the mesh.
            if kind is K.MESH:
                try:
                    ca.ensure(data.mesh_name)
                except SecurityError as err:
                    log.info("mesh CA deferred", extra={"mesh": data.mesh_name, "reason": str(err)})

        resources = Resources(self.store, ApiConfig(quotas=cfg.quotas, locality=cfg.locality), host=cfg.host_name,
                              host_lease=self.lease, on_create=[give_mesh_a_ca], identity=aws)
        self.resources = resources
        self.identity = HostIdentity(ca, cfg.host_name, cfg.state_dir,
                                     ip_addresses=tuple(_listen_ip(cfg.admin) + _listen_ip(cfg.admin_token)
                                                        + _listen_ip(cfg.aws_api)),
                                     join_token=cfg.join_token, join_server=cfg.join_server, signer=cfg.signer)
        creds = self.identity.obtain()
        if creds is None and not cfg.insecure_local:
            raise IdentityError(
                f"no host certificate: this host has no cluster key at {cfg.cluster_key} "
                "(`meshd init` makes one), no stored certificate, and no --join-token; "
                "or serve plaintext on loopback with --insecure-local")
        if creds is not None:
            self.identity.start_renewal()
        listeners = [Listener(cfg.admin, "local" if cfg.insecure_local else "mtls")]
        if cfg.admin_token:
            listeners.append(Listener(cfg.admin_token, "token"))
        access = Access(build_rules(K.KINDS), roles, tokens, audit, trust_domain=cfg.trust_domain)
        # Grants and revokes go through the copy that checks read, so it sees its own writes.
        self.admin = AdminServer(
            resources, listeners,
            security=Security(self.store, ca, tokens, access.roles, audit, access_keys=self.access_keys),
            access=access,
            tls=self.identity.grpc_server_credentials if creds is not None else None)
        self.admin.start()
        if cfg.aws_api:
            self.aws_api = self._start_aws_api(cfg, resources, access)
        self.observer = self._observer(cfg)
        if cfg.runtime is not None and (cfg.runtime.apps or cfg.runtime.gateways):
            self.runtime = self._start_runtime(cfg, ca, resources)
        self._start_rollouts(cfg, resources, access, creds)
        # Published last, so a host that is listed is a host that is serving.
        self.host_record = HostRecord(
            self.store, self.lease, host_name=cfg.host_name, admin_address=self.admin.address,
            metrics_address=lambda: self.metrics_address, data_plane=self.runtime is not None,
            applied=self._applied).start()
        log.info("meshd started", extra={"admin": self.admin.address, "etcd": ",".join(endpoints),
                                         "host": cfg.host_name, "pid": os.getpid(),
                                         "listeners": ",".join(f"{m}={a}" for m, a in self.admin.addresses.items()),
                                         "identity": self.identity.identity if creds else ""})
        return self

    def _start_aws_api(self, cfg: MeshdConfig, resources: Resources, access: Access):
        """App Mesh's REST API on cfg.aws_api: TLS with the host certificate, or plaintext on
        loopback with --insecure-local, as the gRPC admin listener."""
        # Imported here: botocore and aiohttp load only on the meshds that serve this API.
        from meshd.awsapi.server import AwsApi, AwsApiServer, HostTLS  # noqa: PLC0415
        from meshd.awsapi.sigv4 import Verifier  # noqa: PLC0415
        from meshd.security.errors import UnknownAccessKey  # noqa: PLC0415

        keys = self.access_keys

        def lookup(key_id: str):
            try:
                return keys.lookup(key_id)
            except UnknownAccessKey:
                return None
        tls = None
        if not cfg.insecure_local:
            if self.identity.credentials is None:
                raise IdentityError(f"--aws-api {cfg.aws_api} needs a host certificate "
                                    "(or --insecure-local on loopback)")
            tls = HostTLS(self.identity.credentials)
        verifier = Verifier(lookup, region=lambda: resources.aws.region)
        api = AwsApi(resources, access, verifier, rate=cfg.aws_api_rate)
        return AwsApiServer(api, cfg.aws_api, tls=tls).start()

    def _observer(self, cfg: MeshdConfig) -> Observer:
        """Metrics (served on cfg.observe.metrics unless it is empty); traces when configured."""
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        from meshd.dataplane import counters as h2_counters  # noqa: PLC0415
        from meshd.dataplane.h1 import counters as h1_counters  # noqa: PLC0415
        from meshd.dataplane.tcp import counters as tcp_counters  # noqa: PLC0415

        try:
            release = version("meshd")
        except PackageNotFoundError:
            release = "unknown"
        metrics = Metrics(version=release, host=cfg.host_name,
                          counters=(h2_counters, h1_counters, tcp_counters),
                          open_connections=lambda: self.runtime.open_connections() if self.runtime else 0)
        if cfg.observe.metrics:
            try:
                self.metrics_server = MetricsServer(metrics, cfg.observe.metrics).start()
            except OSError as err:
                # Several meshds on one host (sidecars) would all ask for the default port:
                # the data plane matters more than its metrics, so run on without them.
                log.error("metrics not served: cannot listen (set --metrics)",
                          extra={"address": cfg.observe.metrics, "error": str(err)})
        self.metrics_push = make_metrics_push(cfg.observe, metrics, cfg.host_name)
        return Observer(metrics, tracer=make_tracer(cfg.observe, metrics, cfg.host_name),
                        access_logs=AccessLogs(metrics.access_log_dropped.inc))

    def _start_rollouts(self, cfg: MeshdConfig, resources: Resources, access: Access, creds) -> None:
        """Rollouts: the statistics this data plane counts, and the controller, which writes
        its route updates as this host, audited as the API gate audits."""
        self.rollouts = RolloutCache(self.store).start()
        if self.runtime is not None:
            self.rollout_stats = RolloutStats(self.store, self.lease, self.rollouts, cfg.host_name).start()
            self.observer.rollout_routes = self.rollout_stats.routes
        if cfg.rollout_controller:
            subject = self.identity.identity if creds is not None else cfg.host_name
            self.rollout_controller = Controller(resources, self.store, self.lease, self.rollouts, cfg.host_name,
                                                 host_audit(access, subject)).start()
            self.observer.metrics.registry.register(self.rollout_controller)

    @property
    def metrics_address(self) -> str:
        """Where /metrics is served (HOST:PORT, the port chosen when 0 was asked), or ""."""
        return self.metrics_server.address if self.metrics_server else ""

    def _start_runtime(self, cfg: MeshdConfig, ca: MeshCA, resources: Resources) -> MeshRuntime:
        rt = cfg.runtime
        if cfg.ingress:
            rt.ingress = cfg.ingress
        if cfg.advertise:
            rt.advertise = cfg.advertise
        if cfg.egress:
            for app in rt.apps:
                if not app.egress:
                    app.egress = cfg.egress
                    break

        def sign(identity: str, csr_pem: bytes) -> tuple[bytes, bytes]:
            # Workload certificates: signed here with the cluster key, or by a signer through
            # its admin API, authenticated by this host's certificate (host authorization:
            # only nodes whose instances this host registered).
            mesh = spiffe.parse(identity).mesh
            if ca.can_sign():
                ca.ensure(mesh)
                issued = ca.sign_csr(mesh, csr_pem, identity)
                return issued.chain_pem, issued.bundle_pem
            creds = self.identity.credentials
            import grpc  # noqa: PLC0415
            channel = grpc.secure_channel(cfg.signer or cfg.join_server, grpc.ssl_channel_credentials(
                creds.bundle_pem, creds.key_pem, creds.cert_chain_pem))
            try:
                resp = security_pb2_grpc.MeshSecurityStub(channel).SignCertificate(
                    security_pb2.SignCertificateRequest(mesh_name=mesh, identity=identity, csr_pem=csr_pem.decode()),
                    timeout=15)
            finally:
                channel.close()
            return resp.certificate_chain_pem.encode(), resp.trust_bundle_pem.encode()

        def register(**kw) -> admin_pb2.Instance:
            return resources.register_instance(admin_pb2.RegisterInstanceRequest(**kw)).instance

        def deregister(mesh: str, node: str, instance_id: str) -> None:
            resources.deregister_instance(admin_pb2.DeregisterInstanceRequest(
                mesh_name=mesh, virtual_node_name=node, instance_id=instance_id))

        scopes = scopes_of(rt) if cfg.scoped else None
        # One mesh served: the Watch itself is filtered, so other meshes' events never arrive.
        watched = admin_pb2.WatchRequest(mesh_name=next(iter(scopes)) if scopes and len(scopes) == 1 else "")
        runtime = MeshRuntime(
            rt, view=MeshView(trust_domain=cfg.trust_domain, locality=cfg.locality, scopes=scopes),
            certs=WorkloadCerts(cfg.trust_domain, sign),
            register=register, deregister=deregister,
            watch=lambda active: resources.watch(watched, active), host_name=cfg.host_name,
            claim_gateway=lambda mesh, gw: claim_gateway(self.store, self.lease, cfg.host_name, mesh, gw),
            observe=self.observer, acm=AcmCache(lambda: read_material(self.store, ca._key)))
        runtime.start()
        if self.metrics_server:
            runtime.addresses["metrics"] = self.metrics_server.address
        log.info("data plane started", extra={k: v for k, v in runtime.addresses.items()})
        return runtime

    def _applied(self) -> tuple[int, int]:
        """(store revision, generation) of the route tables the data plane serves."""
        view = self.runtime.view if self.runtime else None
        return (view.revision, view.generations) if view else (0, 0)

    def wait(self) -> None:
        self._stopped.wait()

    def stop(self) -> None:
        """Stop in reverse order: drain the data plane (deregistering its instances first), then
        the API, identity renewal, host lease (its instances and host record vanish), store, etcd."""
        if self.host_record:
            self.host_record.stop()
        for part in (self.rollout_controller, self.rollout_stats, self.rollouts):
            if part is not None:
                part.stop()
        if self.runtime:
            self.runtime.stop()
        if self.observer:
            self.observer.close()
        if self.metrics_push:
            self.metrics_push.stop()
        if self.metrics_server:
            self.metrics_server.stop()
        if self.aws_api:
            self.aws_api.stop()
        if self.access_keys:
            self.access_keys.close()
        if self.admin:
            self.admin.stop()
        if self.identity:
            self.identity.stop()
        if self.lease:
            self.lease.stop(revoke=True)
        if self.store:
            self.store.close()
        if self.etcd:
            self.etcd.stop()
        self._stopped.set()
        log.info("meshd stopped")
