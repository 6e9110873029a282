"""App Mesh `serviceDiscovery.dns` at run time: a real DNS server (dnslib) whose records and
TTLs the test changes, origins that run no meshd on 127.0.0.x and ::1, and a meshd whose
egress routes to what the node's hostname resolves to (meshd.proxy.discovery)."""
from __future__ import annotations

import time
from collections import Counter
from concurrent import futures

import grpc
import pytest
from dnslib import AAAA, QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from mesh_harness import SAY, start_meshd
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.embedded_etcd import free_port
from meshd.proxy import LocalApp
from meshd.proxy.discovery import NAMESERVERS_ENV
from meshd.security import ClusterKey
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.migration, pytest.mark.dataplane, pytest.mark.etcd]

HOSTNAME = "api.dns.test"
SERVICE = "api.svc.test"
TTL = 1


class Zone(BaseResolver):
    """Answers A and AAAA for the names in `records` (name → [(type, address)]), NXDOMAIN else."""

    def __init__(self):
        self.records: dict[str, list[tuple[str, str]]] = {}
        self.ttl = TTL
        self.queries = 0
        self.delay = 0.0  # seconds each answer is held back

    def resolve(self, request, handler):
        self.queries += 1
        if self.delay:
            time.sleep(self.delay)
        reply = request.reply()
        q = request.q
        recs = self.records.get(str(q.qname).rstrip("."))
        if recs is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for qtype, addr in recs:
            if QTYPE[q.qtype] == qtype:
                reply.add_answer(RR(q.qname, q.qtype, rdata=A(addr) if qtype == "A" else AAAA(addr), ttl=self.ttl))
        return reply


class PlainOrigin:
    """A gRPC origin that runs no meshd, at host:port, answering `<name>:<request>`."""

    def __init__(self, name: str, host: str, port: int):
        self.name = name
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("echo.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(lambda req, ctx: name.encode() + b":" + req)}),))
        bound = self.server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        assert bound == port
        self.server.start()

    def stop(self):
        self.server.stop(0)


@pytest.fixture
def world(etcd, etcd_prefix, tmp_path, monkeypatch):
    """A DNS server, origins at 127.0.0.2-5 and ::1 on one port, and host-a's meshd (app `web`)."""
    zone = Zone()
    dns_port = free_port()
    server = DNSServer(zone, port=dns_port, address="127.0.0.1", logger=DNSLogger("-request,-reply,-truncated,"
                                                                                  "-error,-recv,-send,-data"))
    server.start_thread()
    monkeypatch.setenv(NAMESERVERS_ENV, f"127.0.0.1:{dns_port}")
    port = free_port()
    origins = {f"o{i}": PlainOrigin(f"o{i}", f"127.0.0.{i}", port) for i in (2, 3, 4, 5)}
    origins["v6"] = PlainOrigin("v6", "::1", port)
    key = tmp_path / "cluster.key"
    ClusterKey.generate(key)
    web = LocalApp(mesh="shop", virtual_node="web", port=free_port(), egress="127.0.0.1:0")
    meshd = start_meshd(etcd, etcd_prefix, tmp_path, "host-a", [web], key)
    w = World(zone, server, port, origins, meshd)
    yield w
    w.close()


class World:
    def __init__(self, zone, server, port, origins, meshd):
        self.zone, self.server, self.port, self.origins, self.meshd = zone, server, port, origins, meshd
        self.channel = grpc.insecure_channel(meshd.runtime.addresses["egress:web"],
                                             options=[("grpc.default_authority", f"{SERVICE}:{port}"),
                                                      ("grpc.enable_retries", 0)])
        self.call = self.channel.unary_unary(SAY)
        self.dns_up = True

    def configure(self, dns: dict, mesh_discovery: dict | None = None) -> None:
        r = self.meshd.resources

        def mk(kind, title, doc):
            r.create(kind, parse_json(getattr(pb, f"Create{title}Request"), doc))
        mesh_spec = {"egressFilter": {"type": "ALLOW_ALL"}}
        if mesh_discovery:
            mesh_spec["serviceDiscovery"] = mesh_discovery
        mk(K.MESH, "Mesh", {"meshName": "shop", "spec": mesh_spec})
        mk(K.VIRTUAL_NODE, "VirtualNode", {"meshName": "shop", "virtualNodeName": "web", "spec": {
            "backends": [{"virtualService": {"virtualServiceName": SERVICE}}]}})
        mk(K.VIRTUAL_NODE, "VirtualNode", {"meshName": "shop", "virtualNodeName": "api", "spec": self.api_spec(dns)})
        mk(K.VIRTUAL_SERVICE, "VirtualService", {"meshName": "shop", "virtualServiceName": SERVICE, "spec": {
            "provider": {"virtualNode": {"virtualNodeName": "api"}}}})

    def api_spec(self, dns: dict) -> dict:
        return {"listeners": [{"portMapping": {"port": self.port, "protocol": "grpc"}}],
                "serviceDiscovery": {"dns": {"hostname": HOSTNAME, **dns}}}

    def update_api(self, dns: dict) -> None:
        self.meshd.resources.update(K.VIRTUAL_NODE, parse_json(pb.UpdateVirtualNodeRequest, {
            "meshName": "shop", "virtualNodeName": "api", "spec": self.api_spec(dns)}))

    def answers(self, n: int = 40) -> Counter:
        """Who answered n calls (one at a time); a failed call counts as "error"."""
        out = Counter()
        for i in range(n):
            try:
                out[self.call(b"%d" % i, timeout=5).split(b":", 1)[0].decode()] += 1
            except grpc.RpcError:
                out["error"] += 1
        return out

    def wait_for(self, want: set, timeout: float = 10.0, n: int = 20) -> float:
        """Seconds until n calls in a row are answered by exactly the origins `want`."""
        t0 = time.monotonic()
        while True:
            got = self.answers(n)
            if set(got) == want:
                return time.monotonic() - t0
            assert time.monotonic() - t0 < timeout, (got, want)
            time.sleep(0.1)

    def close(self):
        self.channel.close()
        self.meshd.stop()
        for o in self.origins.values():
            o.stop()
        if self.dns_up:
            self.server.stop()


def test_endpoints_every_answer_follows_a_changed_record_and_outlives_dns_going_down(world):
    world.zone.records[HOSTNAME] = [("A", "127.0.0.2"), ("A", "127.0.0.3")]
    world.configure({})  # responseType ENDPOINTS by default
    world.wait_for({"o2", "o3"})
    listed = world.meshd.resources.list_instances(pb.ListInstancesRequest(mesh_name="shop"))
    assert [i.virtual_node_name for i in listed.instances] == ["web"], "discovered endpoints stay out of etcd"
    # The record changes: within its TTL (1 s) plus one round of calls, only the new answer.
    world.zone.records[HOSTNAME] = [("A", "127.0.0.4")]
    assert world.wait_for({"o4"}, timeout=TTL + 3) < TTL + 3
    # The DNS server goes away: the last answer keeps serving, well past its TTL.
    world.server.stop()
    world.dns_up = False
    time.sleep(3 * TTL + 1)
    assert world.answers(40) == Counter({"o4": 40})


def test_loadbalancer_one_address_kept_until_it_disappears(world):
    world.zone.records[HOSTNAME] = [("A", "127.0.0.2"), ("A", "127.0.0.3")]
    world.configure({"responseType": "LOADBALANCER"})
    world.wait_for({"o2"})
    assert world.answers(40) == Counter({"o2": 40})
    # Reordered answers: the address in use is still among them, so it stays.
    world.zone.records[HOSTNAME] = [("A", "127.0.0.3"), ("A", "127.0.0.2")]
    queries = world.zone.queries
    deadline = time.monotonic() + 5
    while world.zone.queries < queries + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert world.zone.queries >= queries + 2
    assert world.answers(40) == Counter({"o2": 40})
    # Gone from the answers: the first answer takes over.
    world.zone.records[HOSTNAME] = [("A", "127.0.0.3"), ("A", "127.0.0.4")]
    world.wait_for({"o3"}, timeout=TTL + 3)


def test_ip_preference_mesh_level_and_node_override(world):
    world.zone.records[HOSTNAME] = [("A", "127.0.0.2"), ("AAAA", "::1")]
    world.configure({}, mesh_discovery={"ipPreference": "IPv6_ONLY"})
    world.wait_for({"v6"})
    world.update_api({"ipPreference": "IPv4_ONLY"})  # the node's preference overrides the mesh's
    world.wait_for({"o2"})
    world.update_api({"ipPreference": "IPv6_PREFERRED"})
    world.wait_for({"v6"})
    world.zone.records[HOSTNAME] = [("A", "127.0.0.2")]  # no AAAA: IPv6_PREFERRED falls back to A
    world.wait_for({"o2"}, timeout=TTL + 3)


def test_registered_instances_add_to_dns_answers(world):
    world.zone.records[HOSTNAME] = [("A", "127.0.0.2")]
    world.configure({})
    world.wait_for({"o2"})
    world.meshd.resources.register_instance(pb.RegisterInstanceRequest(
        mesh_name="shop", virtual_node_name="api", instance_id="legacy-1", address="127.0.0.5", port=world.port,
        ttl_seconds=60))
    world.wait_for({"o2", "o5"})
    # A DNS change leaves the registered instance in place.
    world.zone.records[HOSTNAME] = [("A", "127.0.0.3")]
    world.wait_for({"o3", "o5"}, timeout=TTL + 3)


def test_resolution_never_blocks_the_data_plane_loop(world):
    """A DNS server that stops answering (each query held past the query lifetime): calls
    are still answered at once while discovery waits on its own thread."""
    world.zone.records[HOSTNAME] = [("A", "127.0.0.2")]
    world.configure({})
    world.wait_for({"o2"})
    world.zone.delay = 5.0
    queries = world.zone.queries
    deadline = time.monotonic() + 5
    while world.zone.queries == queries and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.zone.queries > queries  # discovery now waits on a query that gets no answer in time
    t0 = time.monotonic()
    assert world.answers(20) == Counter({"o2": 20})
    assert time.monotonic() - t0 < 1.0
    world.zone.delay = 0.0


def test_a_changed_hostname_is_followed_and_nxdomain_empties_the_node(world):
    """NXDOMAIN is an answer, not a failure (Envoy's resolver reports it as success with no
    hosts): the name is gone, so are its endpoints."""
    world.zone.records[HOSTNAME] = [("A", "127.0.0.2")]
    world.zone.records["other.dns.test"] = [("A", "127.0.0.3")]
    world.configure({})
    world.wait_for({"o2"})
    world.update_api({"hostname": "other.dns.test"})
    world.wait_for({"o3"})
    del world.zone.records["other.dns.test"]
    world.wait_for({"error"}, timeout=TTL + 3)
