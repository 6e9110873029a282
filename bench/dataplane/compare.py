"""CPU per request of one proxy hop: direct vs HAProxy vs the meshd relay, measured in one run.

    python -m bench.dataplane.compare [--seconds 5] [--runs 1]

The origin is HAProxy answering with `http-request return` (BENCH-ANCHORS.md, "fast origin"),
so the origin's own cost does not hide the proxy's. Load comes from h2load emulating a gRPC
unary call: `-c 1 -m 1` (one request at a time) and `-c 8 -m 16` (saturation). CPU is the
proxy process's CPU time (its CPU-time clock, `cpu_seconds`) over the load window. Only ratios taken in
the same run mean anything on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from meshd.embedded_etcd import free_port

HZ = os.sysconf("SC_CLK_TCK")
LOADS = {"one-at-a-time": ["-c", "1", "-m", "1"], "saturation": ["-c", "8", "-m", "16"]}

HAPROXY_COMMON = """global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
"""


def wait_port(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def cpu_seconds(pid: int) -> float:
    """CPU time of process `pid`, all its threads (exited ones too), in seconds.

    Read from the process's CPU-time clock (clock_getcpuclockid(3); Linux encodes it as
    (~pid << 3) | CPUCLOCK_SCHED), which counts nanoseconds. /proc/PID/stat counts clock
    ticks, 10 ms here: at 500 requests/s over a few seconds that is ~10 us per request per
    process, as coarse as the differences measured. It is the fallback."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ     # utime, stime (proc(5) fields 14, 15)


@dataclass
class Result:
    path: str
    load: str
    requests: int
    rps: float
    cpu_us: float | None      # proxy CPU per request; None for the direct path

    def row(self) -> str:
        cpu = "—" if self.cpu_us is None else f"{self.cpu_us:8.1f}"
        return f"| {self.path:<10} | {self.load:<13} | {self.requests:>8} | {self.rps:>9.0f} | {cpu:>8} |"


def _h2load_cmd(port: int, load: list[str], seconds: float, body: Path) -> list[str]:
    return ["h2load", "-D", str(max(1, round(seconds))), *load, "-d", str(body),
            "-H", "content-type: application/grpc", "-H", "te: trailers", f"http://127.0.0.1:{port}/echo.Echo/Say"]


def _h2load_result(out: str) -> tuple[int, float]:
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    rps = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    if not m or not rps:
        raise RuntimeError(out)
    return int(m.group(1)), float(rps.group(1))


def h2load(port: int, load: list[str], seconds: float, body: Path) -> tuple[int, float]:
    """(requests succeeded, req/s) of one h2load run."""
    out = subprocess.run(_h2load_cmd(port, load, seconds, body), capture_output=True, text=True,
                         timeout=seconds + 30, check=True).stdout
    return _h2load_result(out)


def h2load_together(runs: list[tuple[int, list[str]]], seconds: float, body: Path) -> list[tuple[int, float]]:
    """h2load runs `(port, load)` at the same time, each's (requests succeeded, req/s): paths
    loaded together share the machine's conditions, so their CPU figures compare closely."""
    procs = [subprocess.Popen(_h2load_cmd(port, load, seconds, body), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for port, load in runs]
    outs = [p.communicate(timeout=seconds + 30)[0] for p in procs]
    return [_h2load_result(out) for out in outs]


def start(cmd: list[str], port: int, **kw) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **kw)
    wait_port(port)
    return proc


def workdir(prefix: str) -> tuple[Path, Path]:
    """A temporary directory for one bench run, and in it the request body h2load sends (one
    gRPC message of 102 bytes). Exits when haproxy or h2load is missing."""
    for tool in ("haproxy", "h2load"):
        if not shutil.which(tool):
            sys.exit(f"{tool} missing: install Debian's haproxy and nghttp2-client (scripts/setup.sh --test)")
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    body = tmp / "body.bin"
    body.write_bytes(b"\x00" + (102).to_bytes(4, "big") + os.urandom(102))
    return tmp, body


def run(seconds: float, runs: int) -> list[Result]:
    tmp, body = workdir("meshd-bench-")
    origin_port, hop_port, relay_port = free_port(), free_port(), free_port()
    (tmp / "origin.cfg").write_text(HAPROXY_COMMON + f"""
frontend origin
    bind 127.0.0.1:{origin_port} proto h2
    http-request return status 200 content-type application/grpc string "ok"
""")
    (tmp / "hop.cfg").write_text(HAPROXY_COMMON + f"""
frontend hop
    bind 127.0.0.1:{hop_port} proto h2
    default_backend origin
backend origin
    server origin 127.0.0.1:{origin_port} proto h2
""")
    procs = []
    try:
        procs.append(start(["haproxy", "-db", "-f", str(tmp / "origin.cfg")], origin_port))
        hop = start(["haproxy", "-db", "-f", str(tmp / "hop.cfg")], hop_port)
        procs.append(hop)
        relay = start([sys.executable, "-m", "bench.dataplane.relay_main", str(relay_port), str(origin_port)],
                      relay_port, cwd=Path(__file__).resolve().parents[2])
        procs.append(relay)
        paths = [("direct", origin_port, None), ("haproxy", hop_port, hop.pid), ("meshd", relay_port, relay.pid)]
        for _, port, _ in paths:                 # warm up pools and caches
            h2load(port, LOADS["one-at-a-time"], 1, body)
        results = []
        for _ in range(runs):
            for load_name, load in LOADS.items():
                for name, port, pid in paths:    # interleaved, as in BENCH-ANCHORS.md
                    c0 = cpu_seconds(pid) if pid else 0.0
                    n, rps = h2load(port, load, seconds, body)
                    cpu = (cpu_seconds(pid) - c0) / n * 1e6 if pid and n else None
                    results.append(Result(name, load_name, n, rps, cpu))
        return results
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def ratios(results: list[Result]) -> dict[str, float]:
    """meshd CPU per request / HAProxy CPU per request, per load (medians over runs)."""
    out = {}
    for load in LOADS:
        def med(path):
            xs = sorted(r.cpu_us for r in results if r.path == path and r.load == load)
            return xs[len(xs) // 2]
        out[load] = med("meshd") / med("haproxy")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    results = run(args.seconds, args.runs)
    print("| path       | load          | requests |     req/s | CPU µs/req |")
    print("|---|---|---|---|---|")
    for r in results:
        print(r.row())
    for load, x in ratios(results).items():
        print(f"meshd/haproxy CPU per request, {load}: {x:.2f}x")


if __name__ == "__main__":
    main()
