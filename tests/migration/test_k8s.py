"""App Mesh controller for Kubernetes manifests (v1beta2 and v1beta1) convert to the App Mesh
documents the controller would have written, named as its webhooks name them; the documents
apply through the real admin API on a real etcd and read back equal."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshd.api import kinds as K
from meshd.api.validate import parse_json, to_json
from meshd.migrate.k8s import ConversionError, convert, export, load
from meshd.v1 import admin_pb2 as pb

HERE = Path(__file__).parent / "k8s"
CASES = ["v1beta2-howto", "v1beta1-colorapp"]

pytestmark = pytest.mark.migration


def _expected(case: str) -> list[tuple[str, dict]]:
    return [(d["kind"], d["document"]) for d in json.loads((HERE / "expected" / f"{case}.json").read_text())]


@pytest.mark.parametrize("case", CASES)
def test_manifests_convert_to_the_documents_the_controller_writes(case):
    out = convert(load(HERE / f"{case}.yaml"))
    assert out.documents == _expected(case)
    assert out.notes == []


@pytest.mark.parametrize("case", CASES)
def test_every_document_parses_as_its_create_request(case):
    for kind, doc in convert(load(HERE / f"{case}.yaml")).documents:
        req = parse_json(getattr(pb, f"Create{kind}Request"), doc)
        assert to_json(req) == doc


def test_other_kinds_are_listed_as_skipped_and_pod_selectors_kept():
    out = convert(load(HERE / "v1beta2-howto.yaml"))
    assert out.skipped == [("Namespace", "howto-k8s"), ("Namespace", "shared"),
                           ("Deployment", "howto-k8s/front"), ("Service", "howto-k8s/front")]
    assert out.pod_selectors == {
        ("howto-mesh", "front_howto-k8s"): {"matchLabels": {"app": "front"}},
        ("howto-mesh", "blue_howto-k8s"): {"matchLabels": {"app": "color", "version": "blue"}},
        ("howto-mesh", "color-red"): {"matchLabels": {"app": "color", "version": "red"}},
        ("howto-mesh", "catalog_shared"): {"matchLabels": {"app": "catalog"}},
    }
    assert out.gateway_pod_selectors == {("howto-mesh", "ingress-gw_howto-k8s"): {"matchLabels": {"app": "ingress-gw"}}}
    v1 = convert(load(HERE / "v1beta1-colorapp.yaml"))
    assert v1.skipped == [("ServiceAccount", "appmesh-demo/colorteller"), ("Namespace", "appmesh-demo")]


@pytest.mark.etcd
@pytest.mark.parametrize("case", CASES)
def test_documents_apply_through_the_admin_api_and_read_back_equal(admin, case):
    docs = convert(load(HERE / f"{case}.yaml")).documents
    for kind_title, doc in docs:
        getattr(admin.stub, f"Create{kind_title}")(parse_json(getattr(pb, f"Create{kind_title}Request"), doc))
    for kind_title, doc in docs:
        kind = K.BY_TITLE[kind_title]
        ids = {f: doc[_camel(f)] for f in kind.id_fields}
        got = getattr(getattr(admin.stub, f"Describe{kind_title}")(
            getattr(pb, f"Describe{kind_title}Request")(**ids)), kind.field)
        assert to_json(got.spec) == doc["spec"], (kind_title, ids)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def _service(name: str, namespace: str, spec: str = "{}") -> str:
    """A v1beta2 VirtualService manifest, as the next YAML document."""
    return (f"---\napiVersion: appmesh.k8s.aws/v1beta2\nkind: VirtualService\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n")


MESH = """
apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata: {name: m1}
spec:
  namespaceSelector: {matchLabels: {mesh: m1}}
"""


def test_an_unresolvable_reference_names_the_object_and_field():
    text = MESH + """
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: front, namespace: apps}
spec:
  meshRef: {name: m1}
  backends:
    - virtualService: {virtualServiceRef: {name: color}}
    - virtualService: {virtualServiceRef: {name: ghost, namespace: other}}
""" + _service("color", "apps", "{meshRef: {name: m1}}")
    with pytest.raises(ConversionError) as err:
        convert(load(text), source="apps.yaml")
    assert err.value.path == "apps.yaml: VirtualNode apps/front spec.backends[1].virtualService.virtualServiceRef"
    assert err.value.message == "VirtualService other/ghost is not in the input"


@pytest.mark.parametrize("spec, path, message", [
    ("{meshRef: {name: nope}}", "VirtualNode apps/n spec.meshRef", "Mesh nope is not in the input"),
    ("{meshRef: {name: m1}, listeners: [], backends: [{virtualService: {virtualServiceARN: 'arn:aws:s3:::b'}}]}",
     "VirtualNode apps/n spec.backends[0].virtualService.virtualServiceARN",
     "'arn:aws:s3:::b' is not an App Mesh virtualService ARN"),
])
def test_bad_references_fail_precisely(spec, path, message):
    text = MESH + f"""
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {{name: n, namespace: apps}}
spec: {spec}
"""
    with pytest.raises(ConversionError) as err:
        convert(load(text))
    assert (err.value.path, err.value.message) == (path, message)


NODE = """
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: n, namespace: apps}
spec: {}
"""
NAMESPACE = """
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {mesh: LABEL}}
"""
MESH2 = MESH.replace("m1", "m2")


def test_namespace_labels_choose_the_mesh():
    out = convert(load(MESH + "---" + MESH2 + NODE + NAMESPACE.replace("LABEL", "m2")))
    assert [d for k, d in out.documents if k == "VirtualNode"] == [
        {"meshName": "m2", "virtualNodeName": "n_apps", "spec": {}}]
    assert out.notes == []


def test_two_meshes_selecting_a_namespace_is_an_error():
    both = MESH2.replace("matchLabels: {mesh: m2}", "matchExpressions: [{key: mesh, operator: Exists}]")
    with pytest.raises(ConversionError) as err:
        convert(load(MESH + "---" + both + NODE + NAMESPACE.replace("LABEL", "m1")))
    assert err.value.path == "VirtualNode apps/n spec.meshRef"
    assert err.value.message == "namespace apps is selected by more than one mesh: m1, m2"


def test_no_selector_deciding_uses_the_only_mesh_and_says_so():
    out = convert(load(MESH + NODE))
    assert out.documents[1] == ("VirtualNode", {"meshName": "m1", "virtualNodeName": "n_apps", "spec": {}})
    assert out.notes == ["namespace apps: no Namespace object in the input; its objects join the only mesh, m1"]
    with pytest.raises(ConversionError) as err:
        convert(load(MESH + "---" + MESH2 + NODE))
    assert err.value.message == "no mesh selects namespace apps; set spec.meshRef"


def test_gateway_routes_join_the_gateway_that_selects_them():
    gw = MESH + NAMESPACE.replace("LABEL", "m1") + """
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {name: gw, namespace: apps}
spec:
  awsName: edge
  namespaceSelector: {matchLabels: {mesh: m1}}
  gatewayRouteSelector: {matchLabels: {gateway: edge}}
  listeners: [{portMapping: {port: 8080, protocol: http}}]
""" + _service("s", "apps") + """---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: r, namespace: apps, labels: {gateway: LABEL}}
spec:
  httpRoute:
    match: {prefix: /}
    action: {target: {virtualService: {virtualServiceRef: {name: s}}}}
"""
    # A gateway for other namespaces, taking every route there: its namespaceSelector leaves this one out.
    other = """
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {name: gw2, namespace: apps}
spec:
  namespaceSelector: {matchLabels: {mesh: elsewhere}}
  listeners: [{portMapping: {port: 8081, protocol: http}}]
"""
    out = convert(load(gw.replace("LABEL", "edge") + other))
    assert out.documents[-1] == ("GatewayRoute", {
        "meshName": "m1", "virtualGatewayName": "edge", "gatewayRouteName": "r_apps",
        "spec": {"httpRoute": {"match": {"prefix": "/"},
                               "action": {"target": {"virtualService": {"virtualServiceName": "s.apps"}}}}}})
    with pytest.raises(ConversionError) as err:
        convert(load(gw.replace("LABEL", "other")))
    assert (err.value.path, err.value.message) == (
        "GatewayRoute apps/r spec.virtualGatewayRef",
        "no VirtualGateway selects this route (namespace apps, labels {'gateway': 'other'})")
    # Without the Namespace object, the gatewayRouteSelector alone decides, and the notes say so.
    out = convert(load(gw.replace("LABEL", "edge").replace(NAMESPACE.replace("LABEL", "m1"), "")))
    assert out.documents[-1][1]["virtualGatewayName"] == "edge"
    assert out.notes[-1] == ("GatewayRoute apps/r: no Namespace object in the input; the gatewayRouteSelector "
                             "of VirtualGateway apps/gw alone selects it")


def test_a_gateway_route_in_another_mesh_than_its_gateway_is_refused():
    text = MESH + "---" + MESH2 + NAMESPACE.replace("LABEL", "m1") + """
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata: {name: gw, namespace: edge}
spec:
  meshRef: {name: m2, uid: 5e1c5f7a-0d8e-4a53-9c4b-2b7c6a1f0e11}
  listeners: [{portMapping: {port: 8080, protocol: http}}]
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata: {name: r, namespace: apps}
spec:
  virtualGatewayRef: {name: gw, namespace: edge}
  httpRoute:
    match: {prefix: /}
    action:
      target:
        virtualService: {virtualServiceARN: "arn:aws:appmesh:eu-west-1:111122223333:mesh/m1/virtualService/s"}
"""
    with pytest.raises(ConversionError) as err:
        convert(load(text))
    assert (err.value.path, err.value.message) == ("GatewayRoute apps/r spec.virtualGatewayRef",
                                                   "VirtualGateway edge/gw is in mesh m2, not m1")


def test_v1beta1_mesh_name_must_be_in_the_input():
    text = """
apiVersion: appmesh.k8s.aws/v1beta1
kind: VirtualNode
metadata: {name: n, namespace: apps}
spec: {meshName: absent}
"""
    with pytest.raises(ConversionError) as err:
        convert(load(text))
    assert (err.value.path, err.value.message) == ("VirtualNode apps/n spec.meshName",
                                                   "Mesh absent is not in the input")


def test_load_reads_files_directories_text_and_lists(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Namespace\n---\n- not an object\n")
    with pytest.raises(ConversionError) as err:
        load(bad)
    assert (err.value.path, err.value.message) == (f"{bad}: document 2", "not a Kubernetes object")
    assert len(load(HERE)) == len(load(HERE / "v1beta2-howto.yaml")) + len(load(HERE / "v1beta1-colorapp.yaml"))
    listed = load("apiVersion: v1\nkind: List\nitems:\n- {kind: Namespace, apiVersion: v1, metadata: {name: a}}\n"
                  "---\n---\n{kind: Namespace, apiVersion: v1, metadata: {name: b}}\n")
    assert [o["metadata"]["name"] for o in listed] == ["a", "b"]


@pytest.mark.parametrize("case", CASES)
def test_export_round_trips_through_convert(case):
    docs = _expected(case)
    mesh = docs[0][1]["meshName"]
    manifests = export(docs, mesh=mesh, namespace="migrated")
    assert {m["apiVersion"] for m in manifests} == {"appmesh.k8s.aws/v1beta2"}
    assert all(m["spec"].get("awsName") for m in manifests)
    assert convert(manifests).documents == docs
    for route in (m for m in manifests if m["kind"] == "GatewayRoute"):  # read-only for the webhook
        assert "virtualGatewayRef" not in route["spec"] and route["metadata"]["labels"]
    if case == "v1beta2-howto":  # the CRD's spelling of ARN fields, as the controller's schema has it
        gateway = next(m for m in manifests if m["kind"] == "VirtualGateway")
        assert gateway["spec"]["backendDefaults"]["clientPolicy"]["tls"]["validation"]["trust"] == {
            "acm": {"certificateAuthorityARNs": [
                "arn:aws:acm-pca:us-west-2:111122223333:certificate-authority/0c0d1e2f-1111-2222-3333-444455556666"]}}


def test_export_refers_to_a_service_outside_the_export_by_arn():
    docs = [("Mesh", {"meshName": "Shop_1", "spec": {}}),
            ("VirtualNode", {"meshName": "Shop_1", "virtualNodeName": "web_v1", "spec": {
                "backends": [{"virtualService": {"virtualServiceName": "ledger.other.local"}}]}}),
            ("VirtualNode", {"meshName": "elsewhere", "virtualNodeName": "x", "spec": {}})]
    manifests = export(docs, mesh="Shop_1", namespace="shop")
    assert [m["metadata"]["name"] for m in manifests] == ["shop-1", "web-v1"]
    assert manifests[1]["spec"]["backends"] == [{"virtualService": {
        "virtualServiceARN": "arn:aws:appmesh:::mesh/Shop_1/virtualService/ledger.other.local"}}]
    assert convert(manifests).documents == docs[:2]


GROUPS = MESH + NAMESPACE.replace("LABEL", "m1") + NAMESPACE.replace("apps", "shop").replace("LABEL", "m1") + """
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: BackendGroup
metadata: {name: payments, namespace: shop}
spec:
  virtualservices:
    - name: ledger
    - name: cards
      namespace: apps
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: front, namespace: apps}
spec:
  backends:
    - virtualService: {virtualServiceRef: {name: cards}}
  backendGroups:
    - {name: payments, namespace: shop}
    - {name: "*"}
""" + _service("cards", "apps") + _service("search", "apps") + _service("ledger", "shop")


def test_backend_groups_add_their_virtual_services_to_the_node_backends():
    out = convert(load(GROUPS))
    node = next(d for k, d in out.documents if k == "VirtualNode")
    assert node["spec"]["backends"] == [{"virtualService": {"virtualServiceName": n}}
                                        for n in ("cards.apps", "ledger.shop", "search.apps")]
    assert ("BackendGroup", "shop/payments") not in out.skipped
    with pytest.raises(ConversionError) as err:
        convert(load(GROUPS.replace("- name: ledger", "- name: ghost")))
    assert (err.value.path, err.value.message) == (
        "VirtualNode apps/front spec.backendGroups[0] (shop/payments spec.virtualservices[0])",
        "VirtualService shop/ghost is not in the input")


def test_a_reference_into_another_mesh_is_refused():
    text = MESH + "---" + MESH2 + """
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata: {name: n, namespace: apps}
spec:
  meshRef: {name: m1}
  backends: [{virtualService: {virtualServiceRef: {name: s, namespace: other}}}]
""" + _service("s", "other", "{meshRef: {name: m2}}")
    with pytest.raises(ConversionError) as err:
        convert(load(text))
    assert (err.value.path, err.value.message) == (
        "VirtualNode apps/n spec.backends[0].virtualService.virtualServiceRef",
        "VirtualService other/s is in mesh m2, not m1")


def test_kubectl_get_output_converts_with_the_fields_the_webhooks_filled_in():
    """`kubectl get virtualnodes -o yaml`: a List, with meshRef and awsName set by the
    webhooks, status and server metadata, which play no part."""
    text = MESH + """
---
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
  - apiVersion: appmesh.k8s.aws/v1beta2
    kind: VirtualNode
    metadata:
      name: front
      namespace: apps
      uid: 0f5b7a8e-6a43-4c8e-a1c2-9d1f8e2b7c55
      resourceVersion: "48213"
      finalizers: [finalizers.appmesh.k8s.aws/aws-resources]
    spec:
      awsName: front_apps
      meshRef: {name: m1, uid: 5e1c5f7a-0d8e-4a53-9c4b-2b7c6a1f0e11}
      podSelector: {matchLabels: {app: front}}
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {dns: {hostname: front.apps.svc.cluster.local}}
    status:
      virtualNodeARN: arn:aws:appmesh:us-west-2:111122223333:mesh/m1/virtualNode/front_apps
      conditions: [{type: VirtualNodeActive, status: "True"}]
"""
    out = convert(load(text))
    assert out.documents[1] == ("VirtualNode", {"meshName": "m1", "virtualNodeName": "front_apps", "spec": {
        "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
        "serviceDiscovery": {"dns": {"hostname": "front.apps.svc.cluster.local"}}}})
    assert out.notes == []


def test_kinds_the_api_version_does_not_have_are_refused():
    with pytest.raises(ConversionError) as err:
        convert(load("apiVersion: appmesh.k8s.aws/v1beta1\nkind: VirtualRouter\nmetadata: {name: r, namespace: a}\n"))
    assert (err.value.path, err.value.message) == (
        "VirtualRouter a/r kind", "'VirtualRouter' is not an App Mesh controller kind of appmesh.k8s.aws/v1beta1")
    with pytest.raises(ConversionError) as err:
        convert(load("apiVersion: appmesh.k8s.aws/v1alpha1\nkind: Mesh\nmetadata: {name: m}\n"))
    assert (err.value.path, err.value.message) == (
        "Mesh m apiVersion", "appmesh.k8s.aws/v1alpha1 is not appmesh.k8s.aws/v1beta1 or appmesh.k8s.aws/v1beta2")
