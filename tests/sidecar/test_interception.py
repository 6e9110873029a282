"""Transparent interception (issue 13): apps in a pod dial plain names; `meshd proxy-init`'s
iptables rules redirect their connections to the pod's meshd, which routes them across hosts
over mTLS with nothing changed in the apps.

The world (one per module), two network-namespace hosts linked as on one network: pod `a`
holds the calling apps and their meshd sidecar (`meshd sidecar` from the example ECS task
definition's environment, run with the group proxy-init ignores); host `b` runs meshd B and
the origins it serves; the test host (the root namespace) runs etcd and the pod's resolver:

    catalog.shop.local:9080 (gRPC)  router, 80 % catalog-v1 (two instances, one always
                                     failing UNAVAILABLE; outlier detection), 20 %
                                     catalog-v2; retries
    pages.shop.local:8000 (HTTP)     node pages (an HTTP/1.1 origin)
    echo.shop.local:7000 (TCP)       node echo (a byte-exact TCP echo)

The pod's resolver is a test DNS server on the host (it knows only `outside.test`, a TCP
echo outside the mesh); proxy-init sends the apps' queries to the sidecar's DNS responder,
which answers the mesh's names and forwards the rest there.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.embedded_etcd import EmbeddedEtcd
from meshd.security import ClusterKey
from meshd.v1 import admin_pb2 as pb

from .apps import EchoHandler, EchoServer
from .image import runtime
from .pods import PYTHON, REPO, SIDECAR_GID, Pod, connect, free_index, sweep_orphans
from tests.cluster.harness import free_octet

pytestmark = [pytest.mark.sidecar, pytest.mark.dataplane, pytest.mark.etcd]

PREFIX = "/meshd-sidecar/v1/"
NAMES = ("catalog.shop.local", "pages.shop.local", "echo.shop.local")
APPS = ["tests/sidecar/apps.py"]
ADMIN_PORT = 9901
TASK_DEFINITION = REPO / "deploy" / "ecs" / "task-definition.json"
# ECS's proxyConfiguration properties -> the route manager's environment.
ECS_PROPERTIES = {"IgnoredUID": "APPMESH_IGNORE_UID", "IgnoredGID": "APPMESH_IGNORE_GID",
                  "ProxyIngressPort": "APPMESH_ENVOY_INGRESS_PORT", "ProxyEgressPort": "APPMESH_ENVOY_EGRESS_PORT",
                  "AppPorts": "APPMESH_APP_PORTS", "EgressIgnoredIPs": "APPMESH_EGRESS_IGNORED_IP",
                  "EgressIgnoredPorts": "APPMESH_EGRESS_IGNORED_PORTS"}


def task_definition_env() -> dict[str, str]:
    """The environment of the example task definition's `envoy` container, verbatim."""
    td = json.loads(TASK_DEFINITION.read_text())
    envoy = next(c for c in td["containerDefinitions"] if c["name"] == td["proxyConfiguration"]["containerName"])
    return {e["name"]: e["value"] for e in envoy["environment"]}


def proxy_init_env() -> dict[str, str]:
    td = json.loads(TASK_DEFINITION.read_text())
    env = {ECS_PROPERTIES[p["name"]]: p["value"] for p in td["proxyConfiguration"]["properties"]}
    return {**env, "APPMESH_START_ENABLED": "1", "APPMESH_IGNORE_GID": str(SIDECAR_GID), "APPMESH_ENABLE_IPV6": "1",
            "MESHD_DNS_PORT": "15053"}


def _serve(server) -> None:
    threading.Thread(target=server.serve_forever, daemon=True).start()


def _mesh(resources, egress_filter: str) -> None:
    def mk(kind, title, doc):
        resources.create(kind, parse_json(getattr(pb, f"Create{title}Request"), doc))

    def node(name, port, protocol, backends=(), **listener):
        mk(K.VIRTUAL_NODE, "VirtualNode", {"meshName": "shop", "virtualNodeName": name, "spec": {
            "listeners": [{"portMapping": {"port": port, "protocol": protocol}, **listener}],
            "serviceDiscovery": {"dns": {"hostname": f"{name}.shop.local"}},
            "backends": [{"virtualService": {"virtualServiceName": b}} for b in backends]}})
    mk(K.MESH, "Mesh", {"meshName": "shop", "spec": {"egressFilter": {"type": egress_filter}}})
    node("web", 8080, "http", NAMES)
    # A failing instance is ejected after five errors (App Mesh's outlier detection); until
    # then the route's retries take its calls elsewhere.
    node("catalog-v1", 9080, "grpc", outlierDetection={
        "maxServerErrors": 5, "interval": {"unit": "s", "value": 10},
        "baseEjectionDuration": {"unit": "s", "value": 60}, "maxEjectionPercent": 50})
    node("catalog-v2", 9080, "grpc")
    node("pages", 8000, "http")
    node("echo", 7000, "tcp")
    mk(K.VIRTUAL_ROUTER, "VirtualRouter", {"meshName": "shop", "virtualRouterName": "catalog", "spec": {
        "listeners": [{"portMapping": {"port": 9080, "protocol": "grpc"}}]}})
    mk(K.ROUTE, "Route", {"meshName": "shop", "virtualRouterName": "catalog", "routeName": "canary", "spec": {
        "grpcRoute": {"match": {"serviceName": "echo.Echo"},
                      "action": {"weightedTargets": [{"virtualNode": "catalog-v1", "weight": 80},
                                                     {"virtualNode": "catalog-v2", "weight": 20}]},
                      "retryPolicy": {"maxRetries": 3, "perRetryTimeout": {"unit": "s", "value": 5},
                                      "grpcRetryEvents": ["unavailable"], "tcpRetryEvents": ["connection-error"]}}}})
    mk(K.VIRTUAL_SERVICE, "VirtualService", {"meshName": "shop", "virtualServiceName": "catalog.shop.local",
                                             "spec": {"provider": {"virtualRouter": {"virtualRouterName": "catalog"}}}})
    for name, n in (("pages.shop.local", "pages"), ("echo.shop.local", "echo")):
        mk(K.VIRTUAL_SERVICE, "VirtualService", {"meshName": "shop", "virtualServiceName": name,
                                                 "spec": {"provider": {"virtualNode": {"virtualNodeName": n}}}})


class _Upstream:
    """The pod's own resolver (dnslib's resolver interface): outside.test only."""

    def __init__(self, address: str):
        self.address = address

    def resolve(self, request, handler):
        from dnslib import QTYPE, RCODE, RR, A  # noqa: PLC0415

        reply = request.reply()
        if str(request.q.qname).rstrip(".") == "outside.test" and request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(self.address), ttl=5))
        elif str(request.q.qname).rstrip(".") != "outside.test":
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class World:
    """Pod `a` (the calling apps and their sidecar) and host `b` (a network namespace of its
    own: meshd B and the origins), linked directly as two hosts on one network; etcd and
    the pod's resolver run on the test host, which both reach through their own links."""

    def __init__(self, tmp):
        sweep_orphans()
        self.tmp = tmp
        self.closers = []
        try:
            self.pod = Pod("a", free_index())
            self.closers.append(self.pod.close)
            self.host_b = Pod("b", free_index())
            self.closers.append(self.host_b.close)
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self):
        tmp, pod, hb = self.tmp, self.pod, self.host_b
        from dnslib.server import DNSServer  # noqa: PLC0415

        import registry  # noqa: PLC0415
        from meshd.api.resources import Resources  # noqa: PLC0415
        from meshd.proxy.dns import _QuietLogger  # noqa: PLC0415
        self.link = free_octet("10.232.{}.0/30", 239)  # links between pods live in the pods: 10.232.<link + n>
        self.a_ip, self.b_ip = connect(pod, hb, self.link)
        for tcp in (False, True):
            dns = DNSServer(_Upstream(pod.host_ip), address=pod.host_ip, port=53, tcp=tcp, logger=_QuietLogger())
            dns.start_thread()
            self.closers.insert(0, dns.server.server_close)
            self.closers.insert(0, dns.server.shutdown)
        self.etcd = EmbeddedEtcd(tmp / "etcd", host=pod.host_ip, supervise=False).start()
        self.closers.insert(0, self.etcd.stop)
        self.store = registry.Store([self.etcd.url], prefix=PREFIX, timeout=3.0)
        self.closers.insert(0, self.store.close)
        self.resources = Resources(self.store, host="test")
        key = tmp / "cluster.key"
        ClusterKey.generate(key)
        # Host b: the origins (one catalog-v1 instance fails every call with UNAVAILABLE) and meshd B.
        origins = {"v1a": ("catalog-v1", 7101, 0), "v1b": ("catalog-v1", 7102, 1), "v2": ("catalog-v2", 7103, 0)}
        for iid, (node, port, fail) in origins.items():
            hb.popen([PYTHON, *APPS, "grpc-origin", f"catalog-{iid}", str(port), str(fail)], log=tmp / f"{iid}.log")
        hb.popen([PYTHON, *APPS, "pages", "8000"], log=tmp / "pages.log")
        hb.popen([PYTHON, *APPS, "echo", "7000"], log=tmp / "echo.log")
        apps = [{"mesh": "shop", "virtualNode": node, "port": port, "instanceId": iid}
                for iid, (node, port, _) in origins.items()]
        apps += [{"mesh": "shop", "virtualNode": "pages", "port": 8000, "instanceId": "pages", "protocol": "http"},
                 {"mesh": "shop", "virtualNode": "echo", "port": 7000, "instanceId": "echo", "protocol": "tcp"}]
        (tmp / "b.yaml").write_text(json.dumps({"apps": apps, "ingress": f"{self.b_ip}:15443",
                                                "ingressHttp": f"{self.b_ip}:15444", "drainSeconds": 0.5}))
        self.b_log = tmp / "meshd-b.log"
        hb.popen([PYTHON, "-m", "meshd.cli.meshd_main", "run", "--config", str(tmp / "b.yaml"), "--etcd",
                  self.etcd.url, "--etcd-prefix", PREFIX, "--cluster-key", str(key), "--state-dir", str(tmp / "b"),
                  "--host-name", "host-b", "--insecure-local", "--admin", "127.0.0.1:9902",
                  "--metrics", f"{hb.ip}:9464", "--lease-ttl", "5"], log=self.b_log)
        _mesh(self.resources, "ALLOW_ALL")
        # Not in the mesh: reached only by passing through (ALLOW_ALL).
        self.outside = EchoServer((pod.host_ip, 0), EchoHandler)
        _serve(self.outside)
        self.closers.insert(0, self.outside.shutdown)
        pod.popen([PYTHON, *APPS, "serve", "8080"], log=tmp / "web.log")  # the pod's app, on AppPorts
        self.statsd = tmp / "statsd.lines"  # what a DogStatsD daemon in the task receives
        pod.popen([PYTHON, *APPS, "udp", "8125", str(self.statsd)], log=tmp / "statsd.log")
        self.xray = tmp / "xray.datagrams"  # what the X-Ray daemon in the task receives
        pod.popen([PYTHON, *APPS, "udp", "2000", str(self.xray)], log=tmp / "xray.log")
        # As ECS's agent does with the task definition: proxyConfiguration -> the route
        # manager's environment (plus the group the test's sidecar runs with, and DNS).
        self.init = pod.run([PYTHON, "-m", "meshd.cli.meshd_main", "proxy-init"], env=proxy_init_env()).stdout
        self.log = tmp / "sidecar.log"
        # The `envoy` container of the example task definition, its environment verbatim;
        # what the test's cluster differs in (etcd address, the cluster key for the join
        # token secret, the task's address) is added.
        self.sidecar_env = {**task_definition_env(), "MESHD_ETCD": self.etcd.url, "MESHD_ETCD_PREFIX": PREFIX,
                            "MESHD_CLUSTER_KEY": str(key), "MESHD_INSTANCE_ADDRESS": self.a_ip,
                            "MESHD_INSTANCE_ID": "web-a", "MESHD_STATE_DIR": str(tmp / "a"),
                            "MESHD_INGRESS": f"{self.a_ip}:15443", "MESHD_DRAIN_SECONDS": "1",
                            "MESHD_STATSD_FLUSH_SECONDS": "1"}
        # The image's entrypoint as the image runs it (its ENTRYPOINT, CMD and ENV; this
        # virtualenv's `meshd` for the image's, and the state directory under the test's tmp).
        image = runtime()
        argv = [str(Path(PYTHON).parent / image.entrypoint[0]), *image.entrypoint[1:], *image.cmd]
        self.sidecar_env = {**image.env, "PATH": f"{Path(PYTHON).parent}:{os.environ['PATH']}",
                            **self.sidecar_env}
        self.a = pod.popen(argv, log=self.log, gid=SIDECAR_GID, env=self.sidecar_env)
        deadline = time.monotonic() + 60
        while True:  # routable: the sidecar has its table and host b's instances
            r = self.app("grpc", "catalog.shop.local:9080", "1", check=False)
            if r.get("answers"):
                break
            if self.a.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the sidecar never routed: {r}\n{self.log.read_text()[-3000:]}\n"
                                     f"{self.b_log.read_text()[-2000:]}")
            time.sleep(0.5)

    def b_metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.host_b.ip}:9464/metrics", timeout=10) as r:
            return r.read().decode()

    def app(self, *args: str, check: bool = True) -> dict:
        """Run an unmodified app in the pod (uid 0, group 0: intercepted); its JSON result."""
        p = self.pod.run([PYTHON, *APPS, *args], timeout=240, check=check)
        try:
            return json.loads(p.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            if check:
                raise AssertionError(f"app {args} printed no result: {p.stdout}\n{p.stderr}") from None
            return {"error": p.stderr[-2000:]}

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.pod.ip}:{ADMIN_PORT}/stats/prometheus", timeout=10) as r:
            return r.read().decode()

    def intercepted(self, protocol: str, outcome: str) -> float:
        return _total(self.metrics(), "meshd_intercepted_total", protocol=protocol, outcome=outcome)

    def close(self):
        for c in self.closers:
            try:
                c()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("sidecar"))
    yield w
    w.close()


def _total(text: str, name: str, **labels) -> float:
    """The sum of a metric's samples whose labels include `labels`, from exposition text."""
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _egress_filter(world, kind: str) -> None:
    world.resources.update(K.MESH, parse_json(pb.UpdateMeshRequest, {
        "meshName": "shop", "spec": {"egressFilter": {"type": kind}}}))


def _redirected(world, family: int = 4) -> int:
    """Connections the pod's REDIRECT rule sent to meshd (nat rules see a connection's first packet)."""
    out = world.pod.iptables("-t", "nat", "-L", "MESHD_EGRESS", "-n", "-v", "-x", family=family)
    return sum(int(line.split()[0]) for line in out.splitlines() if "REDIRECT" in line)


def test_grpc_app_dialling_a_plain_name_gets_the_canary_split_retries_and_mtls(world):
    r = world.app("grpc", "catalog.shop.local:9080", "5000")
    assert r["failures"] == {}, r  # the failing v1 instance is retried away
    answers = r["answers"]
    assert set(answers) <= {"catalog-v1a", "catalog-v2"}, answers  # v1b never answers OK
    v2 = answers.get("catalog-v2", 0) / 5000
    assert abs(v2 - 0.20) <= 0.02, answers
    # Across hosts over mTLS: meshd B's ingress counted the calls under the caller's verified
    # identity (source_node comes from the client certificate's SPIFFE ID).
    scraped = world.b_metrics()
    seen = sum(float(m.group(1)) for m in re.finditer(
        r'^meshd_requests_total\{[^}]*direction="ingress"[^}]*source_node="web"[^}]*\} (\S+)$', scraped, re.M))
    assert seen >= 5000, scraped[-3000:]
    assert world.intercepted("http2", "routed") >= 5000


def test_http1_app_with_a_plain_url_is_routed_by_host(world):
    r = world.app("http", "http://pages.shop.local:8000/hello", "20")
    assert r["failures"] == {} and sum(r["bodies"].values()) == 20, r
    for body in r["bodies"]:
        seen = json.loads(body)
        # Every request carries the trace headers the sidecar set (X-Ray is on in the task
        # definition), sampled or not; the rest is the origin's view of the plain call.
        assert seen.pop("x-amzn-trace-id").startswith("Root=1-") and seen.pop("traceparent").startswith("00-")
        assert seen == {"app": "pages", "path": "/hello", "host": "pages.shop.local:8000", "internal": []}
    assert world.intercepted("http", "routed") >= 20


def test_tcp_app_gets_a_byte_exact_echo_on_the_service_port(world):
    r = world.app("tcp", "echo.shop.local", "7000", "300000")
    assert r.pop("address").startswith("240.240."), r  # the responder's address for the name
    assert r == {"echoed": True, "received": 300000, "error": ""}, r
    r6 = world.app("tcp6", "echo.shop.local", "7000", "70000")  # the same name, dialled over IPv6
    assert r6.pop("address").startswith("2001:2::"), r6
    assert r6 == {"echoed": True, "received": 70000, "error": ""}, r6
    assert _redirected(world, family=6) >= 1


def test_non_mesh_destination_passes_through_under_allow_all_and_is_refused_under_drop_all(world):
    port = world.outside.server_address[1]
    before = world.intercepted("tcp", "passthrough")
    r = world.app("tcp", "outside.test", str(port), "5000")  # the pod's resolver's answer
    assert r == {"echoed": True, "received": 5000, "error": "", "address": world.pod.host_ip}, r
    assert world.intercepted("tcp", "passthrough") == before + 1
    _egress_filter(world, "DROP_ALL")
    try:
        refused = world.intercepted("tcp", "refused")
        deadline = time.monotonic() + 15
        while True:
            r = world.app("tcp", "outside.test", str(port), "5000")
            if not r["echoed"]:
                break
            assert time.monotonic() < deadline, "DROP_ALL never reached the sidecar"
            time.sleep(0.3)
        assert r["received"] == 0, r
        assert world.intercepted("tcp", "refused") > refused
        # Mesh services still route under DROP_ALL: they are the node's backends.
        assert world.app("tcp", "echo.shop.local", "7000", "1000")["echoed"]
    finally:
        _egress_filter(world, "ALLOW_ALL")


def test_dns_answers_mesh_names_forwards_others_and_refuses_unknown_mesh_names(world):
    a = world.app("dns", "catalog.shop.local", "A")
    assert a["rcode"] == "NOERROR" and len(a["answers"]) == 1 and a["answers"][0].startswith("240.240."), a
    aaaa = world.app("dns", "catalog.shop.local", "AAAA")
    assert aaaa["rcode"] == "NOERROR" and aaaa["answers"][0].startswith("2001:2::"), aaaa
    assert world.app("dns", "outside.test", "A") == {"rcode": "NOERROR", "answers": [world.pod.host_ip]}
    assert world.app("dns", "nope.shop.local", "A") == {"rcode": "NXDOMAIN", "answers": []}
    assert world.app("dns", "pages.shop.local", "A")["answers"] != a["answers"]  # one address per name


def test_callers_from_outside_the_mesh_reach_the_app_through_the_sidecar(world):
    """Inbound: a connection from the host to the app's port is redirected to the sidecar,
    which delivers it to the app with meshd's internal headers dropped."""
    def in_redirected():
        out = world.pod.iptables("-t", "nat", "-L", "MESHD_INGRESS", "-n", "-v", "-x")
        return sum(int(line.split()[0]) for line in out.splitlines() if "REDIRECT" in line)
    n0, i0 = in_redirected(), world.intercepted("http", "inbound")
    req = urllib.request.Request(f"http://{world.pod.ip}:8080/orders?id=7",
                                 headers={"x-meshd-service": "catalog.shop.local", "x-meshd-instance": "x/y/z"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert json.loads(r.read()) == {"app": "web", "path": "/orders?id=7", "host": f"{world.pod.ip}:8080",
                                        "internal": []}
    assert in_redirected() == n0 + 1
    assert world.intercepted("http", "inbound") == i0 + 1


def test_garbage_at_the_sidecars_listeners_is_refused_and_nothing_else_is_lost(world):
    """Random bytes dialled straight at the intercepting listener (not redirected: served as
    an explicit egress, which takes HTTP only), at the inbound one, and at the DNS
    responder: each connection is closed (or the datagram dropped), counted, and the
    sidecar goes on routing."""
    direct = world.intercepted("tcp", "direct")
    assert world.app("garbage", "127.0.0.1", "15001", "tcp") == {"closed": True, "received": 0}
    assert world.intercepted("tcp", "direct") == direct + 1
    assert world.app("garbage", world.a_ip, "15000", "tcp") == {"closed": True, "received": 0}
    dns = world.app("garbage", "127.0.0.1", "15053", "udp")
    assert dns["after"] == "NOERROR" and dns["answers"][0].startswith("240.240."), dns
    r = world.app("grpc", "catalog.shop.local:9080", "20")
    assert r["failures"] == {} and sum(r["answers"].values()) == 20, r
    assert world.a.poll() is None


def test_meshd_own_connections_are_never_redirected(world):
    """Every redirected connection is an app's: the REDIRECT rule's count grows by exactly
    the connections the apps made, while the sidecar keeps its own (etcd, meshd B's
    ingress) under the ignored group's RETURN rule."""
    n0 = _redirected(world)
    for _ in range(5):
        assert world.app("tcp", "echo.shop.local", "7000", "100")["echoed"]
    assert _redirected(world) - n0 == 5
    out = world.pod.iptables("-t", "nat", "-L", "MESHD_EGRESS", "-n", "-v", "-x")
    own = [line for line in out.splitlines() if f"owner GID match {SIDECAR_GID}" in line]
    assert own and int(own[0].split()[0]) > 0, out


def test_sidecar_from_the_task_definition_is_live_and_passes_its_health_check(world):
    admin = f"http://{world.pod.ip}:{ADMIN_PORT}"
    with urllib.request.urlopen(f"{admin}/server_info", timeout=10) as r:
        info = json.loads(r.read())
    assert info["state"] == "LIVE" and info["version"].startswith("meshd/"), info
    assert info["node"]["cluster"] == "shop/web", info
    # The task definition's own probe, unchanged, run in the pod as ECS runs it.
    td = json.loads(TASK_DEFINITION.read_text())
    check = next(c for c in td["containerDefinitions"] if c["name"] == "envoy")["healthCheck"]["command"]
    assert check[0] == "CMD-SHELL"
    assert world.pod.run(["sh", "-c", check[1]], check=False).returncode == 0
    # And the image's own HEALTHCHECK, the same probe.
    assert runtime().healthcheck == check[1]
    assert world.pod.run(["sh", "-c", runtime().healthcheck], check=False).returncode == 0
    with urllib.request.urlopen(f"{admin}/ready", timeout=10) as r:
        assert r.status == 200 and r.read() == b"LIVE\n"
    with urllib.request.urlopen(f"{admin}/config_dump", timeout=10) as r:
        dump = json.loads(r.read())
    assert dump["resource"] == {"mesh": "shop", "kind": "virtualNode", "name": "web", "owner": "111122223333"}
    assert dump["spec"]["listeners"][0]["portMapping"] == {"port": 8080, "protocol": "http"}
    assert {"intercept:web", "intercept_in:web", "dns", "ingress"} <= set(dump["listeners"]), dump
    assert dump["route_table"]["generation"] >= 1
    with urllib.request.urlopen(f"{admin}/stats", timeout=10) as r:
        assert b"meshd_intercepted_total" in r.read()
    # The Envoy variables meshd does not act on are named once each, with what it does instead.
    log = world.log.read_text()
    assert "is not acted on" not in log  # every variable of the example task definition is
    assert "X-Ray tracing on" in log


# DogStatsD's datagram format: <name>:<value>|<type>[|@<rate>][|#<tag>[:<value>],...]
_TAG = r"[A-Za-z0-9_.:/\-]+"
DOGSTATSD = re.compile(rf"^[A-Za-z][A-Za-z0-9_.]*:-?[0-9.]+\|(c|g|ms|h|d|s)(\|@[0-9.]+)?(\|#{_TAG}(,{_TAG})*)?$")


def test_dogstatsd_lines_carry_app_mesh_tags_and_the_metrics_extension(world):
    """ENABLE_ENVOY_DOG_STATSD, ENABLE_ENVOY_STATS_TAGS and APPMESH_METRIC_EXTENSION_VERSION from
    the task definition: what a DogStatsD daemon on 127.0.0.1:8125 in the task receives."""
    r = world.app("grpc", "catalog.shop.local:9080", "200")
    assert r["failures"] == {}, r
    deadline = time.monotonic() + 15
    per_target = 0.0
    while time.monotonic() < deadline:
        time.sleep(1.2)  # a flush interval
        lines = [ln for ln in world.statsd.read_text().splitlines() if ln]
        per_target = sum(float(ln.split(":", 1)[1].split("|", 1)[0]) for ln in lines
                         if ln.startswith("envoy.appmesh.RequestCountPerTarget:")
                         and "TargetVirtualService:catalog.shop.local" in ln)
        if per_target >= 200:
            break
    bad = [ln for ln in lines if not DOGSTATSD.match(ln)]
    assert lines and not bad, bad[:5]
    requests = [ln for ln in lines if ln.startswith("meshd.requests:")]
    assert requests and all("appmesh.mesh:shop" in ln and "appmesh.virtual_node:web" in ln for ln in requests)
    assert per_target >= 200, lines[-20:]  # every call this node made to catalog counted once
    times = [ln for ln in lines if ln.startswith("envoy.appmesh.TargetResponseTime:")]
    assert times and all("|ms|" in ln and "Mesh:shop" in ln and "VirtualNode:web" in ln for ln in times), times
    assert any(ln.startswith("envoy.appmesh.HTTPCode_Target_2XX_Count:") for ln in lines)


def _segments(world, since: float) -> list[dict]:
    """The X-Ray segment documents the daemon received (started at or after `since`)."""
    lines = world.xray.read_text().splitlines()
    out = []
    for header, doc in zip(lines, lines[1:]):
        if header == '{"format": "json", "version": 1}' and doc.startswith("{"):
            seg = json.loads(doc)
            if seg["start_time"] >= since:
                out.append(seg)
    return out


def test_xray_segments_follow_the_sampling_rate_and_the_callers_trace(world):
    """ENABLE_ENVOY_XRAY_TRACING from the task definition: new traces sampled at App Mesh's
    default 5%, a caller's X-Amzn-Trace-Id continued (and told to the next hop beside W3C
    traceparent), segments in X-Ray's document format on the daemon's UDP port."""
    t0 = time.time()
    r = world.app("grpc", "catalog.shop.local:9080", "2000")
    assert r["failures"] == {}, r
    time.sleep(1.5)
    sampled = [s for s in _segments(world, t0) if s["http"]["request"]["url"].endswith("/echo.Echo/Say")]
    assert 60 <= len(sampled) <= 140, len(sampled)  # 5% of 2,000: 100, sd 9.7
    for s in sampled:
        assert re.fullmatch(r"1-[0-9a-f]{8}-[0-9a-f]{24}", s["trace_id"]) and re.fullmatch(r"[0-9a-f]{16}", s["id"])
        assert s["name"] == "shop/web" and s["origin"] == "AWS::AppMesh::Proxy" and s["end_time"] >= s["start_time"]
        assert s["http"]["response"]["status"] == 200 and "parent_id" not in s and not s.get("fault")
        assert s["annotations"]["target_node"] in ("catalog-v1", "catalog-v2")
    root, parent = "1-5759e988-bd862e3fe1be46a994272793", "53995c3f42cd8ad8"
    t1 = time.time()
    r = world.app("http", "http://pages.shop.local:8000/traced", "1",
                  f"X-Amzn-Trace-Id: Root={root};Parent={parent};Sampled=1")
    seen = json.loads(next(iter(r["bodies"])))
    fields = dict(p.split("=") for p in seen["x-amzn-trace-id"].split(";"))
    assert fields["Root"] == root and fields["Sampled"] == "1" and re.fullmatch(r"[0-9a-f]{16}", fields["Parent"])
    assert seen["traceparent"] == f"00-5759e988bd862e3fe1be46a994272793-{fields['Parent']}-01"
    time.sleep(1.5)
    mine = [s for s in _segments(world, t1) if s["trace_id"] == root]
    assert len(mine) == 1 and mine[0]["id"] == fields["Parent"] and mine[0]["parent_id"] == parent, mine
    assert mine[0]["http"]["request"] == {"method": "GET", "url": "http://pages.shop.local:8000/traced"}


def test_the_example_task_definition_is_valid_for_ecs():
    """Offline, against botocore's ECS model: RegisterTaskDefinition's input shape (types,
    required members) and every enum value; the envoy container is meshd's, nothing else."""
    import botocore.session  # noqa: PLC0415
    from botocore.validate import ParamValidator  # noqa: PLC0415

    td = json.loads(TASK_DEFINITION.read_text())
    ecs = botocore.session.get_session().get_service_model("ecs")
    shape = ecs.operation_model("RegisterTaskDefinition").input_shape
    report = ParamValidator().validate(td, shape)
    assert not report.has_errors(), report.generate_report()
    bad = _enum_violations(td, shape)
    assert bad == [], bad
    assert _enum_violations({**td, "proxyConfiguration": {**td["proxyConfiguration"], "type": "ENVOY"}}, shape)
    assert td["proxyConfiguration"]["type"] == "APPMESH"
    envoy = next(c for c in td["containerDefinitions"] if c["name"] == "envoy")
    assert "meshd" in envoy["image"] and envoy["user"] == "1337"


def _enum_violations(value, shape, path="") -> list[str]:
    """Values outside their shape's enum (botocore's validator checks types, not enums)."""
    out = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for k, v in value.items():
            if k in shape.members:
                out += _enum_violations(v, shape.members[k], f"{path}.{k}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, v in enumerate(value):
            out += _enum_violations(v, shape.member, f"{path}[{i}]")
    elif shape.type_name == "string" and getattr(shape, "enum", None) and value not in shape.enum:
        out.append(f"{path}: {value!r} not in {shape.enum}")
    return out


def test_a_virtual_gateway_runs_as_a_sidecar_from_its_arn(world, tmp_path):
    """APPMESH_RESOURCE_ARN naming a virtual gateway: the sidecar serves its listeners in a
    pod of its own, and a caller from outside the mesh reaches a service through a gateway
    route, across hosts over mTLS."""
    res = world.resources

    def mk(kind, title, doc):
        res.create(kind, parse_json(getattr(pb, f"Create{title}Request"), doc))
    mk(K.VIRTUAL_GATEWAY, "VirtualGateway", {"meshName": "shop", "virtualGatewayName": "edge", "spec": {
        "listeners": [{"portMapping": {"port": 8088, "protocol": "http"}}]}})
    mk(K.GATEWAY_ROUTE, "GatewayRoute", {"meshName": "shop", "virtualGatewayName": "edge", "gatewayRouteName": "pages",
                                         "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {"target": {
                                             "virtualService": {"virtualServiceName": "pages.shop.local"}}}}}})
    gw = Pod("gw", free_index())
    try:
        # The gateway's host and host b on one network; meshd B's ingress is reached over it.
        _, b_side = connect(gw, world.host_b, world.link + 1)
        gw.run(["ip", "route", "add", f"{world.b_ip}/32", "via", b_side])
        env = {"APPMESH_RESOURCE_ARN": "arn:aws:appmesh:us-west-2:111122223333:mesh/shop/virtualGateway/edge",
               "ENVOY_LOG_LEVEL": "info", "MESHD_ETCD": world.etcd.url, "MESHD_ETCD_PREFIX": PREFIX,
               "MESHD_CLUSTER_KEY": world.sidecar_env["MESHD_CLUSTER_KEY"], "MESHD_INSTANCE_ADDRESS": gw.ip,
               "MESHD_INSTANCE_ID": "edge-1", "MESHD_STATE_DIR": str(tmp_path / "gw"), "MESHD_DRAIN_SECONDS": "1",
               "MESHD_INGRESS": f"{gw.ip}:15443"}
        log = tmp_path / "gw.log"
        image = runtime()
        proc = gw.popen([str(Path(PYTHON).parent / image.entrypoint[0]), *image.entrypoint[1:], *image.cmd],
                        log=log, env={**image.env, "PATH": f"{Path(PYTHON).parent}:{os.environ['PATH']}", **env})
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://{gw.ip}:{ADMIN_PORT}/server_info", timeout=5) as r:
                    if json.loads(r.read())["state"] == "LIVE":
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://{gw.ip}:8088/menu", timeout=10) as r:
            seen = json.loads(r.read())
        assert {k: seen[k] for k in ("app", "path", "host", "internal")} == {
            "app": "pages", "path": "/menu", "host": "pages.shop.local", "internal": []}, seen
        with urllib.request.urlopen(f"http://{gw.ip}:{ADMIN_PORT}/config_dump", timeout=10) as r:
            dump = json.loads(r.read())
        assert dump["resource"]["kind"] == "virtualGateway" and "gateway:edge:8088" in dump["listeners"], dump
    finally:
        gw.close()
        res.delete(K.GATEWAY_ROUTE, parse_json(pb.DeleteGatewayRouteRequest, {
            "meshName": "shop", "virtualGatewayName": "edge", "gatewayRouteName": "pages"}))
        res.delete(K.VIRTUAL_GATEWAY, parse_json(pb.DeleteVirtualGatewayRequest, {
            "meshName": "shop", "virtualGatewayName": "edge"}))


def test_sigterm_drains_the_sidecar_deregistering_first(world):
    """Last in the module: the sidecar stops. Its instance leaves etcd before it exits, and it
    exits 0."""
    from meshd.v1 import admin_pb2  # noqa: PLC0415

    def instances():
        req = admin_pb2.ListInstancesRequest(mesh_name="shop", virtual_node_name="web")
        return [i.instance_id for i in world.resources.list_instances(req).instances]
    assert instances() == ["web-a"]
    world.a.send_signal(15)
    deadline = time.monotonic() + 20
    while instances():
        assert time.monotonic() < deadline, "the sidecar's instance was never deregistered"
        time.sleep(0.05)
    assert world.a.poll() is None or world.a.returncode == 0  # deregistered while (or before) draining
    assert world.a.wait(30) == 0, world.log.read_text()[-2000:]
