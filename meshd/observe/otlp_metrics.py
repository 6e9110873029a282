"""The same metrics pushed over OTLP: meshd's Prometheus registry read on a timer, turned
into the OpenTelemetry SDK's metric data model and sent by the SDK's OTLP gRPC metric
exporter. One source of truth (the registry the hot path already updates), two ways out.

Mapping (OpenTelemetry's Prometheus compatibility spec, in reverse): a counter family is a
monotonic cumulative Sum named without `_total`, its start time the series' `_created`; a
gauge (and `meshd_info`) a Gauge; a histogram a cumulative Histogram whose bucket counts are
the differences of Prometheus's cumulative `le` buckets. Histograms have no min/max.
"""
from __future__ import annotations

import logging
import threading
import time

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

log = logging.getLogger("meshd.observe.otlp_metrics")

_SCOPE = InstrumentationScope("meshd")
_CUMULATIVE = AggregationTemporality.CUMULATIVE


def _key(labels: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "le"))


def to_metrics_data(registry, resource: Resource, started_ns: int) -> MetricsData:
    """A snapshot of `registry` (prometheus_client) as OpenTelemetry MetricsData."""
    now = time.time_ns()
    metrics = []
    for fam in registry.collect():
        created = {_key(s.labels): int(s.value * 1e9) for s in fam.samples if s.name.endswith("_created")}

        def start(labels):
            return created.get(_key(labels), started_ns)
        if fam.type == "counter":
            points = [NumberDataPoint(dict(s.labels), start(s.labels), now, float(s.value))
                      for s in fam.samples if s.name == fam.name + "_total"]
            data = Sum(points, _CUMULATIVE, True)
        elif fam.type in ("gauge", "info"):
            name = fam.name + "_info" if fam.type == "info" else fam.name
            data = Gauge([NumberDataPoint(dict(s.labels), 0, now, float(s.value))
                          for s in fam.samples if s.name == name])
        elif fam.type == "histogram":
            series: dict[tuple, dict] = {}
            for s in fam.samples:
                h = series.setdefault(_key(s.labels), {"buckets": [], "count": 0, "sum": 0.0})
                if s.name.endswith("_bucket"):
                    h["buckets"].append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_count"):
                    h["count"] = int(s.value)
                elif s.name.endswith("_sum"):
                    h["sum"] = s.value
            points = []
            for key, h in series.items():
                buckets = sorted(h["buckets"])
                counts, prev = [], 0.0
                for _, cumulative in buckets:
                    counts.append(int(cumulative - prev))
                    prev = cumulative
                labels = dict(key)
                points.append(HistogramDataPoint(
                    labels, start(labels), now, h["count"], h["sum"], counts,
                    [le for le, _ in buckets if le != float("inf")], None, None))
            data = Histogram(points, _CUMULATIVE)
        else:
            continue
        metrics.append(Metric(fam.name, fam.documentation, None, data))
    return MetricsData([ResourceMetrics(resource, [ScopeMetrics(_SCOPE, metrics, "")], "")])


class MetricsPush:
    """Every `interval` seconds, export the registry over OTLP (gRPC), on its own thread."""

    def __init__(self, registry, *, host: str, endpoint: str = "", interval: float = 15.0,
                 exporter: MetricExporter | None = None):
        self.registry = registry
        self.interval = interval
        self.resource = Resource.create({"service.name": "meshd", "host.name": host})
        self.exporter = exporter or (OTLPMetricExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
                                     if endpoint else OTLPMetricExporter())
        self._started = time.time_ns()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-push", daemon=True)

    def start(self) -> "MetricsPush":
        self._thread.start()
        return self

    def push(self) -> bool:
        """Export one snapshot now; False when the exporter failed (it is tried again next time)."""
        try:
            result = self.exporter.export(to_metrics_data(self.registry, self.resource, self._started))
        except Exception as err:  # noqa: BLE001 - a failed push must not stop the next one
            log.warning("metrics push failed", extra={"error": str(err)})
            return False
        return result.name == "SUCCESS"

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.push()

    def stop(self) -> None:
        """Push a last snapshot, then stop."""
        self._stop.set()
        self._thread.join(5)
        self.push()
        self.exporter.shutdown()


__all__ = ["MetricsPush", "to_metrics_data"]
