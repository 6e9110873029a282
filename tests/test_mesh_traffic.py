"""Traffic through real meshds over mTLS: two hosts, real gRPC origins and clients."""
from __future__ import annotations

import socket
import ssl
import time
from collections import Counter
from concurrent import futures

import grpc
import pytest
from google.protobuf import json_format

from mesh_harness import Mesh, Origin, route_spec, shop_config
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.dataplane, pytest.mark.etcd]


def _calls(call, n, workers=8):
    """n calls through the mesh from `workers` threads; returns (answers, errors)."""
    answers, errors = Counter(), []

    def one(i):
        try:
            return call(b"%d" % i, timeout=10).split(b":", 1)[0].decode()
        except grpc.RpcError as err:
            errors.append(err)
            return None
    with futures.ThreadPoolExecutor(workers) as pool:
        for who in pool.map(one, range(n)):
            if who:
                answers[who] += 1
    return answers, errors


def test_canary_split_and_live_weight_shift(mesh_factory):
    m = mesh_factory({"api-v1": Origin("api-v1"), "api-v2": Origin("api-v2")}, targets={"api-v1": 90, "api-v2": 10})
    call = m.client()
    m.wait_routable(call)
    answers, errors = _calls(call, 5000)
    assert not errors
    share = answers["api-v2"] / 5000
    assert 0.08 <= share <= 0.12, answers
    # Shift every call to api-v2 through the API; within 1 s traffic follows, no call fails.
    m.a.resources.update(K.ROUTE, parse_json(pb.UpdateRouteRequest, {
        "meshName": "shop", "virtualRouterName": "api-router", "routeName": "api",
        "spec": route_spec({"api-v1": 0, "api-v2": 100})}))
    # Shifted: from the first of 20 answers in a row from api-v2 (the old 90/10 table gives
    # one api-v2 answer in ten, so a single one proves nothing).
    t0 = time.monotonic()
    shifted_at, run = None, 0
    while time.monotonic() - t0 < 3 and run < 20:
        at = time.monotonic() - t0
        if call(b"x", timeout=5).split(b":", 1)[0] == b"api-v2":
            shifted_at, run = (at if run == 0 else shifted_at), run + 1
        else:
            shifted_at, run = None, 0
    assert run == 20 and shifted_at < 1.0, (run, shifted_at)
    answers, errors = _calls(call, 300)
    assert not errors and answers == Counter({"api-v2": 300})


RETRY = {"maxRetries": 3, "perRetryTimeout": {"unit": "s", "value": 2}, "grpcRetryEvents": ["unavailable"]}


def test_retries_hide_a_flaky_target_and_stop_at_max_retries(mesh_factory):
    flaky = Origin("api-v1")
    m = mesh_factory({"api-v1": flaky}, targets={"api-v1": 1}, retry=RETRY)
    call = m.client()
    m.wait_routable(call)
    # Every second call the origin sees fails with UNAVAILABLE: 50%. (One caller at a time,
    # so a failed attempt's retry is the next call the origin sees; with independent coin
    # flips, 6% of requests would fail four times in a row and no policy could hide that.)
    flaky.fail_every = 2
    answers, errors = _calls(call, 100, workers=1)
    assert not errors and answers["api-v1"] == 100
    # Always failing: exactly maxRetries + 1 attempts, then the error itself.
    flaky.fail_every, before = 1, flaky.calls
    with pytest.raises(grpc.RpcError) as err:
        call(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "api-v1 failed" in err.value.details()
    assert flaky.calls - before == 4
    # A code the policy does not name is not retried.
    flaky.fail_code, before = grpc.StatusCode.INVALID_ARGUMENT, flaky.calls
    with pytest.raises(grpc.RpcError) as err:
        call(b"x", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and flaky.calls - before == 1


def test_per_retry_timeout_cuts_a_slow_attempt(mesh_factory):
    slow = Origin("api-v1")
    m = mesh_factory({"api-v1": slow}, targets={"api-v1": 1},
                     retry={"maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 300},
                            # A per-try timeout is an upstream timeout: Envoy retries it under
                            # gateway-error (or server-error), which App Mesh's gRPC policy takes.
                            "grpcRetryEvents": ["unavailable"], "httpRetryEvents": ["gateway-error"]})
    call = m.client()
    m.wait_routable(call)
    slow.delay_first, slow.delay_calls = 3.0, slow.calls + 1  # the next call stalls for 3 s
    t0 = time.monotonic()
    assert call(b"x", timeout=10) == b"api-v1:x"
    elapsed = time.monotonic() - t0
    assert 0.25 < elapsed < 2.0, elapsed  # cut at ~300 ms, answered by the second attempt


def test_deadline_propagates_and_is_honoured(mesh_factory):
    slow = Origin("api-v1")
    m = mesh_factory({"api-v1": slow}, targets={"api-v1": 1})
    call = m.client()
    m.wait_routable(call)
    slow.delay_first, slow.delay_calls = 2.0, slow.calls + 1
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        call(b"x", timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 1.5


def test_outlier_detection_ejects_a_failing_instance_until_base_ejection_passes(mesh_factory):
    good, bad = Origin("good"), Origin("bad")
    bad.fail_every = 1
    m = mesh_factory({"i-good": good, "i-bad": bad}, nodes={"i-good": "api-v1", "i-bad": "api-v1"},
                     targets={"api-v1": 1},
                     node_listener={"outlierDetection": {"maxServerErrors": 2, "interval": {"unit": "s", "value": 10},
                                                         "baseEjectionDuration": {"unit": "s", "value": 2},
                                                         "maxEjectionPercent": 50}})
    call = m.client()
    m.wait_routable(call)
    _calls(call, 20, workers=1)  # retries off the route default policy hide the failures
    ejected_at = bad.calls
    _calls(call, 40, workers=1)
    assert bad.calls == ejected_at, "an ejected instance must get no traffic"
    time.sleep(2.3)
    _calls(call, 20, workers=1)
    assert bad.calls > ejected_at, "after baseEjectionDuration the instance is tried again"


def test_connection_pool_overflow_is_fast_503_while_other_routes_work(mesh_factory):
    slow, other = Origin("api-v1"), Origin("api-v2")
    m = mesh_factory({"api-v1": slow, "api-v2": other}, targets={"api-v1": 1},
                     node_listener={"connectionPool": {"grpc": {"maxRequests": 1}}}, extra_nodes=("api-v2",),
                     backends=("api.shop.local", "other.shop.local"))
    m.a.resources.create(K.VIRTUAL_SERVICE, parse_json(pb.CreateVirtualServiceRequest, {
        "meshName": "shop", "virtualServiceName": "other.shop.local",
        "spec": {"provider": {"virtualNode": {"virtualNodeName": "api-v2"}}}}))
    call, other_call = m.client(), m.client("other.shop.local:9090")
    m.wait_routable(call)
    m.wait_routable(other_call)
    slow.delay_first, slow.delay_calls = 1.5, slow.calls + 1
    results = []
    with futures.ThreadPoolExecutor(6) as pool:
        first = pool.submit(call, b"first", timeout=10)
        time.sleep(0.3)
        for _ in range(4):
            t0 = time.monotonic()
            try:
                call(b"more", timeout=10)
                results.append(("ok", time.monotonic() - t0))
            except grpc.RpcError as err:
                results.append((err.code(), time.monotonic() - t0, dict(err.trailing_metadata() or ())))
        assert other_call(b"y", timeout=5) == b"api-v2:y"  # another route is unaffected
        assert first.result() == b"api-v1:first"
    assert all(r[0] == grpc.StatusCode.UNAVAILABLE and r[1] < 0.5 for r in results), results
    assert all(r[2].get("x-meshd-reason") == "pool_overflow" for r in results)


def _intruder_channel(m, node="intruder", roots: bytes | None = None, name="api-v1.shop.mesh.meshd.local"):
    """A caller at host B's ingress with a valid certificate of the mesh, for another node."""
    from meshd.security import KeyRef, MeshCA, make_csr  # noqa: PLC0415
    ca = MeshCA(m.b.store, KeyRef(str(m.key)))
    ident = f"spiffe://meshd.local/mesh/shop/virtualNode/{node}"
    key, csr = make_csr(ident)
    issued = ca.sign_csr("shop", csr, ident)
    return grpc.secure_channel(m.b.runtime.addresses["ingress"],
                               grpc.ssl_channel_credentials(roots or issued.bundle_pem, key, issued.chain_pem),
                               options=[("grpc.ssl_target_name_override", name)])


def test_authorization_egress_backends_and_ingress_identity(mesh_factory):
    m = mesh_factory({"api-v1": Origin("api-v1"), "api-v2": Origin("api-v2")}, targets={"api-v1": 1},
                     extra_nodes=("api-v2",))
    m.a.resources.create(K.VIRTUAL_SERVICE, parse_json(pb.CreateVirtualServiceRequest, {
        "meshName": "shop", "virtualServiceName": "secret.shop.local",
        "spec": {"provider": {"virtualNode": {"virtualNodeName": "api-v2"}}}}))
    call = m.client()
    m.wait_routable(call)
    # web did not declare secret.shop.local as a backend, and the mesh is DROP_ALL.
    with pytest.raises(grpc.RpcError) as err:
        m.client("secret.shop.local:9090")(b"x", timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert dict(err.value.trailing_metadata())["x-meshd-reason"] == "not_a_backend"
    # At host B's ingress: a valid mesh certificate, but of a node that declares no backend.
    ch = _intruder_channel(m)
    with pytest.raises(grpc.RpcError) as err:
        ch.unary_unary("/echo.Echo/Say")(b"x", timeout=5, metadata=(("x-meshd-instance", "shop/api-v1/api-v1"),
                                                                   ("x-meshd-service", "api.shop.local")))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert dict(err.value.trailing_metadata())["x-meshd-reason"] == "not_a_backend"
    ch.close()
    assert call(b"ok", timeout=5) == b"api-v1:ok"  # the declared caller passes


def _user_pki(tmp_path):
    """An operator's own CA and two certificates, as App Mesh `file` sources would name them."""
    from datetime import datetime, timedelta, timezone  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    now = datetime.now(timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("corp-ca")).issuer_name(name("corp-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    files = {"ca": tmp_path / "corp-ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("api-v1", "web"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(who)).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{who}.example.com")]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        files[f"{who}.crt"] = tmp_path / f"{who}.crt"
        files[f"{who}.key"] = tmp_path / f"{who}.key"
        files[f"{who}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{who}.key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return {k: str(v) for k, v in files.items()}


def web_client_policy_files(resources, f) -> None:
    """Give `web`'s backend api.shop.local a client policy of `file` sources from `f`."""
    web = resources.describe(K.VIRTUAL_NODE, pb.DescribeVirtualNodeRequest(mesh_name="shop", virtual_node_name="web"))
    spec = json_format.MessageToDict(web.virtual_node.spec)
    spec["backends"] = [{"virtualService": {"virtualServiceName": "api.shop.local", "clientPolicy": {"tls": {
        "certificate": {"file": {"certificateChain": f["web.crt"], "privateKey": f["web.key"]}},
        "validation": {"trust": {"file": {"certificateChain": f["ca"]}},
                       "subjectAlternativeNames": {"match": {"exact": ["api-v1.example.com"]}}}}}}}]
    resources.update(K.VIRTUAL_NODE, parse_json(pb.UpdateVirtualNodeRequest, {
        "meshName": "shop", "virtualNodeName": "web", "spec": spec}))


def test_app_mesh_file_certificates_are_honoured(mesh_factory, tmp_path):
    """The operator's own PKI, named by App Mesh `file` sources, carries the traffic between
    meshds: the listener presents its file certificate and checks callers against its file
    trust and subjectAlternativeNames; the caller's client policy does the same the other way."""
    f = _user_pki(tmp_path)
    m = mesh_factory({"api-v1": Origin("api-v1")}, targets={"api-v1": 1}, backends=(),
                     node_listener={"tls": {"mode": "STRICT",
                                            "certificate": {"file": {"certificateChain": f["api-v1.crt"],
                                                                     "privateKey": f["api-v1.key"]}},
                                            "validation": {"trust": {"file": {"certificateChain": f["ca"]}},
                                                           "subjectAlternativeNames": {"match": {"exact": ["web.example.com"]}}}}})
    web_client_policy_files(m.a.resources, f)
    call = m.client()
    m.wait_routable(call)
    assert call(b"corp", timeout=5) == b"api-v1:corp"
    # A mesh certificate that the file trust accepts but whose names are not in the list.
    ch = _intruder_channel(m, node="web", roots=open(f["ca"], "rb").read(), name="api-v1.example.com")
    with pytest.raises(grpc.RpcError) as err:
        ch.unary_unary("/echo.Echo/Say")(b"x", timeout=5, metadata=(("x-meshd-instance", "shop/api-v1/api-v1"),
                                                                   ("x-meshd-service", "api.shop.local")))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert dict(err.value.trailing_metadata())["x-meshd-reason"] == "identity_refused"
    ch.close()


def test_tls_sessions_are_resumed_on_new_connections(etcd, etcd_prefix, tmp_path):
    from meshd.dataplane import counters  # noqa: PLC0415
    m = Mesh(etcd, etcd_prefix, tmp_path, {"api-v1": Origin("api-v1")}, upstream_idle_seconds=0.3)
    try:
        shop_config(m.a.resources, K, pb, targets={"api-v1": 1})
        call = m.client()
        m.wait_routable(call)
        before = counters()
        for _ in range(3):
            time.sleep(1.5)  # past the idle timeout: the pooled mTLS connection is closed
            assert call(b"x", timeout=5) == b"api-v1:x"
        after = counters()
        opened = after["upstream_conns_opened"] - before["upstream_conns_opened"]
        resumed = after["tls_resumed_handshakes"] - before["tls_resumed_handshakes"]
        full = after["tls_full_handshakes"] - before["tls_full_handshakes"]
        assert opened >= 3, (before, after)
        assert resumed >= 3 and full == 0, (before, after)
    finally:
        m.close()


def test_health_checks_take_an_unhealthy_instance_out_of_every_route_table(mesh_factory):
    good, bad = Origin("good"), Origin("bad")
    m = mesh_factory({"i-good": good, "i-bad": bad}, nodes={"i-good": "api-v1", "i-bad": "api-v1"},
                     targets={"api-v1": 1},
                     node_listener={"healthCheck": {"protocol": "grpc", "intervalMillis": 5000, "timeoutMillis": 2000,
                                                    "healthyThreshold": 2, "unhealthyThreshold": 2}})
    call = m.client()
    m.wait_routable(call)
    bad.stop()  # its gRPC health check now fails (connection refused)
    _wait_health(m, "api-v1", {"i-good": "HEALTHY", "i-bad": "UNHEALTHY"})
    before = good.calls
    answers, errors = _calls(call, 30, workers=1)
    assert not errors and good.calls - before == 30  # no attempt went to the unhealthy instance


def test_a_node_with_no_healthy_instance_is_still_called(mesh_factory):
    """Fewer than half of a node's instances healthy (here none): the router balances across
    all of them (Envoy's healthy panic threshold) instead of answering no_endpoint."""
    # An HTTP/1.1 check against gRPC (HTTP/2-only) apps always fails, so both instances
    # turn UNHEALTHY while they keep answering gRPC: only panic mode reaches them.
    m = mesh_factory({"i-1": Origin("one"), "i-2": Origin("two")}, nodes={"i-1": "api-v1", "i-2": "api-v1"},
                     targets={"api-v1": 1},
                     node_listener={"healthCheck": {"protocol": "http", "path": "/healthz", "intervalMillis": 5000,
                                                    "timeoutMillis": 2000, "healthyThreshold": 2,
                                                    "unhealthyThreshold": 2}})
    call = m.client()
    m.wait_routable(call)
    _wait_health(m, "api-v1", {"i-1": "UNHEALTHY", "i-2": "UNHEALTHY"})
    assert [e.healthy for e in m.a.runtime.view.live("shop").router.endpoints("api-v1")] == [False, False]
    answers, errors = _calls(call, 20, workers=1)
    assert not errors and set(answers) == {"one", "two"}, (answers, errors)


def _wait_health(m, node: str, expected: dict[str, str], timeout: float = 30.0) -> None:
    """Until the registry shows `expected` ({instance id: health}) and host A has seen it."""
    def health():
        got = m.a.resources.list_instances(pb.ListInstancesRequest(mesh_name="shop", virtual_node_name=node))
        return {i.instance_id: i.health for i in got.instances}
    deadline = time.monotonic() + timeout
    while health() != expected:
        assert time.monotonic() < deadline, health()
        time.sleep(0.5)
    time.sleep(0.5)  # the change reaches host A's router through the watch


def test_grpc_streaming_shapes_and_16_mib_through_the_mesh(mesh_factory):
    m = mesh_factory({"api-v1": Origin("api-v1")}, targets={"api-v1": 1})
    say = m.client()
    m.wait_routable(say)
    big = bytes(range(256)) * (16 * 4096)  # 16 MiB
    assert say(big, timeout=30) == b"api-v1:" + big
    msgs = [b"m%05d" % i for i in range(10_000)]
    bidi = m.client(method="/echo.Echo/Bidi", kind="stream_stream")
    assert list(bidi(iter(msgs), timeout=60)) == msgs
    collect = m.client(method="/echo.Echo/Collect", kind="stream_unary")
    assert collect(iter([big[:8 << 20], big[8 << 20:]]), timeout=30) == big
    spread = m.client(method="/echo.Echo/Spread", kind="unary_stream")
    parts = list(spread(big[:1_000_000], timeout=30))
    assert len(parts) == 1000 and b"".join(parts) == big[:1_000_000]


# What an ingress that accepted the connection must answer: the HTTP/2 client preface and
# an empty SETTINGS frame (the server sends its own preface, RFC 9113 §3.4), or a request.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H1_REQUEST = b"GET / HTTP/1.1\r\nHost: api.shop.local\r\n\r\n"
# How an aborted TLS connection looks to the client: EOF without close_notify, or a reset
# when the server closed with our bytes still unread.
_ABORTED = (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)


def _without_client_certificate(address: str, version: ssl.TLSVersion, *, h2: bool):
    """A TLS client with no certificate against an ingress listener: (the stage it failed in,
    "handshake", "send" or "read", or "" when it did not fail; the error; the bytes it got)."""
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the client's trust is not what is tested
    ctx.minimum_version = ctx.maximum_version = version
    ctx.set_alpn_protocols(["h2"] if h2 else ["http/1.1"])
    stage, got = "handshake", b""
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="api-v1.shop.mesh.meshd.local", suppress_ragged_eofs=False) as tls:
            stage = "send"
            tls.sendall(_H2_PREFACE if h2 else _H1_REQUEST)
            stage = "read"
            while chunk := tls.recv(4096):
                got += chunk
    except (ssl.SSLError, OSError) as err:
        return stage, err, got
    return "", None, got


def test_hostile_input_on_the_mesh_listeners_leaves_meshd_serving(mesh_factory):
    m = mesh_factory({"api-v1": Origin("api-v1")}, targets={"api-v1": 1})
    call = m.client()
    m.wait_routable(call)
    targets = [m.egress, m.b.runtime.addresses["ingress"], m.b.runtime.addresses["ingress_http"]]
    for addr in targets:
        host, port = addr.rsplit(":", 1)
        for payload in (b"\x00garbage\xff" * 1000, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" * 5000,
                        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"):
            s = socket.create_connection((host, int(port)), timeout=5)
            try:
                s.sendall(payload)
                s.settimeout(2)
                s.recv(4096)
            except OSError:
                pass
            finally:
                s.close()
        # A TLS client without a certificate is refused by the ingress, which aborts the
        # connection (RFC 8446 §4.4.2.4; uvloop's SSL layer, like asyncio's, closes without
        # sending the certificate_required alert, so the client sees the abort, not the
        # reason): under TLS 1.2 inside the
        # handshake; under TLS 1.3, whose client finishes its handshake before the server
        # has read its certificate, at the first write or read. Never a byte comes back,
        # where an accepting ingress would answer what was sent.
        if addr != m.egress:
            h2 = addr == m.b.runtime.addresses["ingress"]
            for version, stages in ((ssl.TLSVersion.TLSv1_2, {"handshake"}), (ssl.TLSVersion.TLSv1_3, {"send", "read"})):
                stage, err, got = _without_client_certificate(addr, version, h2=h2)
                assert stage in stages and isinstance(err, _ABORTED) and got == b"", (addr, version, stage, err, got)
        assert call(b"still", timeout=5) == b"api-v1:still"
    # A slowloris client holding a half-sent header does not block others.
    host, port = m.egress.rsplit(":", 1)
    slow = socket.create_connection((host, int(port)), timeout=5)
    slow.sendall(b"PRI * HTTP/2.0\r\n")
    assert call(b"during", timeout=5) == b"api-v1:during"
    slow.close()
