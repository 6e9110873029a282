"""TLS contexts for mTLS between meshds and for the admin API, hot-swappable credentials,
and the SPIFFE-ID / SAN check a peer must pass after the handshake.

Every context requires a verified peer certificate, speaks TLS 1.2 or 1.3 only, and offers
ALPN h2 then http/1.1 (RFC 7301). Hostname checking is off: meshd authenticates peers by
the SPIFFE ID in the URI SAN (X.509-SVID §5), which `verify_peer` checks right after the
handshake, before any application byte is exchanged.
"""
from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

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


def _load(ctx: ssl.SSLContext, cert_chain_pem: bytes, key_pem: bytes, trust_bundle_pem: bytes) -> ssl.SSLContext:
    try:
        ctx.load_verify_locations(cadata=trust_bundle_pem.decode("ascii"))
    except (ssl.SSLError, ValueError) as err:
        raise TlsConfigError("trust bundle", str(err)) from err
    with _pem_paths(cert_chain_pem, key_pem) as (cert_path, key_path):
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as err:
            raise TlsConfigError("certificate chain and key", str(err)) from err
    return ctx


def server_context(cert_chain_pem: bytes, key_pem: bytes, trust_bundle_pem: bytes, *,
                   alpn: Iterable[str] = ALPN) -> ssl.SSLContext:
    """A server context that presents `cert_chain_pem` and requires a client certificate
    issued by a CA in `trust_bundle_pem`."""
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
class Credentials:
    """The current certificate, key and trust bundle, as ready-made TLS contexts.

    `update` builds new contexts first (a bad certificate raises and leaves the old ones
    in place), then swaps them in one assignment. Connections already established keep
    the session they negotiated; each new handshake uses the contexts current at its start.
    Clients take `client` per connection; servers bound once to a context (asyncio,
    socketserver) use `server_front`, which moves every handshake onto the current server
    context from its SNI callback (OpenSSL calls it on every ClientHello, SNI or not).
    """

    def __init__(self, cert_chain_pem: bytes, key_pem: bytes, bundle_pem: bytes, *,
                 alpn: Iterable[str] = ALPN):
        self._alpn = tuple(alpn)
        self._lock = threading.Lock()
        self.generation = 0
        self._front: ssl.SSLContext | None = None
        self.files: tuple[str, str, str] | None = None  # set when made from App Mesh `file` paths
        self._state = self._build(cert_chain_pem, key_pem, bundle_pem)

    def _build(self, chain: bytes, key: bytes, bundle: bytes):
        return (chain, key, bundle,
                server_context(chain, key, bundle, alpn=self._alpn),
                client_context(chain, key, bundle, alpn=self._alpn))

    @staticmethod
    def from_files(cert_chain_path: str, key_path: str, trust_path: str, *, alpn: Iterable[str] = ALPN) -> "Credentials":
        """Credentials from App Mesh `file` paths (PEM), read now; call `reload_files` to re-read."""
        creds = Credentials(*_read_files(cert_chain_path, key_path, trust_path), alpn=alpn)
        creds.files = (cert_chain_path, key_path, trust_path)
        return creds

    def reload_files(self) -> None:
        """Re-read the `file` paths this was made from (after the user replaced them)."""
        if self.files is None:
            raise TlsConfigError("files", "these credentials were not made from files")
        self.update(*_read_files(*self.files))

    def update(self, cert_chain_pem: bytes | None = None, key_pem: bytes | None = None,
               bundle_pem: bytes | None = None) -> int:
        """Replace any of certificate chain, key and bundle; returns the new generation."""
        with self._lock:
            chain, key, bundle, _, _ = self._state
            self._state = self._build(cert_chain_pem if cert_chain_pem is not None else chain,
                                      key_pem if key_pem is not None else key,
                                      bundle_pem if bundle_pem is not None else bundle)
            self.generation += 1
            return self.generation

    @property
    def server(self) -> ssl.SSLContext:
        return self._state[3]

    @property
    def client(self) -> ssl.SSLContext:
        return self._state[4]

    @property
    def bundle_pem(self) -> bytes:
        return self._state[2]

    @property
    def cert_chain_pem(self) -> bytes:
        return self._state[0]

    @property
    def key_pem(self) -> bytes:
        return self._state[1]

    def server_front(self) -> ssl.SSLContext:
        """A stable server context that delegates each handshake to the current one."""
        with self._lock:
            if self._front is None:
                front = _base(ssl.PROTOCOL_TLS_SERVER, self._alpn)

                def _select(ssl_obj, _server_name, _ctx):
                    ssl_obj.context = self._state[3]
                    return None

                front.sni_callback = _select
                self._front = front
            return self._front


def _read_files(*paths: str) -> tuple[bytes, ...]:
    out = []
    for p in paths:
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


def certificate_source(kind: str, *, certificate_chain: str = "", private_key: str = "",
                       field: str = "certificate") -> FileCertificate:
    """Resolve an App Mesh listener/client certificate source: `file` only."""
    if kind != "file":
        raise UnsupportedSource(kind, field)
    return FileCertificate(certificate_chain, private_key)


def trust_source(kind: str, *, certificate_chain: str = "", field: str = "validation.trust") -> FileTrust:
    """Resolve an App Mesh validation-context trust: `file` only."""
    if kind != "file":
        raise UnsupportedSource(kind, field)
    return FileTrust(certificate_chain)
