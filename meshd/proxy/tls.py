"""The data plane's TLS: workload certificates of the local nodes and gateways, the ingress's
server context chosen by SNI, the egress's client contexts, App Mesh `file` sources, and
reading a caller's identity from its certificate."""
from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from meshd.security import client_context, make_csr, server_context, spiffe

log = logging.getLogger("meshd.proxy.tls")


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

    def contexts(self, mesh: str, node: str, kind: str = spiffe.WORKLOAD) -> NodeTls:
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


class ProxyTls:
    """Every TLS context the data plane uses, built from the mesh's view and the workload
    certificates; the ingress, egress and gateways ask here and keep nothing of their own."""

    def __init__(self, certs: WorkloadCerts, view, apps):
        self.certs = certs
        self.view = view
        self.apps = apps  # the local apps (LocalApp) whose nodes the ingress serves
        self._file_contexts: dict[tuple, object] = {}
        self._file_cert_names: dict[str, set[str]] = {}
        self._peer_ids: dict[bytes, str | None] = {}

    @property
    def trust_domain(self) -> str:
        return self.certs.trust_domain

    def ingress_context(self) -> ssl.SSLContext:
        """The ingress's server context: SNI names the target node; its certificate answers."""
        front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        front.minimum_version = ssl.TLSVersion.TLSv1_2
        front.set_alpn_protocols(["h2"])
        by_name = {}
        for app in self.apps:
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
            ssl_obj.context = self.server_context(*mn)
            return None
        front.sni_callback = select
        return front

    # -- App Mesh `file` certificate sources ---------------------------------------------
    def listener_tls(self, mesh: str, node: str):
        """The first listener `tls` of the local node `node`, or None."""
        snap = self.view.snapshot(mesh)
        spec = snap.nodes.get(node) if snap else None
        for lst in (spec.spec.listeners if spec is not None else ()):
            if lst.HasField("tls"):
                return lst.tls
        return None

    def server_context(self, mesh: str, node: str):
        """The ingress's context for `node`: the mesh CA certificate, or the listener's App
        Mesh `file` certificate, verifying callers with the listener's `file` trust when set."""
        base = self.certs.contexts(mesh, node)
        tls = self.listener_tls(mesh, node)
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
        for app in self.apps:
            tls = self.listener_tls(app.mesh, app.virtual_node)
            if tls is None or not tls.certificate.HasField("file"):
                continue
            path = tls.certificate.file.certificate_chain
            names = self._file_cert_names.get(path)
            if names is None:
                names = self._file_cert_names[path] = {n.lower() for n in all_sans(
                    x509.load_pem_x509_certificate(_read(path)).public_bytes(Encoding.DER))}
            if server_name in names:
                return app.mesh, app.virtual_node
        return None

    def _client_policy(self, app, service: str):
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

    def client_context(self, app, service: str, target_node: str, alpn: tuple[str, ...]):
        """(context, server_hostname) for `app` (a LocalApp or a GatewayConfig) calling
        `target_node`. With the caller's client policy naming `file` sources, those are used
        as-is (App Mesh semantics); the expected server name is then the policy's first DNS
        subjectAlternativeName, and with none given, any certificate from the policy's trust
        is accepted."""
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

    def peer_identity(self, der: bytes | None) -> str | None:
        """The one SPIFFE URI SAN of a caller's certificate (DER), or None."""
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


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def all_sans(der: bytes | None) -> list[str]:
    """Every subjectAlternativeName of a certificate (DER) as text; [] for none."""
    if der is None:
        return []
    try:
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in san]
