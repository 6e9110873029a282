"""CloudFormation templates -> App Mesh documents (meshd.migrate.cfn): AWS-style templates
convert to the same mesh written by hand as App Mesh CLI JSON, apply through the real admin
API on a real etcd and read back equal; what cannot be settled outside CloudFormation is
refused naming the value's path and the --param that would settle it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.migrate import cfn
from meshd.v1 import admin_pb2 as pb

pytestmark = pytest.mark.migration

HERE = Path(__file__).parent / "cfn"
TEMPLATES = {
    "shop-mesh.yaml": {"ServicesDomain": "shop.local"},
    "edge.json": {"EdgeMeshName": "edge"},
}
SKIPPED = {
    "shop-mesh.yaml": [("ServicesNamespace", "AWS::ServiceDiscovery::PrivateDnsNamespace"),
                       ("ApiTaskDefinition", "AWS::ECS::TaskDefinition")],
    "edge.json": [("CheckoutTargetGroup", "AWS::ElasticLoadBalancingV2::TargetGroup")],
}


def _convert(name: str, **params) -> cfn.Conversion:
    return cfn.convert(cfn.load(HERE / name), params={**TEMPLATES[name], **params}, source=str(HERE / name))


def _by_name(conv: cfn.Conversion) -> dict[tuple, dict]:
    return {(kind, *(doc[k] for k in sorted(doc) if k.endswith("Name"))): doc for kind, doc in conv.documents}


@pytest.mark.parametrize("name", TEMPLATES)
def test_templates_convert_to_the_hand_written_documents(name):
    conv = _convert(name)
    expected = [tuple(kd) for kd in json.loads((HERE / name.replace(".yaml", ".json").replace(
        ".json", ".expected.json")).read_text())]
    assert conv.documents == expected
    assert conv.skipped == SKIPPED[name]
    for kind, doc in conv.documents:
        parse_json(getattr(pb, f"Create{kind}Request"), doc)  # App Mesh CLI input, as meshctl reads it
    kinds = [kind for kind, _ in conv.documents]
    assert kinds == sorted(kinds, key=cfn.KIND_ORDER.index)


def test_dependson_orders_within_a_kind():
    nodes = [doc["virtualNodeName"] for kind, doc in _convert("shop-mesh.yaml").documents if kind == "VirtualNode"]
    # ApiV1Node comes first in the template but DependsOn OrdersDbNode.
    assert nodes.index("orders-db") < nodes.index("api-v1")


def test_parameters_conditions_and_pseudo_parameters_decide_the_documents():
    staging = _by_name(_convert("shop-mesh.yaml", EnvironmentName="staging", **{
        "AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws",
        "AWS::StackName": "shop-staging"}))
    assert staging[("Mesh", "shop")]["spec"]["egressFilter"] == {"type": "ALLOW_ALL"}
    assert {"key": "stack", "value": "shop-staging-eu-west-1"} in staging[("Mesh", "shop")]["tags"]
    api_v1 = staging[("VirtualNode", "shop", "api-v1")]["spec"]
    assert api_v1["listeners"][0]["tls"]["mode"] == "PERMISSIVE"  # StrictTls is false outside prod
    assert api_v1["listeners"][0]["timeout"]["http"]["perRequest"] == {"unit": "s", "value": 60}  # FindInMap
    # IsStaging brings in DebugNode, which has no VirtualNodeName: it is named by its logical id.
    assert staging[("VirtualNode", "shop", "DebugNode")]["spec"]["serviceDiscovery"] == {
        "dns": {"hostname": "debug.internal"}}
    # IpPreference is AWS::NoValue outside prod, so the member is absent.
    assert "ipPreference" not in staging[("VirtualNode", "shop", "api-v2")]["spec"]["serviceDiscovery"]["awsCloudMap"]
    gateway = staging[("VirtualGateway", "shop", "ingress")]
    assert gateway["tags"] == [{"key": "mesh-arn", "value": "arn:aws:appmesh:eu-west-1:123456789012:mesh/shop"}]

    no_canary = _by_name(_convert("shop-mesh.yaml", CanaryWeight="0"))
    assert ("VirtualNode", "shop", "api-v2") not in no_canary  # Condition HasCanary is false
    assert ("Route", "shop", "api-grpc", "api-router") not in no_canary
    route = no_canary[("Route", "shop", "api-http", "api-router")]["spec"]["httpRoute"]
    assert route["action"]["weightedTargets"] == [{"virtualNode": "api-v1", "weight": 100, "port": 8080}]


def test_short_forms_read_as_long_forms():
    text = """
A: !Ref X
B: !GetAtt Node.VirtualNodeName
C: !GetAtt [Node, Arn]
D: !Sub "${X}-${!Y}"
E: !Sub ["${A}", {A: !Ref X}]
F: !Join [",", [a, !Ref X]]
G: !Select [1, !Split [",", "a,b"]]
H: !If [Cond, !Base64 x, !Ref "AWS::NoValue"]
I: !And [!Equals [a, b], !Not [!Condition C], !Or [!Condition D, !Condition E]]
J: !FindInMap [M, !Ref "AWS::Region", K]
L: !ImportValue other-stack-output
"""
    assert cfn.load(text) == {
        "A": {"Ref": "X"},
        "B": {"Fn::GetAtt": ["Node", "VirtualNodeName"]},
        "C": {"Fn::GetAtt": ["Node", "Arn"]},
        "D": {"Fn::Sub": "${X}-${!Y}"},
        "E": {"Fn::Sub": ["${A}", {"A": {"Ref": "X"}}]},
        "F": {"Fn::Join": [",", ["a", {"Ref": "X"}]]},
        "G": {"Fn::Select": [1, {"Fn::Split": [",", "a,b"]}]},
        "H": {"Fn::If": ["Cond", {"Fn::Base64": "x"}, {"Ref": "AWS::NoValue"}]},
        "I": {"Fn::And": [{"Fn::Equals": ["a", "b"]}, {"Fn::Not": [{"Condition": "C"}]},
                          {"Fn::Or": [{"Condition": "D"}, {"Condition": "E"}]}]},
        "J": {"Fn::FindInMap": ["M", {"Ref": "AWS::Region"}, "K"]},
        "L": {"Fn::ImportValue": "other-stack-output"},
    }


# -- Refusals ---------------------------------------------------------------------------

BASE = """
Parameters:
  Domain: {Type: String, Default: shop.local}
  Tier: {Type: String, AllowedValues: [gold, silver], Default: gold}
Conditions:
  Never: !Equals [a, b]
Resources:
  Mesh:
    Type: AWS::AppMesh::Mesh
    Properties: {MeshName: shop}
  Lb:
    Type: AWS::ElasticLoadBalancingV2::LoadBalancer
    Properties: {Subnets: [subnet-1]}
  Sg:
    Type: AWS::EC2::SecurityGroup
    Properties: {GroupDescription: api}
  Svc:
    Type: AWS::ECS::Service
    Properties: {Cluster: shop}
  Unused:
    Type: AWS::AppMesh::VirtualNode
    Condition: Never
    Properties: {MeshName: shop, Spec: {}}
  ApiNode:
    Type: AWS::AppMesh::VirtualNode
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualNodeName: api
      Spec:
        Listeners:
          - PortMapping: {Port: 8080, Protocol: http}
        ServiceDiscovery:
          DNS:
            Hostname: HOSTNAME
"""
_API_NODE = "Type: AWS::AppMesh::VirtualNode\n    Properties:\n      MeshName: !GetAtt"
HOST = "Resources.ApiNode.Properties.Spec.ServiceDiscovery.DNS.Hostname"


@pytest.mark.parametrize("hostname, params, path, message", [
    ("!ImportValue shared-api-host", {}, HOST, "Fn::ImportValue shared-api-host: an output of another stack"),
    ("!Ref Sg", {}, HOST, "Ref Sg (AWS::EC2::SecurityGroup): only App Mesh resources convert"),
    ("!GetAtt Svc.Name", {}, HOST, "Fn::GetAtt Svc (AWS::ECS::Service): only App Mesh resources convert"),
    ('!Sub "${Lb.DNSName}"', {}, HOST, "Fn::GetAtt Lb (AWS::ElasticLoadBalancingV2::LoadBalancer)"),
    ('!Sub "api.${Zone}"', {}, HOST, "Ref 'Zone': no such parameter or resource"),
    ("!GetAtt Mesh.Uid", {}, HOST, "Fn::GetAtt Mesh.Uid: App Mesh assigns it when the resource is created"),
    ("!GetAtt Unused.VirtualNodeName", {}, HOST, "Fn::GetAtt Unused: that resource's Condition is false"),
    ('!Sub "api.${Tier}"', {"Tier": "bronze"}, HOST,
     "parameter Tier='bronze' is not one of its AllowedValues ['gold', 'silver']: pass --param Tier=<one of them>"),
    ('!FindInMap [Nowhere, a, b]', {}, HOST, "Fn::FindInMap: no Mappings.Nowhere.a.b"),
    ("!GetAZs ''", {}, HOST, "Fn::GetAZs cannot be evaluated outside CloudFormation"),
])
def test_unresolvable_values_refuse_the_template_naming_the_path(hostname, params, path, message):
    with pytest.raises(cfn.ConversionError) as err:
        cfn.convert(cfn.load(BASE.replace("HOSTNAME", hostname)), params=params)
    assert err.value.path == path
    assert message in err.value.message
    assert str(err.value) == f"{path}: {err.value.message}"


def test_a_parameter_without_default_names_the_param_that_settles_it():
    text = BASE.replace("Domain: {Type: String, Default: shop.local}", "Domain: {Type: String}").replace(
        "HOSTNAME", '!Sub "api.${Domain}"')
    with pytest.raises(cfn.ConversionError) as err:
        cfn.convert(cfn.load(text))
    assert str(err.value) == f"{HOST}: parameter Domain has no Default: pass --param Domain=<value>"
    settled = cfn.convert(cfn.load(text), params={"Domain": "example.net"})
    assert dict(settled.documents)["VirtualNode"]["spec"]["serviceDiscovery"]["dns"]["hostname"] == "api.example.net"
    with pytest.raises(cfn.ConversionError) as err:
        _convert("edge.json", EdgeMeshName="Edge!")
    assert err.value.path == "Resources.EdgeMesh.Properties.MeshName"
    assert "does not match its AllowedPattern" in err.value.message


@pytest.mark.parametrize("edit, path, message", [
    (("PortMapping: {Port: 8080, Protocol: http}", "PortMaping: {Port: 8080, Protocol: http}"),
     "Resources.ApiNode.Properties.Spec.Listeners[0].PortMaping", "unknown property 'PortMaping'"),
    (("PortMapping: {Port: 8080, Protocol: http}", "PortMapping: {Port: eighty, Protocol: http}"),
     "Resources.ApiNode.Properties.Spec.Listeners[0].PortMapping.Port", "expected an integer, not 'eighty'"),
    (("PortMapping: {Port: 8080, Protocol: http}", "HealthCheck: {Protocol: http}"),
     "Resources.ApiNode.Properties.Spec.Listeners[0].HealthCheck.UnhealthyThreshold",
     "required by AWS::AppMesh::VirtualNode"),
    (("Properties: {MeshName: shop}", "Properties: {MeshName: shop, MeshOwner: '111122223333'}"),
     "Resources.Mesh.Properties.MeshOwner", "MeshOwner is read-only in AWS::AppMesh::Mesh"),
    ((_API_NODE, _API_NODE.replace("Properties:", "DependsOn: Ghost\n    Properties:")),
     "Resources.ApiNode.DependsOn", "no resource 'Ghost' in this template"),
])
def test_template_mistakes_are_refused_with_their_path(edit, path, message):
    text = BASE.replace("HOSTNAME", "api.shop.local").replace(*edit)
    assert text != BASE.replace("HOSTNAME", "api.shop.local")
    with pytest.raises(cfn.ConversionError) as err:
        cfn.convert(cfn.load(text))
    assert (err.value.path, message in err.value.message) == (path, True), str(err.value)


def test_same_kind_dependency_cycle_is_refused():
    text = BASE.replace("HOSTNAME", "api.shop.local").replace(
        _API_NODE, _API_NODE.replace("Properties:", "DependsOn: Other\n    Properties:")) + """
  Other:
    Type: AWS::AppMesh::VirtualNode
    DependsOn: ApiNode
    Properties: {MeshName: shop, Spec: {}}
"""
    with pytest.raises(cfn.ConversionError, match="circular dependency between ApiNode, Other"):
        cfn.convert(cfn.load(text))


# -- Through the real admin API -----------------------------------------------------------

def _meshctl(admin, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", admin.address, *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.etcd
def test_converted_templates_apply_and_read_back_equal(admin):
    for name, params in TEMPLATES.items():
        args = [a for k, v in params.items() for a in ("--param", f"{k}={v}")]
        out = _meshctl(admin, "apply", "-f", str(HERE / name), *args)
        assert out.returncode == 0, out.stderr
        for logical, typ in SKIPPED[name]:
            assert f"{typ} {logical}" in out.stderr
        expected = [tuple(kd) for kd in json.loads((HERE / name.replace(".yaml", ".json").replace(
            ".json", ".expected.json")).read_text())]
        assert out.stdout.count(" created") == len(expected), out.stdout
        for title, doc in expected:
            kind = K.BY_TITLE[title]
            ids = {f: doc[_camel(f)] for f in kind.id_fields}
            data = getattr(getattr(admin.stub, f"Describe{title}")(
                getattr(pb, f"Describe{title}Request")(**ids)), kind.field)
            assert data.spec == parse_json(kind.spec_cls, doc.get("spec", {})), (title, ids)
            tags = admin.stub.ListTagsForResource(pb.ListTagsForResourceRequest(resource_arn=data.metadata.arn)).tags
            assert [(t.key, t.value) for t in tags] == [(t["key"], t["value"]) for t in doc.get("tags", [])]
    # The same templates again change nothing.
    again = _meshctl(admin, "apply", "-f", str(HERE / "edge.json"), "--param", "EdgeMeshName=edge")
    assert again.returncode == 0 and " created" not in again.stdout and " updated" not in again.stdout


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def test_expected_documents_are_app_mesh_cli_input_files():
    # The expected files are the App Mesh CLI's own input (aws appmesh create-... --cli-input-json).
    for f in HERE.glob("*.expected.json"):
        for title, doc in json.loads(f.read_text()):
            assert title in cfn.KIND_ORDER
            parse_json(getattr(pb, f"Create{title}Request"), doc)
            assert yaml.safe_load(json.dumps(doc)) == doc


# -- Export -------------------------------------------------------------------------------

CORPUS = Path(__file__).parent.parent / "corpus" / "valid"


def _corpus_by_mesh() -> dict[str, list[tuple[str, dict]]]:
    from meshd.cli.meshctl import kind_of_document  # noqa: PLC0415

    meshes: dict[str, list[tuple[str, dict]]] = {}
    for f in sorted(CORPUS.glob("*.json")):
        doc = {k: v for k, v in json.loads(f.read_text()).items() if k != "clientToken"}
        meshes.setdefault(doc["meshName"], []).append((kind_of_document(doc).title, doc))
    return {m: sorted(docs, key=lambda kd: cfn.KIND_ORDER.index(kd[0])) for m, docs in meshes.items()}


def _lint_errors(template: dict) -> list[str]:
    from cfnlint.api import ManualArgs, lint  # noqa: PLC0415

    return [str(m) for m in lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"]))
            if m.rule.id.startswith("E")]


def _mesh_sets():
    sets = {name: (mesh, [tuple(kd) for kd in json.loads((HERE / exp).read_text())])
            for name, mesh, exp in (("shop-mesh", "shop", "shop-mesh.expected.json"),
                                    ("edge", "edge", "edge.expected.json"))}
    sets.update({f"corpus-{m}": (m, docs) for m, docs in _corpus_by_mesh().items()})
    return sets


@pytest.mark.parametrize("name", ["shop-mesh", "edge", "corpus-shop", "corpus-ledger"])
def test_export_reads_back_to_the_same_documents(name):
    mesh, docs = _mesh_sets()[name]
    template = cfn.export(docs, mesh=mesh)
    text = yaml.safe_dump(template, sort_keys=False)  # as meshctl export -o cloudformation writes it
    assert cfn.convert(cfn.load(text)).documents == docs
    assert _lint_errors(template) == []  # CloudFormation's own schemas accept it


def test_export_refers_by_getatt_and_orders_by_dependson():
    mesh, docs = _mesh_sets()["shop-mesh"]
    res = cfn.export(docs, mesh=mesh)["Resources"]
    route = res["RouteApiRouterApiHttp"]
    assert route["Properties"]["MeshName"] == {"Fn::GetAtt": ["Mesh", "MeshName"]}
    assert route["Properties"]["VirtualRouterName"] == {"Fn::GetAtt": ["VirtualRouterApiRouter", "VirtualRouterName"]}
    assert route["DependsOn"] == ["VirtualNodeApiV1", "VirtualNodeApiV2"]
    assert res["VirtualServiceOrdersDbShopLocal"]["DependsOn"] == ["VirtualNodeOrdersDb"]
    assert res["GatewayRouteIngressApi"]["DependsOn"] == ["VirtualServiceApiShopLocal"]
    listener = res["VirtualNodeApiV1"]["Properties"]["Spec"]["Listeners"][0]
    assert listener["Timeout"]["HTTP"]["PerRequest"] == {"Unit": "s", "Value": 15}
    # Without the mesh among the documents, its name is a parameter defaulting to it.
    without = cfn.export([kd for kd in docs if kd[0] != "Mesh"], mesh=mesh)
    assert without["Parameters"] == {"MeshName": {"Type": "String", "Default": "shop"}}
    assert without["Resources"]["VirtualNodeApiV1"]["Properties"]["MeshName"] == {"Ref": "MeshName"}
    with pytest.raises(ValueError, match="not in mesh 'edge'"):
        cfn.export(docs, mesh="edge")
