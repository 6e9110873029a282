"""`meshd sidecar`: meshd where App Mesh's Envoy container was, configured by the environment
that container read, serving one virtual node (or virtual gateway) of one task or pod.

    APPMESH_RESOURCE_ARN     arn:aws:appmesh:<region>:<account>:mesh/<mesh>/virtualNode/<node>,
                             or the short form mesh/<mesh>[@<owner>]/virtualNode/<node>
                             (.../virtualGateway/<gateway> for a gateway);
                             APPMESH_VIRTUAL_NODE_NAME (mesh/<mesh>/virtualNode/<node>) too
    ENVOY_LOG_LEVEL          trace, debug, info, warning, error, critical, off
    ENVOY_ADMIN_ACCESS_PORT  the admin port (9901): /server_info, /ready, /stats/prometheus,
                             /stats, /config_dump; ENVOY_ADMIN_ACCESS_ENABLE_IPV6 binds it on ::
    ENABLE_ENVOY_XRAY_TRACING  "1": X-Ray segments to the daemon (127.0.0.1:XRAY_DAEMON_PORT,
                             2000), new traces sampled at XRAY_SAMPLING_RATE (0.05), named
                             XRAY_SEGMENT_NAME (<mesh>/<node>); X-Amzn-Trace-Id beside W3C
    ENABLE_ENVOY_DOG_STATSD  "1": push the metrics as DogStatsD to STATSD_ADDRESS:STATSD_PORT
                             (127.0.0.1:8125) or STATSD_SOCKET_PATH (meshd.observe.statsd);
                             ENABLE_ENVOY_STATS_TAGS=1 tags them appmesh.mesh and
                             appmesh.virtual_node, APPMESH_METRIC_EXTENSION_VERSION=1 adds App
                             Mesh's metrics-extension names (envoy.appmesh.RequestCount, ...)

It listens where ECS's `proxyConfiguration` and the EKS controller's `proxyinit` send the
traffic: 15000 for inbound (callers outside the mesh) and 15001 for outbound (the app's
connections), and answers the app's DNS on 15053 when proxy-init captures it. Calls from
other meshds arrive on its mTLS ingress (MESHD_INGRESS, default every address port 15443).

meshd's own settings, beside them:

    MESHD_ETCD               etcd endpoints (required: a sidecar joins a cluster)
    MESHD_CLUSTER_KEY        the cluster key file, for a sidecar that signs its certificates;
    MESHD_JOIN_TOKEN, MESHD_JOIN_SERVER, MESHD_SIGNER   or a bootstrap token and a signer
    MESHD_INSTANCE_ADDRESS   the address other meshds reach this task at; else POD_IP, else
                             the ECS task metadata endpoint (ECS_CONTAINER_METADATA_URI_V4),
                             else the first address of a non-loopback interface
    MESHD_INSTANCE_ID        the instance id; else the ECS task id, else HOSTNAME
    MESHD_LOCALITY           region/zone[/sub_zone] of this task, for locality-aware balancing;
                             else the ECS task metadata's AvailabilityZone and the region of its
                             TaskARN; the sub-zone stays empty unless given
    MESHD_SCOPED             1 (default): watch only this mesh and compile only what the node's
                             backends or the gateway's routes reach; 0: the whole mesh

The app's port and protocol come from the virtual node's first listener, as Envoy's
listeners came from the node's spec: the sidecar waits for the node to exist. On SIGTERM it
drains as Envoy does: it deregisters the instance first, stops accepting, and lets
requests in flight finish (MESHD_DRAIN_SECONDS, default 20, the controller's preStop).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from meshd.proxyinit import env_port

log = logging.getLogger("meshd.sidecar")

INGRESS_PORT, EGRESS_PORT, DNS_PORT, ADMIN_PORT, MTLS_PORT = 15000, 15001, 15053, 9901, 15443
# ENVOY_LOG_LEVEL -> meshd's levels (Envoy's trace is meshd's debug, off its critical).
LOG_LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warning": "warning", "warn": "warning",
              "error": "error", "critical": "critical", "off": "critical"}

# The variables App Mesh's Envoy image reads ("Envoy configuration variables") that meshd
# does not act on, and what it does instead: each present one is logged once at start.
INSTEAD = {
    "ENVOY_ADMIN_ACCESS_LOG_FILE": "the admin port's requests are not logged",
    "ENVOY_INITIAL_FETCH_TIMEOUT": "meshd serves once the mesh's first route table is compiled",
    "ENVOY_CONCURRENCY": "meshd's data plane is one event loop",
    "ENVOY_NO_EXTENSION_LOOKUP_BY_TYPE": "no Envoy extensions exist in meshd",
    "ENVOY_STATS_CONFIG_FILE": "meshd's metrics are fixed (/stats/prometheus)",
    "ENVOY_STATS_SINKS_FILE": "meshd pushes metrics over OTLP (MESHD_METRICS_OTLP_ENDPOINT)",
    "ENVOY_RESOURCES_CONFIG_FILE": "meshd reads the mesh from etcd",
    "APPMESH_PREVIEW": "meshd has no preview channel",
    "APPMESH_DUALSTACK_ENDPOINT": "meshd reads the mesh from etcd, not an AWS endpoint",
    "APPMESH_SDS_SOCKET_PATH": "meshd issues workload certificates itself (SPIFFE, per mesh CA)",
    "APPMESH_SET_TRACING_DECISION": "meshd follows the caller's W3C/B3 sampled flag",
    "XRAY_SAMPLING_RULE_MANIFEST": "meshd samples new traces at XRAY_SAMPLING_RATE (default 0.05)",
    "ENABLE_ENVOY_DATADOG_TRACING": "meshd exports OpenTelemetry traces (OTEL_EXPORTER_OTLP_ENDPOINT)",
    "ENABLE_ENVOY_JAEGER_TRACING": "meshd exports OpenTelemetry traces (OTEL_EXPORTER_OTLP_ENDPOINT)",
}


class SidecarError(ValueError):
    """A setting the sidecar cannot run with; names the variable."""


@dataclass(frozen=True)
class MeshResource:
    """What APPMESH_RESOURCE_ARN names: a virtual node or virtual gateway of a mesh."""

    mesh: str
    kind: str  # "virtualNode" or "virtualGateway"
    name: str
    owner: str = ""

    @staticmethod
    def parse(value: str, variable: str = "APPMESH_RESOURCE_ARN") -> "MeshResource":
        path = value.strip()
        if path.startswith("arn:"):
            parts = path.split(":", 5)
            if len(parts) != 6 or parts[2] != "appmesh":
                raise SidecarError(f"{variable}: not an App Mesh ARN: {value!r}")
            owner, path = parts[4], parts[5]
        else:
            owner = ""
        segs = path.split("/")
        if len(segs) != 4 or segs[0] != "mesh" or segs[2] not in ("virtualNode", "virtualGateway") \
                or not segs[1] or not segs[3]:
            raise SidecarError(f"{variable}: expected mesh/<mesh>[@<owner>]/virtualNode/<node> or "
                               f".../virtualGateway/<gateway>, got {value!r}")
        mesh, _, mesh_owner = segs[1].partition("@")
        return MeshResource(mesh=mesh, kind=segs[2], name=segs[3], owner=mesh_owner or owner)


def resource_from_env(env) -> MeshResource:
    if env.get("APPMESH_RESOURCE_ARN"):
        return MeshResource.parse(env["APPMESH_RESOURCE_ARN"])
    if env.get("APPMESH_VIRTUAL_NODE_NAME"):
        return MeshResource.parse(env["APPMESH_VIRTUAL_NODE_NAME"], "APPMESH_VIRTUAL_NODE_NAME")
    raise SidecarError("APPMESH_RESOURCE_ARN is required (mesh/<mesh>/virtualNode/<node>)")


def _port(env, name: str, default: int) -> int:
    return env_port(env, name, default, SidecarError)


def instance_address(env) -> str:
    """Where other meshds reach this task or pod (see the module's doc)."""
    for name in ("MESHD_INSTANCE_ADDRESS", "POD_IP"):
        if env.get(name):
            return env[name].strip()
    uri = env.get("ECS_CONTAINER_METADATA_URI_V4")
    if uri:
        try:
            with urllib.request.urlopen(uri, timeout=5) as r:
                meta = json.load(r)
            for net in meta.get("Networks", []):
                for addr in net.get("IPv4Addresses", []) + net.get("IPv6Addresses", []):
                    return addr
        except (OSError, ValueError) as err:
            log.warning("ECS task metadata unreadable", extra={"uri": uri, "error": str(err)})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: the route names the source address
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def locality(env) -> tuple[str, str, str]:
    """(region, zone, sub_zone) of this task or pod (see the module's doc); ("", "", "")
    when nothing tells. The ECS task metadata v4 `/task` document names the task's
    AvailabilityZone, and its TaskARN (arn:aws:ecs:<region>:<account>:task/...) the region."""
    from meshd.proxy.config import parse_locality  # noqa: PLC0415 - the proxy loads with the daemon

    if env.get("MESHD_LOCALITY", "").strip():
        return parse_locality(env["MESHD_LOCALITY"].strip())
    uri = env.get("ECS_CONTAINER_METADATA_URI_V4")
    if uri:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/task", timeout=5) as r:
                task = json.load(r)
            zone, arn = task.get("AvailabilityZone", ""), task.get("TaskARN", "").split(":")
            if zone and len(arn) > 3 and arn[3]:
                return arn[3], zone, ""
        except (OSError, ValueError) as err:
            log.warning("ECS task metadata unreadable", extra={"uri": uri, "error": str(err)})
    return "", "", ""


def instance_id(env) -> str:
    if env.get("MESHD_INSTANCE_ID"):
        return env["MESHD_INSTANCE_ID"].strip()
    uri = env.get("ECS_CONTAINER_METADATA_URI_V4")
    if uri:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/task", timeout=5) as r:
                return json.load(r)["TaskARN"].rsplit("/", 1)[-1]
        except (OSError, ValueError, KeyError) as err:
            log.warning("ECS task metadata unreadable", extra={"uri": uri, "error": str(err)})
    return env.get("HOSTNAME") or socket.gethostname()


def log_unacted(env, say=log.warning) -> list[str]:
    """Log, once, each Envoy variable present that meshd does not act on, with what it does
    instead; and any other ENVOY_/APPMESH_ variable it does not know."""
    known = {"APPMESH_RESOURCE_ARN", "APPMESH_VIRTUAL_NODE_NAME", "ENVOY_LOG_LEVEL", "ENVOY_ADMIN_ACCESS_PORT",
             "ENVOY_ADMIN_ACCESS_ENABLE_IPV6", "APPMESH_ENVOY_INGRESS_PORT", "APPMESH_ENVOY_EGRESS_PORT",
             "APPMESH_IGNORE_UID", "APPMESH_IGNORE_GID", "APPMESH_APP_PORTS", "APPMESH_EGRESS_IGNORED_IP",
             "APPMESH_EGRESS_IGNORED_PORTS", "APPMESH_ENABLE_IPV6", "APPMESH_START_ENABLED",
             "ENABLE_ENVOY_DOG_STATSD", "ENABLE_ENVOY_STATS_TAGS", "APPMESH_METRIC_EXTENSION_VERSION",
             "ENABLE_ENVOY_XRAY_TRACING"}
    said = []
    for name in sorted(env):
        if name in INSTEAD:
            say(f"{name} is not acted on: {INSTEAD[name]}")
            said.append(name)
        elif (name.startswith("ENVOY_") or name.startswith("APPMESH_") or name.startswith("ENABLE_ENVOY_")) \
                and name not in known:
            say(f"{name} is not known to meshd; ignored")
            said.append(name)
    return said


@dataclass
class SidecarSettings:
    resource: MeshResource
    log_level: str
    admin_port: int
    admin_ipv6: bool
    ingress_port: int
    egress_port: int
    etcd: list[str]
    # Watch only this mesh and compile only what the node's backends (or the gateway's
    # routes) reach: a fleet runs one sidecar per workload (meshd.compile.scoped).
    scoped: bool = True

    @staticmethod
    def from_env(env) -> "SidecarSettings":
        level = env.get("ENVOY_LOG_LEVEL", "info").strip().lower()
        if level not in LOG_LEVELS:
            raise SidecarError(f"ENVOY_LOG_LEVEL: one of {', '.join(LOG_LEVELS)} is required, got {level!r}")
        etcd = [e for e in env.get("MESHD_ETCD", "").split(",") if e]
        if not etcd:
            raise SidecarError("MESHD_ETCD is required: the cluster's etcd endpoints (a sidecar joins a cluster)")
        scoped = env.get("MESHD_SCOPED", "1").strip().lower()
        if scoped not in ("0", "1", "true", "false"):
            raise SidecarError(f"MESHD_SCOPED: 1 (compile what the node reaches) or 0 (the whole mesh), got {scoped!r}")
        return SidecarSettings(
            resource=resource_from_env(env), log_level=LOG_LEVELS[level], scoped=scoped in ("1", "true"),
            admin_port=_port(env, "ENVOY_ADMIN_ACCESS_PORT", ADMIN_PORT),
            admin_ipv6=env.get("ENVOY_ADMIN_ACCESS_ENABLE_IPV6", "").lower() in ("1", "true"),
            ingress_port=_port(env, "APPMESH_ENVOY_INGRESS_PORT", INGRESS_PORT),
            egress_port=_port(env, "APPMESH_ENVOY_EGRESS_PORT", EGRESS_PORT), etcd=etcd)


def wait_for_resource(store, res: MeshResource, stop: threading.Event, say=log.info):
    """The virtual node's (or gateway's) spec, once it exists; None if stopped first."""
    from meshd.api import kinds as K  # noqa: PLC0415
    from meshd.api.resources import Resources  # noqa: PLC0415
    from meshd.v1 import admin_pb2  # noqa: PLC0415

    resources = Resources(store)
    wait = 0.5
    while not stop.is_set():
        try:
            if res.kind == "virtualNode":
                return resources.describe(K.VIRTUAL_NODE, admin_pb2.DescribeVirtualNodeRequest(
                    mesh_name=res.mesh, virtual_node_name=res.name)).virtual_node
            return resources.describe(K.VIRTUAL_GATEWAY, admin_pb2.DescribeVirtualGatewayRequest(
                mesh_name=res.mesh, virtual_gateway_name=res.name)).virtual_gateway
        except Exception as err:  # noqa: BLE001 - not there yet, or etcd briefly away: keep waiting
            say(f"waiting for {res.kind} {res.mesh}/{res.name}", extra={"reason": str(err)})
        stop.wait(wait)
        wait = min(wait * 2, 5.0)
    return None


def app_protocol(listener_protocol: str) -> str:
    """A virtual node listener's protocol as the data plane's app protocol."""
    return {"http": "http", "tcp": "tcp"}.get(listener_protocol.lower(), "http2")


class AdminPort:
    """Envoy's admin port, the parts task definitions and probes use: /server_info (`state`
    LIVE once serving), /ready, /stats/prometheus and /stats, /config_dump."""

    def __init__(self, host: str, port: int, *, state, registry, config_dump):
        self.state, self.registry, self.config_dump = state, registry, config_dump
        self.started = time.monotonic()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                outer.handle(self)

            def do_POST(self):  # noqa: N802
                outer.handle(self)

            def log_message(self, *args):
                pass
        server_cls = type("Server", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6 if ":" in host
                                                             else socket.AF_INET, "daemon_threads": True})
        self.server = server_cls((host, port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="admin-port", daemon=True)

    def start(self) -> "AdminPort":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        path = req.path.split("?", 1)[0]
        state = self.state()
        if path == "/server_info":
            uptime = f"{int(time.monotonic() - self.started)}s"
            from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415
            try:
                release = version("meshd")
            except PackageNotFoundError:
                release = "unknown"
            body = json.dumps({"version": f"meshd/{release}", "state": state, "hot_restart_version": "disabled",
                               "command_line_options": {}, "node": self.config_dump().get("node", {}),
                               "uptime_current_epoch": uptime, "uptime_all_epochs": uptime}, indent=1)
            self._send(req, 200, body, "application/json")
        elif path == "/ready":
            self._send(req, 200 if state == "LIVE" else 503, state + "\n", "text/plain")
        elif path == "/stats/prometheus":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # noqa: PLC0415
            self._send(req, 200, generate_latest(self.registry()).decode(), CONTENT_TYPE_LATEST)
        elif path == "/stats":
            from prometheus_client import generate_latest  # noqa: PLC0415
            from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415
            lines = []
            for fam in text_string_to_metric_families(generate_latest(self.registry()).decode()):
                for s in fam.samples:
                    tags = ".".join(f"{k}.{v}" for k, v in sorted(s.labels.items()))
                    lines.append(f"{s.name}{'.' + tags if tags else ''}: {s.value:g}")
            self._send(req, 200, "\n".join(lines) + "\n", "text/plain")
        elif path == "/config_dump":
            self._send(req, 200, json.dumps(self.config_dump(), indent=1, default=str), "application/json")
        else:
            self._send(req, 404, "not found: /server_info /ready /stats /stats/prometheus /config_dump\n",
                       "text/plain")

    @staticmethod
    def _send(req, status: int, body: str, ctype: str) -> None:
        data = body.encode()
        req.send_response(status)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)


__all__ = ["AdminPort", "MeshResource", "SidecarError", "SidecarSettings", "instance_address", "instance_id",
           "log_unacted", "wait_for_resource"]


def _statsd(env, daemon, res: MeshResource):
    """The DogStatsD push the task definition asked for (ENABLE_ENVOY_DOG_STATSD=1), or None."""
    if env.get("ENABLE_ENVOY_DOG_STATSD", "").strip() not in ("1", "true"):
        return None
    from meshd.observe.statsd import StatsdPush  # noqa: PLC0415

    tags = {}
    if env.get("ENABLE_ENVOY_STATS_TAGS", "").strip() in ("1", "true"):
        tags = {"appmesh.mesh": res.mesh,
                "appmesh.virtual_node" if res.kind == "virtualNode" else "appmesh.virtual_gateway": res.name}
    push = StatsdPush(daemon.observer.metrics.registry, address=env.get("STATSD_ADDRESS", "127.0.0.1"),
                      port=_port(env, "STATSD_PORT", 8125), socket_path=env.get("STATSD_SOCKET_PATH", ""),
                      interval=float(env.get("MESHD_STATSD_FLUSH_SECONDS", "5")), tags=tags,
                      extension=env.get("APPMESH_METRIC_EXTENSION_VERSION", "").strip() == "1",
                      mesh=res.mesh, node=res.name)
    log.info("pushing DogStatsD metrics", extra={"to": str(push.dest), "tags": ",".join(push.tags),
                                                 "extension": push.extension})
    return push.start()


def run(env=None) -> int:
    """`meshd sidecar`: wait for the resource, start meshd for it, serve the admin port, drain
    on SIGTERM. Exit codes: 0 stopped, 1 failed to start, 2 a setting refused."""
    import signal  # noqa: PLC0415

    import registry  # noqa: PLC0415
    from google.protobuf.json_format import MessageToDict  # noqa: PLC0415

    from meshd import logs  # noqa: PLC0415
    from meshd.app import Meshd, MeshdConfig  # noqa: PLC0415
    from meshd.observe import ObserveConfig  # noqa: PLC0415
    from meshd.proxy import GatewayConfig, LocalApp, RuntimeConfig  # noqa: PLC0415

    env = os.environ if env is None else env
    try:
        s = SidecarSettings.from_env(env)
        dns = env.get("MESHD_DNS_PORT", str(DNS_PORT)).strip()
        if dns in ("", "0", "off"):
            dns = ""
        elif not dns.isdigit() or not 0 < int(dns) <= 65535:
            raise SidecarError(f"MESHD_DNS_PORT: a port number or 'off' is required, got {dns!r}")
        drain = float(env.get("MESHD_DRAIN_SECONDS", "20"))
    except (SidecarError, ValueError) as err:
        print(f"meshd sidecar: {err}", flush=True)
        return 2
    logs.setup(s.log_level)
    log_unacted(env)
    stop = threading.Event()

    def _signal(signum, _frame):
        log.info("signal received; draining", extra={"signal": signal.Signals(signum).name})
        stop.set()
    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)

    res = s.resource
    state = {"state": "PRE_INITIALIZING", "daemon": None, "spec": None}
    address, iid = instance_address(env), instance_id(env)
    host_name = env.get("MESHD_HOST_NAME", iid)
    try:
        where = locality(env)
    except ValueError as err:
        print(f"meshd sidecar: MESHD_LOCALITY: {err}", flush=True)
        return 2

    def registry_of():
        d = state["daemon"]
        if d is not None and d.observer is not None:
            return d.observer.metrics.registry
        from prometheus_client import CollectorRegistry  # noqa: PLC0415
        return CollectorRegistry()

    def config_dump() -> dict:
        d, spec = state["daemon"], state["spec"]
        rt = d.runtime if d is not None else None
        live = rt.view.live(res.mesh) if rt is not None else None
        return {"node": {"id": iid, "cluster": f"{res.mesh}/{res.name}", "metadata": {
                    "mesh": res.mesh, res.kind: res.name, "instance_address": address}},
                "resource": {"mesh": res.mesh, "kind": res.kind, "name": res.name, "owner": res.owner},
                "spec": MessageToDict(spec.spec) if spec is not None else None,
                "listeners": dict(rt.addresses) if rt is not None else {},
                "route_table": {"generation": live.generation, "revision": live.revision} if live else None}

    admin = AdminPort("::" if s.admin_ipv6 else "0.0.0.0", s.admin_port, state=lambda: state["state"],
                      registry=registry_of, config_dump=config_dump).start()
    try:
        store = registry.Store(s.etcd, prefix=env.get("MESHD_ETCD_PREFIX", "/meshd/v1/"), timeout=3.0)
        try:
            state["spec"] = spec = wait_for_resource(store, res, stop)
        finally:
            store.close()
        if spec is None:
            return 0
        state["state"] = "INITIALIZING"
        apps, gateways = [], []
        if res.kind == "virtualNode":
            listeners = list(spec.spec.listeners)
            port = listeners[0].port_mapping.port if listeners else 0
            protocol = app_protocol(listeners[0].port_mapping.protocol) if listeners else "http2"
            apps.append(LocalApp(mesh=res.mesh, virtual_node=res.name, port=port, address=address, instance_id=iid,
                                 protocol=protocol, intercept_egress=str(s.egress_port),
                                 intercept_ingress=str(s.ingress_port)))
        else:
            gateways.append(GatewayConfig(mesh=res.mesh, virtual_gateway=res.name))
        runtime = RuntimeConfig(apps=apps, gateways=gateways, ingress=env.get("MESHD_INGRESS", f"0.0.0.0:{MTLS_PORT}"),
                                advertise=env.get("MESHD_ADVERTISE", f"{address}:{MTLS_PORT}"), drain_seconds=drain,
                                dns=dns)
        observe = ObserveConfig(metrics="")  # served on the admin port's /stats/prometheus
        if env.get("ENABLE_ENVOY_XRAY_TRACING", "").strip() in ("1", "true"):
            from meshd.observe.xray import daemon_address  # noqa: PLC0415

            observe.xray_daemon = daemon_address(env)
            observe.xray_rate = float(env.get("XRAY_SAMPLING_RATE", "0.05"))
            observe.xray_segment = (env.get("XRAY_SEGMENT_NAME", f"{res.mesh}/{res.name}"), res.mesh, res.name)
        cfg = MeshdConfig(
            admin=env.get("MESHD_ADMIN", "127.0.0.1:9902"), etcd=s.etcd,
            etcd_prefix=env.get("MESHD_ETCD_PREFIX", "/meshd/v1/"),
            state_dir=env.get("MESHD_STATE_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "meshd-sidecar")),
            host_name=host_name, locality=where,
            cluster_key=env.get("MESHD_CLUSTER_KEY", "/etc/meshd/cluster.key"),
            trust_domain=env.get("MESHD_TRUST_DOMAIN", "meshd.local"), join_token=env.get("MESHD_JOIN_TOKEN", ""),
            join_server=env.get("MESHD_JOIN_SERVER", ""), signer=env.get("MESHD_SIGNER", ""),
            runtime=runtime, observe=observe, scoped=s.scoped)
        daemon = Meshd(cfg)
        state["daemon"] = daemon
        try:
            daemon.start()
        except Exception as err:  # noqa: BLE001 - reported, exit non-zero
            log.error("meshd sidecar failed to start", extra={"error": str(err)})
            daemon.stop()
            return 1
        statsd = _statsd(env, daemon, res)
        while not stop.wait(0.1):
            if state["state"] != "LIVE" and daemon.runtime is not None and daemon.runtime.ready():
                state["state"] = "LIVE"
                log.info("sidecar live", extra={"resource": f"mesh/{res.mesh}/{res.kind}/{res.name}",
                                                "instance": iid, "address": address})
        state["state"] = "DRAINING"
        daemon.stop()
        if statsd is not None:
            statsd.stop()  # the last interval's growth, drained requests included
        return 0
    finally:
        admin.stop()
