"""The Kubernetes manifests in deploy/k8s: every object validates offline against the
Kubernetes schemas (kubernetes-validate, strict: no unknown fields), and the objects agree
with each other (names, selectors, the static etcd membership)."""
from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml


K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
# The oldest release the manifests support (native sidecars need 1.29) and the newest schema bundled.
VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())


def _objects() -> list[tuple[str, dict]]:
    out = []
    for f in sorted(K8S.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(f.read_text())):
            if doc:
                out.append((f"{f.name}#{i}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


OBJECTS = _objects()


def _one(kind: str, name: str) -> dict:
    found = [d for _, d in OBJECTS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("label,doc", OBJECTS, ids=[label for label, _ in OBJECTS])
def test_manifest_validates_against_the_kubernetes_schema(label, doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{label} (Kubernetes {version}): {err.message} at {'.'.join(map(str, err.path))}")


def test_etcd_is_a_static_three_member_statefulset_behind_a_headless_service():
    sts = _one("StatefulSet", "etcd")
    svc = _one("Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["replicas"] == 3
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    args = dict(a.split("=", 1) for a in sts["spec"]["template"]["spec"]["containers"][0]["args"] if "=" in a)
    members = dict(m.split("=", 1) for m in args["--initial-cluster"].split(","))
    ns = sts["metadata"]["namespace"]
    assert members == {f"etcd-{i}": f"http://etcd-{i}.{svc['metadata']['name']}.{ns}.svc:2380" for i in range(3)}
    assert _one("PodDisruptionBudget", "etcd")["spec"]["minAvailable"] == 2
    # meshd is pointed at exactly those members.
    etcd = _one("ConfigMap", "meshd-config")["data"]["MESHD_ETCD"].split(",")
    assert etcd == [u.replace(":2380", ":2379") for u in members.values()]


def test_meshd_daemonset_uses_its_account_config_and_cluster_key():
    ds = _one("DaemonSet", "meshd")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    _one("ServiceAccount", pod["serviceAccountName"])
    container = pod["containers"][0]
    assert container["args"][0] == "run"
    for ref in container["envFrom"]:
        _one("ConfigMap", ref["configMapRef"]["name"])
    secret = next(v for v in pod["volumes"] if "secret" in v)["secret"]["secretName"]
    _one("Secret", secret)
    role = _one("Role", "meshd")
    assert {n for r in role["rules"] for n in r.get("resourceNames", [])} == {"meshd-config", secret}
    for binding in ("ClusterRoleBinding", "RoleBinding"):
        assert _one(binding, "meshd")["subjects"][0]["name"] == pod["serviceAccountName"]
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1


def test_sidecar_example_runs_meshd_beside_the_app():
    """The example is `meshctl inject`'s output (tests/sidecar/test_inject.py keeps it so):
    proxy-init first, then the app and the sidecar in the controller's container names."""
    pod = _one("Deployment", "api-v1")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["proxyinit"]
    assert pod["initContainers"][0]["command"] == ["meshd", "proxy-init"]
    assert [c["name"] for c in pod["containers"]] == ["app", "envoy"]
    assert pod["containers"][1]["command"] == ["meshd", "sidecar"]
