"""Observability of the data plane: Prometheus metrics, OpenTelemetry traces and App Mesh
access logs, fed by the runtime's per-request hooks through one `Observer`.

This package imports nothing of the data plane or the admin API: the composition root
hands it the engines' counter functions, and the runtime hands it request heads.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import yaml
from prometheus_client import make_wsgi_app

from meshd.observe.metrics import Metrics
from meshd.observe.observer import EGRESS, GATEWAY, INGRESS, TCP, Exchange, Observer

log = logging.getLogger("meshd.observe")

DEFAULT_METRICS = "127.0.0.1:9464"  # OpenTelemetry's Prometheus exporter port


@dataclass
class ObserveConfig:
    """`meshd run`'s observability settings (flags and the config file's `observability`)."""

    metrics: str = DEFAULT_METRICS  # HOST:PORT of /metrics; port 0 picks a free one; "" turns it off
    # Traces: on when an OTLP endpoint is given here or in OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT.
    tracing_endpoint: str = ""  # e.g. http://collector:4317 (OTLP gRPC; http:// means no TLS)
    sample_ratio: float | None = None  # new traces; None: OTEL_TRACES_SAMPLER(_ARG), else 1.0
    span_queue: int = 2048  # spans waiting for export; more are dropped and counted
    # The same metrics pushed over OTLP gRPC: on with an endpoint here or in
    # OTEL_EXPORTER_OTLP_METRICS_ENDPOINT.
    metrics_otlp_endpoint: str = ""
    metrics_otlp_interval: float = 15.0
    # AWS X-Ray instead of OTLP traces (the sidecar's ENABLE_ENVOY_XRAY_TRACING): the
    # daemon's (host, port), the sample rate of new traces, and the segment name and the
    # mesh and node the segments are of.
    xray_daemon: tuple[str, int] | None = None
    xray_rate: float = 0.05
    xray_segment: tuple[str, str, str] = ("", "", "")  # (segment name, mesh, node)

    @staticmethod
    def load(path: str) -> "ObserveConfig":
        """The `observability:` section of the data-plane config file (YAML)."""
        with open(path) as f:
            doc = (yaml.safe_load(f) or {}).get("observability") or {}
        _known(doc, "observability", {"metrics", "metricsOtlp", "tracing"})
        tracing = doc.get("tracing") or {}
        _known(tracing, "observability.tracing", {"endpoint", "sampleRatio", "maxQueueSize"})
        ratio = tracing.get("sampleRatio")
        push = doc.get("metricsOtlp") or {}
        _known(push, "observability.metricsOtlp", {"endpoint", "intervalSeconds"})
        return ObserveConfig(metrics=str(doc.get("metrics", DEFAULT_METRICS)),
                             metrics_otlp_endpoint=str(push.get("endpoint", "")),
                             metrics_otlp_interval=float(push.get("intervalSeconds", 15.0)),
                             tracing_endpoint=str(tracing.get("endpoint", "")),
                             sample_ratio=float(ratio) if ratio is not None else None,
                             span_queue=int(tracing.get("maxQueueSize", 2048)))

    def tracing_enabled(self) -> bool:
        """Tracing is on with an endpoint, here or in the standard OTEL_* variables, unless
        OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none."""
        env = os.environ
        if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or env.get("OTEL_TRACES_EXPORTER") == "none":
            return False
        return bool(self.tracing_endpoint or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                    or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _known(doc, path: str, keys: set[str]) -> None:
    """Refuse a key of the `observability:` section that nothing reads, naming its path."""
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: must be a mapping")
    unknown = sorted(set(doc) - keys, key=str)
    if unknown:
        raise ValueError(f"{path}.{unknown[0]}: unknown key")


def make_metrics_push(config: ObserveConfig, metrics: Metrics, host: str):
    """The OTLP metrics push `config` asks for (started), or None."""
    endpoint = config.metrics_otlp_endpoint
    if not (endpoint or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")):
        return None
    from meshd.observe.otlp_metrics import MetricsPush  # noqa: PLC0415 - only when pushing

    log.info("metrics pushed over OTLP", extra={"endpoint": endpoint or "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                                                "interval": config.metrics_otlp_interval})
    return MetricsPush(metrics.registry, host=host, endpoint=endpoint,
                       interval=config.metrics_otlp_interval).start()


def make_tracer(config: ObserveConfig, metrics: Metrics, host: str):
    """The Tracer `config` asks for, or None (tracing off: no per-request cost)."""
    if config.xray_daemon is not None:
        from meshd.observe.xray import XRayTracer  # noqa: PLC0415 - only with X-Ray on

        name, mesh, node = config.xray_segment
        log.info("X-Ray tracing on", extra={"daemon": "%s:%d" % config.xray_daemon, "rate": config.xray_rate,
                                           "segment": name})
        return XRayTracer(segment_name=name, mesh=mesh, node=node, address=config.xray_daemon,
                          rate=config.xray_rate, max_queue=config.span_queue, on_drop=metrics.spans_dropped.inc)
    if not config.tracing_enabled():
        return None
    from meshd.observe.tracing import Tracer, sample_ratio_from_env  # noqa: PLC0415 - only with tracing on

    ratio = config.sample_ratio if config.sample_ratio is not None else sample_ratio_from_env(1.0)
    tracer = Tracer(host=host, endpoint=config.tracing_endpoint, ratio=ratio, max_queue=config.span_queue,
                    on_drop=metrics.spans_dropped.inc)
    log.info("tracing on", extra={"endpoint": config.tracing_endpoint or "OTEL_EXPORTER_OTLP_*", "ratio": ratio})
    return tracer


class _Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass  # one line per scrape on stderr would drown meshd's own log


class MetricsServer:
    """`/metrics` (Prometheus text format) over HTTP on its own thread."""

    def __init__(self, metrics: Metrics, address: str):
        host, port = address.rsplit(":", 1)
        self._server = make_server(host.strip("[]"), int(port), make_wsgi_app(metrics.registry),
                                   _Threaded, handler_class=_Quiet)
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        log.info("metrics served", extra={"address": self.address, "path": "/metrics"})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


__all__ = ["DEFAULT_METRICS", "EGRESS", "Exchange", "GATEWAY", "INGRESS", "Metrics", "MetricsServer",
           "ObserveConfig", "Observer", "TCP", "make_metrics_push", "make_tracer"]
