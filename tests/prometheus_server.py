"""Debian's real `prometheus` binary as a test fixture: scrapes the given targets every
second into a private TSDB, and answers instant queries through its HTTP API."""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from meshd.embedded_etcd import free_port


class PrometheusServer:
    """`with PrometheusServer(tmp_path, ["127.0.0.1:9464"]) as prom: prom.query("up")`."""

    def __init__(self, workdir: Path, targets: list[str]):
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed (scripts/setup.sh --test installs it)"
        config = workdir / "prometheus.yml"
        config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                          "scrape_configs:\n  - job_name: meshd\n    static_configs:\n"
                          f"      - targets: {json.dumps(targets)}\n")
        self.port = free_port()
        self.args = [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}"]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "PrometheusServer":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def query(self, q: str) -> list[dict]:
        """The instant query's result vector; empty while Prometheus is not answering yet."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())["data"]["result"]
        except OSError:
            return []
