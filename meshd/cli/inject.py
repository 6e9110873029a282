"""`meshctl inject`: add meshd to Kubernetes workloads the way the App Mesh controller's
webhook added Envoy, offline (a file or stdin in, the rewritten documents out):

    meshctl inject -f deploy.yaml --etcd http://etcd-client.meshd-system.svc:2379 | kubectl apply -f -

Each Deployment, StatefulSet, DaemonSet, ReplicaSet, Job (and bare Pod) whose pod template
names its virtual node gets:

- an init container `proxyinit` running `meshd proxy-init`, with the controller's
  environment (APPMESH_START_ENABLED, APPMESH_IGNORE_UID=1337, APPMESH_ENVOY_INGRESS_PORT,
  APPMESH_ENVOY_EGRESS_PORT, APPMESH_APP_PORTS from the containers' ports, the ignored
  addresses and ports, MESHD_DNS_PORT) and the NET_ADMIN capability it needs;
- the sidecar container `envoy` (the name the controller used, which dashboards and
  `kubectl logs -c envoy` expect) running `meshd sidecar` as uid 1337, configured through
  APPMESH_RESOURCE_ARN and the pod's IP and name, probed on its admin port (/ready).

Without those annotations, the App Mesh controller's own objects pick the node, as its
webhook did: a VirtualNode (or VirtualGateway) of `appmesh.k8s.aws` in the same input, or in
`--appmesh FILE`, whose `podSelector` matches the pod template's labels in the workload's
namespace. A workload several of them select is left alone and said so; one none selects
is not meshed.

Annotations, as the controller read them, on the pod template (or the workload):

    appmesh.k8s.aws/sidecarInjectorWebhook: disabled   leave this workload alone
    appmesh.k8s.aws/mesh: <mesh>                       (or --mesh)
    appmesh.k8s.aws/virtualNode: <node>                (or --virtual-node; "<node>.<mesh>" too)
    appmesh.k8s.aws/ports: "8080,8443"                 the app's ports (default: the containers')
    appmesh.k8s.aws/egressIgnoredPorts: "22"
    appmesh.k8s.aws/egressIgnoredIPs: "169.254.169.254"

A workload already injected (it has the `proxyinit` init container) is left as it is, so
running inject twice changes nothing. Every other document passes through unchanged.
"""
from __future__ import annotations

import copy
import sys

import yaml

PREFIX = "appmesh.k8s.aws/"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
SIDECAR_UID = 1337
DEFAULT_IMAGE = "ghcr.io/meshd/meshd:latest"
DEFAULT_IGNORED_IPS = "169.254.169.254"
DEFAULT_IGNORED_PORTS = "22"


class InjectError(ValueError):
    pass


def _template(doc: dict) -> dict | None:
    """The pod template (metadata + spec) of a workload, or the Pod itself."""
    kind = doc.get("kind")
    if kind == "Pod":
        return doc
    if kind in WORKLOADS:
        return (doc.get("spec") or {}).get("template")
    return None


def _annotations(doc: dict, template: dict) -> dict[str, str]:
    out = dict((doc.get("metadata") or {}).get("annotations") or {})
    out.update((template.get("metadata") or {}).get("annotations") or {})
    return {k[len(PREFIX):]: str(v) for k, v in out.items() if k.startswith(PREFIX)}


def _app_ports(spec: dict) -> str:
    ports = []
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("protocol", "TCP") == "TCP" and p.get("containerPort") not in ports:
                ports.append(p["containerPort"])
    return ",".join(str(p) for p in ports)


def inject_one(doc: dict, *, mesh: str, node: str, etcd: str, image: str, join_secret: str,
               dns: bool = True) -> tuple[dict, str]:
    """(the document, what was done): injected, or unchanged with the reason."""
    template = _template(doc)
    if template is None:
        return doc, "not a workload"
    notes = _annotations(doc, template)
    if notes.get("sidecarInjectorWebhook", "").lower() == "disabled":
        return doc, "opted out (appmesh.k8s.aws/sidecarInjectorWebhook: disabled)"
    spec = template.get("spec") or {}
    if any(c.get("name") == "proxyinit" for c in spec.get("initContainers") or []):
        return doc, "already injected"
    node = notes.get("virtualNode", node)
    mesh = notes.get("mesh", mesh)
    if "." in node and not mesh:
        node, mesh = node.split(".", 1)
    if not node or not mesh:
        return doc, ("no virtual node named (appmesh.k8s.aws/virtualNode and appmesh.k8s.aws/mesh, "
                     "or --virtual-node/--mesh)")
    out = copy.deepcopy(doc)
    template = _template(out)
    spec = template.setdefault("spec", {})
    ports = notes.get("ports") or _app_ports(spec)
    init_env = [
        {"name": "APPMESH_START_ENABLED", "value": "1"},
        {"name": "APPMESH_IGNORE_UID", "value": str(SIDECAR_UID)},
        {"name": "APPMESH_ENVOY_INGRESS_PORT", "value": "15000"},
        {"name": "APPMESH_ENVOY_EGRESS_PORT", "value": "15001"},
        {"name": "APPMESH_APP_PORTS", "value": ports},
        {"name": "APPMESH_EGRESS_IGNORED_IP", "value": notes.get("egressIgnoredIPs", DEFAULT_IGNORED_IPS)},
        {"name": "APPMESH_EGRESS_IGNORED_PORTS", "value": notes.get("egressIgnoredPorts", DEFAULT_IGNORED_PORTS)},
    ]
    if dns:
        init_env.append({"name": "MESHD_DNS_PORT", "value": "15053"})
    spec.setdefault("initContainers", []).insert(0, {
        "name": "proxyinit", "image": image, "command": ["meshd", "proxy-init"], "env": init_env,
        "securityContext": {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
                            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}})
    env = [
        {"name": "APPMESH_RESOURCE_ARN", "value": f"mesh/{mesh}/virtualNode/{node}"},
        {"name": "ENVOY_LOG_LEVEL", "value": "info"},
        {"name": "ENVOY_ADMIN_ACCESS_PORT", "value": "9901"},
        {"name": "MESHD_ETCD", "value": etcd},
        {"name": "MESHD_STATE_DIR", "value": "/var/run/meshd"},
        {"name": "MESHD_DNS_PORT", "value": "15053" if dns else "off"},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MESHD_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if join_secret:
        env.append({"name": "MESHD_JOIN_TOKEN", "valueFrom": {"secretKeyRef": {"name": join_secret, "key": "token"}}})
    spec.setdefault("containers", []).append({
        "name": "envoy", "image": image, "command": ["meshd", "sidecar"], "env": env,
        "ports": [{"name": "stats", "containerPort": 9901, "protocol": "TCP"},
                  {"name": "mesh-mtls", "containerPort": 15443, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 9901}, "periodSeconds": 2, "failureThreshold": 3},
        "startupProbe": {"httpGet": {"path": "/ready", "port": 9901}, "periodSeconds": 1, "failureThreshold": 120},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {"runAsUser": SIDECAR_UID, "runAsGroup": SIDECAR_UID, "runAsNonRoot": True,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "meshd-state", "mountPath": "/var/run/meshd"}]})
    spec.setdefault("volumes", []).append({"name": "meshd-state", "emptyDir": {"medium": "Memory"}})
    # The sidecar drains for 20 s (MESHD_DRAIN_SECONDS' default) after SIGTERM.
    spec["terminationGracePeriodSeconds"] = max(int(spec.get("terminationGracePeriodSeconds", 30)), 30)
    annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[PREFIX + "mesh"] = mesh
    annotations[PREFIX + "virtualNode"] = node
    annotations[PREFIX + "sidecarInjectorWebhook"] = "injected"
    return out, f"injected {mesh}/{node}"


def _selected(doc: dict, selectors) -> tuple[str, str] | str | None:
    """The (mesh, node) whose podSelector picks this workload's pods, "" when several do."""
    template = _template(doc)
    if template is None or selectors is None:
        return None
    from meshd.migrate import k8s  # noqa: PLC0415 - only when controller objects are given

    labels = (template.get("metadata") or {}).get("labels") or {}
    ns = (doc.get("metadata") or {}).get("namespace") or "default"
    found = [key for key, sel in selectors.pod_selectors.items()
             if selectors.selector_namespaces.get(key) == ns and k8s.matches(sel, labels)]
    if len(found) > 1:
        return "virtual nodes " + ", ".join(f"{m}/{n}" for m, n in sorted(found)) + " all select it"
    return found[0] if found else None


def _controller_objects(docs: list, extra: str = ""):
    """The App Mesh controller's selection (meshd.migrate.k8s) of the input's own
    appmesh.k8s.aws objects and those of `extra` (a file), or None when there are none."""
    objs = [d for d in docs if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("appmesh.k8s.aws/")]
    if extra:
        from meshd.migrate import k8s  # noqa: PLC0415

        objs += [d for d in k8s.load(extra) if str(d.get("apiVersion", "")).startswith("appmesh.k8s.aws/")]
    if not objs:
        return None
    from meshd.migrate import k8s  # noqa: PLC0415

    try:
        return k8s.convert(objs)
    except k8s.ConversionError as err:
        raise InjectError(f"App Mesh controller objects: {err}") from err


def inject(text: str, *, appmesh: str = "", **opts) -> tuple[list, list[str]]:
    """(documents, one line per document saying what was done)."""
    docs, said = [], []
    loaded = [d for d in yaml.safe_load_all(text) if d is not None]
    selectors = _controller_objects(loaded, appmesh)
    for doc in loaded:
        picked = None if opts.get("node") else _selected(doc, selectors)
        if isinstance(picked, str):
            out, what = doc, f"unchanged: {picked} (name one with appmesh.k8s.aws/virtualNode)"
        elif picked is not None and not _annotations(doc, _template(doc)).get("virtualNode"):
            out, what = inject_one(doc, **{**opts, "mesh": picked[0], "node": picked[1]})
            if what.startswith("injected"):
                what += " (selected by its podSelector)"
        else:
            out, what = inject_one(doc, **opts)
        docs.append(out)
        meta = doc.get("metadata") or {}
        said.append(f"{doc.get('kind', '?')}/{meta.get('name', '?')}: {what}")
    return docs, said


def cmd_inject(_client, args) -> int:
    text = sys.stdin.read() if args.file == "-" else open(args.file).read()
    try:
        docs, said = inject(text, appmesh=args.appmesh, mesh=args.mesh, node=args.virtual_node, etcd=args.etcd,
                            image=args.image, join_secret=args.join_secret, dns=not args.no_dns)
    except yaml.YAMLError as err:
        print(f"error: {args.file}: not YAML: {err}", file=sys.stderr)
        return 1
    except InjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
    for line in said:
        print(line, file=sys.stderr)
    return 0


def add_subcommands(sub, common) -> None:
    p = sub.add_parser("inject", parents=[common], help="add the meshd sidecar to Kubernetes workloads "
                                                       "(as the App Mesh controller's webhook did), offline")
    p.add_argument("-f", "--file", required=True, help="a manifest file, or - for stdin")
    p.add_argument("--virtual-node", default="", help="the virtual node, when the workload's annotations "
                                                      "do not name it")
    p.add_argument("--appmesh", default="", help="App Mesh controller manifests (appmesh.k8s.aws) whose "
                   "VirtualNodes' podSelectors pick each workload's node, as the controller's webhook did")
    p.add_argument("--etcd", default="http://etcd-client.meshd-system.svc:2379", help="the cluster's etcd endpoints")
    p.add_argument("--image", default=DEFAULT_IMAGE)
    p.add_argument("--join-secret", default="meshd-join-token",
                   help="a Secret whose `token` key holds a bootstrap token ('' for none)")
    p.add_argument("--no-dns", action="store_true", help="leave name resolution alone (the names resolve already)")
    p.set_defaults(fn=cmd_inject)


__all__ = ["add_subcommands", "inject", "inject_one"]
