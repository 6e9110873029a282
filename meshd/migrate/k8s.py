"""App Mesh controller for Kubernetes manifests -> App Mesh CLI-input documents.

The manifests are the custom resources of aws-app-mesh-controller-for-k8s
(`appmesh.k8s.aws/v1beta2`, and the older `v1beta1`). They are converted the way the
controller converts them before it calls App Mesh, so a migrated mesh keeps every name:

- v1beta2 names as the webhooks default them: `spec.awsName` if set; else the Mesh's
  `metadata.name`, `<name>_<namespace>` for VirtualNode, VirtualRouter, VirtualGateway
  and GatewayRoute, `<name>.<namespace>` for VirtualService; a VirtualRouter's inline
  routes keep their `name`.
- v1beta1 names as its controller namespaced them: `<name>-<namespace>`, or dots turned
  into dashes when the name already carries a namespace (`name.ns` -> `name-ns`); a
  VirtualService keeps `metadata.name` and brings its own router and routes.
- `*Ref` fields resolve by name and namespace (the object's own when omitted) to the
  referenced object's App Mesh name; `*ARN` forms pass through as the ARN's name.
- The mesh of an object is its `meshRef`; else the Mesh whose `namespaceSelector` matches
  the labels of the object's Namespace; else, when the input holds exactly one Mesh, that
  one (said in `Conversion.notes`). A reference into another mesh is refused.
- A GatewayRoute's gateway is its `virtualGatewayRef`, else the one VirtualGateway whose
  `namespaceSelector` and `gatewayRouteSelector` select it; a VirtualNode's `backendGroups`
  add their virtual services to its backends.

Pod selectors are no part of App Mesh's model; they are kept for the caller in
`Conversion.pod_selectors`, keyed by (mesh, virtual node name).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# One error for every importer, so a caller catches one class. Here `path` names the object
# and the field: "VirtualNode apps/front spec.backends[1].virtualService.virtualServiceRef".
from meshd.migrate.cfn import ConversionError

GROUP = "appmesh.k8s.aws"
VERSIONS = ("v1beta1", "v1beta2")
_V1BETA1_KINDS = ("Mesh", "VirtualNode", "VirtualService")  # v1beta1 routers and routes live in services
ORDER = ("Mesh", "VirtualNode", "VirtualRouter", "Route", "VirtualService", "VirtualGateway", "GatewayRoute")

# CRD spelling -> App Mesh API spelling; everything else in a v1beta2 spec is App Mesh's own.
_RENAMES = {"certificateARN": "certificateArn", "certificateAuthorityARNs": "certificateAuthorityArns"}
# Kubernetes-only fields, dropped from the App Mesh spec.
_K8S_ONLY = ("awsName", "meshRef", "podSelector", "namespaceSelector", "gatewayRouteSelector",
             "virtualGatewayRef", "routes", "backendGroups")
_ARN = re.compile(r"^arn:[^:]+:appmesh:[^:]*:[^:]*:mesh/[^/]+/(virtualNode|virtualService|virtualRouter)/([^/]+)$")


@dataclass
class Conversion:
    documents: list[tuple[str, dict]] = field(default_factory=list)  # (kind title, CLI-input document)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (kind, "namespace/name")
    pod_selectors: dict[tuple[str, str], dict] = field(default_factory=dict)  # (mesh, node) -> selector
    gateway_pod_selectors: dict[tuple[str, str], dict] = field(default_factory=dict)  # (mesh, gateway)
    # The namespace each selector applies in (the VirtualNode's or VirtualGateway's own).
    selector_namespaces: dict[tuple[str, str], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # choices made where the input did not decide


def load(path_or_text: str | Path) -> list[dict]:
    """The objects of multi-document YAML (a file, the .yaml/.yml/.json files directly in a
    directory, as `kubectl apply -f dir`, or the text itself); `kind: List` (and `*List`)
    documents give their items."""
    if isinstance(path_or_text, Path) or ("\n" not in path_or_text and Path(path_or_text).exists()):
        p = Path(path_or_text)
        files = sorted(f for f in p.glob("*") if f.suffix.lower() in (".yaml", ".yml", ".json")) \
            if p.is_dir() else [p]
        out = []
        for f in files:
            try:
                out += load(f.read_text())
            except ConversionError as err:
                raise ConversionError(f"{f}: {err.path}", err.message) from None
        return out
    out: list[dict] = []

    def add(doc, where):
        if doc is None:
            return
        if not isinstance(doc, dict):
            raise ConversionError(where, "not a Kubernetes object")
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            for i, item in enumerate(doc["items"]):
                add(item, f"{where}.items[{i}]")
        else:
            out.append(doc)

    for i, doc in enumerate(yaml.safe_load_all(path_or_text)):
        add(doc, f"document {i + 1}")
    return out


def matches(selector: dict | None, labels: dict) -> bool:
    """Kubernetes LabelSelector semantics; an absent selector matches nothing."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _v1beta1_name(name: str, namespace: str) -> str:
    return name.replace(".", "-") if "." in name else f"{name}-{namespace}"


class _Converter:
    def __init__(self, objects: list[dict]):
        self.out = Conversion()
        self.namespaces: dict[str, dict] = {}
        self.by_key: dict[tuple[str, str, str], dict] = {}  # (kind, namespace, name) -> object
        self.objects: list[dict] = []
        self.docs: dict[str, list[tuple[str, dict]]] = {k: [] for k in ORDER}
        self.seen: dict[tuple, dict] = {}
        for obj in objects:
            kind = obj.get("kind", "")
            meta = obj.get("metadata") or {}
            ns = meta.get("namespace") or ("" if kind in ("Mesh", "Namespace") else "default")
            group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
            if kind == "Namespace" and group == "":
                labels = dict(meta.get("labels") or {})
                labels.setdefault("kubernetes.io/metadata.name", meta.get("name", ""))
                self.namespaces[meta.get("name", "")] = labels
            if group != GROUP:
                self.out.skipped.append((kind, f"{ns}/{meta.get('name', '')}" if ns else meta.get("name", "")))
                continue
            if version not in VERSIONS:
                known = " or ".join(f"{GROUP}/{v}" for v in VERSIONS)
                raise ConversionError(self._label(obj) + " apiVersion", f"{obj.get('apiVersion')} is not {known}")
            if kind == "BackendGroup" and version == "v1beta2":  # read for VirtualNodes' backendGroups
                ns = meta.get("namespace") or "default"
                self.by_key[(kind, ns, meta.get("name", ""))] = obj
                continue
            if kind not in ORDER or kind == "Route" or (version == "v1beta1" and kind not in _V1BETA1_KINDS):
                raise ConversionError(self._label(obj) + " kind",
                                      f"{kind!r} is not an App Mesh controller kind of {GROUP}/{version}")
            if not meta.get("name"):
                raise ConversionError(f"{kind} {ns}/ metadata.name", "is required")
            self.by_key[(kind, ns, meta["name"])] = obj
            self.objects.append(obj)

    # -- naming ----------------------------------------------------------------------------

    def _ns(self, obj) -> str:
        return "" if obj["kind"] == "Mesh" else (obj["metadata"].get("namespace") or "default")

    def _label(self, obj) -> str:
        meta = obj.get("metadata") or {}
        if obj.get("kind") == "Mesh":
            return f"Mesh {meta.get('name', '')}"
        return f"{obj.get('kind')} {meta.get('namespace') or 'default'}/{meta.get('name', '')}"

    def _fail(self, obj, path: str, message: str):
        raise ConversionError(f"{self._label(obj)} {path}", message)

    def _v1(self, obj) -> bool:
        return obj["apiVersion"].endswith("/v1beta1")

    def aws_name(self, obj) -> str:
        name, ns, kind = obj["metadata"]["name"], self._ns(obj), obj["kind"]
        if self._v1(obj):
            return name if kind in ("Mesh", "VirtualService") else _v1beta1_name(name, ns)
        spec = obj.get("spec") or {}
        if spec.get("awsName"):
            return spec["awsName"]
        if kind == "Mesh":
            return name
        return f"{name}.{ns}" if kind == "VirtualService" else f"{name}_{ns}"

    def _ref(self, obj, kind: str, ref, path: str) -> dict:
        if not isinstance(ref, dict) or not ref.get("name"):
            self._fail(obj, path, f"a {kind} reference needs a name")
        ns = "" if kind == "Mesh" else (ref.get("namespace") or self._ns(obj))
        target = self.by_key.get((kind, ns, ref["name"]))
        if target is None:
            where = ref["name"] if kind == "Mesh" else f"{ns}/{ref['name']}"
            self._fail(obj, path, f"{kind} {where} is not in the input")
        if kind != "Mesh" and self.mesh_of(target) != self.mesh_of(obj):  # as the controller refuses it
            self._fail(obj, path, f"{kind} {ns}/{ref['name']} is in mesh {self.mesh_of(target)}, "
                       f"not {self.mesh_of(obj)}")
        return target

    def _backend_groups(self, obj, spec) -> list[str]:
        """The virtual services a VirtualNode's `backendGroups` add to its backends: each
        BackendGroup's `virtualservices` (namespace: the group's), or for the name "*" every
        VirtualService of that namespace in the node's mesh."""
        names = []
        for i, group in enumerate(spec.get("backendGroups") or []):
            path = f"spec.backendGroups[{i}]"
            ns = group.get("namespace") or self._ns(obj)
            if group.get("name") == "*":
                names += [self.aws_name(o) for o in self.objects if o["kind"] == "VirtualService"
                          and self._ns(o) == ns and not self._v1(o) and self.mesh_of(o) == self.mesh_of(obj)]
                continue
            bg = self._ref(obj, "BackendGroup", group, path)
            for j, ref in enumerate((bg.get("spec") or {}).get("virtualservices") or []):
                target = self._ref(obj, "VirtualService", {**ref, "namespace": ref.get("namespace") or ns},
                                   f"{path} ({ns}/{group['name']} spec.virtualservices[{j}])")
                names.append(self.aws_name(target))
        return names

    def _arn_name(self, obj, arn, segment: str, path: str) -> str:
        m = _ARN.match(arn) if isinstance(arn, str) else None
        if m is None or m.group(1) != segment:
            self._fail(obj, path, f"{arn!r} is not an App Mesh {segment} ARN")
        return m.group(2)

    # -- meshes ----------------------------------------------------------------------------

    def mesh_of(self, obj) -> str:
        spec = obj.get("spec") or {}
        if self._v1(obj):
            if not spec.get("meshName"):
                self._fail(obj, "spec.meshName", "is required")
            return self.aws_name(self._ref(obj, "Mesh", {"name": spec["meshName"]}, "spec.meshName"))
        if spec.get("meshRef") is not None:
            return self.aws_name(self._ref(obj, "Mesh", spec["meshRef"], "spec.meshRef"))
        ns = self._ns(obj)
        meshes = [o for o in self.objects if o["kind"] == "Mesh"]
        labels = self.namespaces.get(ns)
        if labels is not None:
            chosen = [m for m in meshes if matches((m.get("spec") or {}).get("namespaceSelector"), labels)]
            if len(chosen) > 1:
                self._fail(obj, "spec.meshRef", f"namespace {ns} is selected by more than one mesh: "
                           + ", ".join(m["metadata"]["name"] for m in chosen))
            if chosen:
                return self.aws_name(chosen[0])
        if len(meshes) == 1:
            note = (f"namespace {ns}: no Namespace object in the input" if labels is None
                    else f"namespace {ns}: no mesh's namespaceSelector matches its labels")
            note += f"; its objects join the only mesh, {self.aws_name(meshes[0])}"
            if note not in self.out.notes:
                self.out.notes.append(note)
            return self.aws_name(meshes[0])
        self._fail(obj, "spec.meshRef", f"no mesh selects namespace {ns}; set spec.meshRef"
                   if meshes else "no Mesh is in the input")

    # -- spec walking ----------------------------------------------------------------------

    def _spec(self, obj, value, path: str, in_target: bool = False):
        """A v1beta2 CRD spec (part) as App Mesh's, with references resolved."""
        if isinstance(value, list):
            return [self._spec(obj, v, f"{path}[{i}]", path.endswith("weightedTargets"))
                    for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        out = {}
        for key, v in value.items():
            sub = f"{path}.{key}"
            if key == "virtualServiceRef":
                out["virtualServiceName"] = self.aws_name(self._ref(obj, "VirtualService", v, sub))
            elif key == "virtualServiceARN":
                out["virtualServiceName"] = self._arn_name(obj, v, "virtualService", sub)
            elif key in ("virtualNodeRef", "virtualNodeARN"):
                name = (self.aws_name(self._ref(obj, "VirtualNode", v, sub)) if key == "virtualNodeRef"
                        else self._arn_name(obj, v, "virtualNode", sub))
                out["virtualNode" if in_target else "virtualNodeName"] = name
            elif key == "virtualRouterRef":
                out["virtualRouterName"] = self.aws_name(self._ref(obj, "VirtualRouter", v, sub))
            elif key == "virtualRouterARN":
                out["virtualRouterName"] = self._arn_name(obj, v, "virtualRouter", sub)
            else:
                out[_RENAMES.get(key, key)] = self._spec(obj, v, sub)
        return out

    def _emit(self, obj, kind: str, doc: dict):
        ids = tuple(v for k, v in doc.items() if k != "spec")
        prior = self.seen.get((kind, ids))
        if prior is not None:
            if prior != doc:
                self._fail(obj, "metadata.name", f"{kind} {'/'.join(ids)} is also made, differently, "
                           "by another object")
            return
        self.seen[(kind, ids)] = doc
        self.docs[kind].append((kind, doc))

    # -- kinds -----------------------------------------------------------------------------

    def convert(self) -> Conversion:
        for obj in self.objects:
            getattr(self, f"_{obj['kind']}")(obj, obj.get("spec") or {})
        self.out.documents = [d for kind in ORDER for d in self.docs[kind]]
        return self.out

    def _Mesh(self, obj, spec):
        body = {k: v for k, v in spec.items() if k in ("egressFilter", "serviceDiscovery")}
        if self._v1(obj):
            body.pop("serviceDiscovery", None)  # v1beta1's serviceDiscoveryType has no App Mesh field
        self._emit(obj, "Mesh", {"meshName": self.aws_name(obj), "spec": self._spec(obj, body, "spec")})

    def _VirtualNode(self, obj, spec):
        mesh, name = self.mesh_of(obj), self.aws_name(obj)
        if self._v1(obj):
            body = self._v1_node_spec(obj, spec)
        else:
            body = self._spec(obj, {k: v for k, v in spec.items() if k not in _K8S_ONLY}, "spec")
            backends = body.get("backends") or []
            seen = {b["virtualService"].get("virtualServiceName") for b in backends}
            for service in self._backend_groups(obj, spec):
                if service not in seen:  # the controller keys backends by virtual service
                    seen.add(service)
                    backends.append({"virtualService": {"virtualServiceName": service}})
            if backends:
                body["backends"] = backends
            if spec.get("podSelector") is not None:
                self.out.pod_selectors[(mesh, name)] = copy.deepcopy(spec["podSelector"])
                self.out.selector_namespaces[(mesh, name)] = self._ns(obj)
        self._emit(obj, "VirtualNode", {"meshName": mesh, "virtualNodeName": name, "spec": body})

    def _VirtualRouter(self, obj, spec):
        mesh, name = self.mesh_of(obj), self.aws_name(obj)
        body = self._spec(obj, {k: v for k, v in spec.items() if k not in _K8S_ONLY}, "spec")
        self._emit(obj, "VirtualRouter", {"meshName": mesh, "virtualRouterName": name, "spec": body})
        for i, route in enumerate(spec.get("routes") or []):
            if not route.get("name"):
                self._fail(obj, f"spec.routes[{i}].name", "is required")
            rspec = self._spec(obj, {k: v for k, v in route.items() if k != "name"}, f"spec.routes[{i}]")
            self._emit(obj, "Route", {"meshName": mesh, "virtualRouterName": name, "routeName": route["name"],
                                      "spec": rspec})

    def _VirtualService(self, obj, spec):
        mesh, name = self.mesh_of(obj), self.aws_name(obj)
        if self._v1(obj):
            return self._v1_service(obj, spec, mesh, name)
        body = self._spec(obj, {k: v for k, v in spec.items() if k not in _K8S_ONLY}, "spec")
        self._emit(obj, "VirtualService", {"meshName": mesh, "virtualServiceName": name, "spec": body})

    def _VirtualGateway(self, obj, spec):
        mesh, name = self.mesh_of(obj), self.aws_name(obj)
        if spec.get("podSelector") is not None:
            self.out.gateway_pod_selectors[(mesh, name)] = copy.deepcopy(spec["podSelector"])
            self.out.selector_namespaces[(mesh, name)] = self._ns(obj)
        body = self._spec(obj, {k: v for k, v in spec.items() if k not in _K8S_ONLY}, "spec")
        self._emit(obj, "VirtualGateway", {"meshName": mesh, "virtualGatewayName": name, "spec": body})

    def _GatewayRoute(self, obj, spec):
        gateway = self._gateway_of(obj, spec)
        mesh = self.mesh_of(obj)
        if self.mesh_of(gateway) != mesh:  # as the controller's webhook refuses it
            self._fail(obj, "spec.virtualGatewayRef", f"VirtualGateway {self._ns(gateway)}/"
                       f"{gateway['metadata']['name']} is in mesh {self.mesh_of(gateway)}, not {mesh}")
        body = self._spec(obj, {k: v for k, v in spec.items() if k not in _K8S_ONLY}, "spec")
        self._emit(obj, "GatewayRoute", {"meshName": mesh, "virtualGatewayName": self.aws_name(gateway),
                                         "gatewayRouteName": self.aws_name(obj), "spec": body})

    def _gateway_of(self, obj, spec):
        """virtualGatewayRef; else, as the controller's membership designator, the one gateway
        whose namespaceSelector selects the route's namespace and whose gatewayRouteSelector
        (absent: every route) selects the route. Without the Namespace in the input, the
        gatewayRouteSelector alone decides (said in notes)."""
        if spec.get("virtualGatewayRef") is not None:
            return self._ref(obj, "VirtualGateway", spec["virtualGatewayRef"], "spec.virtualGatewayRef")
        ns = self._ns(obj)
        ns_labels = self.namespaces.get(ns)
        labels = obj["metadata"].get("labels") or {}
        gateways = [g for g in self.objects if g["kind"] == "VirtualGateway" and not self._v1(g)
                    and (ns_labels is None or matches((g.get("spec") or {}).get("namespaceSelector"), ns_labels))]
        chosen = [g for g in gateways if (g.get("spec") or {}).get("gatewayRouteSelector") is None
                  or matches(g["spec"]["gatewayRouteSelector"], labels)]
        if len(chosen) != 1:
            self._fail(obj, "spec.virtualGatewayRef", f"no VirtualGateway selects this route (namespace {ns}, "
                       f"labels {labels})" if not chosen else "more than one VirtualGateway selects this route: "
                       + ", ".join(f"{self._ns(g)}/{g['metadata']['name']}" for g in chosen))
        if ns_labels is None:
            note = (f"GatewayRoute {ns}/{obj['metadata']['name']}: no Namespace object in the input; "
                    f"the gatewayRouteSelector of VirtualGateway {self._ns(chosen[0])}/"
                    f"{chosen[0]['metadata']['name']} alone selects it")
            self.out.notes.append(note)
        return chosen[0]

    # -- v1beta1 ---------------------------------------------------------------------------

    def _v1_node_spec(self, obj, spec) -> dict:
        body = {}
        if spec.get("listeners"):
            body["listeners"] = copy.deepcopy(spec["listeners"])
        sd = spec.get("serviceDiscovery") or {}
        if sd.get("dns"):
            body["serviceDiscovery"] = {"dns": {"hostname": sd["dns"].get("hostName", sd["dns"].get("hostname"))}}
        elif sd.get("cloudMap"):
            cm = sd["cloudMap"]
            # As the v1beta1 controller, which registers each pod with these two attributes too.
            attributes = {**(cm.get("attributes") or {}), "appmesh.k8s.aws/mesh": spec.get("meshName"),
                          "appmesh.k8s.aws/virtualNode": self.aws_name(obj)}
            body["serviceDiscovery"] = {"awsCloudMap": {
                "namespaceName": cm.get("namespaceName"), "serviceName": cm.get("serviceName"),
                "attributes": [{"key": k, "value": v} for k, v in sorted(attributes.items())]}}
        if spec.get("backends"):
            body["backends"] = [{"virtualService": {"virtualServiceName": b["virtualService"]["virtualServiceName"]}}
                                for b in spec["backends"]]
        if spec.get("logging"):
            body["logging"] = copy.deepcopy(spec["logging"])
        return body

    def _v1_service(self, obj, spec, mesh: str, name: str):
        ns = self._ns(obj)
        router = spec.get("virtualRouter") or {}
        router_name = _v1beta1_name((router.get("name") or "").strip() or obj["metadata"]["name"], ns)
        listeners = copy.deepcopy(router.get("listeners") or [])
        routes = spec.get("routes") or []
        if not listeners and routes:
            # As the v1beta1 controller: the listener of the first route's first target.
            first = routes[0].get("http") or routes[0].get("tcp") or {}
            targets = (first.get("action") or {}).get("weightedTargets") or []
            node = self.by_key.get(("VirtualNode", ns, targets[0]["virtualNodeName"])) if targets else None
            if node is not None and (node.get("spec") or {}).get("listeners"):
                listeners = [{"portMapping": copy.deepcopy(node["spec"]["listeners"][0]["portMapping"])}]
        self._emit(obj, "VirtualRouter", {"meshName": mesh, "virtualRouterName": router_name,
                                          "spec": {"listeners": listeners}})
        for i, route in enumerate(routes):
            if not route.get("name"):
                self._fail(obj, f"spec.routes[{i}].name", "is required")
            rspec = {}
            for old, new in (("http", "httpRoute"), ("http2", "http2Route"), ("grpc", "grpcRoute"),
                             ("tcp", "tcpRoute")):
                if route.get(old) is not None:
                    rspec[new] = self._v1_route(route[old], ns)
            if route.get("priority") is not None:
                rspec["priority"] = route["priority"]
            self._emit(obj, "Route", {"meshName": mesh, "virtualRouterName": router_name,
                                      "routeName": _v1beta1_name(route["name"], ns), "spec": rspec})
        self._emit(obj, "VirtualService", {"meshName": mesh, "virtualServiceName": name,
                                           "spec": {"provider": {"virtualRouter": {"virtualRouterName": router_name}}}})

    def _v1_route(self, route: dict, ns: str) -> dict:
        out = copy.deepcopy(route)
        action = out.get("action") or {}
        action["weightedTargets"] = [{"virtualNode": _v1beta1_name(t["virtualNodeName"], ns), "weight": t["weight"]}
                                     for t in action.get("weightedTargets") or []]
        retry = out.get("retryPolicy")
        if retry and "perRetryTimeoutMillis" in retry:
            retry["perRetryTimeout"] = {"unit": "ms", "value": retry.pop("perRetryTimeoutMillis")}
        return out


def convert(objects: list[dict], *, source: str = "") -> Conversion:
    """App Mesh documents, in dependency order, for the App Mesh controller objects among
    `objects`; the other objects are listed in `skipped` (Namespaces are read first, for
    their labels). Raises ConversionError naming the object and field it cannot convert."""
    try:
        return _Converter(objects).convert()
    except ConversionError as err:
        if source:
            raise ConversionError(f"{source}: {err.path}", err.message) from None
        raise


# -- export --------------------------------------------------------------------------------

_UNRENAMES = {v: k for k, v in _RENAMES.items()}
_GATEWAY_LABEL = "virtual-gateway"  # exported GatewayRoutes' label naming their gateway
_NAME_KEYS = {"VirtualNode": "virtualNodeName", "VirtualService": "virtualServiceName",
              "VirtualRouter": "virtualRouterName", "VirtualGateway": "virtualGatewayName",
              "GatewayRoute": "gatewayRouteName"}


def export(documents: list[tuple[str, dict]], *, mesh: str, namespace: str) -> list[dict]:
    """`appmesh.k8s.aws/v1beta2` manifests for the documents of `mesh`, all in `namespace`.
    Every object carries `awsName`, so `convert` gives the same documents back; names
    become references to the exported objects (an ARN for a virtual service outside them).
    The Mesh and VirtualGateways select the namespace by its `kubernetes.io/metadata.name`
    label; a GatewayRoute joins its gateway by the gateway's gatewayRouteSelector, since the
    controller's webhook refuses a GatewayRoute created with `virtualGatewayRef` (read-only)."""
    docs = [(k, d) for k, d in documents if d.get("meshName") == mesh]
    k8s_names: dict[tuple[str, str], str] = {}
    taken: set[tuple[str, str]] = set()
    for kind, doc in docs:
        if kind in _NAME_KEYS:
            base = re.sub(r"[^a-z0-9.-]+", "-", doc[_NAME_KEYS[kind]].lower()).strip("-.")[:240] or "x"
            name, n = base, 1
            while (kind, name) in taken:
                n += 1
                name = f"{base}-{n}"
            taken.add((kind, name))
            k8s_names[(kind, doc[_NAME_KEYS[kind]])] = name

    def ref(kind: str, aws: str) -> dict:
        if (kind, aws) in k8s_names:
            return {f"{kind[0].lower()}{kind[1:]}Ref": {"name": k8s_names[(kind, aws)]}}
        segment = f"{kind[0].lower()}{kind[1:]}"
        return {f"{segment}ARN": f"arn:aws:appmesh:::mesh/{mesh}/{segment}/{aws}"}

    def walk(value, in_target: bool = False):
        if isinstance(value, list):
            return [walk(v, in_target) for v in value]
        if not isinstance(value, dict):
            return value
        out = {}
        for key, v in value.items():
            if key == "virtualServiceName":
                out.update(ref("VirtualService", v))
            elif key == "virtualNodeName" or (key == "virtualNode" and in_target):
                out.update(ref("VirtualNode", v))
            elif key == "virtualRouterName":
                out.update(ref("VirtualRouter", v))
            else:
                out[_UNRENAMES.get(key, key)] = walk(v, key == "weightedTargets")
        return out

    def obj(kind: str, name: str, spec: dict, ns: str | None = namespace) -> dict:
        meta = {"name": name} if ns is None else {"name": name, "namespace": ns}
        return {"apiVersion": f"{GROUP}/v1beta2", "kind": kind, "metadata": meta, "spec": spec}

    selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    out: list[dict] = []
    routers: dict[str, dict] = {}
    for kind, doc in docs:
        spec = walk(copy.deepcopy(doc.get("spec") or {}))
        if kind == "Mesh":
            out.append(obj("Mesh", re.sub(r"[^a-z0-9.-]+", "-", mesh.lower()).strip("-.") or "mesh",
                           {"awsName": mesh, "namespaceSelector": selector, **spec}, ns=None))
        elif kind == "Route":
            router = routers[doc["virtualRouterName"]]
            router["spec"].setdefault("routes", []).append({"name": doc["routeName"], **spec})
        elif kind == "GatewayRoute":
            out.append(obj(kind, k8s_names[(kind, doc["gatewayRouteName"])], {"awsName": doc["gatewayRouteName"],
                                                                              **spec}))
            out[-1]["metadata"]["labels"] = {_GATEWAY_LABEL: k8s_names[("VirtualGateway", doc["virtualGatewayName"])]}
        else:
            aws = doc[_NAME_KEYS[kind]]
            extra = {"namespaceSelector": selector, "gatewayRouteSelector": {"matchLabels": {
                _GATEWAY_LABEL: k8s_names[(kind, aws)]}}} if kind == "VirtualGateway" else {}
            out.append(obj(kind, k8s_names[(kind, aws)], {"awsName": aws, **extra, **spec}))
            if kind == "VirtualRouter":
                routers[aws] = out[-1]
    return out
