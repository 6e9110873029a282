"""Builders for the security suite: issued credentials, and a real TLS echo server on loopback."""
from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from meshd.security import certs as C
from meshd.security import tls
from meshd.security.ca import MeshCA
from meshd.security.errors import PeerIdentityRejected
from meshd.security.spiffe import workload_id


def real_now() -> datetime:
    return datetime.now(timezone.utc)


# CAs in the suite start ten days ago, so certificates that expired days ago still
# fall inside their CA's validity and are refused for expiry alone.
CA_EPOCH = timedelta(days=10)


@dataclass
class Cred:
    """What a meshd holds for one identity: the chain it presents, its key, its trust bundle."""

    identity: str
    chain_pem: bytes
    key_pem: bytes
    bundle_pem: bytes
    serial: int

    def server(self) -> ssl.SSLContext:
        return tls.server_context(self.chain_pem, self.key_pem, self.bundle_pem)

    def client(self) -> ssl.SSLContext:
        return tls.client_context(self.chain_pem, self.key_pem, self.bundle_pem)


def issue(ca: MeshCA, mesh: str, node: str, *, ttl=None, now=None) -> Cred:
    """Make a key and CSR as a host would, and have the mesh CA sign it."""
    identity = workload_id(ca.trust_domain, mesh, node).uri
    key_pem, csr_pem = C.make_csr(identity)
    got = ca.sign_csr(mesh, csr_pem, identity, ttl, now=now)
    return Cred(identity, got.chain_pem, key_pem, got.bundle_pem, got.serial)


class EchoServer:
    """A TLS echo server in threads: handshake, SAN check, then echo lines until EOF.

    `context` is a context or a zero-argument callable giving the current one. Server-side
    failures are kept in `failures` (the exception objects) so a test can say *why* a
    handshake was refused, not only that the client saw an error.
    """

    def __init__(self, context, allowed=None):
        self._context = context if callable(context) else (lambda: context)
        self.allowed = allowed
        self.failures: list[BaseException] = []
        self.peers: list[str | None] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.address = self._sock.getsockname()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket):
        conn.settimeout(10)
        try:
            with self._context().wrap_socket(conn, server_side=True) as s:
                try:
                    self.peers.append(tls.verify_peer(s, self.allowed))
                except PeerIdentityRejected as err:
                    self.failures.append(err)
                    return
                f = s.makefile("rwb", buffering=0)
                while line := f.readline():
                    f.write(line)
        except (ssl.SSLError, OSError) as err:
            if not self._stop.is_set():
                self.failures.append(err)
        finally:
            conn.close()

    def failure_after(self, before: int, timeout: float = 5.0) -> BaseException:
        """The first failure recorded after there were `before` (waits for the server thread)."""
        deadline = time.monotonic() + timeout
        while len(self.failures) <= before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.failures) > before, "the server recorded no refusal"
        return self.failures[before]

    def close(self):
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self._sock.close()
        for t in self._threads:
            t.join(timeout=2)


class Client:
    """One mTLS connection to an EchoServer that checks the server's SAN and echoes lines."""

    def __init__(self, context: ssl.SSLContext, address, allowed=None, timeout: float = 10):
        raw = socket.create_connection(address, timeout=timeout)
        self.sock = None
        try:
            self.sock = context.wrap_socket(raw)
            self.server_identity = tls.verify_peer(self.sock, allowed)
        except BaseException:
            (self.sock or raw).close()  # wrap_socket moved the descriptor into self.sock
            raise
        self.server_cert = C.load_certs(ssl.DER_cert_to_PEM_cert(self.sock.getpeercert(True)).encode())[0]
        self.server_serial = self.server_cert.serial_number
        self._f = self.sock.makefile("rwb", buffering=0)

    def echo(self, payload: bytes) -> bytes:
        self._f.write(payload + b"\n")
        line = self._f.readline()
        if not line:
            raise ConnectionResetError("the server closed the connection without answering")
        return line.rstrip(b"\n")

    def close(self):
        self.sock.close()


def round_trip(context: ssl.SSLContext, address, payload: bytes = b"ping", allowed=None) -> bytes:
    """One request on a fresh connection (a full handshake); returns the echo."""
    c = Client(context, address, allowed)
    try:
        return c.echo(payload)
    finally:
        c.close()
