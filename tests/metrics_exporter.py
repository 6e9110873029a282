"""A real prometheus_client registry holding meshd's metric contract, served over HTTP on a
free port: the metrics text the meshctl views and the dashboard tests read, produced by
Prometheus's own client library rather than written by hand."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from meshd.embedded_etcd import free_port

FLOW = ["direction", "mesh", "source_node", "virtual_service", "route", "target_node"]
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Exporter:
    """One meshd's worth of the metric contract in a real registry, served on a free port."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("meshd_requests", "Requests by flow and outcome",
                                [*FLOW, "code", "grpc_status", "response_class"], registry=self.registry)
        self.duration = Histogram("meshd_request_duration_seconds", "Request latency", FLOW,
                                  buckets=BUCKETS, registry=self.registry)
        self.retries = Counter("meshd_retries", "Retries",
                               ["direction", "mesh", "virtual_service", "route", "target_node", "reason"],
                               registry=self.registry)
        Gauge("meshd_config_generation", "Route table generation", ["mesh"], registry=self.registry).labels("shop").set(3)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    def call(self, n, *, direction="egress", source="web", service="api.shop.local", route="api",
             target="api-v1", code="200", grpc_status="0", seconds=0.004, mesh="shop"):
        flow = (direction, mesh, source, service, route, target)
        cls = "none" if code == "0" else f"{code[0]}xx"
        self.requests.labels(*flow, code, grpc_status, cls).inc(n)
        histogram = self.duration.labels(*flow)  # n = 0 still creates the series, at zero
        for _ in range(n):
            histogram.observe(seconds)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
