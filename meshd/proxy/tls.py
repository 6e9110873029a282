"""The data plane's TLS: workload certificates of the local nodes and gateways (issued and
renewed off the event loop), the ingress's server context chosen by SNI, the egress's client
contexts, App Mesh `file` sources followed as they change, and callers' identities.

Every context handed out comes from a long-lived `Credentials` object that renewals update
in place. The loop only ever reads the current contexts: nothing here signs, or reads a
file that changed, from a TLS callback or a routing hook.
"""
from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import TYPE_CHECKING, Callable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from meshd.security import Credentials, make_csr, spiffe
from meshd.security.tls import ServerFront, file_stamp, sni_front

if TYPE_CHECKING:  # the cache is made by the composition root
    from meshd.security.acm import AcmCache

log = logging.getLogger("meshd.proxy.tls")

# The ALPN offers of the egress's client contexts: HTTP/2 and gRPC, HTTP/1.1, TCP (none).
CLIENT_ALPNS = (("h2",), ("http/1.1",), ())
# A failed issuance or renewal is tried again after this, doubling up to RETRY_MAX_S, and
# never waiting more than a twentieth of the certificate's life (short-lived certificates
# must get several tries before they expire).
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
# Under this share of its life left, a certificate that cannot be renewed is an ERROR.
LOUD_SHARE = 0.10


class CredentialsPending(Exception):
    """No certificate has been issued yet for `identity` (its issuance runs off the loop)."""

    def __init__(self, identity: str):
        self.identity = identity
        super().__init__(f"no certificate issued yet for {identity}")


class NodeCredentials(Credentials):
    """A virtual node's (or virtual gateway's) mesh CA credentials: the ingress's server
    context and one client context per ALPN offer of the egress, updated in place on renewal."""

    def __init__(self, identity: str, chain: bytes, key: bytes, bundle: bytes):
        super().__init__(chain, key, bundle, alpn=("h2", "http/1.1"), client_alpns=CLIENT_ALPNS,
                         check_hostname=True)  # the target's DNS name is verified in the handshake
        self.identity = identity

    @property
    def client_h2(self) -> ssl.SSLContext:
        return self.client_for(("h2",))

    @property
    def client_http(self) -> ssl.SSLContext:
        return self.client_for(("http/1.1",))

    @property
    def client_tcp(self) -> ssl.SSLContext:
        return self.client_for(())


class _Entry:
    """One identity's credentials and its renewal schedule (seconds on WorkloadCerts.clock)."""

    __slots__ = ("creds", "issued_at", "expires_at", "renew_at", "retry_at", "failures")

    def __init__(self, creds: NodeCredentials, issued_at: float, expires_at: float):
        self.creds = creds
        self.issued(issued_at, expires_at)

    def issued(self, issued_at: float, expires_at: float) -> None:
        """A certificate was (re)issued: renew at two thirds of its life, no failures yet."""
        self.issued_at = issued_at
        self.expires_at = expires_at
        self.renew_at = issued_at + (expires_at - issued_at) * 2 / 3
        self.retry_at = 0.0
        self.failures = 0


class WorkloadCerts:
    """Credentials for the virtual nodes and gateways this meshd serves, renewed at two
    thirds of their life.

    `sign(identity, csr_pem) -> (chain_pem, bundle_pem)` is given by the composition root:
    local signing with the cluster key, or SignCertificate through a signer's admin API.
    It may block for seconds (etcd, a remote signer), so `ensure` and `renew_due` are for
    threads other than the data-plane loop; the loop calls `get`, which never signs.
    """

    def __init__(self, trust_domain: str, sign: Callable[[str, bytes], tuple[bytes, bytes]], *,
                 clock: Callable[[], float] = time.time):
        self.trust_domain = trust_domain
        self.sign = sign
        self.clock = clock
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        self._wanted: set[tuple[str, str, str]] = set()  # asked for on the loop, not issued yet
        self._signing = threading.Lock()  # one issuance at a time: no identity is signed twice
        self.issued = 0

    def identity(self, key: tuple[str, str, str]) -> str:
        """The SPIFFE ID of (mesh, node, kind)."""
        mesh, node, kind = key
        make_id = spiffe.gateway_id if kind == spiffe.GATEWAY else spiffe.workload_id
        return make_id(self.trust_domain, mesh, node).uri

    def get(self, mesh: str, node: str, kind: str = spiffe.WORKLOAD) -> NodeCredentials | None:
        """The credentials of `node` as they are now, or None (then issued by the next
        `renew_due`). Never signs: this is what the loop calls."""
        e = self._entries.get((mesh, node, kind))
        if e is None:
            self._wanted.add((mesh, node, kind))
            return None
        return e.creds

    def contexts(self, mesh: str, node: str, kind: str = spiffe.WORKLOAD) -> NodeCredentials:
        """The credentials of `node` (a virtual gateway's name with kind spiffe.GATEWAY),
        issuing them first when there are none. Blocking: not for the loop."""
        key = (mesh, node, kind)
        e = self._entries.get(key)
        if e is not None:
            return e.creds
        with self._signing:
            e = self._entries.get(key)
            if e is None:
                e = self._issue(key, None)
            return e.creds

    ensure = contexts

    def _issue(self, key: tuple[str, str, str], entry: _Entry | None) -> _Entry:
        """Sign a new certificate for `key`; a new entry, or `entry` updated in place."""
        identity = self.identity(key)
        key_pem, csr_pem = make_csr(identity)
        chain, bundle = self.sign(identity, csr_pem)
        now = self.clock()
        # The schedule runs on this object's clock; the certificate's own end is wall time.
        remaining = x509.load_pem_x509_certificate(chain).not_valid_after_utc.timestamp() - time.time()
        if entry is None:
            entry = _Entry(NodeCredentials(identity, chain, key_pem, bundle), now, now + remaining)
            self._entries[key] = entry
        else:
            entry.creds.update(chain, key_pem, bundle)
            entry.issued(now, now + remaining)
        self._wanted.discard(key)
        self.issued += 1
        log.info("workload certificate issued", extra={"identity": identity, "serial": entry.creds.serial,
                                                       "expires_in_s": round(remaining, 1)})
        return entry

    def renew_due(self) -> list[tuple[str, str, str]]:
        """Issue what the loop asked for and renew every certificate past two thirds of its
        life; the keys whose credentials changed. A failure keeps the current certificate
        and is retried with backoff (never raised): see `_failed`."""
        changed = []
        for key in list(self._wanted):
            with self._signing:
                if key in self._entries:
                    self._wanted.discard(key)
                    continue
                try:
                    self._issue(key, None)
                    changed.append(key)
                except Exception as err:  # noqa: BLE001 - asked again at the next tick
                    log.warning("workload certificate not issued; retrying",
                                extra={"identity": self.identity(key), "error": str(err)})
        for key, e in list(self._entries.items()):
            now = self.clock()
            if now < e.renew_at or now < e.retry_at:
                continue
            with self._signing:
                try:
                    self._issue(key, e)
                    changed.append(key)
                except Exception as err:  # noqa: BLE001 - keep serving on the current certificate
                    self._failed(e, err)
        return changed

    def _failed(self, e: _Entry, err: Exception) -> None:
        """A renewal failed: try again with backoff, louder the nearer the expiry."""
        now = self.clock()
        e.failures += 1
        life = max(1.0, e.expires_at - e.issued_at)
        wait = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (e.failures - 1), max(RETRY_FIRST_S, life / 20))
        e.retry_at = now + wait
        left = e.expires_at - now
        extra = {"identity": e.creds.identity, "serial": e.creds.serial, "error": str(err),
                 "attempt": e.failures, "retry_in_s": round(wait, 1), "expires_in_s": round(left, 1)}
        if left <= 0:
            log.error("workload certificate EXPIRED and not renewed: new connections will fail", extra=extra)
        elif left < LOUD_SHARE * life:
            log.error("workload certificate expires soon and cannot be renewed", extra=extra)
        else:
            log.warning("workload certificate renewal failed; keeping the current one", extra=extra)

    def next_check(self, default: float) -> float:
        """Seconds until the next renewal or retry is due (at most `default`)."""
        now = self.clock()
        waits = [max(e.renew_at, e.retry_at) - now for e in self._entries.values()]
        if self._wanted:
            waits.append(RETRY_FIRST_S)
        return max(0.0, min([default, *waits]))

    def shortest_life(self) -> float | None:
        """The lifetime (seconds, from issuance) of the shortest-lived certificate held, or None."""
        lives = [e.expires_at - e.issued_at for e in self._entries.values()]
        return min(lives) if lives else None


class _FileCredentials:
    """Credentials made from App Mesh `file` sources, completed from the node's mesh CA
    credentials (its certificate when only a `file` trust is given; its bundle always, so
    the mesh's own callers keep working beside the operator's PKI)."""

    def __init__(self, base: Credentials, cert: tuple[str, str] | None, trust: str | None,
                 acm_trust: Callable[[], bytes] | None = None, **kwargs):
        self.base, self.cert, self.trust, self.acm_trust = base, cert, trust, acm_trust
        self.paths = (*(cert or ()), *((trust,) if trust else ()))
        self.stamp = file_stamp(self.paths)
        self.blobs = _read_all(self.paths)
        self.creds = Credentials(*self._inputs(), **kwargs)

    def _inputs(self) -> tuple[bytes, bytes, bytes]:
        blobs = list(self.blobs)
        chain, key = (blobs.pop(0), blobs.pop(0)) if self.cert else (self.base.cert_chain_pem, self.base.key_pem)
        bundle = (blobs.pop(0) + b"\n" + self.base.bundle_pem) if self.trust else self.base.bundle_pem
        if self.acm_trust is not None:  # the ACM PCA anchors imported so far (none: the mesh CA only)
            bundle = self.acm_trust() + b"\n" + bundle
        return chain, key, bundle

    def refresh(self) -> bool:
        """Re-read changed files and follow the node's renewed credentials; True if changed.
        Blocking file I/O: off the loop."""
        stamp = file_stamp(self.paths)
        if stamp != self.stamp:
            self.blobs = _read_all(self.paths)
            self.stamp = stamp
        before = self.creds.generation
        self.creds.update(*self._inputs())
        return self.creds.generation != before


class AcmListenerCredentials:
    """A listener whose App Mesh certificate is `acm`: it presents what `meshctl certificate
    import` stored under the ARN, as the `AcmCache` holds it now. Before an import (or on a
    host that cannot open the sealed key) every handshake is refused with unrecognized_name;
    from the first connection after the cache learns of an import it is served, no restart.
    The state is logged once per change. Duck-types the `Credentials` a listener keeps."""

    files: tuple[str, ...] = ()

    def __init__(self, acm: AcmCache, arn: str, where: str, bundle: bytes | Callable[[], bytes] = b"", *,
                 alpn=("h2", "http/1.1")):
        self.acm, self.arn, self.where, self.alpn = acm, arn, where, tuple(alpn)
        # The client trust; a callable follows a changing one (the mesh CA's bundle).
        self.bundle = bundle if callable(bundle) else (lambda: bundle)
        self._lock = threading.Lock()
        self._material = None
        self._creds: Credentials | None = None
        self._said: str | None = None
        self._refuse = sni_front(lambda _obj, _name: None, alpn=self.alpn)
        self.current()

    @property
    def problem(self) -> str:
        """Why the listener refuses TLS now ("" when it serves)."""
        if self._creds is not None:
            return ""
        why = self.acm.material.unreadable.get(self.arn)
        return f"not usable on this host ({why})" if why else "certificate not imported"

    def current(self) -> Credentials | None:
        """The credentials for the ARN's current material (built once per change)."""
        m = self.acm.certificate(self.arn)
        m = m and (*m, self.bundle())
        if m != self._material:
            with self._lock:
                if m != self._material:
                    creds = None
                    if m:
                        try:
                            creds = Credentials(*m, alpn=self.alpn)
                        except Exception as err:  # noqa: BLE001 - a bad import must not break the loop
                            log.error("ACM certificate not usable", extra={"arn": self.arn, "error": str(err)})
                    self._creds, self._material = creds, m
        self._log_state()
        return self._creds

    def _log_state(self) -> None:
        problem = self.problem
        if problem == self._said:
            return
        self._said = problem
        if not problem:
            log.info(f"{self.where}: ACM certificate {self.arn} served", extra={"arn": self.arn,
                                                                                "serial": self._creds.serial})
        elif problem == "certificate not imported":
            log.warning(f"{self.where}: ACM certificate {self.arn} not imported (meshctl certificate import)",
                        extra={"arn": self.arn})
        else:
            log.error(f"{self.where}: ACM certificate {self.arn} {problem}", extra={"arn": self.arn})

    def server_front(self) -> ssl.SSLContext:
        return ServerFront(lambda: c.server if (c := self.current()) is not None else self._refuse)

    def refresh_files(self) -> bool:
        """Follow the cache (the listener hands each new connection the current context)."""
        self.current()
        return False

    @property
    def serial(self) -> int | None:
        return self._creds.serial if self._creds is not None else None


class ProxyTls:
    """Every TLS context the data plane uses, built from the mesh's view and the workload
    certificates; the ingress, egress and gateways ask here and keep nothing of their own."""

    def __init__(self, certs: WorkloadCerts, view, apps, *, session_tickets: bool = True, acm: AcmCache | None = None):
        self.certs = certs
        self.acm = acm  # ACM PCA anchors by ARN, for client policies whose trust is `acm`
        self._acm_missing: dict[tuple, tuple[str, ...]] = {}  # what was last logged as not imported
        self._acm_servers: dict[tuple, AcmListenerCredentials] = {}  # local nodes' `acm` listener certificates
        self.view = view
        self.apps = apps  # the local apps (LocalApp) whose nodes the ingress serves
        # False: the ingress issues no TLS session tickets, so every connection to it runs
        # a full handshake (for peers that must re-authenticate each time).
        self.session_tickets = session_tickets
        self._files: dict[tuple, _FileCredentials] = {}
        self._file_names: dict[tuple, tuple[int, frozenset[str]]] = {}
        self._peer_ids: dict[bytes, str | None] = {}
        # Per caller identity, the certificate (serial, notAfter) it last newly presented.
        self.peer_certs: dict[str, tuple[int, float]] = {}
        self._by_name = {spiffe.workload_dns_name(certs.trust_domain, a.mesh, a.virtual_node): (a.mesh, a.virtual_node)
                         for a in apps}
        self._front = self._new_front()

    @property
    def trust_domain(self) -> str:
        return self.certs.trust_domain

    # -- the ingress's server side ----------------------------------------------------------
    def ingress_context(self) -> ssl.SSLContext:
        """The ingress listeners' one context: each connection starts on the current SNI
        front, which moves it onto the certificate of the node its SNI names."""
        return ServerFront(lambda: self._front)

    def _new_front(self) -> ssl.SSLContext:
        front = sni_front(self._select, alpn=("h2", "http/1.1"))
        if not self.session_tickets:
            front.num_tickets = 0
        return front

    def rotate(self) -> None:
        """Credentials changed (call on the loop): new connections start on a new front.
        A new context has new session ticket keys, so tickets issued before, which may
        carry a certificate since renewed, are not accepted any more (a full handshake)."""
        self._front = self._new_front()

    def _select(self, _ssl_obj, server_name: str | None) -> ssl.SSLContext | None:
        name = (server_name or "").lower()
        mn = self._by_name.get(name) or self._file_cert_owner(name)
        return self.server_context(*mn) if mn is not None else None

    def listener_tls(self, mesh: str, node: str):
        """The first listener `tls` of the local node `node`, or None."""
        snap = self.view.snapshot(mesh)
        spec = snap.nodes.get(node) if snap else None
        for lst in (spec.spec.listeners if spec is not None else ()):
            if lst.HasField("tls"):
                return lst.tls
        return None

    def server_context(self, mesh: str, node: str) -> ssl.SSLContext | None:
        """The ingress's context for `node`: the mesh CA certificate, or the listener's App
        Mesh `file` certificate, verifying callers with the listener's `file` trust when set.
        None while the node has no certificate yet."""
        creds = self._server_creds(mesh, node)
        return creds.server if creds is not None else None

    def _server_creds(self, mesh: str, node: str) -> Credentials | None:
        base = self.certs.get(mesh, node)
        if base is None:
            return None
        tls = self.listener_tls(mesh, node)
        if tls is not None and tls.certificate.HasField("acm") and self.acm is not None:
            return self._acm_server(mesh, node, base, tls).current()
        cert = tls.certificate.file if tls is not None and tls.certificate.HasField("file") else None
        trust = (tls.validation.trust.file if tls is not None and tls.HasField("validation")
                 and tls.validation.trust.HasField("file") else None)
        if cert is None and trust is None:
            return base
        return self._file_creds(("server", mesh, node), base, cert, trust, alpn=("h2", "http/1.1"))

    def _acm_server(self, mesh: str, node: str, base: Credentials, tls) -> AcmListenerCredentials:
        """The ingress's credentials for a local node whose listener certificate is `acm`:
        the imported certificate, checking callers against the listener's `file` trust (when
        set) and the mesh CA, as for a `file` certificate; refused until imported."""
        arn = tls.certificate.acm.certificate_arn
        trust = (tls.validation.trust.file.certificate_chain if tls.HasField("validation")
                 and tls.validation.trust.HasField("file") else "")
        key = (mesh, node, arn, trust)
        got = self._acm_servers.get(key)
        if got is None:
            spec = self.view.snapshot(mesh).nodes[node].spec
            port = next(lst.port_mapping.port for lst in spec.listeners if lst.HasField("tls"))
            extra = _read_all([trust])[0] + b"\n" if trust else b""
            got = self._acm_servers[key] = AcmListenerCredentials(
                self.acm, arn, f"listener {port} of virtualNode {node}",
                lambda: extra + base.bundle_pem, alpn=("h2", "http/1.1"))
        return got

    def _file_creds(self, key: tuple, base, cert, trust, acm_arns: tuple[str, ...] = (), **kwargs) -> Credentials:
        """The `file`- (and `acm` trust-) sourced credentials for `key` and these sources,
        made on first use."""
        paths = ((cert.certificate_chain, cert.private_key) if cert else None,
                 trust.certificate_chain if trust else None)
        key = (*key, paths, acm_arns)
        f = self._files.get(key)
        if f is None:
            # First use reads the files here (on the loop, as before); changes are picked
            # up by `refresh` on the renewal thread.
            acm_trust = (lambda: self._acm_anchors(key, acm_arns)) if acm_arns else None
            f = self._files[key] = _FileCredentials(base, *paths, acm_trust, **kwargs)
        return f.creds

    def _acm_anchors(self, key: tuple, arns: tuple[str, ...]) -> bytes:
        """The imported anchors of `arns`; logs which are not imported, once per change."""
        if self.acm is None:
            bundle, missing = b"", list(arns)
        else:
            bundle, missing = self.acm.anchors(arns)
        if tuple(missing) != self._acm_missing.get(key, ()):
            self._acm_missing[key] = tuple(missing)
            if missing:
                log.warning(f"client policy trust: ACM certificate authorities {', '.join(missing)} not imported "
                            "(meshctl trust import); upstreams they sign are refused",
                            extra={"arns": ",".join(missing)})
        return bundle

    def _file_cert_owner(self, server_name: str):
        """The local node whose App Mesh `file` listener certificate carries `server_name`
        (a caller verifying the operator's PKI asks for that name, not the mesh's)."""
        for app in self.apps:
            tls = self.listener_tls(app.mesh, app.virtual_node)
            if tls is None or not (tls.certificate.HasField("file") or tls.certificate.HasField("acm")):
                continue
            creds = self._server_creds(app.mesh, app.virtual_node)
            if creds is None:
                continue
            key = (app.mesh, app.virtual_node)
            got = self._file_names.get(key)
            if got is None or got[0] != creds.serial:  # names follow a replaced file
                names = frozenset(n.lower() for n in all_sans(
                    x509.load_pem_x509_certificate(creds.cert_chain_pem).public_bytes(Encoding.DER)))
                got = self._file_names[key] = (creds.serial, names)
            if server_name in got[1]:
                return app.mesh, app.virtual_node
        return None

    def refresh(self) -> bool:
        """Re-read changed `file` sources and follow renewed node credentials; True when any
        context changed. Blocking file I/O: call it from the renewal thread."""
        changed = False
        for f in list(self._files.values()):
            try:
                changed |= f.refresh()
            except Exception as err:  # noqa: BLE001 - e.g. a file half-written: keep the current one
                log.warning("TLS file source not reloaded; keeping the current certificate",
                            extra={"files": ",".join(f.paths), "error": str(err)})
        for a in list(self._acm_servers.values()):  # imports seen by the ACM cache: built here, off the loop
            before = a._creds
            changed |= a.current() is not before
        return changed

    # -- the egress's client side -----------------------------------------------------------
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
        is accepted. The context is the current one: after a renewal the egress asks again.
        Raises CredentialsPending before the caller's first certificate is issued."""
        kind, name = app.principal
        base = self.certs.get(app.mesh, name, kind)
        if base is None:
            raise CredentialsPending(self.certs.identity((app.mesh, name, kind)))
        dns = spiffe.workload_dns_name(self.certs.trust_domain, app.mesh, target_node)
        policy = self._client_policy(app, service)
        cert = policy.certificate.file if policy is not None and policy.certificate.HasField("file") else None
        trust = (policy.validation.trust.file if policy is not None and policy.HasField("validation")
                 and policy.validation.trust.HasField("file") else None)
        acm_arns = (tuple(policy.validation.trust.acm.certificate_authority_arns)
                    if policy is not None and policy.HasField("validation")
                    and policy.validation.trust.HasField("acm") else ())
        if cert is None and trust is None and not acm_arns:
            return base.client_for(alpn), dns
        sans = [n for n in policy.validation.subject_alternative_names.match.exact] if policy.HasField("validation") else []
        name = next((n for n in sans if not n.startswith("spiffe://")), None)
        creds = self._file_creds(("client", alpn, app.mesh, app.principal, service, name), base, cert, trust,
                                 acm_arns, alpn=alpn, check_hostname=name is not None)
        return creds.client, (name or dns)

    # -- callers ----------------------------------------------------------------------------
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
            self.peer_certs.clear()
        self._peer_ids[der] = ident
        if ident is not None:
            self.peer_certs[ident] = (cert.serial_number, cert.not_valid_after_utc.timestamp())
        return ident


def _read_all(paths) -> list[bytes]:
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def all_sans(der: bytes | None) -> list[str]:
    """Every subjectAlternativeName of a certificate (DER) as text; [] for none."""
    if der is None:
        return []
    try:
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in san]
