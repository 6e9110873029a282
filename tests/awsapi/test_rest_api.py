"""App Mesh's REST API driven by boto3, signing for real, against a running meshd: all 38
operations with pagination, every modelled error as the SDK's exception class, SigV4
refusals, roles, audit, and the same resources seen through gRPC and Watch."""
from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone

import boto3
import botocore.exceptions
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from google.protobuf import json_format

from meshd.api.validate import to_json
from meshd.v1 import admin_pb2 as pb
from meshd.v1 import security_pb2 as sec

pytestmark = [pytest.mark.awsapi, pytest.mark.etcd]

NODE_SPEC = {
    "listeners": [{"portMapping": {"port": 8080, "protocol": "http"},
                   "healthCheck": {"protocol": "http", "path": "/ping", "healthyThreshold": 2,
                                   "unhealthyThreshold": 2, "timeoutMillis": 2000, "intervalMillis": 5000}}],
    "serviceDiscovery": {"dns": {"hostname": "api.shop.svc.cluster.local"}},
    "backends": [{"virtualService": {"virtualServiceName": "db.shop.local"}}],
    "logging": {"accessLog": {"file": {"path": "/dev/stdout"}}},
}


def route_spec(v1: int, v2: int) -> dict:
    return {"httpRoute": {
        "match": {"prefix": "/"},
        "action": {"weightedTargets": [{"virtualNode": "api-v1", "weight": v1},
                                       {"virtualNode": "api-v2", "weight": v2}]},
        "retryPolicy": {"maxRetries": 3, "perRetryTimeout": {"unit": "ms", "value": 2000},
                        "httpRetryEvents": ["server-error", "gateway-error"]},
        "timeout": {"perRequest": {"unit": "s", "value": 15}}}}


GATEWAY_SPEC = {"listeners": [{"portMapping": {"port": 8443, "protocol": "http"}}]}
GATEWAY_ROUTE_SPEC = {"httpRoute": {"match": {"prefix": "/api/"},
                                    "action": {"target": {"virtualService": {"virtualServiceName": "api.shop.local"}}}}}


def _estate(c, mesh: str) -> None:
    """One of each kind, as an App Mesh user's CLI/SDK scripts create them."""
    c.create_mesh(meshName=mesh, spec={"egressFilter": {"type": "DROP_ALL"}}, tags=[{"key": "team", "value": "shop"}])
    for node in ("api-v1", "api-v2"):
        c.create_virtual_node(meshName=mesh, virtualNodeName=node, spec=NODE_SPEC)
    c.create_virtual_router(meshName=mesh, virtualRouterName="api",
                            spec={"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]})
    c.create_route(meshName=mesh, virtualRouterName="api", routeName="canary", spec=route_spec(90, 10))
    c.create_virtual_service(meshName=mesh, virtualServiceName="api.shop.local",
                             spec={"provider": {"virtualRouter": {"virtualRouterName": "api"}}})
    c.create_virtual_gateway(meshName=mesh, virtualGatewayName="edge", spec=GATEWAY_SPEC)
    c.create_gateway_route(meshName=mesh, virtualGatewayName="edge", gatewayRouteName="to-api", spec=GATEWAY_ROUTE_SPEC)


def test_all_38_operations_with_boto3(aws_mesh):
    c = aws_mesh.client()
    ops = set(c.meta.service_model.operation_names)
    assert len(ops) == 38
    called = set()
    real = c._make_api_call

    def record(name, params):
        called.add(name)
        return real(name, params)
    c._make_api_call = record
    mesh = "all-ops"
    _estate(c, mesh)

    got = c.describe_mesh(meshName=mesh)["mesh"]
    assert got["spec"] == {"egressFilter": {"type": "DROP_ALL"}} and got["status"]["status"] == "ACTIVE"
    md = got["metadata"]
    assert md["version"] == 1 and isinstance(md["createdAt"], datetime) and len(md["meshOwner"]) == 12
    updated = c.update_mesh(meshName=mesh, spec={"egressFilter": {"type": "ALLOW_ALL"}})["mesh"]
    assert updated["metadata"]["version"] == 2
    assert c.describe_virtual_node(meshName=mesh, virtualNodeName="api-v1")["virtualNode"]["spec"] == NODE_SPEC
    quiet = {k: v for k, v in NODE_SPEC.items() if k != "logging"}
    node = c.update_virtual_node(meshName=mesh, virtualNodeName="api-v1", spec=quiet)["virtualNode"]
    assert node["spec"] == quiet and node["metadata"]["version"] == 2
    router = c.describe_virtual_router(meshName=mesh, virtualRouterName="api")["virtualRouter"]
    assert router["virtualRouterName"] == "api"
    c.update_virtual_router(meshName=mesh, virtualRouterName="api",
                            spec={"listeners": [{"portMapping": {"port": 9090, "protocol": "http"}}]})
    r = c.update_route(meshName=mesh, virtualRouterName="api", routeName="canary", spec=route_spec(50, 50))["route"]
    assert [t["weight"] for t in r["spec"]["httpRoute"]["action"]["weightedTargets"]] == [50, 50]
    assert r["metadata"]["version"] == 2
    route = c.describe_route(meshName=mesh, virtualRouterName="api", routeName="canary")["route"]
    assert route["spec"] == route_spec(50, 50)
    assert c.describe_virtual_service(meshName=mesh, virtualServiceName="api.shop.local")["virtualService"]["spec"] == \
        {"provider": {"virtualRouter": {"virtualRouterName": "api"}}}
    c.update_virtual_service(meshName=mesh, virtualServiceName="api.shop.local",
                             spec={"provider": {"virtualNode": {"virtualNodeName": "api-v1"}}})
    gateway = c.describe_virtual_gateway(meshName=mesh, virtualGatewayName="edge")["virtualGateway"]
    assert gateway["spec"] == GATEWAY_SPEC
    c.update_virtual_gateway(meshName=mesh, virtualGatewayName="edge",
                             spec={"listeners": [{"portMapping": {"port": 9443, "protocol": "http"}}]})
    assert c.describe_gateway_route(meshName=mesh, virtualGatewayName="edge",
                                    gatewayRouteName="to-api")["gatewayRoute"]["spec"] == GATEWAY_ROUTE_SPEC
    c.update_gateway_route(meshName=mesh, virtualGatewayName="edge", gatewayRouteName="to-api", spec=GATEWAY_ROUTE_SPEC)

    # Every List, through boto3's paginators one item per page.
    def names(op, key, field, **kw):
        pages = list(c.get_paginator(op).paginate(PaginationConfig={"PageSize": 1}, **kw))
        return [item[field] for page in pages for item in page[key]], len(pages)

    assert mesh in names("list_meshes", "meshes", "meshName")[0]
    got, pages = names("list_virtual_nodes", "virtualNodes", "virtualNodeName", meshName=mesh)
    assert got == ["api-v1", "api-v2"] and pages >= 2
    assert names("list_virtual_routers", "virtualRouters", "virtualRouterName", meshName=mesh)[0] == ["api"]
    assert names("list_routes", "routes", "routeName", meshName=mesh, virtualRouterName="api")[0] == ["canary"]
    services = names("list_virtual_services", "virtualServices", "virtualServiceName", meshName=mesh)[0]
    assert services == ["api.shop.local"]
    assert names("list_virtual_gateways", "virtualGateways", "virtualGatewayName", meshName=mesh)[0] == ["edge"]
    assert names("list_gateway_routes", "gatewayRoutes", "gatewayRouteName", meshName=mesh,
                 virtualGatewayName="edge")[0] == ["to-api"]

    arn = c.describe_virtual_node(meshName=mesh, virtualNodeName="api-v2")["virtualNode"]["metadata"]["arn"]
    c.tag_resource(resourceArn=arn, tags=[{"key": f"k{i}", "value": str(i)} for i in range(5)])
    c.untag_resource(resourceArn=arn, tagKeys=["k0"])
    tags, pages = [], 0
    for page in c.get_paginator("list_tags_for_resource").paginate(resourceArn=arn, PaginationConfig={"PageSize": 2}):
        tags += page["tags"]
        pages += 1
    assert sorted(t["key"] for t in tags) == ["k1", "k2", "k3", "k4"] and pages == 2
    mesh_arn = c.describe_mesh(meshName=mesh)["mesh"]["metadata"]["arn"]
    assert c.list_tags_for_resource(resourceArn=mesh_arn)["tags"] == [{"key": "team", "value": "shop"}]

    # Deletes, in the order App Mesh's integrity rules allow.
    assert c.delete_gateway_route(meshName=mesh, virtualGatewayName="edge",
                                  gatewayRouteName="to-api")["gatewayRoute"]["status"]["status"] == "DELETED"
    c.delete_virtual_gateway(meshName=mesh, virtualGatewayName="edge")
    c.delete_virtual_service(meshName=mesh, virtualServiceName="api.shop.local")
    c.delete_route(meshName=mesh, virtualRouterName="api", routeName="canary")
    c.delete_virtual_router(meshName=mesh, virtualRouterName="api")
    for node in ("api-v1", "api-v2"):
        c.delete_virtual_node(meshName=mesh, virtualNodeName=node)
    assert c.delete_mesh(meshName=mesh)["mesh"]["status"]["status"] == "DELETED"
    assert called == ops, sorted(ops - called)


def _error(fn, *args, **kwargs) -> botocore.exceptions.ClientError:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        fn(*args, **kwargs)
    return info.value


def test_modelled_errors_raise_the_sdks_exception_classes(aws_mesh):
    c = aws_mesh.client()
    mesh = "errors"
    _estate(c, mesh)
    # BadRequest: a spec App Mesh refuses (weights must be 0-100), named in the message.
    with pytest.raises(c.exceptions.BadRequestException, match="weight"):
        c.update_route(meshName=mesh, virtualRouterName="api", routeName="canary", spec=route_spec(500, 10))
    with pytest.raises(c.exceptions.NotFoundException, match="virtualNode nope"):
        c.describe_virtual_node(meshName=mesh, virtualNodeName="nope")
    with pytest.raises(c.exceptions.NotFoundException):
        c.create_route(meshName=mesh, virtualRouterName="no-router", routeName="r", spec=route_spec(1, 1))
    with pytest.raises(c.exceptions.ConflictException, match="already exists"):
        c.create_virtual_node(meshName=mesh, virtualNodeName="api-v1", spec=NODE_SPEC)
    # A clientToken replay gives the first answer; the same token with another body conflicts.
    first = c.create_virtual_node(meshName=mesh, virtualNodeName="api-v3", spec=NODE_SPEC, clientToken="tok-1")
    again = c.create_virtual_node(meshName=mesh, virtualNodeName="api-v3", spec=NODE_SPEC, clientToken="tok-1")
    assert again["virtualNode"]["metadata"]["uid"] == first["virtualNode"]["metadata"]["uid"]
    with pytest.raises(c.exceptions.ConflictException):
        c.create_virtual_node(meshName=mesh, virtualNodeName="api-v3", spec={**NODE_SPEC, "backends": []},
                              clientToken="tok-1")
    with pytest.raises(c.exceptions.ResourceInUseException, match="route canary"):
        c.delete_virtual_node(meshName=mesh, virtualNodeName="api-v1")
    with pytest.raises(c.exceptions.ResourceInUseException):
        c.delete_mesh(meshName=mesh)
    err = _error(c.describe_mesh, meshName="nope")
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert err.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"].startswith("NotFoundException:")
    assert json.loads(json.dumps(err.response["Error"]))["Message"] == "mesh nope not found"


def test_version_conflict_over_grpc_and_rest_agree(aws_mesh):
    """An expectedVersion conflict (gRPC) and a concurrent REST update see one version history."""
    c = aws_mesh.client()
    mesh = "versions"
    _estate(c, mesh)
    c.update_route(meshName=mesh, virtualRouterName="api", routeName="canary", spec=route_spec(80, 20))
    req = pb.UpdateRouteRequest(mesh_name=mesh, virtual_router_name="api", route_name="canary", expected_version=1)
    json_format.ParseDict({"spec": route_spec(70, 30)}, req)
    with pytest.raises(Exception) as info:
        aws_mesh.grpc_admin.UpdateRoute(req, timeout=10)
    assert "expected version 1, current version is 2" in str(info.value)
    route = c.describe_route(meshName=mesh, virtualRouterName="api", routeName="canary")["route"]
    assert route["metadata"]["version"] == 2


def test_too_many_requests_per_access_key(etcd, tmp_path):
    from tests.awsapi.harness import start_aws_mesh, stop_aws_mesh

    # 0.5/s in bursts of 1: a call after the first passes only if 2 s have gone by, which
    # holds however slowly a loaded machine answers (at 2/s in bursts of 4, 12 calls taking
    # 0.5 s each all passed in one full-suite run).
    m = start_aws_mesh(etcd, tmp_path, aws_api_rate=0.5)
    try:
        c = m.client()
        statuses = []
        for _ in range(6):
            try:
                c.list_meshes()
                statuses.append(200)
            except c.exceptions.TooManyRequestsException as err:
                statuses.append(err.response["ResponseMetadata"]["HTTPStatusCode"])
        assert 200 in statuses and 429 in statuses, statuses
        # Another key has its own bucket.
        assert m.client(m.key("other", "viewer")).list_meshes()["meshes"] == []
    finally:
        stop_aws_mesh(m)


def test_service_unavailable_when_etcd_is_down_and_nothing_is_lost(own_etcd, tmp_path):
    from tests.awsapi.harness import start_aws_mesh, stop_aws_mesh

    m = start_aws_mesh(own_etcd, tmp_path)
    try:
        c = m.client(retries=0)
        c.create_mesh(meshName="kept")
        m.keys.lookup(m.root.access_key_id)  # the key is cached, as on a meshd that has served it
        own_etcd.stop()
        with pytest.raises(c.exceptions.ServiceUnavailableException) as info:
            c.create_mesh(meshName="lost")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert "etcd is unavailable" in info.value.response["Error"]["Message"]
        own_etcd.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                names = [x["meshName"] for x in c.list_meshes()["meshes"]]
                break
            except c.exceptions.ServiceUnavailableException:
                assert time.monotonic() < deadline, "meshd did not recover after etcd came back"
                time.sleep(0.5)
        assert names == ["kept"]
    finally:
        stop_aws_mesh(m)


def test_internal_error_for_a_corrupt_record(aws_mesh):
    """A record no meshd wrote (garbage bytes in etcd) is InternalServerErrorException, 500."""
    c = aws_mesh.client()
    c.create_mesh(meshName="corrupt")
    aws_mesh.daemon.store.put("virtualNodes/corrupt/broken", b"\xff\xfe not a protobuf \x00\x01")
    with pytest.raises(c.exceptions.InternalServerErrorException) as info:
        c.describe_virtual_node(meshName="corrupt", virtualNodeName="broken")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert c.describe_mesh(meshName="corrupt")["mesh"]["meshName"] == "corrupt"  # and the daemon serves on


# -- signatures ---------------------------------------------------------------------------
def _signed(m, method: str, path: str, body: bytes, *, secret: str | None = None, when: datetime | None = None,
            send_body: bytes | None = None, region: str | None = None, key: str | None = None):
    """A request signed by botocore's own signer at `when`, sent over TLS as-is."""
    host = m.endpoint.removeprefix("https://")
    req = AWSRequest(method=method, url=m.endpoint + path, data=body,
                     headers={"Content-Type": "application/json", "Host": host})
    stamp = (when or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    req.context["timestamp"] = stamp
    req.headers["X-Amz-Date"] = stamp
    signer = SigV4Auth(Credentials(key or m.root.access_key_id, secret or m.root.secret), "appmesh",
                       region or m.region)
    canonical = signer.canonical_request(req)
    sig = signer.signature(signer.string_to_sign(req, canonical), req)
    req.headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={signer.scope(req)}, "
                                    f"SignedHeaders={signer.signed_headers(signer.headers_to_sign(req))}, "
                                    f"Signature={sig}")
    conn = http.client.HTTPSConnection(host, context=ssl.create_default_context(cafile=m.bundle), timeout=10)
    try:
        conn.request(method, path, body=send_body if send_body is not None else body, headers=dict(req.headers.items()))
        resp = conn.getresponse()
        return resp.status, resp.getheader("x-amzn-ErrorType", "").split(":")[0], json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def test_signature_refusals(aws_mesh):
    m = aws_mesh
    body = json.dumps({"meshName": "sig"}).encode()
    # The same request, correctly signed, passes: the refusals below are each one fault.
    assert _signed(m, "PUT", "/v20190125/meshes", body)[0] == 200
    status, code, doc = _signed(m, "PUT", "/v20190125/meshes", body, secret="x" * 40)
    assert (status, code) == (403, "InvalidSignatureException") and "signature" in doc["message"]
    now = datetime.now(timezone.utc)
    status, code, doc = _signed(m, "GET", "/v20190125/meshes", b"", when=now - timedelta(minutes=20))
    assert (status, code) == (403, "InvalidSignatureException") and "Signature expired" in doc["message"]
    status, code, _ = _signed(m, "GET", "/v20190125/meshes", b"", when=now + timedelta(minutes=20))
    assert (status, code) == (403, "InvalidSignatureException")
    tampered = json.dumps({"meshName": "sig-evil"}).encode()
    status, code, _ = _signed(m, "PUT", "/v20190125/meshes", json.dumps({"meshName": "sig-two"}).encode(),
                              send_body=tampered)
    assert (status, code) == (403, "InvalidSignatureException")
    status, code, _ = _signed(m, "GET", "/v20190125/meshes", b"", region="eu-west-1")
    assert (status, code) == (403, "InvalidSignatureException")
    status, code, _ = _signed(m, "GET", "/v20190125/meshes", b"", key="MKIAAAAAAAAAAAAAAAAA")
    assert (status, code) == (403, "UnrecognizedClientException")
    # Nothing refused was written.
    names = [x["meshName"] for x in m.client().list_meshes()["meshes"]]
    assert "sig" in names and "sig-evil" not in names and "sig-two" not in names
    # No signature at all.
    conn = http.client.HTTPSConnection(m.endpoint.removeprefix("https://"),
                                       context=ssl.create_default_context(cafile=m.bundle), timeout=10)
    conn.request("GET", "/v20190125/meshes")
    resp = conn.getresponse()
    assert resp.status == 403 and resp.getheader("x-amzn-ErrorType").startswith("MissingAuthenticationTokenException")
    conn.close()


def test_boto3_with_a_wrong_secret_and_a_deleted_key(aws_mesh):
    c = aws_mesh.client(secret="wrong" * 8)
    err = _error(c.list_meshes)
    assert err.response["Error"]["Code"] == "InvalidSignatureException"
    key = aws_mesh.key("short-lived", "viewer")
    c = aws_mesh.client(key)
    c.list_meshes()
    aws_mesh.keys.delete(key.access_key_id)
    deadline = time.monotonic() + 5
    while True:
        try:
            c.list_meshes()
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "UnrecognizedClientException"
            break
        assert time.monotonic() < deadline, "a deleted access key still works after 5 s"
        time.sleep(0.1)


def test_payload_hash_header_must_match(aws_mesh):
    m = aws_mesh
    host = m.endpoint.removeprefix("https://")
    body = json.dumps({"meshName": "hash"}).encode()
    req = AWSRequest(method="PUT", url=m.endpoint + "/v20190125/meshes", data=body, headers={"Host": host})
    req.headers["X-Amz-Content-SHA256"] = hashlib.sha256(b"something else").hexdigest()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    req.context["timestamp"] = stamp
    req.headers["X-Amz-Date"] = stamp
    signer = SigV4Auth(Credentials(m.root.access_key_id, m.root.secret), "appmesh", m.region)
    sig = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    req.headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={signer.scope(req)}, SignedHeaders="
                                    f"{signer.signed_headers(signer.headers_to_sign(req))}, Signature={sig}")
    conn = http.client.HTTPSConnection(host, context=ssl.create_default_context(cafile=m.bundle), timeout=10)
    conn.request("PUT", "/v20190125/meshes", body=body, headers=dict(req.headers.items()))
    resp = conn.getresponse()
    assert resp.status == 403 and "x-amz-content-sha256" in json.loads(resp.read())["message"]
    conn.close()


# -- roles and audit ----------------------------------------------------------------------
def test_roles_over_sigv4(aws_mesh):
    admin = aws_mesh.client()
    for mesh in ("team-a", "team-b"):
        admin.create_mesh(meshName=mesh)
    viewer = aws_mesh.client(aws_mesh.key("viewer-user", "viewer", "team-a"))
    assert viewer.describe_mesh(meshName="team-a")["mesh"]["meshName"] == "team-a"
    err = _error(viewer.create_virtual_node, meshName="team-a", virtualNodeName="x", spec=NODE_SPEC)
    assert err.response["Error"]["Code"] == "AccessDeniedException"
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "lacks permission create in mesh team-a" in err.response["Error"]["Message"]
    editor = aws_mesh.client(aws_mesh.key("editor-a", "editor", "team-a"))
    editor.create_virtual_node(meshName="team-a", virtualNodeName="x", spec=NODE_SPEC)
    err = _error(editor.create_virtual_node, meshName="team-b", virtualNodeName="x", spec=NODE_SPEC)
    assert err.response["Error"]["Code"] == "AccessDeniedException" and "team-b" in err.response["Error"]["Message"]
    err = _error(editor.describe_mesh, meshName="team-b")
    assert err.response["Error"]["Code"] == "AccessDeniedException"
    with pytest.raises(aws_mesh.client().exceptions.NotFoundException):
        admin.describe_virtual_node(meshName="team-b", virtualNodeName="x")


def test_rest_writes_are_audited_like_grpc_writes(aws_mesh):
    editor = aws_mesh.client(aws_mesh.key("auditor-test", "editor", "audited"))
    aws_mesh.client().create_mesh(meshName="audited")
    editor.create_virtual_node(meshName="audited", virtualNodeName="n1", spec=NODE_SPEC)
    _error(editor.create_mesh, meshName="audited-2")  # refused: editors of one mesh cannot create meshes
    entries = aws_mesh.grpc_security.ListAuditEntries(sec.ListAuditEntriesRequest(), timeout=10).entries
    mine = [(e.who, e.action, e.resource, e.result) for e in entries if e.who == "auditor-test"]
    assert ("auditor-test", "CreateVirtualNode", "virtualNodes/audited/n1", "OK") in mine
    assert ("auditor-test", "CreateMesh", "meshes/audited-2", "PERMISSION_DENIED") in mine


# -- one resource layer, two protocols -----------------------------------------------------
def _grpc_json(msg) -> dict:
    # App Mesh JSON: `long`s (int64 in meshd.v1) as numbers, where protobuf's mapping writes strings.
    return to_json(msg)


def test_rest_writes_read_back_identically_over_grpc_and_the_other_way(aws_mesh):
    c = aws_mesh.client()
    mesh = "parity"
    _estate(c, mesh)
    rest = c.describe_route(meshName=mesh, virtualRouterName="api", routeName="canary")["route"]
    g = aws_mesh.grpc_admin.DescribeRoute(pb.DescribeRouteRequest(mesh_name=mesh, virtual_router_name="api",
                                                                  route_name="canary"), timeout=10).route
    gj = _grpc_json(g)
    assert gj["spec"] == rest["spec"] == route_spec(90, 10)
    assert gj["metadata"]["arn"] == rest["metadata"]["arn"] and gj["metadata"]["uid"] == rest["metadata"]["uid"]
    assert int(gj["metadata"]["version"]) == rest["metadata"]["version"]
    created_at = g.metadata.created_at.ToDatetime(timezone.utc)
    assert abs(created_at - rest["metadata"]["createdAt"]) < timedelta(milliseconds=1)

    # gRPC write → REST read.
    req = pb.CreateVirtualNodeRequest(mesh_name=mesh, virtual_node_name="from-grpc")
    json_format.ParseDict({"spec": NODE_SPEC}, req)
    created = aws_mesh.grpc_admin.CreateVirtualNode(req, timeout=10).virtual_node
    got = c.describe_virtual_node(meshName=mesh, virtualNodeName="from-grpc")["virtualNode"]
    assert got["spec"] == NODE_SPEC == _grpc_json(created.spec)
    assert got["metadata"]["uid"] == created.metadata.uid and got["metadata"]["arn"] == created.metadata.arn


def test_watch_sees_rest_writes(aws_mesh):
    c = aws_mesh.client()
    c.create_mesh(meshName="watched")
    seen: list = []
    stream = aws_mesh.grpc_admin.Watch(pb.WatchRequest(mesh_name="watched"), timeout=30)
    ready = threading.Event()

    def follow():
        for resp in stream:
            if resp.snapshot_done:
                ready.set()
            for ev in resp.events:
                seen.append((ev.kind, ev.path))
            if any(p == "virtualNodes/watched/w1" for _, p in seen):
                return
    t = threading.Thread(target=follow, daemon=True)
    t.start()
    assert ready.wait(10)
    c.create_virtual_node(meshName="watched", virtualNodeName="w1", spec=NODE_SPEC)
    t.join(15)
    stream.cancel()
    assert ("virtualNode", "virtualNodes/watched/w1") in seen


def test_unknown_paths_and_bad_bodies(aws_mesh):
    m = aws_mesh
    status, code, _ = _signed(m, "GET", "/v20190125/nothing-here", b"")
    assert (status, code) == (404, "UnknownOperationException")
    status, code, doc = _signed(m, "PUT", "/v20190125/meshes", b"{not json")
    assert (status, code) == (400, "BadRequestException") and "not JSON" in doc["message"]
    status, code, doc = _signed(m, "PUT", "/v20190125/meshes", json.dumps({"meshName": "x", "bogus": 1}).encode())
    assert (status, code) == (400, "BadRequestException") and "bogus" in doc["message"]
    status, code, doc = _signed(m, "GET", "/v20190125/meshes?limit=0", b"")
    assert (status, code) == (400, "BadRequestException") and "limit" in doc["message"]
    status, code, doc = _signed(m, "GET", "/v20190125/meshes?limit=101", b"")
    assert (status, code) == (400, "BadRequestException") and "limit" in doc["message"]


def test_plaintext_only_on_loopback_and_still_signed(etcd, tmp_path):
    from meshd.api.server import ListenerError
    from tests.awsapi.harness import start_aws_mesh, stop_aws_mesh

    with pytest.raises(ListenerError, match="loopback only"):
        start_aws_mesh(etcd, tmp_path / "a", insecure_local=True, aws_api="0.0.0.0:0")
    m = start_aws_mesh(etcd, tmp_path / "b", insecure_local=True)
    try:
        plain = m.endpoint.replace("https://", "http://")
        c = boto3.client("appmesh", endpoint_url=plain, region_name=m.region, aws_access_key_id=m.root.access_key_id,
                         aws_secret_access_key=m.root.secret)
        assert c.create_mesh(meshName="plain")["mesh"]["meshName"] == "plain"
        bad = boto3.client("appmesh", endpoint_url=plain, region_name=m.region, aws_access_key_id=m.root.access_key_id,
                           aws_secret_access_key="y" * 40)
        with pytest.raises(botocore.exceptions.ClientError, match="InvalidSignatureException"):
            bad.list_meshes()
    finally:
        stop_aws_mesh(m)


def test_cluster_identity_forbidden_owner_tags_and_quotas(etcd, tmp_path):
    """A cluster configured as account 123456789012 in eu-west-1: its ARNs and owners, the
    region SigV4 scopes must name, ForbiddenException for another owner's mesh,
    TooManyTagsException and LimitExceededException (a --quota), through boto3."""
    from tests.awsapi.harness import start_aws_mesh, stop_aws_mesh

    m = start_aws_mesh(etcd, tmp_path, aws_region="eu-west-1", aws_account="123456789012",
                       quotas={"virtualNodesPerMesh": 2})
    try:
        assert m.region == "eu-west-1"
        c = m.client()
        mesh = c.create_mesh(meshName="acct")["mesh"]
        assert mesh["metadata"]["arn"] == "arn:aws:appmesh:eu-west-1:123456789012:mesh/acct"
        assert mesh["metadata"]["meshOwner"] == mesh["metadata"]["resourceOwner"] == "123456789012"
        assert c.describe_mesh(meshName="acct", meshOwner="123456789012")["mesh"]["meshName"] == "acct"
        with pytest.raises(c.exceptions.ForbiddenException, match="111122223333"):
            c.describe_mesh(meshName="acct", meshOwner="111122223333")
        # boto3 checks these two before sending; raw signed requests reach meshd's own checks.
        status, code, doc = _signed(m, "GET", "/v20190125/meshes/acct/virtualNodes?meshOwner=12345", b"")
        assert (status, code) == (400, "BadRequestException") and "meshOwner" in doc["message"]
        body = json.dumps({"virtualServiceName": "nospec.local"}).encode()
        status, code, doc = _signed(m, "PUT", "/v20190125/meshes/acct/virtualServices", body)
        assert (status, code) == (400, "BadRequestException") and "spec" in doc["message"]
        wrong_region = boto3.client("appmesh", endpoint_url=m.endpoint, region_name="us-east-1", verify=m.bundle,
                                    aws_access_key_id=m.root.access_key_id, aws_secret_access_key=m.root.secret)
        with pytest.raises(botocore.exceptions.ClientError, match="InvalidSignatureException"):
            wrong_region.list_meshes()
        arn = mesh["metadata"]["arn"]
        c.tag_resource(resourceArn=arn, tags=[{"key": f"k{i}", "value": "v"} for i in range(49)])
        with pytest.raises(c.exceptions.TooManyTagsException):
            c.tag_resource(resourceArn=arn, tags=[{"key": "x1", "value": "v"}, {"key": "x2", "value": "v"}])
        assert len(c.list_tags_for_resource(resourceArn=arn, limit=50)["tags"]) == 49
        for n in ("q1", "q2"):
            c.create_virtual_node(meshName="acct", virtualNodeName=n, spec=NODE_SPEC)
        with pytest.raises(c.exceptions.LimitExceededException, match="virtualNodesPerMesh"):
            c.create_virtual_node(meshName="acct", virtualNodeName="q3", spec=NODE_SPEC)
    finally:
        stop_aws_mesh(m)


def test_an_empty_list_the_model_requires_non_empty_is_refused_with_its_path(aws_mesh):
    body = json.dumps({"routeName": "r1", "spec": {"httpRoute": {
        "match": {"prefix": "/", "headers": []},
        "action": {"weightedTargets": [{"virtualNode": "n", "weight": 1}]}}}}).encode()
    status, code, doc = _signed(aws_mesh, "PUT", "/v20190125/meshes/m/virtualRouter/r/routes", body)
    assert (status, code) == (400, "BadRequestException")
    assert "spec.httpRoute.match.headers" in doc["message"], doc
