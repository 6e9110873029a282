"""`meshctl`: the command line over the meshd admin API (apply, get, describe, delete, diff;
status, top and graph live in `meshctl_views`, other subcommands in SUBCOMMAND_MODULES)."""
from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from meshd.api import kinds as K
from meshd.cli import credentials
from meshd.api.validate import InvalidSpec, parse_json, to_json
from meshd.v1 import admin_pb2, admin_pb2_grpc

DEFAULT_SERVER = "127.0.0.1:7000"

# Dependency order for apply: what a document refers to is created before it. The meshd.v1
# kinds beyond App Mesh name routes and nodes, so they come last.
APPLY_ORDER = [K.MESH, K.VIRTUAL_NODE, K.VIRTUAL_ROUTER, K.ROUTE, K.VIRTUAL_SERVICE,
               K.VIRTUAL_GATEWAY, K.GATEWAY_ROUTE, K.ROUTE_POLICY, K.NODE_POLICY, K.ROLLOUT]
# Requests `apply` keeps in flight: enough to hide the round trip to meshd and etcd behind
# one another, few enough to stay within meshd's admin worker threads (64).
APPLY_PARALLEL = 32
# Modules whose add_subcommands(sub, common) each add their subcommands to meshctl.
SUBCOMMAND_MODULES = ("meshd.cli.backup", "meshd.cli.inject", "meshd.cli.meshctl_rollout",
                      "meshd.cli.meshctl_security", "meshd.cli.meshctl_views")

ALIASES = {
    "mesh": K.MESH, "meshes": K.MESH,
    "virtualnode": K.VIRTUAL_NODE, "virtualnodes": K.VIRTUAL_NODE, "vn": K.VIRTUAL_NODE, "node": K.VIRTUAL_NODE, "nodes": K.VIRTUAL_NODE,
    "virtualservice": K.VIRTUAL_SERVICE, "virtualservices": K.VIRTUAL_SERVICE, "vs": K.VIRTUAL_SERVICE, "service": K.VIRTUAL_SERVICE, "services": K.VIRTUAL_SERVICE,
    "virtualrouter": K.VIRTUAL_ROUTER, "virtualrouters": K.VIRTUAL_ROUTER, "vr": K.VIRTUAL_ROUTER, "router": K.VIRTUAL_ROUTER, "routers": K.VIRTUAL_ROUTER,
    "route": K.ROUTE, "routes": K.ROUTE,
    "virtualgateway": K.VIRTUAL_GATEWAY, "virtualgateways": K.VIRTUAL_GATEWAY, "vg": K.VIRTUAL_GATEWAY, "gateway": K.VIRTUAL_GATEWAY, "gateways": K.VIRTUAL_GATEWAY,
    "gatewayroute": K.GATEWAY_ROUTE, "gatewayroutes": K.GATEWAY_ROUTE, "gr": K.GATEWAY_ROUTE,
    "routepolicy": K.ROUTE_POLICY, "routepolicies": K.ROUTE_POLICY, "rp": K.ROUTE_POLICY,
    "nodepolicy": K.NODE_POLICY, "nodepolicies": K.NODE_POLICY, "np": K.NODE_POLICY,
    "rollout": K.ROLLOUT, "rollouts": K.ROLLOUT, "ro": K.ROLLOUT,
}
# The name keys of documents, most specific first: a route's document has a meshName too.
NAME_KEYS = (("gatewayRouteName", K.GATEWAY_ROUTE), ("routeName", K.ROUTE),
             ("routePolicyName", K.ROUTE_POLICY), ("nodePolicyName", K.NODE_POLICY), ("rolloutName", K.ROLLOUT),
             ("virtualNodeName", K.VIRTUAL_NODE), ("virtualServiceName", K.VIRTUAL_SERVICE),
             ("virtualGatewayName", K.VIRTUAL_GATEWAY), ("virtualRouterName", K.VIRTUAL_ROUTER),
             ("meshName", K.MESH))


class CliError(Exception):
    """A failure to report to the user (exit status 1)."""


def kind_of_document(doc: dict) -> K.Kind:
    """App Mesh CLI input names its kind by the name keys it carries. meshd's own documents
    (RoutePolicy, NodePolicy, Rollout) may also say `kind:`, which must then agree."""
    found = next((kind for key, kind in NAME_KEYS if key in doc), None)
    said = doc.get("kind")
    if said is not None:
        if K.BY_TITLE.get(said) not in K.BEYOND_KINDS:
            raise CliError(f"kind {said!r}: App Mesh documents carry no kind; meshd's own kinds are "
                           + ", ".join(k.title for k in K.BEYOND_KINDS))
        if found is not K.BY_TITLE[said]:
            raise CliError(f"a {said} document needs {K.BY_TITLE[said].name}Name")
    if found is None:
        raise CliError("cannot tell the kind of a document without a name key (meshName, virtualNodeName, ...)")
    return found


def load_documents(target: str, params: dict[str, str] | None = None) -> list[tuple[str, dict]]:
    """(source, App Mesh CLI-input document) pairs from a JSON/YAML file, or every such file
    in a directory. Besides App Mesh's own documents, a file may be a CloudFormation template
    (its `AWS::AppMesh::*` resources, `params` settling its parameters) or Kubernetes
    manifests of the App Mesh controller (`appmesh.k8s.aws`, references resolved across all
    the files given); both are converted (`meshd.migrate`), and what is not App Mesh is
    listed on stderr as skipped."""
    path = Path(target)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".json", ".yaml", ".yml"))
    elif path.exists() or target == "-":
        files = [path]
    else:
        raise CliError(f"{target}: no such file or directory")
    out: list[tuple[str, dict]] = []
    manifests: list[tuple[str, dict]] = []
    for f in files:
        try:
            text = sys.stdin.read() if str(f) == "-" else f.read_text()
        except UnicodeDecodeError as err:  # JSON and YAML are text (RFC 8259 §8.1: UTF-8)
            raise CliError(f"{f}: not UTF-8 text: {err}") from err
        if _CFN_TYPE.search(text) and _CFN_RESOURCES.search(text):
            out += _from_cloudformation(str(f), text, params or {})
            continue
        items = _yaml_items(f, text)
        if any(_is_manifest(item) for _, item in items):
            manifests += items  # the whole file: its other kinds are listed as skipped
        else:
            out += items
    if manifests:
        out += _from_kubernetes(manifests)
    return out


_CFN_TYPE = re.compile(r"AWS::[A-Za-z0-9]+::[A-Za-z0-9]+")
_CFN_RESOURCES = re.compile(r"""^\s*["']?Resources["']?\s*:|"Resources"\s*:""", re.M)


def _yaml_items(f, text: str) -> list[tuple[str, dict]]:
    try:
        # YAML is a superset of JSON, but the json module reads JSON some 50x faster, which
        # matters for an estate of thousands of documents.
        docs = [json.loads(text)]
    except ValueError:
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as err:
            raise CliError(f"{f}: not valid JSON or YAML: {err}") from err
    out = []
    for i, doc in enumerate(d for d in docs if d is not None):
        items = doc if isinstance(doc, list) else [doc]
        for j, item in enumerate(items):
            if not isinstance(item, dict):
                raise CliError(f"{f}: document {i + 1} is not an object")
            suffix = (f"#{i + 1}" if len(docs) > 1 else "") + (f"[{j}]" if isinstance(doc, list) else "")
            out.append((f"{f}{suffix}", item))
    return out


def _is_manifest(doc: dict) -> bool:
    return isinstance(doc.get("apiVersion"), str) and "kind" in doc and isinstance(doc.get("metadata"), dict)


def _skipped(source: str, skipped) -> None:
    for what, name in skipped:
        print(f"skipped: {source}: {what} {name} (not App Mesh)", file=sys.stderr)


def _from_cloudformation(source: str, text: str, params: dict[str, str]) -> list[tuple[str, dict]]:
    from meshd.migrate import cfn  # noqa: PLC0415 - only for templates

    try:
        conv = cfn.convert(cfn.load(text), params=params, source=source)
    except cfn.ConversionError as err:
        raise CliError(f"{source}: {err}") from err
    # (logical id, type) pairs: say the type first, as CloudFormation lists them.
    _skipped(source, [(typ, logical) for logical, typ in conv.skipped])
    return [(f"{source}#{kind}/{_doc_name(doc)}", doc) for kind, doc in conv.documents]


def _from_kubernetes(items: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    from meshd.migrate import k8s  # noqa: PLC0415 - only for manifests

    source = ", ".join(dict.fromkeys(src.split("#")[0] for src, _ in items))
    try:
        conv = k8s.convert([doc for _, doc in items], source=source)
    except k8s.ConversionError as err:
        raise CliError(f"{source}: {err}") from err
    _skipped(source, conv.skipped)
    return [(f"{source}#{kind}/{_doc_name(doc)}", doc) for kind, doc in conv.documents]


def _doc_name(doc: dict) -> str:
    return "/".join(str(doc[k]) for k in ("meshName", "virtualRouterName", "virtualGatewayName", "virtualNodeName",
                                          "virtualServiceName", "routeName", "gatewayRouteName", "routePolicyName",
                                          "nodePolicyName", "rolloutName") if k in doc)


class Client:
    """A thin MeshAdmin client whose errors become `CliError`s with the server's reasons."""

    def __init__(self, server: str, timeout: float = 10.0, context: "credentials.Context | None" = None):
        self.channel = (context or credentials.Context(server=server)).channel()
        self.stub = admin_pb2_grpc.MeshAdminStub(self.channel)
        self.timeout = timeout
        self.server = server

    def call(self, method: str, request):
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as err:
            raise CliError(format_rpc_error(err, self.server)) from err


def format_rpc_error(err: grpc.RpcError, server: str) -> str:
    """The server's status, reason and field violations as lines for a terminal."""
    code = err.code()
    if code == grpc.StatusCode.UNAVAILABLE and "etcd" not in (err.details() or ""):
        return f"UNAVAILABLE: cannot reach meshd at {server}: {err.details()}"
    lines = [f"{code.name}: {err.details()}"]
    status = rpc_status.from_call(err)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                br = error_details_pb2.BadRequest()
                detail.Unpack(br)
                lines += [f"  {v.field}: {v.description}" for v in br.field_violations]
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                lines.append(f"  reason: {info.reason}")
    return "\n".join(lines)


def _to_dict(msg) -> dict:
    """App Mesh JSON, as the AWS CLI prints it: 64-bit numbers as numbers."""
    return to_json(msg)


def _print(obj, fmt: str, table_rows=None, headers=None) -> None:
    if fmt == "json":
        print(json.dumps(obj, indent=2, sort_keys=False))
    elif fmt == "yaml":
        print(yaml.safe_dump(obj, sort_keys=False), end="")
    else:
        rows = table_rows or []
        widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
        for r in [headers, *rows]:
            print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())


def _age(ts: str) -> str:
    if not ts:
        return "-"
    try:
        t = time.mktime(time.strptime(ts.split(".")[0].rstrip("Z"), "%Y-%m-%dT%H:%M:%S")) - time.timezone
    except ValueError:
        return ts
    s = max(0, int(time.time() - t))
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit}"
    return f"{s}s"


def _scope_ids(kind: K.Kind, args, name: str | None = None) -> dict:
    ids = {}
    across = getattr(args, "all", False) and name is None  # get -A: every router or gateway of the mesh
    if "mesh_name" in kind.parents:
        if not args.mesh:
            raise CliError(f"{kind.name} needs --mesh (or get --all-meshes)")
        ids["mesh_name"] = args.mesh
    if "virtual_router_name" in kind.parents:
        if not args.router and not across:
            raise CliError("route needs --router (or get -A for every router of the mesh)")
        ids["virtual_router_name"] = args.router
    if "virtual_gateway_name" in kind.parents:
        if not args.gateway and not across:
            raise CliError("gatewayRoute needs --gateway (or get -A for every gateway of the mesh)")
        ids["virtual_gateway_name"] = args.gateway
    if name is not None:
        ids[kind.name_field] = name
    return ids


def _parse_create(kind: K.Kind, doc: dict, source: str):
    cls = getattr(admin_pb2, f"Create{kind.title}Request")
    try:
        return parse_json(cls, {k: v for k, v in doc.items() if k != "kind"})
    except InvalidSpec as err:
        raise CliError(f"{source}: invalid {kind.name}:\n" + "\n".join(
            f"  {v.field}: {v.description}" for v in err.violations)) from err


def _parse_all(docs) -> list[list[tuple[str, K.Kind, object]]]:
    """Every document parsed (all of them before anything is written), grouped by kind in
    dependency order: [[(source, kind, create request)] for each kind of APPLY_ORDER]."""
    groups: list[list[tuple[str, K.Kind, object]]] = [[] for _ in APPLY_ORDER]
    for source, doc in docs:
        kind = kind_of_document(doc)
        groups[APPLY_ORDER.index(kind)].append((source, kind, _parse_create(kind, doc, source)))
    return [g for g in groups if g]


def _current(client: Client, kind: K.Kind, req):
    """The stored data of the resource `req` names, or None when there is none."""
    ids = {f: getattr(req, f) for f in kind.id_fields}
    describe = getattr(admin_pb2, f"Describe{kind.title}Request")(**ids)
    try:
        return getattr(getattr(client.stub, f"Describe{kind.title}")(describe, timeout=client.timeout), kind.field)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise CliError(format_rpc_error(err, client.server)) from err
        return None


def _concurrently(fn, items: list, parallel: int) -> list:
    """[fn(item) for item in items] with up to `parallel` calls in flight, in the items'
    order; each result is (value, None) or (None, the CliError it raised). The gRPC calls
    wait off the GIL, so threads overlap their round trips to meshd and etcd."""
    def one(item):
        try:
            return fn(item), None
        except CliError as err:
            return None, err
    if parallel <= 1 or len(items) <= 1:
        return [one(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(parallel, len(items)), thread_name_prefix="meshctl") as pool:
        return list(pool.map(one, items))


def _plan(client: Client, docs, parallel: int = 1):
    """For each document in dependency order: (kind, request, current data or None)."""
    plan = []
    for group in _parse_all(docs):
        for (source, kind, req), (current, err) in zip(
                group, _concurrently(lambda d: _current(client, d[1], d[2]), group, parallel)):
            if err is not None:
                raise err
            plan.append((source, kind, req, current))
    return plan


def _label(kind: K.Kind, req) -> str:
    return f"{kind.name}/" + "/".join(getattr(req, f) for f in kind.id_fields)


def _params(args) -> dict[str, str]:
    """--param Name=Value, for a CloudFormation template's parameters."""
    out = {}
    for item in getattr(args, "param", None) or ():
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise CliError(f"--param {item!r}: expected Name=Value")
        out[name] = value
    return out


def cmd_convert(client: "Client | None", args) -> int:
    """Print the App Mesh CLI-input documents a file holds or converts to, in apply's order,
    without applying them (no server is needed)."""
    docs = [doc for _, doc in sorted(load_documents(args.file, _params(args)),
                                     key=lambda sd: APPLY_ORDER.index(kind_of_document(sd[1])))]
    if args.output == "json":
        print(json.dumps(docs, indent=2))
    else:
        print(yaml.safe_dump_all(docs, sort_keys=False), end="")
    return 0


def _names(client: Client, kind: K.Kind, parent_ids: tuple[str, ...]) -> set[str]:
    """Names of the resources of `kind` under `parent_ids`; none when the parent is missing
    (then each Create names the missing parent precisely)."""
    names, token = set(), ""
    while True:
        req = getattr(admin_pb2, f"List{kind.plural_title}Request")(**dict(zip(kind.parents, parent_ids)),
                                                                      next_token=token)
        try:
            resp = getattr(client.stub, f"List{kind.plural_title}")(req, timeout=client.timeout)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return names
            raise CliError(format_rpc_error(err, client.server)) from err
        names.update(getattr(r, kind.name_field) for r in getattr(resp, kind.list_field))
        token = resp.next_token
        if not token:
            return names


def _parent(kind: K.Kind, parent_ids: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
    """(kind name, ids) of the resource whose children `parent_ids` scope; None for meshes."""
    if not parent_ids:
        return None
    return (K.BY_ID_FIELD[kind.parents[-1]].name, parent_ids)


def _apply_one(client: Client, kind: K.Kind, req, exists: bool) -> str:
    """Create, update or leave one resource; the line apply prints for it.

    A resource the listing did not show is created at once: a bulk apply of new resources
    costs one request each. Otherwise (or when a Create finds it after all) it is read and
    compared. A document with a client token is always read first, since a Create repeating
    an earlier one's token is answered as that one was and would read as "created".
    """
    label = _label(kind, req)
    current = _current(client, kind, req) if exists or req.client_token else None
    if current is None:
        try:
            getattr(client.stub, f"Create{kind.title}")(req, timeout=client.timeout)
            return f"{label} created"
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise CliError(format_rpc_error(err, client.server)) from err
        current = _current(client, kind, req)  # created by someone else since the listing
        if current is None:
            raise CliError(f"{label} exists and yet cannot be read (deleted meanwhile?)")
    if current.spec == req.spec:
        return f"{label} unchanged"
    upd = getattr(admin_pb2, f"Update{kind.title}Request")(
        **{f: getattr(req, f) for f in kind.id_fields}, spec=req.spec, expected_version=current.metadata.version)
    resp = client.call(f"Update{kind.title}", upd)
    return f"{label} updated (version {getattr(resp, kind.field).metadata.version})"


def cmd_apply(client: Client, args) -> int:
    """Apply kind by kind in dependency order (every mesh, then every node, ...), the
    documents of one kind with up to --parallel requests in flight: nothing of a kind
    refers to another of the same kind, so they may go in any order. What exists is
    listed per parent first, except under parents this apply created (nothing can be there
    yet). A document that fails is reported with its source; the kinds after a failed one
    are not applied (they may depend on it), and the exit status is 1."""
    groups = _parse_all(load_documents(args.file, _params(args)))
    created: set[tuple[str, tuple[str, ...]]] = set()
    for done, group in enumerate(groups):
        kind = group[0][1]
        scopes = list(dict.fromkeys(tuple(getattr(req, f) for f in kind.parents) for _, _, req in group))
        listed = [s for s in scopes if _parent(kind, s) not in created]
        names = dict.fromkeys(scopes, frozenset())
        for scope, (found, err) in zip(listed, _concurrently(lambda s: _names(client, kind, s), listed,
                                                              args.parallel)):
            if err is not None:
                raise err
            names[scope] = found
        failed = 0
        for (source, _, req), (line, err) in zip(group, _concurrently(
                lambda d: _apply_one(client, kind, d[2], getattr(d[2], kind.name_field) in names[
                    tuple(getattr(d[2], f) for f in kind.parents)]), group, args.parallel)):
            if err is None:
                print(line)
                if line.endswith(" created"):
                    created.add((kind.name, kind.ids(req)))
            else:
                failed += 1
                print(f"error: {source}: {_label(kind, req)}: {err}", file=sys.stderr)
        if failed:
            left = sum(len(g) for g in groups[done + 1:])
            print(f"error: {failed} of {len(group)} {kind.name} documents failed"
                  + (f"; {left} documents of later kinds not applied" if left else ""), file=sys.stderr)
            return 1
    return 0


def cmd_diff(client: Client, args) -> int:
    changes = 0
    for source, kind, req, current in _plan(client, load_documents(args.file, _params(args)), args.parallel):
        label = _label(kind, req)
        new = yaml.safe_dump(_to_dict(req.spec), sort_keys=True).splitlines()
        if current is None:
            changes += 1
            print(f"+ {label} (would be created)")
            print("\n".join("+   " + line for line in new))
        elif current.spec == req.spec:
            print(f"  {label} unchanged")
        else:
            changes += 1
            old = yaml.safe_dump(_to_dict(current.spec), sort_keys=True).splitlines()
            print(f"~ {label} (would be updated from version {current.metadata.version})")
            for line in difflib.unified_diff(old, new, "current", "applied", lineterm="", n=2):
                print("    " + line)
    # Like `diff` and `kubectl diff`: exit 1 when there are differences.
    return 1 if changes and args.exit_code else 0


def _list_all(client: Client, kind: K.Kind, **ids) -> list:
    return [item for page in _pages(client, kind, ids) for item in page]


def export_documents(client: Client, mesh: str, kinds=K.APPMESH_KINDS) -> list[tuple[str, dict]]:
    """(kind title, App Mesh CLI-input document) for every resource of `mesh` of `kinds`,
    with its tags, in apply's order: what `meshctl apply` (or `aws appmesh create-*
    --cli-input-json`) takes to make the same mesh again. Documents of meshd's own kinds
    say their `kind:`, as meshctl takes them."""
    out = []

    def add(kind: K.Kind, ids: dict) -> None:
        data = getattr(client.call(f"Describe{kind.title}", getattr(admin_pb2, f"Describe{kind.title}Request")(**ids)),
                       kind.field)
        fields = data.DESCRIPTOR.fields_by_name
        doc = {fields[f].json_name: getattr(data, f) for f in kind.id_fields}
        if kind in K.BEYOND_KINDS:
            doc = {"kind": kind.title, **doc}
        doc["spec"] = to_json(data.spec)
        tags = client.call("ListTagsForResource", admin_pb2.ListTagsForResourceRequest(
            resource_arn=data.metadata.arn, limit=50)).tags
        if tags:
            doc["tags"] = [{"key": t.key, "value": t.value} for t in tags]
        out.append((kind.title, doc))
    add(K.MESH, {"mesh_name": mesh})
    for kind in (k for k in APPLY_ORDER[1:] if k in kinds):
        if len(kind.parents) == 1:
            for ref in _list_all(client, kind, mesh_name=mesh):
                add(kind, {"mesh_name": mesh, kind.name_field: getattr(ref, kind.name_field)})
        else:
            parent = K.BY_ID_FIELD[kind.parents[1]]
            for pref in _list_all(client, parent, mesh_name=mesh):
                pid = {"mesh_name": mesh, parent.name_field: getattr(pref, parent.name_field)}
                for ref in _list_all(client, kind, **pid):
                    add(kind, {**pid, kind.name_field: getattr(ref, kind.name_field)})
    return out


def cmd_export(client: Client, args) -> int:
    """The mesh as App Mesh CLI input (`cli`), a CloudFormation template or App Mesh
    controller manifests, to stdout or as files in --dir."""
    if not args.mesh:
        raise CliError("export needs --mesh")
    form = "cli" if args.output in ("table", "cli") else args.output
    if form not in ("cli", "cloudformation", "k8s"):
        raise CliError(f"export -o {args.output}: choose cli, cloudformation or k8s")
    # CloudFormation and the App Mesh controller know App Mesh's kinds only; meshctl's own
    # documents carry meshd's policies and rollouts too.
    docs = export_documents(client, args.mesh, K.KINDS if form == "cli" else K.APPMESH_KINDS)
    if form == "cli":
        if args.dir:
            d = Path(args.dir)
            d.mkdir(parents=True, exist_ok=True)
            for i, (kind, doc) in enumerate(docs):
                name = f"{i:03d}-{kind}-{_doc_name(doc).replace('/', '-')}.json"
                (d / name).write_text(json.dumps(doc, indent=2) + "\n")
        else:
            print(yaml.safe_dump_all([doc for _, doc in docs], sort_keys=False), end="")
        return 0
    if form == "cloudformation":
        from meshd.migrate import cfn  # noqa: PLC0415

        out, name = yaml.safe_dump(cfn.export(docs, mesh=args.mesh), sort_keys=False), f"{args.mesh}.cfn.yaml"
    else:
        from meshd.migrate import k8s  # noqa: PLC0415

        out = yaml.safe_dump_all(k8s.export(docs, mesh=args.mesh, namespace=args.namespace), sort_keys=False)
        name = f"{args.mesh}.k8s.yaml"
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        (Path(args.dir) / name).write_text(out)
    else:
        print(out, end="")
    return 0


def _pages(client: Client, kind: K.Kind, ids: dict, limit: int = 0):
    """Each page of a List of `kind` under `ids`, as it is read."""
    token = ""
    while True:
        req = getattr(admin_pb2, f"List{kind.plural_title}Request")(**ids, next_token=token, limit=limit)
        resp = client.call(f"List{kind.plural_title}", req)
        yield list(getattr(resp, kind.list_field))
        token = resp.next_token
        if not token:
            return


def _get_scopes(client: Client, kind: K.Kind, args) -> list[dict]:
    """The parent ids to list under: one mesh, or with --all-meshes every mesh; with -A
    (--all) the router or gateway is left empty, which lists across the mesh."""
    if not (args.all_meshes and kind.parents):
        return [_scope_ids(kind, args)]
    return [_scope_ids(kind, argparse.Namespace(**{**vars(args), "mesh": m.mesh_name}))
            for page in _pages(client, K.MESH, {}) for m in page]


def _stream(kind: K.Kind, pages, output: str) -> None:
    """Print a listing page by page as it is read, so memory and the time to the first
    line stay those of one page. A table's columns are as wide as the first page needs."""
    if output == "table":
        headers = ["NAME", *([p.upper().replace("_NAME", "") for p in kind.parents]), "VERSION", "AGE", "UPDATED"]
        widths = None
        for page in pages:
            cells = [[getattr(i, kind.name_field), *[getattr(i, p) for p in kind.parents], i.version,
                      _age(_to_dict(i).get("createdAt", "")), _age(_to_dict(i).get("lastUpdatedAt", ""))]
                     for i in page]
            if widths is None:
                widths = [max(len(str(x)) for x in col) for col in zip(headers, *cells)]
                cells.insert(0, headers)
            for r in cells:
                print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())
            sys.stdout.flush()
        if widths is None:  # no mesh to list in
            print("  ".join(headers))
    elif output == "json":
        # One JSON document ({"routes": [...]}) written an item at a time.
        print(f'{{\n  "{kind.list_field}": [', end="")
        for n, item in enumerate(item for page in pages for item in page):
            text = json.dumps(_to_dict(item), indent=2).replace("\n", "\n    ")
            print(("," if n else "") + "\n    " + text, end="", flush=not n % 100)
        print("\n  ]\n}")
    else:
        # A YAML block sequence continues across pages: each page's items are more of its entries.
        started = False
        for page in (p for p in pages if p):
            if not started:
                print(f"{kind.list_field}:")
                started = True
            print(yaml.safe_dump([_to_dict(i) for i in page], sort_keys=False), end="", flush=True)
        if not started:
            print(f"{kind.list_field}: []")


def cmd_get(client: Client, args) -> int:
    if args.kind in ("instance", "instances"):
        return cmd_instance_list(client, args)
    kind = _kind(args.kind)
    if args.name:
        return _describe(client, kind, args)
    if args.all and len(kind.parents) == 2:
        args.router = args.gateway = ""
    pages = (page for ids in _get_scopes(client, kind, args) for page in _pages(client, kind, ids, args.page_size))
    _stream(kind, pages, args.output)
    return 0


def _describe(client: Client, kind: K.Kind, args) -> int:
    req = getattr(admin_pb2, f"Describe{kind.title}Request")(**_scope_ids(kind, args, args.name))
    data = getattr(client.call(f"Describe{kind.title}", req), kind.field)
    out = _to_dict(data)
    if args.output == "table":
        # `describe` is for reading: YAML is the table view of one resource.
        print(yaml.safe_dump(out, sort_keys=False), end="")
    else:
        _print(out, args.output)
    return 0


def cmd_describe(client: Client, args) -> int:
    return _describe(client, _kind(args.kind), args)


def cmd_delete(client: Client, args) -> int:
    kind = _kind(args.kind)
    req = getattr(admin_pb2, f"Delete{kind.title}Request")(**_scope_ids(kind, args, args.name))
    client.call(f"Delete{kind.title}", req)
    print(f"{kind.name}/{args.name} deleted")
    return 0


def cmd_instance_register(client: Client, args) -> int:
    if not args.mesh:
        raise CliError("instance register needs --mesh")
    attrs = dict(a.split("=", 1) for a in args.attribute or [])
    req = admin_pb2.RegisterInstanceRequest(
        mesh_name=args.mesh, virtual_node_name=args.node, instance_id=args.id,
        address=args.address, port=args.port, attributes=attrs, ttl_seconds=args.ttl)
    inst = client.call("RegisterInstance", req).instance
    print(f"instance {inst.instance_id} of {inst.virtual_node_name} registered at {inst.address}:{inst.port}"
          f" (host {inst.host or '-'}, lease {inst.lease_id})")
    return 0


def cmd_instance_deregister(client: Client, args) -> int:
    if not args.mesh:
        raise CliError("instance deregister needs --mesh")
    client.call("DeregisterInstance", admin_pb2.DeregisterInstanceRequest(
        mesh_name=args.mesh, virtual_node_name=args.node, instance_id=args.id))
    print(f"instance {args.id} deregistered")
    return 0


def cmd_instance_list(client: Client, args) -> int:
    if not args.mesh:
        raise CliError("instances need --mesh")
    items, token = [], ""
    while True:
        resp = client.call("ListInstances", admin_pb2.ListInstancesRequest(
            mesh_name=args.mesh, virtual_node_name=getattr(args, "node", "") or "", next_token=token))
        items.extend(resp.instances)
        token = resp.next_token
        if not token:
            break
    if args.output == "table":
        rows = [[i.instance_id, i.virtual_node_name, f"{i.address}:{i.port}", i.host, locality_text(i.locality),
                 i.health] for i in items]
        _print(None, "table", rows, ["ID", "NODE", "ADDRESS", "HOST", "LOCALITY", "HEALTH"])
    else:
        _print({"instances": [_to_dict(i) for i in items]}, args.output)
    return 0


def locality_text(locality) -> str:
    """region/zone/sub-zone, as `meshd run --locality` takes it; "-" for none."""
    return "/".join(p for p in (locality.region, locality.zone, locality.sub_zone) if p) or "-"


def _kind(name: str) -> K.Kind:
    kind = ALIASES.get(name.lower().replace("-", "").replace("_", ""))
    if kind is None:
        raise CliError(f"unknown kind {name!r}; one of: mesh, virtualnode, virtualservice, virtualrouter, route, "
                       "virtualgateway, gatewayroute, routepolicy, nodepolicy, rollout, instance")
    return kind


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {n}")
    return n


def _common(suppress: bool, outputs: tuple[str, ...] = ("table", "json", "yaml")) -> argparse.ArgumentParser:
    """Options accepted before and after the subcommand. After it they default to SUPPRESS,
    so a value given before the subcommand is not overwritten by the subparser's default."""
    def d(value):
        return argparse.SUPPRESS if suppress else value
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", "-s", default=d(os.environ.get("MESHCTL_SERVER", DEFAULT_SERVER)),
                        help=f"meshd admin API address (default $MESHCTL_SERVER or {DEFAULT_SERVER})")
    common.add_argument("-o", "--output", choices=outputs, default=d("table"))
    common.add_argument("--mesh", "-m", default=d(os.environ.get("MESHCTL_MESH", "")))
    common.add_argument("--router", default=d(""), help="virtual router of a route")
    common.add_argument("--gateway", default=d(""), help="virtual gateway of a gateway route")
    common.add_argument("--timeout", type=float, default=d(10.0))
    common.add_argument("--context", dest="use_context", default=d(os.environ.get("MESHCTL_CONTEXT", "")),
                        help="credentials context from the meshctl config (default: its current one)")
    return common


def _parser() -> argparse.ArgumentParser:
    top, common = _common(False), _common(True)
    p = argparse.ArgumentParser(prog="meshctl", parents=[top],
                                description="meshctl: manage a meshd service mesh through its admin API.")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("apply", parents=[common], help="create or update from App Mesh JSON/YAML")
    a.add_argument("-f", "--file", required=True, help="a file, a directory, or - for stdin: App Mesh JSON/YAML, "
                   "a CloudFormation template, or App Mesh controller manifests (appmesh.k8s.aws)")
    a.add_argument("--param", action="append", metavar="NAME=VALUE", help="a CloudFormation template parameter")
    a.add_argument("--parallel", type=_positive, default=APPLY_PARALLEL, metavar="N",
                   help=f"requests in flight at once (default {APPLY_PARALLEL}; 1 applies one by one)")
    a.set_defaults(fn=cmd_apply)
    cv = sub.add_parser("convert", parents=[common], help="print the App Mesh documents a CloudFormation template "
                        "or App Mesh controller manifests convert to, without applying them")
    cv.add_argument("-f", "--file", required=True)
    cv.add_argument("--param", action="append", metavar="NAME=VALUE", help="a CloudFormation template parameter")
    cv.set_defaults(fn=cmd_convert, offline=True)
    d = sub.add_parser("diff", parents=[common], help="show what apply would change (dry run)")
    d.add_argument("-f", "--file", required=True)
    d.add_argument("--exit-code", action="store_true", help="exit 1 when there are changes")
    d.add_argument("--param", action="append", metavar="NAME=VALUE", help="a CloudFormation template parameter")
    d.add_argument("--parallel", type=_positive, default=APPLY_PARALLEL, metavar="N", help="reads in flight at once")
    d.set_defaults(fn=cmd_diff)
    ex = sub.add_parser("export", parents=[_common(True, outputs=("cli", "cloudformation", "k8s", "table"))],
                        help="write a mesh as App Mesh CLI input (-o cli, the default), a CloudFormation template "
                             "(-o cloudformation) or App Mesh controller manifests (-o k8s); apply takes each back")
    ex.add_argument("--dir", default="", help="write files here instead of to stdout")
    ex.add_argument("--namespace", default="default", help="the Kubernetes namespace of the k8s form")
    ex.set_defaults(fn=cmd_export)
    g = sub.add_parser("get", parents=[common], help="list a kind, or show one resource")
    g.add_argument("kind")
    g.add_argument("name", nargs="?")
    g.add_argument("-A", "--all", action="store_true",
                   help="routes or gateway routes of every router or gateway of the mesh")
    g.add_argument("--all-meshes", action="store_true", help="list in every mesh")
    g.add_argument("--page-size", type=_positive, default=0, metavar="N",
                   help="resources per List request (default: the server's maximum, 100)")
    g.set_defaults(fn=cmd_get)
    de = sub.add_parser("describe", parents=[common], help="show one resource in full")
    de.add_argument("kind")
    de.add_argument("name")
    de.set_defaults(fn=cmd_describe)
    dl = sub.add_parser("delete", parents=[common], help="delete one resource")
    dl.add_argument("kind")
    dl.add_argument("name")
    dl.set_defaults(fn=cmd_delete)
    inst = sub.add_parser("instance", parents=[common], help="register, deregister and list instances")
    isub = inst.add_subparsers(dest="instance_command", required=True)
    r = isub.add_parser("register", parents=[common])
    r.add_argument("--node", required=True)
    r.add_argument("--id", required=True)
    r.add_argument("--address", required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--ttl", type=int, default=0, help="own lease TTL in seconds (default: the meshd's host lease)")
    r.add_argument("--attribute", action="append", help="KEY=VALUE, repeatable")
    r.set_defaults(fn=cmd_instance_register)
    dr = isub.add_parser("deregister", parents=[common])
    dr.add_argument("--node", required=True)
    dr.add_argument("--id", required=True)
    dr.set_defaults(fn=cmd_instance_deregister)
    ls = isub.add_parser("list", parents=[common])
    ls.add_argument("--node", default="")
    ls.set_defaults(fn=cmd_instance_list)
    for module in SUBCOMMAND_MODULES:  # imported here: they build on this module
        importlib.import_module(module).add_subcommands(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "offline", False):
        try:
            return args.fn(None, args)
        except CliError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    # An explicit --server without a context means that server as given (plaintext, the
    # --insecure-local listener); otherwise the saved context supplies server and credentials.
    ctx = credentials.load(args.use_context or None)
    explicit = "--server" in (argv or sys.argv) or "-s" in (argv or sys.argv) or "MESHCTL_SERVER" in os.environ
    if ctx is not None and explicit and not args.use_context:
        ctx = None
    if ctx is not None:
        args.server = ctx.server
    try:
        client = Client(args.server, timeout=args.timeout, context=ctx)
    except OSError as err:
        print(f"error: cannot read credentials: {err}", file=sys.stderr)
        return 1
    try:
        return args.fn(client, args)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        client.channel.close()


if __name__ == "__main__":
    sys.exit(main())
