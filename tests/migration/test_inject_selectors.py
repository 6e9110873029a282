"""`meshctl inject` with the App Mesh controller's own objects: a VirtualNode's `podSelector`
picks the workloads that get its sidecar, in the VirtualNode's namespace, as the controller's
webhook did (the migrated manifests keep working without per-workload annotations)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

pytestmark = [pytest.mark.migration]

APPMESH = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {mesh: shop}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: shop}
spec: {namespaceSelector: {matchLabels: {mesh: shop}}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: front, namespace: shop}
spec:
  podSelector: {matchLabels: {app: front}}
  listeners: [{portMapping: {port: 8080, protocol: http}}]
  serviceDiscovery: {dns: {hostname: front.shop.svc.cluster.local}}
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: api-v2, namespace: shop}
spec:
  podSelector:
    matchLabels: {app: api}
    matchExpressions: [{key: version, operator: In, values: [v2]}]
  listeners: [{portMapping: {port: 9090, protocol: grpc}}]
  serviceDiscovery: {dns: {hostname: api.shop.svc.cluster.local}}
"""


def _deployment(name: str, labels: dict, namespace: str = "shop") -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
                "containers": [{"name": "app", "image": "example/app:1", "ports": [{"containerPort": 8080}]}]}}}}


def _inject(tmp_path, workloads: list[dict], *extra: str) -> tuple[list[dict], str]:
    (tmp_path / "appmesh.yaml").write_text(APPMESH)
    (tmp_path / "apps.yaml").write_text(yaml.safe_dump_all(workloads))
    out = subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "inject", "-f", str(tmp_path / "apps.yaml"),
                          "--appmesh", str(tmp_path / "appmesh.yaml"), *extra],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d], out.stderr


def _arn(doc: dict) -> str | None:
    for c in doc["spec"]["template"]["spec"]["containers"]:
        if c["name"] == "envoy":
            return next(e["value"] for e in c["env"] if e["name"] == "APPMESH_RESOURCE_ARN")
    return None


def test_pod_selectors_pick_each_workloads_node(tmp_path):
    docs, said = _inject(tmp_path, [
        _deployment("front", {"app": "front"}),
        _deployment("api-v2", {"app": "api", "version": "v2"}),
        _deployment("api-v1", {"app": "api", "version": "v1"}),       # no node selects it
        _deployment("front-elsewhere", {"app": "front"}, "other"),    # another namespace
    ])
    by = {d["metadata"]["name"]: d for d in docs}
    assert _arn(by["front"]) == "mesh/shop/virtualNode/front_shop"
    assert _arn(by["api-v2"]) == "mesh/shop/virtualNode/api-v2_shop"
    assert _arn(by["api-v1"]) is None and _arn(by["front-elsewhere"]) is None
    assert "selected by its podSelector" in said


def test_an_annotation_or_flag_wins_and_two_selecting_nodes_are_refused(tmp_path):
    named = _deployment("front", {"app": "front"})
    named["spec"]["template"]["metadata"]["annotations"] = {"appmesh.k8s.aws/virtualNode": "other-node",
                                                            "appmesh.k8s.aws/mesh": "shop"}
    docs, _ = _inject(tmp_path, [named])
    assert _arn(docs[0]) == "mesh/shop/virtualNode/other-node"
    global APPMESH
    saved = APPMESH
    APPMESH += """---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: front-canary, namespace: shop}
spec:
  podSelector: {matchLabels: {app: front}}
  listeners: [{portMapping: {port: 8080, protocol: http}}]
"""
    try:
        docs, said = _inject(tmp_path, [_deployment("front", {"app": "front"})])
    finally:
        APPMESH = saved
    assert _arn(docs[0]) is None
    assert "virtual nodes shop/front-canary_shop, shop/front_shop all select it" in said
