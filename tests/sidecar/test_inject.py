"""`meshctl inject`: App Mesh controller-style sidecar injection, offline, validated against
the Kubernetes schemas (kubernetes-validate, strict)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from meshd.cli.inject import inject

pytestmark = [pytest.mark.sidecar]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "k8s" / "examples" / "shop-api.yaml"
INJECTED = REPO / "deploy" / "k8s" / "40-sidecar-example.yaml"
OPTS = {"mesh": "", "node": "", "etcd": "http://etcd-client.meshd-system.svc:2379",
        "image": "ghcr.io/meshd/meshd:latest", "join_secret": "meshd-join-token"}


def _by_name(docs):
    return {d["metadata"]["name"]: d for d in docs}


def test_injected_workloads_validate_and_carry_proxyinit_and_the_sidecar():
    docs, said = inject(EXAMPLE.read_text(), **OPTS)
    for d in docs:
        for version in ("1.29.0", kubernetes_validate.utils.latest_version()):
            kubernetes_validate.validate(d, version, strict=True)
    api = _by_name(docs)["api-v1"]["spec"]["template"]
    init = api["spec"]["initContainers"][0]
    assert init["name"] == "proxyinit" and init["command"] == ["meshd", "proxy-init"]
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["APPMESH_APP_PORTS"] == "9090" and env["APPMESH_IGNORE_UID"] == "1337"
    assert env["APPMESH_ENVOY_EGRESS_PORT"] == "15001" and env["APPMESH_ENVOY_INGRESS_PORT"] == "15000"
    assert "NET_ADMIN" in init["securityContext"]["capabilities"]["add"]
    sidecar = api["spec"]["containers"][-1]
    assert sidecar["name"] == "envoy" and sidecar["command"] == ["meshd", "sidecar"]
    senv = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert senv["APPMESH_RESOURCE_ARN"] == "mesh/shop/virtualNode/api-v1"
    assert sidecar["securityContext"]["runAsUser"] == 1337  # the uid proxy-init ignores
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9901}
    ledger = _by_name(docs)["ledger"]["spec"]["template"]["spec"]
    lenv = {e["name"]: e["value"] for e in ledger["initContainers"][0]["env"]}
    assert lenv["APPMESH_APP_PORTS"] == "8080,8081" and lenv["APPMESH_EGRESS_IGNORED_PORTS"] == "22,5432"
    assert {e["name"]: e.get("value") for e in ledger["containers"][-1]["env"]}["APPMESH_RESOURCE_ARN"] == \
        "mesh/shop/virtualNode/ledger"
    agent = _by_name(docs)["node-agent"]
    assert agent == _by_name(yaml.safe_load_all(EXAMPLE.read_text()))["node-agent"]  # opted out: untouched
    assert said == ["Deployment/api-v1: injected shop/api-v1", "StatefulSet/ledger: injected shop/ledger",
                    "DaemonSet/node-agent: opted out (appmesh.k8s.aws/sidecarInjectorWebhook: disabled)"]


def test_inject_twice_changes_nothing_and_names_what_it_left():
    once, _ = inject(EXAMPLE.read_text(), **OPTS)
    twice, said = inject(yaml.safe_dump_all(once), **OPTS)
    assert twice == once
    assert said[:2] == ["Deployment/api-v1: already injected", "StatefulSet/ledger: already injected"]
    bare = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    out, said = inject(yaml.safe_dump(bare), **OPTS)
    assert out == [bare] and "no virtual node named" in said[0]
    out, said = inject(yaml.safe_dump(bare), **{**OPTS, "mesh": "shop", "node": "x"})
    assert "injected shop/x" in said[0]


def test_the_committed_example_is_what_meshctl_inject_makes():
    p = subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "inject", "-f", str(EXAMPLE)],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert list(yaml.safe_load_all(p.stdout)) == list(yaml.safe_load_all(INJECTED.read_text()))
