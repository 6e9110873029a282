"""meshctl's live views of a running mesh: `status` (hosts and instances from the admin API),
`top` (per-route rates and latencies) and `graph` (who calls whom), the last two computed
from two scrapes of every meshd's Prometheus `/metrics`.

Metric contract (what each meshd exports; see deploy/observability/):

    meshd_requests_total{direction,mesh,source_node,virtual_service,route,target_node,
                         code,grpc_status,response_class}                       counter
    meshd_request_duration_seconds{direction,mesh,source_node,virtual_service,route,
                                   target_node}                                  histogram

A request passes two meshds (the caller's egress, the callee's ingress) and is counted at
both. The views count it once, at the caller; only a caller that runs no meshd of its own
(so has no egress series anywhere) is counted from the callee's ingress instead.
"""
from __future__ import annotations

import ipaddress
import json
import math
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from meshd.cli.meshctl import CliError, Client, _age, _concurrently, _print, _to_dict, locality_text
from meshd.v1 import admin_pb2

REQUESTS = "meshd_requests_total"
DURATION = "meshd_request_duration_seconds"
# Directions counted where the request starts: an app's egress, a virtual gateway, TCP egress.
CALLER_SIDE = frozenset({"egress", "gateway", "tcp"})
INGRESS = "ingress"
# Labels that name one flow of traffic, in this order, in every key below.
FLOW = ("mesh", "source_node", "virtual_service", "route", "target_node")
SCRAPE_TIMEOUT = 5.0


# -- scraping -----------------------------------------------------------------------------

@dataclass
class Scrape:
    """The request counters and latency buckets of one meshd's /metrics at one moment.

    requests: (direction, *FLOW, success) -> count, where success is True, False or None
              (a TCP stream: no status to judge).
    buckets:  (direction, *FLOW) -> {upper bound: cumulative count}.
    """

    url: str
    at: float
    requests: dict[tuple, float] = field(default_factory=dict)
    buckets: dict[tuple, dict[float, float]] = field(default_factory=dict)


def metrics_url(address: str) -> str:
    """`HOST:PORT` or a full URL → the URL of its metrics page."""
    if "://" in address:
        return address
    return f"http://{address}/metrics"


def _success(direction: str, labels: dict[str, str]) -> bool | None:
    # gRPC carries its outcome in grpc-status (HTTP 200 with UNAVAILABLE is a failure);
    # everything else by its HTTP status class; "none" is a request that got no response.
    grpc_status = labels.get("grpc_status", "")
    if grpc_status:
        return grpc_status in ("0", "OK")
    if direction == "tcp":
        return None
    return labels.get("response_class") in ("2xx", "3xx")


def parse(url: str, text: str, at: float) -> Scrape:
    """Fold one metrics page into a Scrape; a page that is not Prometheus text is an error."""
    out = Scrape(url, at)
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError, IndexError) as err:
        raise CliError(f"{url}: not Prometheus text: {err}") from err
    for family in families:
        for s in family.samples:
            if s.name == REQUESTS:
                d = s.labels.get("direction", "")
                key = (d, *(s.labels.get(k, "") for k in FLOW), _success(d, s.labels))
                out.requests[key] = out.requests.get(key, 0.0) + s.value
            elif s.name == DURATION + "_bucket":
                key = (s.labels.get("direction", ""), *(s.labels.get(k, "") for k in FLOW))
                le = float(s.labels["le"])
                out.buckets.setdefault(key, {})[le] = s.value
    return out


def scrape(url: str, timeout: float = SCRAPE_TIMEOUT) -> Scrape:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            text = resp.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise CliError(f"cannot scrape {url}: {getattr(err, 'reason', err)}") from err
    return parse(url, text, time.monotonic())


def scrape_all(urls: list[str]) -> list[Scrape]:
    """Every reachable target; unreachable ones are reported, and none reachable is an error."""
    got, failed = [], []
    for url in urls:
        try:
            got.append(scrape(url))
        except CliError as err:
            failed.append(str(err))
    for msg in failed:
        print(f"warning: {msg}", file=sys.stderr)
    if not got:
        raise CliError("no metrics endpoint could be scraped" + (f" ({len(failed)} failed)" if failed else ""))
    return got


# -- arithmetic over two scrapes --------------------------------------------------------

def _delta(now: float, before: float | None) -> float:
    # A counter that went down was reset (its meshd restarted): all of `now` is new, as
    # Prometheus's rate() assumes.
    if before is None or now < before:
        return now
    return now - before


@dataclass
class Window:
    """What happened between two scrape rounds: per-series increases and the time between."""

    seconds: float
    requests: dict[tuple, float]  # as Scrape.requests, summed over hosts
    buckets: dict[tuple, dict[float, float]]  # as Scrape.buckets, summed over hosts


def window(before: list[Scrape], after: list[Scrape]) -> Window:
    """Increases from `before` to `after`, per target (matched by URL), then summed."""
    prior = {s.url: s for s in before}
    requests: dict[tuple, float] = defaultdict(float)
    buckets: dict[tuple, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    spans = []
    for s in after:
        p = prior.get(s.url)
        if p is None:
            continue  # a target that answered only the second time has no window
        spans.append(s.at - p.at)
        for key, v in s.requests.items():
            requests[key] += _delta(v, p.requests.get(key))
        for key, bounds in s.buckets.items():
            old = p.buckets.get(key, {})
            reset = any(v < old.get(le, 0.0) for le, v in bounds.items())
            for le, v in bounds.items():
                buckets[key][le] += v if reset else _delta(v, old.get(le))
    seconds = max(spans) if spans else 0.0
    return Window(seconds, dict(requests), {k: dict(v) for k, v in buckets.items()})


def counted(keys) -> set[tuple]:
    """The (direction, *FLOW) keys to count: caller-side ones, and ingress ones only for a
    caller (mesh, source node) that has no caller-side series at all."""
    keys = list(keys)
    callers = {(k[1], k[2]) for k in keys if k[0] in CALLER_SIDE}
    return {k[:1 + len(FLOW)] for k in keys
            if k[0] in CALLER_SIDE or (k[0] == INGRESS and (k[1], k[2]) not in callers)}


def quantile(q: float, cumulative: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative buckets: linear within the bucket
    the rank falls in; the +Inf bucket answers with the highest finite bound."""
    bounds = sorted(cumulative)
    if not bounds or not math.isinf(bounds[-1]):
        return None  # a histogram always has +Inf; without it the buckets are not whole
    total = cumulative[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = cumulative[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


@dataclass
class Flow:
    """Traffic of one group (a route's target, or a caller→callee edge) over a window."""

    requests: float = 0.0
    judged: float = 0.0  # requests with an outcome (not TCP)
    ok: float = 0.0
    buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))

    def row(self, seconds: float) -> dict:
        return {
            "requests": round(self.requests),
            "requests_per_second": round(self.requests / seconds, 3) if seconds > 0 else 0.0,
            "success_rate": round(self.ok / self.judged, 4) if self.judged else None,
            "p50_ms": _ms(quantile(0.5, self.buckets)),
            "p99_ms": _ms(quantile(0.99, self.buckets)),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def group(win: Window, by: tuple[str, ...], mesh: str = "") -> dict[tuple, Flow]:
    """Sum a window's counted series into flows keyed by the FLOW labels named in `by`."""
    pick = [1 + FLOW.index(name) for name in by]
    use = counted([*win.requests, *win.buckets])
    flows: dict[tuple, Flow] = defaultdict(Flow)
    for key, n in win.requests.items():
        series = key[:-1]
        if series not in use or (mesh and key[1] != mesh):
            continue
        f = flows[tuple(series[i] for i in pick)]
        f.requests += n
        if key[-1] is not None:
            f.judged += n
            f.ok += n if key[-1] else 0.0
    for series, bounds in win.buckets.items():
        if series not in use or (mesh and series[1] != mesh):
            continue
        f = flows[tuple(series[i] for i in pick)]
        for le, v in bounds.items():
            f.buckets[le] += v
    # Only what carried traffic in the window: a series once seen stays exported forever.
    return {k: f for k, f in flows.items() if f.requests > 0}


ROUTE_KEY = ("mesh", "virtual_service", "route", "target_node")
EDGE_KEY = ("mesh", "source_node", "target_node", "virtual_service")


def top_rows(win: Window, mesh: str = "") -> list[dict]:
    """One row per (mesh, virtual service, route, target node), busiest first."""
    rows = [{**dict(zip(ROUTE_KEY, k)), **f.row(win.seconds)} for k, f in group(win, ROUTE_KEY, mesh).items()]
    return sorted(rows, key=lambda r: (-r["requests"], *(r[k] for k in ROUTE_KEY)))


def graph_edges(win: Window, mesh: str = "") -> list[dict]:
    """One edge per (mesh, source node → target node via virtual service)."""
    edges = []
    for k, f in group(win, EDGE_KEY, mesh).items():
        row = f.row(win.seconds)
        edges.append({**dict(zip(EDGE_KEY, k)), **{n: row[n] for n in ("requests", "requests_per_second",
                                                                         "success_rate")}})
    return sorted(edges, key=lambda e: tuple(e[k] for k in EDGE_KEY))


# -- the commands -------------------------------------------------------------------------

def list_hosts(client: Client) -> admin_pb2.ListHostsResponse:
    """Every page of ListHosts in one response (revisions from the first page)."""
    first = resp = client.call("ListHosts", admin_pb2.ListHostsRequest())
    while resp.next_token:
        resp = client.call("ListHosts", admin_pb2.ListHostsRequest(next_token=resp.next_token))
        first.hosts.extend(resp.hosts)
    return first


def _pages(client: Client, method: str, request, field_name: str) -> list:
    items = []
    while True:
        resp = client.call(method, request)
        items.extend(getattr(resp, field_name))
        if not resp.next_token:
            return items
        request.next_token = resp.next_token


def _host_state(h: admin_pb2.Host, config_revision: int) -> str:
    if not h.data_plane:
        return "no data plane"
    # A data plane that has applied nothing yet (revision 0) is behind too.
    if h.applied_revision < config_revision:
        return "LAGGING"
    return "in sync"


# Requests `status` keeps in flight (meshd serves the admin API with 64 threads).
STATUS_PARALLEL = 16


def cmd_status(client: Client, args) -> int:
    hosts = list_hosts(client)
    meshes = [args.mesh] if args.mesh else [m.mesh_name for m in _pages(
        client, "ListMeshes", admin_pb2.ListMeshesRequest(), "meshes")]
    # Meshes are read side by side, and so are the specs the ACM check reads: at the size of
    # issue 17 (20 meshes, 3,000 instances, 800 nodes) status stays within 2 s.
    listed = _concurrently(lambda m: _pages(client, "ListInstances", admin_pb2.ListInstancesRequest(mesh_name=m),
                                            "instances"), meshes, STATUS_PARALLEL)
    for _, err in listed:
        if err is not None:
            raise err
    instances = {m: insts for m, (insts, _) in zip(meshes, listed)}
    from meshd.cli.meshctl_security import acm_problems  # noqa: PLC0415
    # Specs naming ACM ARNs nothing was imported for.
    acm = acm_problems(client, meshes, _pages, parallel=STATUS_PARALLEL)
    if args.output != "table":
        _print({"revision": hosts.revision, "configRevision": hosts.config_revision,
                "hosts": [{**_to_dict(h), "state": _host_state(h, hosts.config_revision)} for h in hosts.hosts],
                "meshes": [{"meshName": m, "instances": [_to_dict(i) for i in instances[m]]} for m in meshes],
                "acm": [{"meshName": m, "where": w, "arn": a, "problem": p} for m, w, a, p in acm]},
               args.output)
        return 0
    print(f"HOSTS  (etcd revision {hosts.revision}, newest config change at revision {hosts.config_revision})")
    rows = [[h.host_name, h.version, h.admin_address, h.metrics_address or "-",
             h.applied_revision or "-", h.config_generation, _age(_to_dict(h).get("startedAt", "")),
             _host_state(h, hosts.config_revision)] for h in hosts.hosts]
    _print(None, "table", rows, ["HOST", "VERSION", "ADMIN", "METRICS", "APPLIED", "GENERATION", "UP", "STATE"])
    for m in meshes:
        insts = instances[m]
        health = defaultdict(int)
        for i in insts:
            health[i.health or "UNKNOWN"] += 1
        summary = ", ".join(f"{n} {h.lower()}" for h, n in sorted(health.items())) or "no instances"
        print(f"\nMESH {m}  ({summary})")
        if insts:
            _print(None, "table", [[i.virtual_node_name, i.instance_id, f"{i.address}:{i.port}", i.host or "-",
                                    locality_text(i.locality), i.health or "UNKNOWN"] for i in insts],
                   ["NODE", "INSTANCE", "ADDRESS", "HOST", "LOCALITY", "HEALTH"])
    if acm:
        print("\nACM REFERENCES  (refused TLS until imported: meshctl certificate import / meshctl trust import)")
        for m, where, arn, problem in acm:
            print(f"  {m}: {where}: {arn}: {problem}")
    return 0


def _split_host(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_metrics_url(h: admin_pb2.Host) -> tuple[str | None, str]:
    """Where to scrape a host from here: (URL, "") or (None, why not).

    A metrics listener bound to every interface (0.0.0.0, ::) is reached at the host's
    admin address. One bound to loopback on a host whose admin API is not on loopback
    cannot be reached from another machine, and scraping "127.0.0.1" would read whichever
    meshd runs here instead: such a host is left out, and said so.
    """
    if not h.metrics_address:
        return None, "publishes no metrics address (meshd run --metrics off?)"
    host, port = _split_host(h.metrics_address)
    admin_host = _split_host(h.admin_address)[0]
    if host in ("0.0.0.0", "::", ""):
        host = admin_host
    elif _is_loopback(host) and not _is_loopback(admin_host):
        return None, (f"serves metrics on loopback ({h.metrics_address}) only; run it with "
                      f"--metrics {admin_host}:{port}, or pass --metrics URL")
    return metrics_url(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"), ""


def _targets(client: Client, args) -> list[str]:
    """Metrics URLs: --metrics when given, else every live host's published address."""
    if args.metrics:
        return list(dict.fromkeys(metrics_url(a) for a in args.metrics))
    urls = []
    for h in list_hosts(client).hosts:
        url, why = host_metrics_url(h)
        if url is None:
            print(f"warning: host {h.host_name} {why}", file=sys.stderr)
        elif url not in urls:
            urls.append(url)
    if not urls:
        raise CliError("no host's metrics can be scraped from here; run meshd with --metrics HOST:PORT, "
                       "or pass --metrics URL")
    return urls


def _check_interval(args) -> None:
    if not 0 < args.interval <= 3600:
        raise CliError(f"--interval must be in (0, 3600] seconds, got {args.interval}")


def _measure(urls: list[str], interval: float, before: list[Scrape] | None = None) -> tuple[Window, list[Scrape]]:
    if before is None:
        before = scrape_all(urls)
        time.sleep(interval)
    after = scrape_all(urls)
    return window(before, after), after


def _fmt(v, suffix: str = "") -> str:
    return "-" if v is None else f"{v:g}{suffix}"


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def render_top(rows: list[dict], seconds: float, sources: int) -> str:
    headers = ["MESH", "SERVICE", "ROUTE", "TARGET", "REQ/S", "SUCCESS", "P50", "P99"]
    table = [[r["mesh"], r["virtual_service"], r["route"] or "-", r["target_node"] or "-",
              f"{r['requests_per_second']:.2f}", _pct(r["success_rate"]), _fmt(r["p50_ms"], "ms"),
              _fmt(r["p99_ms"], "ms")] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *table)]
    lines = [f"meshctl top: {sources} meshd(s), last {seconds:.1f}s"]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [headers, *table]]
    if not table:
        lines.append("(no requests in this interval)")
    return "\n".join(lines)


def cmd_top(client: Client, args) -> int:
    _check_interval(args)
    urls = _targets(client, args)
    as_json = args.json or args.output == "json"
    last = None
    try:
        while True:
            win, last = _measure(urls, args.interval, before=last)
            rows = top_rows(win, args.mesh)
            if as_json:
                print(json.dumps({"interval_seconds": round(win.seconds, 3), "sources": [s.url for s in last],
                                  "routes": rows}, indent=2), flush=True)
            else:
                # Redraw in place: cursor home, clear screen (plain ANSI, no curses).
                prefix = "" if args.once else "\x1b[H\x1b[2J"
                print(prefix + render_top(rows, win.seconds, len(last)), flush=True)
            if args.once:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how the live view ends


def _node(mesh: str, node: str) -> str:
    return f"{mesh}/{node or '(outside the mesh)'}"


def _dot_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(edges: list[dict]) -> str:
    """Graphviz DOT: one cluster per mesh, one node per virtual node, one edge per flow."""
    lines = ["digraph meshd {", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for i, mesh in enumerate(sorted({e["mesh"] for e in edges})):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={_dot_quote('mesh ' + mesh)};")
        mine = [e for e in edges if e["mesh"] == mesh]
        for n in sorted({e["source_node"] for e in mine} | {e["target_node"] for e in mine}):
            lines.append(f"    {_dot_quote(_node(mesh, n))} [label={_dot_quote(n or '(outside the mesh)')}];")
        lines.append("  }")
    for e in edges:
        label = f"{e['virtual_service']}\\n{e['requests_per_second']:.2f} req/s, {_pct(e['success_rate'])} ok"
        lines.append(f"  {_dot_quote(_node(e['mesh'], e['source_node']))} -> "
                     f"{_dot_quote(_node(e['mesh'], e['target_node']))} [label=\"{label}\"];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_graph_text(edges: list[dict]) -> str:
    if not edges:
        return "(no requests in this interval)"
    lines = []
    for mesh in sorted({e["mesh"] for e in edges}):
        lines.append(f"mesh {mesh}")
        for e in (e for e in edges if e["mesh"] == mesh):
            lines.append(f"  {e['source_node'] or '(outside the mesh)'} -> {e['target_node'] or '-'}"
                         f"  via {e['virtual_service']}  {e['requests_per_second']:.2f} req/s"
                         f"  {_pct(e['success_rate'])} ok")
    return "\n".join(lines)


def render_png(dot_source: str, path: str) -> None:
    dot = shutil.which("dot")
    if dot is None:
        raise CliError("--png needs Graphviz's `dot` program on PATH (Debian: apt-get install graphviz)")
    done = subprocess.run([dot, "-Tpng", "-o", path], input=dot_source.encode(), capture_output=True, timeout=60)
    if done.returncode != 0:
        raise CliError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")


def cmd_graph(client: Client, args) -> int:
    _check_interval(args)
    win, _ = _measure(_targets(client, args), args.interval)
    edges = graph_edges(win, args.mesh)
    if args.png:
        render_png(render_dot(edges), args.png)
        print(f"graph written to {args.png}")
    elif args.dot:
        print(render_dot(edges), end="")
    elif args.output == "json":
        print(json.dumps({"interval_seconds": round(win.seconds, 3), "edges": edges}, indent=2))
    else:
        print(render_graph_text(edges))
    return 0


def add_subcommands(sub, common) -> None:
    """`status`, `top` and `graph` for meshctl's parser."""
    st = sub.add_parser("status", parents=[common], help="hosts, the config each applied, instances and health")
    st.set_defaults(fn=cmd_status)
    for name, fn, help_ in (("top", cmd_top, "live per-route request rate, success rate and latency"),
                            ("graph", cmd_graph, "who calls whom, with rates and success rates")):
        p = sub.add_parser(name, parents=[common], help=help_)
        p.add_argument("--metrics", action="append", metavar="URL",
                       help="scrape this HOST:PORT or URL instead of the hosts' published addresses (repeatable)")
        p.add_argument("--interval", type=float, default=2.0, help="seconds between the two scrapes (default 2)")
        p.set_defaults(fn=fn)
    top = sub.choices["top"]
    top.add_argument("--once", action="store_true", help="print one table and exit")
    top.add_argument("--json", action="store_true", help="print JSON (implies one snapshot per interval)")
    graph = sub.choices["graph"]
    graph.add_argument("--dot", action="store_true", help="print Graphviz DOT instead of text")
    graph.add_argument("--png", metavar="FILE", help="render the graph to a PNG with Graphviz's dot")
