"""Workload certificates renewed under live mesh traffic: two meshds with real etcd, real
gRPC and real mTLS from the mesh CA, certificates living seconds. New connections after
every expiry, resumed and full handshakes, must present the current certificate, no call
may fail, and an etcd outage across a renewal must not stop traffic or the next renewal."""
from __future__ import annotations

import logging
import socket
import time

import grpc
import pytest
from cryptography import x509

from mesh_harness import SAY, Origin, shop_config
from meshd.api import kinds as K
from meshd.app import Meshd, MeshdConfig
from meshd.dataplane import counters
from meshd.embedded_etcd import free_port
from meshd.proxy import LocalApp, RuntimeConfig
from meshd.security import ClusterKey, spiffe
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.hardening, pytest.mark.dataplane, pytest.mark.etcd]

TTL_S = 36.0  # renewed 24 s after issue, 12 s before expiry
WEB = "spiffe://meshd.local/mesh/shop/virtualNode/web"
# No retries: a failed handshake is a failed call, not hidden by a retry on a fresh Target.
NO_RETRY = {"maxRetries": 0, "perRetryTimeout": {"unit": "s", "value": 5}, "grpcRetryEvents": ["unavailable"]}


def _meshd(etcd, prefix, tmp_path, name, apps, key) -> Meshd:
    cfg = MeshdConfig(admin=f"127.0.0.1:{free_port()}", etcd=[etcd.url], etcd_prefix=prefix, etcd_timeout=1.0,
                      state_dir=str(tmp_path / name), host_name=name, cluster_key=str(key), lease_ttl=10,
                      cert_ttl_hours=TTL_S / 3600,
                      # Pooled upstream connections close after half a second idle, so every
                      # burst of calls below opens a new connection: a new handshake.
                      runtime=RuntimeConfig(apps=apps, ingress="127.0.0.1:0", drain_seconds=1.0,
                                            upstream_idle_seconds=0.5))
    return Meshd(cfg).start()


class Soak:
    """Host A runs `web`, host B the origin `api-v1`; bursts of calls with idle gaps."""

    def __init__(self, etcd, prefix, tmp_path):
        key = tmp_path / "cluster.key"
        ClusterKey.generate(key)
        self.origin = Origin("api-v1")
        web = LocalApp(mesh="shop", virtual_node="web", port=free_port(), egress="127.0.0.1:0")
        self.a = _meshd(etcd, prefix, tmp_path, "host-a", [web], key)
        self.b = _meshd(etcd, prefix, tmp_path, "host-b", [LocalApp(mesh="shop", virtual_node="api-v1",
                                                                    port=self.origin.port, instance_id="api-v1")], key)
        shop_config(self.a.resources, K, pb, targets={"api-v1": 1}, retry=NO_RETRY)
        self.channel = grpc.insecure_channel(self.a.runtime.addresses["egress:web"],
                                             options=[("grpc.default_authority", "api.shop.local:9090"),
                                                      ("grpc.enable_retries", 0)])
        self.say = self.channel.unary_unary(SAY)
        self.calls = 0
        self.failures: list[str] = []
        self.slowest = 0.0
        self.seen: dict[int, float] = {}  # serials of web's certificate host B admitted, first seen
        self.expired_views: list[str] = []
        deadline = time.monotonic() + 20
        while True:
            try:
                self.say(b"ping", timeout=5)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def burst(self, n: int = 4) -> None:
        """n calls on a new upstream connection (the previous one idled out), then a look at
        which certificate of web's host B admitted last."""
        for i in range(n):
            t0 = time.monotonic()
            try:
                assert self.say(b"%d" % i, timeout=5) == b"api-v1:%d" % i
            except grpc.RpcError as err:
                self.failures.append(f"{time.strftime('%X')} {err.code().name}: {err.details()}")
            self.calls += 1
            self.slowest = max(self.slowest, time.monotonic() - t0)
        serial, not_after = self.b.runtime.tls.peer_certs[WEB]
        self.seen.setdefault(serial, time.time())
        if not_after <= time.time():
            self.expired_views.append(f"serial {serial:x} expired {time.time() - not_after:.1f}s ago")

    def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.burst()
            time.sleep(1.0)  # > idle timeout + sweep period: the next burst reconnects

    def web_credentials(self):
        return self.a.runtime.certs.contexts("shop", "web")

    def ingress_serial(self) -> int:
        """A raw TLS handshake against host B's ingress, as web: the certificate B presents."""
        ctx = self.web_credentials().client_tcp
        host, port = self.b.runtime.addresses["ingress"].rsplit(":", 1)
        name = spiffe.workload_dns_name("meshd.local", "shop", "api-v1")
        with ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=name) as s:
            cert = x509.load_der_x509_certificate(s.getpeercert(True))
        assert cert.not_valid_after_utc.timestamp() > time.time()
        return cert.serial_number

    def close(self):
        self.channel.close()
        self.a.stop()
        self.b.stop()
        self.origin.stop()


@pytest.fixture
def soak(own_etcd, etcd_prefix, tmp_path):
    s = Soak(own_etcd, etcd_prefix, tmp_path)
    yield s
    s.close()


def _wait_renewal(creds, timeout: float) -> None:
    serial, deadline = creds.serial, time.monotonic() + timeout
    while creds.serial == serial:
        assert time.monotonic() < deadline, "no renewal"
        time.sleep(0.1)


def test_renewed_certificates_reach_new_connections(soak, own_etcd, caplog):
    c0 = counters()
    b_serials = {soak.ingress_serial()}
    # 1. Resumed handshakes: each burst's new connection offers the pool's last session.
    soak.run(2 * TTL_S)
    c1 = counters()
    assert c1["tls_resumed_handshakes"] - c0["tls_resumed_handshakes"] > 10  # resumption was in play
    assert not soak.failures, soak.failures
    assert not soak.expired_views, soak.expired_views
    assert len(soak.seen) >= 3, soak.seen
    b_serials.add(soak.ingress_serial())
    # 2. Full handshakes: host B's ingress stops issuing tickets (its next front has none).
    soak.b.runtime.tls.session_tickets = False
    soak.b.runtime.loop.call_soon_threadsafe(soak.b.runtime.tls.rotate)
    time.sleep(0.5)
    soak.run(1.2 * TTL_S)
    c2 = counters()
    assert c2["tls_resumed_handshakes"] == c1["tls_resumed_handshakes"]
    assert c2["tls_full_handshakes"] - c1["tls_full_handshakes"] > 10
    b_serials.add(soak.ingress_serial())
    assert not soak.failures, soak.failures
    assert not soak.expired_views, soak.expired_views
    # Web's certificate changed at each renewal, seen from host B (three lifetimes and more).
    assert len(soak.seen) >= 4, soak.seen
    assert len(b_serials) >= 3

    # 3. etcd stops across a renewal: traffic goes on, on the certificate still valid, and
    # the renewal succeeds once etcd is back, before that certificate expires. From web's
    # last renewal: etcd stops at about 19 s, the next renewal falls due at 24 s, etcd is
    # back at about 27 s, and the certificate expires at 36 s.
    creds = soak.web_credentials()
    _wait_renewal(creds, TTL_S)
    serial = creds.serial
    soak.run(TTL_S * 2 / 3 - 5.0)
    caplog.set_level(logging.WARNING, logger="meshd.proxy.tls")
    own_etcd.pause()
    try:
        soak.run(7.0)  # the renewal falls due meanwhile, and fails
        assert creds.serial == serial
    finally:
        own_etcd.resume()
    failed = [r for r in caplog.records if "renewal failed" in r.getMessage() or "cannot be renewed" in r.getMessage()]
    assert failed, "the failed renewal was not logged"
    soak.run(TTL_S / 3 - 3.0)
    assert creds.serial != serial, "not renewed after etcd came back"
    soak.run(3.0)
    assert not soak.failures, soak.failures
    assert not soak.expired_views, soak.expired_views
    assert soak.slowest < 2.0, f"a call took {soak.slowest:.1f}s"
    assert creds.serial in soak.seen
