"""TLS on both sides (ALPN h2, session resumption on the upstream pool) and plain h2c HTTP."""
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import time

import grpc
import pytest

from tests.dataplane.certs import make_ca_and_server
from tests.dataplane.harness import CHANNEL_OPTIONS, RelayThread, Target, counters, to, unary

pytestmark = pytest.mark.dataplane


@pytest.fixture
def tls(tmp_path):
    paths = make_ca_and_server(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(paths["cert"], paths["key"])
    server.set_alpn_protocols(["h2"])
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(paths["ca"])
    client.set_alpn_protocols(["h2"])
    return paths, server, client


def test_grpc_client_over_tls_to_the_listener(origin, tls):
    paths, server_ctx, _ = tls
    relay = RelayThread(to(origin.port), ssl=server_ctx)
    try:
        creds = grpc.ssl_channel_credentials(paths["ca"].read_bytes())
        with grpc.secure_channel(f"localhost:{relay.port}", creds, options=CHANNEL_OPTIONS) as ch:
            resp, call = unary(ch).with_call(b"over tls", metadata=(("x-echo", "s"),), timeout=10)
        assert resp == b"over tls"
        assert dict(call.trailing_metadata())["x-trailer"] == "t-s"
    finally:
        relay.stop()


def test_tls_upstream_resumes_sessions_after_the_first_connection(origin, tls):
    """client -h2c-> relay A -TLS-> relay B (TLS listener) -h2c-> origin; A's pool expires idle
    connections fast, so every call opens a new TLS connection that should resume."""
    _, server_ctx, client_ctx = tls
    b = RelayThread(to(origin.port), ssl=server_ctx)
    a = RelayThread(to(b.port, ssl=client_ctx, server_hostname="localhost"),
                    upstream_idle_timeout=0.1)
    try:
        c0 = counters()
        with grpc.insecure_channel(f"127.0.0.1:{a.port}", options=CHANNEL_OPTIONS) as ch:
            for i in range(4):
                assert unary(ch)(b"call %d" % i, timeout=10) == b"call %d" % i
                time.sleep(0.4)     # > idle timeout + a sweep: the pooled connection is gone
        c1 = counters()
        opened = c1["upstream_conns_opened"] - c0["upstream_conns_opened"]
        full = c1["tls_full_handshakes"] - c0["tls_full_handshakes"]
        resumed = c1["tls_resumed_handshakes"] - c0["tls_resumed_handshakes"]
        # relay B opens one h2c connection to the origin and keeps it only while busy too.
        assert opened >= 4
        assert full == 1, (full, resumed)
        assert resumed == 3, (full, resumed)
    finally:
        a.stop()
        b.stop()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nghttpd(tmp_path):
    """nghttpd (Debian's nghttp2-server) as an h2c origin that echoes uploads."""
    if not shutil.which("nghttpd"):
        pytest.fail("nghttpd missing: scripts/setup.sh installs nghttp2-server")
    docroot = tmp_path / "www"
    docroot.mkdir()
    big = os.urandom(1 << 20) * 20            # 20 MiB
    (docroot / "big.bin").write_bytes(big)
    port = _free_port()
    proc = subprocess.Popen(["nghttpd", "--no-tls", "--echo-upload", "-d", str(docroot),
                             "-a", "127.0.0.1", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port, big
    proc.terminate()
    proc.wait(5)


def _nghttp(*args, timeout=60):
    return subprocess.run(["nghttp", *args], capture_output=True, timeout=timeout, check=True).stdout


def test_h2c_large_bodies_stream_both_ways(nghttpd, tmp_path):
    port, big = nghttpd
    relay = RelayThread(lambda head: Target("127.0.0.1", port))
    try:
        before = counters()
        # A 20 MiB download.
        got = _nghttp(f"http://127.0.0.1:{relay.port}/big.bin")
        assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
        # A 24 MiB upload that nghttpd echoes back.
        upload = tmp_path / "up.bin"
        data = os.urandom(1 << 20) * 24
        upload.write_bytes(data)
        got = _nghttp("-d", str(upload), f"http://127.0.0.1:{relay.port}/echo")
        assert len(got) == len(data) and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        after = counters()
        # Upstream download + downstream upload + upstream echo, each counted once on the way in.
        assert after["bytes_in"] - before["bytes_in"] >= len(big) + 2 * len(data)
    finally:
        relay.stop()


def test_h2c_refusal_is_a_plain_http_status():
    from tests.dataplane.harness import Refusal
    relay = RelayThread(lambda head: Refusal(403, reason="denied"))
    try:
        out = subprocess.run(["nghttp", "-v", f"http://127.0.0.1:{relay.port}/x"],
                             capture_output=True, timeout=10).stdout.decode()
        assert ":status: 403" in out
        assert "x-meshd-reason: denied" in out
    finally:
        relay.stop()
