"""meshd's local data-plane configuration (`--config`, YAML): the apps, gateways and listeners
this host serves, read strictly so that a misspelt key is an error naming its path."""
from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from meshd.security import spiffe


class ConfigError(ValueError):
    """A data-plane configuration file meshd cannot use; `path` names the offending key
    (`apps[0].backends[1].virtualService`)."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}" if path else reason)


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
    # The port (on 127.0.0.1 and ::1) or HOST:PORT where the app's redirected outbound
    # connections arrive (`meshd proxy-init`, App Mesh's APPMESH_ENVOY_EGRESS_PORT).
    intercept_egress: str = ""
    # The port (on every address) or HOST:PORT where redirected inbound connections to the
    # app's ports arrive (App Mesh's APPMESH_ENVOY_INGRESS_PORT).
    intercept_ingress: str = ""

    @property
    def principal(self) -> tuple[str, str]:
        """(SPIFFE kind, name) of the identity its calls carry; a GatewayConfig has one too."""
        return spiffe.WORKLOAD, self.virtual_node


@dataclass
class GatewayConfig:
    """One virtual gateway this meshd runs (`gateways:` in the local config)."""

    mesh: str
    virtual_gateway: str
    address: str = "0.0.0.0"  # the host its listeners bind; each port is the listener's own

    @property
    def principal(self) -> tuple[str, str]:
        """(SPIFFE kind, name) of the identity the gateway's upstream calls carry."""
        return spiffe.GATEWAY, self.virtual_gateway


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
    # A TLS client (at the ingress or a gateway listener) that has not finished its handshake
    # by then is cut: without it a half-sent ClientHello held a connection for 60 s.
    handshake_timeout_seconds: float = 10.0
    # The DNS responder for virtual service names (meshd.proxy.dns): a port (on 127.0.0.1
    # and ::1) or HOST:PORT; "" for none.
    dns: str = ""
    # Where this host runs, REGION/ZONE[/SUB_ZONE], when `meshd run --locality` says nothing
    # (a per-host file is where a fleet's hosts differ); "" for none.
    locality: str = ""

    @staticmethod
    def load(path: str) -> "RuntimeConfig":
        """Read a YAML file; unknown keys and wrong types raise ConfigError with their path."""
        with open(path) as f:
            try:
                doc = yaml.safe_load(f)
            except yaml.YAMLError as err:
                raise ConfigError("", f"{path}: not YAML: {err}") from err
        return RuntimeConfig.from_dict(doc if doc is not None else {})

    @staticmethod
    def from_dict(doc) -> "RuntimeConfig":
        top = _Doc(doc, "")
        apps = [_app(a) for a in top.items("apps")]
        gateways = [_gateway(g) for g in top.items("gateways")]
        cfg = RuntimeConfig(
            apps=apps, gateways=gateways, ingress=top.text("ingress", "127.0.0.1:15443"),
            ingress_http=top.text("ingressHttp", ""), advertise=top.text("advertise", ""),
            drain_seconds=top.number("drainSeconds", 5.0),
            upstream_idle_seconds=top.number("upstreamIdleSeconds", 60.0),
            connect_timeout_seconds=top.number("connectTimeoutSeconds", 5.0),
            ping_seconds=top.number("pingSeconds", 2.0),
            handshake_timeout_seconds=top.number("handshakeTimeoutSeconds", 10.0),
            dns=top.listen_address("dns"), locality=top.text("locality", ""))
        try:
            parse_locality(cfg.locality)
        except ConfigError as err:
            raise ConfigError("locality", err.reason) from err
        top.seen.add("observability")  # read (and checked) by meshd.observe.ObserveConfig
        top.done()
        return cfg


def _app(a: "_Doc") -> LocalApp:
    backends = []
    for b in a.items("backends"):
        backends.append(BackendPort(b.integer("port", required=True), b.text("virtualService", required=True),
                                    b.choice("protocol", ("http2", "http", "tcp"), "http2")))
        b.done()
    app = LocalApp(mesh=a.text("mesh", required=True), virtual_node=a.text("virtualNode", required=True),
                   port=a.integer("port", required=True), address=a.text("address", "127.0.0.1"),
                   instance_id=a.text("instanceId", ""), egress=a.text("egress", ""),
                   egress_http=a.text("egressHttp", ""),
                   protocol=a.choice("protocol", ("http2", "http", "tcp"), "http2"),
                   backends=backends, intercept_egress=a.listen_address("interceptEgress"),
                   intercept_ingress=a.listen_address("interceptIngress"))
    a.done()
    return app


def _gateway(g: "_Doc") -> GatewayConfig:
    gw = GatewayConfig(mesh=g.text("mesh", required=True), virtual_gateway=g.text("virtualGateway", required=True),
                       address=g.text("address", "0.0.0.0"))
    g.done()
    return gw


class _Doc:
    """One mapping of the YAML document: typed reads by key, then `done` refuses whatever
    key was not read (a typo such as `virtualnode` would otherwise be silently ignored)."""

    def __init__(self, value, path: str):
        if not isinstance(value, dict):
            raise ConfigError(path or "(document)", f"must be a mapping, got {type(value).__name__}")
        self.value, self.path, self.seen = value, path, set()

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, required: bool):
        self.seen.add(key)
        if key not in self.value or self.value[key] is None:
            if required:
                raise ConfigError(self._at(key), "required")
            return None
        return self.value[key]

    def text(self, key: str, default: str = "", *, required: bool = False) -> str:
        v = self._get(key, required)
        if v is None:
            return default
        if not isinstance(v, str):
            raise ConfigError(self._at(key), f"must be a string, got {v!r}")
        return v

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        v = self.text(key, default)
        if v not in choices:
            raise ConfigError(self._at(key), f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    def integer(self, key: str, default: int = 0, *, required: bool = False) -> int:
        v = self._get(key, required)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 65535:
            raise ConfigError(self._at(key), f"must be a port number (0-65535), got {v!r}")
        return v

    def listen_address(self, key: str) -> str:
        """A port number, or "HOST:PORT"; "" when absent."""
        v = self._get(key, False)
        if v is None:
            return ""
        if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65535:
            return str(v)
        if isinstance(v, str) and ":" in v:
            host, _, port = v.rpartition(":")
            if host and port.isdigit() and 0 <= int(port) <= 65535:
                return v
        raise ConfigError(self._at(key), f"must be a port number or HOST:PORT, got {v!r}")

    def number(self, key: str, default: float) -> float:
        v = self._get(key, False)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(self._at(key), f"must be a non-negative number of seconds, got {v!r}")
        return float(v)

    def items(self, key: str) -> list["_Doc"]:
        v = self._get(key, False)
        if v is None:
            return []
        if not isinstance(v, list):
            raise ConfigError(self._at(key), f"must be a list, got {type(v).__name__}")
        return [_Doc(item, f"{self._at(key)}[{i}]") for i, item in enumerate(v)]

    def done(self) -> None:
        unknown = sorted(set(self.value) - self.seen, key=str)
        if unknown:
            raise ConfigError(self._at(str(unknown[0])), "unknown key")


def parse_locality(text: str) -> tuple[str, str, str]:
    """`region/zone[/sub_zone]` (`meshd run --locality`, MESHD_LOCALITY) as (region, zone,
    sub_zone). "" is no locality: ("", "", "").

    An omitted sub-zone stays empty rather than naming the host: the router's priority 0
    is "same region, zone and sub-zone", so a host-named sub-zone would keep each caller on
    the instances of its own host and leave the rest of its zone idle (Istio, too, leaves
    the sub-zone unset unless told). A host-level preference is opt-in, by giving one."""
    if not text:
        return "", "", ""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError("locality", f"expected REGION/ZONE[/SUB_ZONE], got {text!r}")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def split_address(address: str) -> tuple[str, int]:
    """"HOST:PORT" (or "[v6]:PORT") -> (host, port)."""
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


# What meshds tell each other. A request to another meshd's ingress names the local instance
# it is for and the virtual service the caller routed by; an instance record names its
# meshd's ingress per protocol (`meshd.ingress` for HTTP/2 and gRPC is meshd.compile's).
INSTANCE_HEADER = "x-meshd-instance"
# Request headers of this prefix are meshd's own: none that a caller sent crosses an edge
# (app -> egress, outside -> gateway, ingress -> app); meshd sets what the next hop needs.
INTERNAL_HEADER_PREFIX = "x-meshd-"
SERVICE_HEADER = "x-meshd-service"
INGRESS_HTTP_ATTRIBUTE = "meshd.ingress.http"
INGRESS_TCP_ATTRIBUTE = "meshd.ingress.tcp"
