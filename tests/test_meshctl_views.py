"""meshctl top and graph over real Prometheus text: a real prometheus_client registry with
the metric contract's families, served over HTTP by prometheus_client itself and scraped
by meshctl (in process for the arithmetic, as a real process for the commands)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from meshd.cli.meshctl import CliError
from meshd.cli.meshctl_views import (
    graph_edges, host_metrics_url, parse, quantile, render_dot, scrape, top_rows, window)
from meshd.embedded_etcd import free_port
from meshd.v1 import admin_pb2
from metrics_exporter import BUCKETS, FLOW, Exporter

pytestmark = pytest.mark.observability


@pytest.fixture
def exporters():
    made = []

    def make():
        made.append(Exporter())
        return made[-1]
    yield make
    for e in made:
        e.close()


def test_top_counts_each_request_once_at_the_caller(exporters):
    caller, callee = exporters(), exporters()
    before = [scrape(caller.url), scrape(callee.url)]
    # 100 calls web -> api-v1: 90 OK fast, 10 gRPC UNAVAILABLE (HTTP 200) slow; the callee's
    # ingress counts the same 100 again, which must not double them.
    caller.call(90, seconds=0.004)
    caller.call(10, grpc_status="14", seconds=0.2)
    callee.call(100, direction="ingress")
    # HTTP/1.1 to api-v2 on another route: 3xx counts as success, 4xx and 5xx do not.
    caller.call(6, route="legacy", target="api-v2", code="302", grpc_status="")
    caller.call(2, route="legacy", target="api-v2", code="404", grpc_status="")
    caller.call(2, route="legacy", target="api-v2", code="503", grpc_status="")
    # A caller with no meshd (no egress series anywhere) is seen only at the callee's ingress.
    callee.call(20, direction="ingress", source="", code="503", grpc_status="", seconds=0.05)
    win = window(before, [scrape(caller.url), scrape(callee.url)])
    rows = {(r["route"], r["target_node"]): r for r in top_rows(win)}
    api = rows[("api", "api-v1")]
    assert api["requests"] == 120  # 100 from web's egress + 20 from the meshless caller
    assert api["success_rate"] == pytest.approx(90 / 120, abs=1e-4)
    assert api["requests_per_second"] == pytest.approx(120 / win.seconds, rel=1e-3)
    legacy = rows[("legacy", "api-v2")]
    assert legacy["requests"] == 10 and legacy["success_rate"] == 0.6
    edges = {(e["source_node"], e["target_node"]): e for e in graph_edges(win)}
    assert set(edges) == {("web", "api-v1"), ("web", "api-v2"), ("", "api-v1")}
    assert edges[("web", "api-v1")]["requests"] == 100 and edges[("web", "api-v1")]["success_rate"] == 0.9
    assert edges[("", "api-v1")]["success_rate"] == 0.0
    assert all(e["virtual_service"] == "api.shop.local" for e in edges.values())


def test_latency_quantiles_follow_histogram_quantile(exporters):
    e = exporters()
    before = [scrape(e.url)]
    e.call(90, seconds=0.004)
    e.call(10, grpc_status="14", seconds=0.2)
    row = top_rows(window(before, [scrape(e.url)]))[0]
    # p50: rank 50 of 100 falls in (0.001, 0.005], which holds 90: 1 + 4 * 50/90 ms.
    assert row["p50_ms"] == pytest.approx(1 + 4 * 50 / 90, abs=1e-3)
    # p99: rank 99 falls in (0.1, 0.25], which holds calls 91-100: 100 + 150 * 9/10 ms.
    assert row["p99_ms"] == pytest.approx(235.0, abs=1e-3)
    # Beyond the last finite bucket, Prometheus answers with that bound.
    assert quantile(0.99, {0.1: 1.0, 0.5: 1.0, float("inf"): 10.0}) == 0.5
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.5, {0.1: 3.0}) is None  # no +Inf: not a whole histogram


def test_a_restarted_meshd_counts_from_zero_and_only_the_window_counts(exporters):
    old = Exporter.__new__(Exporter)  # a registry that is not served: its text is enough
    old.registry = CollectorRegistry()
    old.requests = Counter("meshd_requests", "", [*FLOW, "code", "grpc_status", "response_class"], registry=old.registry)
    old.duration = Histogram("meshd_request_duration_seconds", "", FLOW, buckets=BUCKETS, registry=old.registry)
    old.call(500)
    url = "http://h:1/metrics"
    first = parse(url, generate_latest(old.registry).decode(), at=0.0)
    restarted = exporters()
    restarted.call(7)
    second = parse(url, generate_latest(restarted.registry).decode(), at=2.0)
    row = top_rows(window([first], [second]))[0]
    assert row["requests"] == 7 and row["requests_per_second"] == 3.5
    # Earlier traffic is not in a window: the same counts twice show no flow at all.
    again = parse(url, generate_latest(restarted.registry).decode(), at=4.0)
    assert top_rows(window([second], [again])) == [] and graph_edges(window([second], [again])) == []


def test_mesh_filter_and_bad_pages(exporters):
    e = exporters()
    before = [scrape(e.url)]
    e.call(3, mesh="shop")
    e.call(4, mesh="bank", source="teller", target="ledger", service="ledger.bank.local")
    win = window(before, [scrape(e.url)])
    assert [r["mesh"] for r in top_rows(win, "bank")] == ["bank"]
    assert {r["mesh"] for r in top_rows(win)} == {"shop", "bank"}
    with pytest.raises(CliError, match="not Prometheus text"):
        parse("http://x/metrics", "<html><body>not metrics</body></html>", 0.0)
    with pytest.raises(CliError, match="cannot scrape"):
        scrape(f"http://127.0.0.1:{free_port()}/metrics", timeout=2)


def test_dot_escapes_names_and_renders_with_graphviz(exporters, tmp_path):
    e = exporters()
    before = [scrape(e.url)]
    e.call(5, source='we"b', target="api-v1")
    dot = render_dot(graph_edges(window(before, [scrape(e.url)])))
    assert '"shop/we\\"b" -> "shop/api-v1"' in dot
    svg = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, timeout=60)
    assert svg.returncode == 0, svg.stderr
    assert b"api.shop.local" in svg.stdout


# -- the commands, as a user runs them ---------------------------------------------------

def meshctl(*args, env=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshd.cli.meshctl", "--server", "127.0.0.1:1", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


class Traffic:
    """Steady calls into an exporter from a thread, bounded in count and time."""

    def __init__(self, exporter: Exporter, per_tick: list[tuple[dict, int]], seconds: float = 8.0):
        self.stop = threading.Event()

        def run():
            deadline = time.monotonic() + seconds
            while not self.stop.is_set() and time.monotonic() < deadline:
                for kwargs, n in per_tick:
                    exporter.call(n, **kwargs)
                time.sleep(0.02)
        self.thread = threading.Thread(target=run, daemon=True)
        self.per_tick = per_tick

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def test_meshctl_top_once_json_and_table(exporters):
    a, b = exporters(), exporters()
    ok = ({"target": "api-v1"}, 3)
    failing = ({"target": "api-v2", "code": "503", "grpc_status": "", "route": "slow"}, 1)
    with Traffic(a, [ok]), Traffic(b, [failing]):
        out = meshctl("top", "--once", "--json", "--interval", "1", "--metrics", a.url,
                      "--metrics", f"127.0.0.1:{b.port}")
        table = meshctl("top", "--once", "--interval", "0.5", "--metrics", a.url, "--mesh", "shop")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert sorted(doc["sources"]) == sorted([a.url, b.url])
    rows = {r["target_node"]: r for r in doc["routes"]}
    assert rows["api-v1"]["success_rate"] == 1.0 and rows["api-v1"]["route"] == "api"
    assert rows["api-v2"]["success_rate"] == 0.0 and rows["api-v2"]["route"] == "slow"
    # ~3 per 20 ms tick against ~1: the rates keep their 3:1 ratio within scheduling noise.
    assert rows["api-v1"]["requests_per_second"] > 0 and rows["api-v2"]["requests_per_second"] > 0
    assert 2.0 < rows["api-v1"]["requests_per_second"] / rows["api-v2"]["requests_per_second"] < 4.0
    assert rows["api-v1"]["p50_ms"] == pytest.approx(1 + 4 * 0.5, abs=1e-3)  # all in (1, 5] ms
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[1].split()
    assert header == ["MESH", "SERVICE", "ROUTE", "TARGET", "REQ/S", "SUCCESS", "P50", "P99"]
    line = table.stdout.splitlines()[2].split()
    assert line[:4] == ["shop", "api.shop.local", "api", "api-v1"] and line[5] == "100.0%"
    assert "\x1b[2J" not in table.stdout  # --once prints, it does not redraw


def test_meshctl_graph_text_dot_and_png(exporters, tmp_path):
    e = exporters()
    with Traffic(e, [({"target": "api-v1"}, 2), ({"source": "api-v1", "service": "db.shop.local",
                                                 "route": "", "target": "db"}, 1)]):
        text = meshctl("graph", "--interval", "0.5", "--metrics", e.url)
        dot = meshctl("graph", "--dot", "--interval", "0.5", "--metrics", e.url)
        png = meshctl("graph", "--png", str(tmp_path / "g.png"), "--interval", "0.5", "--metrics", e.url)
    assert text.returncode == 0, text.stderr
    assert "web -> api-v1  via api.shop.local" in text.stdout
    assert "api-v1 -> db  via db.shop.local" in text.stdout and "100.0% ok" in text.stdout
    assert dot.returncode == 0 and dot.stdout.startswith("digraph meshd {")
    assert '"shop/web" -> "shop/api-v1"' in dot.stdout and '"shop/api-v1" -> "shop/db"' in dot.stdout
    assert png.returncode == 0, png.stderr
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Without Graphviz on PATH the error says what is missing.
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare)}
    nodot = meshctl("graph", "--png", str(tmp_path / "h.png"), "--interval", "0.2", "--metrics", e.url, env=env)
    assert nodot.returncode == 1 and "Graphviz's `dot`" in nodot.stderr
    assert shutil.which("dot"), "the test setup installs graphviz"


def test_meshctl_top_refuses_bad_input(exporters):
    e = exporters()
    out = meshctl("top", "--once", "--interval", "0", "--metrics", e.url)
    assert out.returncode == 1 and "--interval must be" in out.stderr
    dead = meshctl("top", "--once", "--interval", "0.2", "--metrics", f"127.0.0.1:{free_port()}")
    assert dead.returncode == 1 and "cannot scrape" in dead.stderr and "no metrics endpoint" in dead.stderr


def test_meshctl_top_redraws_until_interrupted(exporters):
    e = exporters()
    with Traffic(e, [({"target": "api-v1"}, 1)]):
        proc = subprocess.Popen([sys.executable, "-m", "meshd.cli.meshctl", "top", "--metrics", e.url,
                                 "--interval", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            time.sleep(4)  # interpreter start plus a few frames, on a loaded machine
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and not err, err  # Ctrl-C ends the view quietly
    frames = out.decode().split("\x1b[H\x1b[2J")[1:]
    assert len(frames) >= 2
    assert all("api.shop.local  api    api-v1" in f for f in frames)


@pytest.mark.parametrize("metrics, admin, want", [
    ("127.0.0.1:9464", "127.0.0.1:7000", "http://127.0.0.1:9464/metrics"),  # one machine
    ("0.0.0.0:9464", "10.0.0.5:7000", "http://10.0.0.5:9464/metrics"),  # every interface
    ("[::]:9464", "[fd00::5]:7000", "http://[fd00::5]:9464/metrics"),
    ("10.0.0.6:9464", "10.0.0.5:7000", "http://10.0.0.6:9464/metrics"),  # its own choice
    ("127.0.0.1:9464", "10.0.0.5:7000", None),  # would read whichever meshd runs here
    ("", "10.0.0.5:7000", None),
])
def test_where_a_host_is_scraped_from(metrics, admin, want):
    url, why = host_metrics_url(admin_pb2.Host(host_name="h", metrics_address=metrics, admin_address=admin))
    assert url == want
    assert bool(why) == (want is None)
