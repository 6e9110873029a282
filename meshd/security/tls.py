"""TLS contexts for mTLS between meshds and for the admin API, hot-swappable credentials,
and the SPIFFE-ID / SAN check a peer must pass after the handshake.

Every context requires a verified peer certificate (but a server made without a trust
bundle, for an App Mesh listener without validation), speaks TLS 1.2 or 1.3 only, and offers
ALPN h2 then http/1.1 (RFC 7301). Hostname checking is off unless asked for: meshd
authenticates peers by the SPIFFE ID in the URI SAN (X.509-SVID §5), which `verify_peer`
checks right after the handshake, before any application byte is exchanged.
"""
from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from cryptography import x509

from meshd.security import spiffe
from meshd.security.errors import PeerIdentityRejected, TlsConfigError, UnsupportedSource

ALPN = ("h2", "http/1.1")


# -- contexts ---------------------------------------------------------------------------
def _base(purpose: int, alpn: Iterable[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    if purpose == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = False  # identity is the SPIFFE ID, checked by verify_peer
    # The bundle holds exactly the CAs this mesh trusts, which may be intermediates: each
    # is an anchor on its own (a shared root above them must not widen trust to other meshes).
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.set_alpn_protocols(list(alpn))
    return ctx


@contextlib.contextmanager
def _pem_paths(*blobs: bytes) -> Iterator[list[str]]:
    """Paths from which OpenSSL can read `blobs` (it loads keys only from files).

    On Linux an anonymous memfd keeps the private key off every file system; elsewhere a
    0700 temporary directory holds it for the duration of the load only.
    """
    if hasattr(os, "memfd_create"):
        fds = []
        try:
            for blob in blobs:
                fd = os.memfd_create("meshd-tls", os.MFD_CLOEXEC)
                fds.append(fd)
                os.write(fd, blob)
            yield [f"/proc/self/fd/{fd}" for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="meshd-tls-") as d:
        paths = []
        for i, blob in enumerate(blobs):
            p = Path(d) / str(i)
            p.touch(mode=0o600)
            p.write_bytes(blob)
            paths.append(str(p))
        yield paths


def _load(ctx: ssl.SSLContext, cert_chain_pem: bytes, key_pem: bytes, trust_bundle_pem: bytes | None) -> ssl.SSLContext:
    try:
        if trust_bundle_pem is not None:
            ctx.load_verify_locations(cadata=trust_bundle_pem.decode("ascii"))
    except (ssl.SSLError, ValueError) as err:
        raise TlsConfigError("trust bundle", str(err)) from err
    with _pem_paths(cert_chain_pem, key_pem) as (cert_path, key_path):
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as err:
            raise TlsConfigError("certificate chain and key", str(err)) from err
    return ctx


def server_context(cert_chain_pem: bytes, key_pem: bytes, trust_bundle_pem: bytes | None, *,
                   alpn: Iterable[str] = ALPN, client_auth: bool = True) -> ssl.SSLContext:
    """A server context that presents `cert_chain_pem` and requires a client certificate
    issued by a CA in `trust_bundle_pem`; with `client_auth=False` it asks for none (callers
    authenticated another way, e.g. SigV4 on the App Mesh REST API)."""
    if not client_auth:
        ctx = _base(ssl.PROTOCOL_TLS_SERVER, alpn)
        ctx.verify_mode = ssl.CERT_NONE
        return _load(ctx, cert_chain_pem, key_pem, None)
    return _load(_base(ssl.PROTOCOL_TLS_SERVER, alpn), cert_chain_pem, key_pem, trust_bundle_pem)


def client_context(cert_chain_pem: bytes, key_pem: bytes, trust_bundle_pem: bytes, *,
                   alpn: Iterable[str] = ALPN) -> ssl.SSLContext:
    """A client context that presents `cert_chain_pem` and requires a server certificate
    issued by a CA in `trust_bundle_pem`."""
    return _load(_base(ssl.PROTOCOL_TLS_CLIENT, alpn), cert_chain_pem, key_pem, trust_bundle_pem)


# -- peer identity ----------------------------------------------------------------------
def peer_sans(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[tuple[str, str]]:
    """The verified peer certificate's SANs as (type, value), e.g. ("URI", "spiffe://…")."""
    cert = ssl_object.getpeercert()
    return list(cert.get("subjectAltName", ())) if cert else []


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    """The peer's SPIFFE ID, or None when its certificate carries none.

    An X.509-SVID has exactly one URI SAN (X.509-SVID §2); a certificate with several
    spiffe:// URIs is ambiguous and yields None rather than a guess.
    """
    ids = [v for t, v in peer_sans(ssl_object) if t == "URI" and v.startswith("spiffe://")]
    return ids[0] if len(ids) == 1 else None


def check_san(identity: str | None, allowed_patterns: Iterable[str] | None) -> str | None:
    """Accept `identity` if it matches one allowed pattern ("*" = any one path segment).

    No patterns means no SAN restriction, as App Mesh's optional subjectAlternativeNames;
    the peer still had to present a certificate from a trusted CA.
    """
    allowed = tuple(allowed_patterns or ())
    if not allowed:
        return identity
    if identity is None or not spiffe.matches(identity, allowed):
        raise PeerIdentityRejected(identity, allowed)
    return identity


def verify_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket, allowed_patterns: Iterable[str] | None) -> str | None:
    """Check a handshaken peer against App Mesh SAN matchers; return its SPIFFE ID.

    Any SAN (URI or DNS, as App Mesh's `exact` matchers may name either) may match, so
    `file` certificates from the user's own PKI work too.
    """
    identity = peer_identity(ssl_object)
    allowed = tuple(allowed_patterns or ())
    if not allowed:
        return identity
    if any(spiffe.matches(v, allowed) for t, v in peer_sans(ssl_object) if t in ("URI", "DNS")):
        return identity
    raise PeerIdentityRejected(identity, allowed)


# -- hot-swappable credentials ----------------------------------------------------------
class ServerFront(ssl.SSLContext):
    """A listener's one server context that hands every new connection to the context
    current when it is accepted (`current()`), so a listener bound once (asyncio, uvloop,
    socketserver) follows renewals without reopening.

    It delegates in `wrap_bio`/`wrap_socket` rather than from an SNI callback because
    OpenSSL encrypts and decrypts session tickets with the keys of the context a
    connection was created from: behind an SNI-switching front every ticket would be the
    front's, valid across every renewal. Created from the current context, a connection's
    tickets die with that context, i.e. at the next renewal, before the certificate that
    authenticated them expires. `current()` may itself return an SNI-selecting context.
    """

    def __new__(cls, current: Callable[[], ssl.SSLContext]):
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)

    def __init__(self, current: Callable[[], ssl.SSLContext]):
        self._current = current

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        return self._current().wrap_bio(incoming, outgoing, server_side=server_side,
                                        server_hostname=server_hostname, session=session)

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, suppress_ragged_eofs=True,
                    server_hostname=None, session=None):
        return self._current().wrap_socket(sock, server_side=server_side, do_handshake_on_connect=do_handshake_on_connect,
                                           suppress_ragged_eofs=suppress_ragged_eofs,
                                           server_hostname=server_hostname, session=session)


def sni_front(select: Callable[[ssl.SSLObject, str | None], ssl.SSLContext | None], *,
              alpn: Iterable[str] = ALPN) -> ssl.SSLContext:
    """A server context without a certificate of its own that moves each handshake onto
    `select(ssl_object, server_name)` (None: refuse with unrecognized_name). OpenSSL calls
    the callback on every ClientHello, SNI or not. Wrap it in a ServerFront and make a new
    one per renewal: its session tickets are its own (see ServerFront)."""
    front = _base(ssl.PROTOCOL_TLS_SERVER, alpn)

    def _select(ssl_obj, server_name, _ctx):
        ctx = select(ssl_obj, server_name)
        if ctx is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_obj.context = ctx
        return None
    front.sni_callback = _select
    return front


@dataclass(frozen=True)
class _State:
    """One generation of credentials: the PEM inputs and the contexts made from them."""

    chain: bytes
    key: bytes
    bundle: bytes
    server: ssl.SSLContext
    clients: dict  # ALPN tuple -> client context
    serial: int
    not_before: float  # the leaf's validity, POSIX seconds
    not_after: float


class Credentials:
    """The current certificate, key and trust bundle, as ready-made TLS contexts.

    `update` builds new contexts first (a bad certificate raises and leaves the old ones
    in place), then swaps them in one assignment, so it is safe from any thread; it is the
    expensive part (key loading), and callers run it off their event loop. Connections
    already established keep the session they negotiated; each new handshake uses the
    contexts current at its start. Every generation has new contexts: a TLS session (kept
    per client context by the engines' pools; tickets per server context) never crosses a
    renewal. Clients take `client` / `client_for(alpn)` per connection; servers bound once
    to a context use `server_front`.

    `client_alpns` names the client contexts to make (one per ALPN offer); `check_hostname`
    makes them verify the server's DNS name against server_hostname. An empty bundle makes
    a server that asks for no client certificate (a gateway listener without validation).
    """

    def __init__(self, cert_chain_pem: bytes, key_pem: bytes, bundle_pem: bytes, *,
                 alpn: Iterable[str] = ALPN, client_alpns: Iterable[Iterable[str]] = (),
                 check_hostname: bool = False):
        self._alpn = tuple(alpn)
        self._client_alpns = (self._alpn, *(tuple(a) for a in client_alpns))
        self._check_hostname = check_hostname
        self._lock = threading.Lock()
        self.generation = 0
        self._front: ssl.SSLContext | None = None
        self.files: tuple[str, str, str] | None = None  # set when made from App Mesh `file` paths
        self._file_stamp: tuple | None = None
        self._state = self._build(cert_chain_pem, key_pem, bundle_pem)

    def _build(self, chain: bytes, key: bytes, bundle: bytes) -> _State:
        server = _load(_base(ssl.PROTOCOL_TLS_SERVER, self._alpn), chain, key, bundle or None)
        if not bundle:
            server.verify_mode = ssl.CERT_NONE
        clients = {}
        for alpn in self._client_alpns:
            if alpn not in clients:
                c = client_context(chain, key, bundle, alpn=alpn) if bundle else _base(ssl.PROTOCOL_TLS_CLIENT, alpn)
                c.check_hostname = self._check_hostname
                clients[alpn] = c
        leaf = x509.load_pem_x509_certificate(chain)
        return _State(chain, key, bundle, server, clients, leaf.serial_number,
                      leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp())

    @staticmethod
    def from_files(cert_chain_path: str, key_path: str, trust_path: str, *, alpn: Iterable[str] = ALPN,
                   **kwargs) -> "Credentials":
        """Credentials from App Mesh `file` paths (PEM), read now; `refresh_files` re-reads
        them when they changed. An empty `trust_path`: no trust bundle."""
        stamp = file_stamp((cert_chain_path, key_path, trust_path))
        creds = Credentials(*_read_files(cert_chain_path, key_path, trust_path), alpn=alpn, **kwargs)
        creds.files = (cert_chain_path, key_path, trust_path)
        creds._file_stamp = stamp
        return creds

    def reload_files(self) -> None:
        """Re-read the `file` paths this was made from (after the user replaced them)."""
        if self.files is None:
            raise TlsConfigError("files", "these credentials were not made from files")
        stamp = file_stamp(self.files)
        self.update(*_read_files(*self.files))
        self._file_stamp = stamp

    def refresh_files(self) -> bool:
        """Re-read the `file` paths when one changed (inode, size or mtime; the stamp is
        taken before reading, so a write racing the read is seen next time); True when the
        credentials changed. Blocking file I/O: call it off the event loop."""
        if self.files is None or file_stamp(self.files) == self._file_stamp:
            return False
        before = self.generation
        self.reload_files()
        return self.generation != before

    def update(self, cert_chain_pem: bytes | None = None, key_pem: bytes | None = None,
               bundle_pem: bytes | None = None) -> int:
        """Replace any of certificate chain, key and bundle; returns the new generation.
        Identical inputs change nothing (no new contexts, no new generation)."""
        with self._lock:
            old = self._state
            chain = cert_chain_pem if cert_chain_pem is not None else old.chain
            key = key_pem if key_pem is not None else old.key
            bundle = bundle_pem if bundle_pem is not None else old.bundle
            if (chain, key, bundle) == (old.chain, old.key, old.bundle):
                return self.generation
            self._state = self._build(chain, key, bundle)
            self.generation += 1
            return self.generation

    @property
    def server(self) -> ssl.SSLContext:
        return self._state.server

    @property
    def client(self) -> ssl.SSLContext:
        return self._state.clients[self._alpn]

    def client_for(self, alpn: Iterable[str]) -> ssl.SSLContext:
        """The current client context offering `alpn` (one of `client_alpns`)."""
        return self._state.clients[tuple(alpn)]

    @property
    def bundle_pem(self) -> bytes:
        return self._state.bundle

    @property
    def cert_chain_pem(self) -> bytes:
        return self._state.chain

    @property
    def key_pem(self) -> bytes:
        return self._state.key

    @property
    def serial(self) -> int:
        """The serial number of the certificate presented now."""
        return self._state.serial

    @property
    def not_before(self) -> float:
        return self._state.not_before

    @property
    def not_after(self) -> float:
        """When the certificate presented now expires (POSIX seconds)."""
        return self._state.not_after

    def server_front(self) -> ssl.SSLContext:
        """A stable server context whose every new connection starts on the current one."""
        with self._lock:
            if self._front is None:
                self._front = ServerFront(lambda: self._state.server)
            return self._front


def file_stamp(paths: Iterable[str]) -> tuple:
    """What says a file was replaced or rewritten: inode, size and mtime of each path."""
    out = []
    for p in paths:
        if not p:
            out.append(None)
            continue
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)  # missing now: reading it will say why
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _read_files(*paths: str) -> tuple[bytes, ...]:
    out = []
    for p in paths:
        if not p:
            out.append(b"")
            continue
        try:
            out.append(Path(p).read_bytes())
        except OSError as err:
            raise TlsConfigError(p, err.strerror or str(err)) from err
    return tuple(out)


# -- App Mesh certificate sources -------------------------------------------------------
@dataclass(frozen=True)
class FileCertificate:
    """App Mesh `file` certificate source: PEM paths on the host, honoured as-is."""

    certificate_chain: str
    private_key: str


@dataclass(frozen=True)
class FileTrust:
    """App Mesh `file` validation trust: a PEM bundle path on the host."""

    certificate_chain: str


@dataclass(frozen=True)
class AcmCertificate:
    """App Mesh `acm` certificate source: served with what `meshctl certificate import`
    stored under the ARN (meshd.security.acm)."""

    certificate_arn: str


@dataclass(frozen=True)
class AcmTrust:
    """App Mesh `acm` validation trust: the anchors `meshctl trust import` stored under
    these ACM PCA ARNs."""

    certificate_authority_arns: tuple[str, ...]


def certificate_source(kind: str, *, certificate_chain: str = "", private_key: str = "", certificate_arn: str = "",
                       field: str = "certificate") -> FileCertificate | AcmCertificate:
    """Resolve an App Mesh listener/client certificate source: `file` or `acm` (sds is refused)."""
    if kind == "file":
        return FileCertificate(certificate_chain, private_key)
    if kind == "acm":
        return AcmCertificate(certificate_arn)
    raise UnsupportedSource(kind, field)


def trust_source(kind: str, *, certificate_chain: str = "", certificate_authority_arns: Iterable[str] = (),
                 field: str = "validation.trust") -> FileTrust | AcmTrust:
    """Resolve an App Mesh validation-context trust: `file` or `acm` (sds is refused)."""
    if kind == "file":
        return FileTrust(certificate_chain)
    if kind == "acm":
        return AcmTrust(tuple(certificate_authority_arns))
    raise UnsupportedSource(kind, field)
