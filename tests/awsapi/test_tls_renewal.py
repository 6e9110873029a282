"""The REST listener follows host-certificate renewals: a meshd signing itself certificates
of a few seconds serves each new connection with the current one, and SDK calls keep
working across renewals (the listener is never reopened)."""
from __future__ import annotations

import socket
import ssl
import time

import pytest
from cryptography import x509

from tests.awsapi.harness import start_aws_mesh, stop_aws_mesh

pytestmark = [pytest.mark.awsapi, pytest.mark.etcd]


def _presented_serial(m) -> int:
    host, port = m.endpoint.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=m.bundle)
    with socket.create_connection((host, int(port)), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
        return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number


def test_rest_listener_presents_the_renewed_certificate(etcd, tmp_path):
    m = start_aws_mesh(etcd, tmp_path, cert_ttl_hours=9 / 3600)  # renewed at two thirds: every ~6 s
    try:
        c = m.client()
        first = _presented_serial(m)
        assert first == m.daemon.identity.credentials.serial
        deadline = time.monotonic() + 40
        calls = 0
        while _presented_serial(m) == first:
            assert time.monotonic() < deadline, "the REST listener still presents the first certificate after 40 s"
            c.list_meshes()  # one kept-alive SDK connection across the renewal
            calls += 1
            time.sleep(0.5)
        assert _presented_serial(m) == m.daemon.identity.credentials.serial != first
        assert calls > 0
        c.create_mesh(meshName="after-renewal")
        assert m.client().describe_mesh(meshName="after-renewal")["mesh"]["meshName"] == "after-renewal"
    finally:
        stop_aws_mesh(m)
