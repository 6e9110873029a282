"""`meshd`: the per-host daemon's command line (init, run, join)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from meshd import logs
from meshd.api.resources import QUOTAS, parse_quota
from meshd.app import DEFAULT_ADMIN, DEFAULT_CLUSTER_KEY, DEFAULT_STATE_DIR, Meshd, MeshdConfig
from meshd.observe import DEFAULT_METRICS, ObserveConfig
from meshd.proxy import RuntimeConfig
from meshd.proxy.config import parse_locality
from meshd.security import ClusterKey
from meshd.security.errors import ClusterKeyError

log = logging.getLogger("meshd")


def _quota(text: str) -> tuple[str, int]:
    try:
        return parse_quota(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _run_args(run: argparse.ArgumentParser) -> None:
    env = os.environ.get
    run.add_argument("--admin", default=env("MESHD_ADMIN", DEFAULT_ADMIN),
                     help=f"admin API address HOST:PORT, mTLS unless --insecure-local (default {DEFAULT_ADMIN})")
    run.add_argument("--admin-token", default=env("MESHD_ADMIN_TOKEN", ""),
                     help="a second admin listener, TLS with bearer API tokens (default: none)")
    run.add_argument("--aws-api", default=env("MESHD_AWS_API", ""),
                     help="serve App Mesh's REST API (AWS CLI, SDKs, Terraform; SigV4 with meshctl access keys) "
                          "on HOST:PORT, TLS with the host certificate (plaintext on loopback with "
                          "--insecure-local); default: not served")
    run.add_argument("--aws-api-rate", type=float, default=float(env("MESHD_AWS_API_RATE", "100")),
                     help="App Mesh API requests/s per access key, bursts of twice that; beyond it "
                          "TooManyRequestsException (0: unlimited; default 100)")
    run.add_argument("--aws-partition", default=env("MESHD_AWS_PARTITION", ""),
                     help="the AWS partition in this cluster's ARNs (default: the cluster's recorded one, else aws)")
    run.add_argument("--aws-region", default=env("MESHD_AWS_REGION", ""),
                     help="the AWS region in this cluster's ARNs (default: the cluster's recorded one, else us-east-1)")
    run.add_argument("--aws-account", default=env("MESHD_AWS_ACCOUNT", ""),
                     help="the 12-digit account that owns this cluster's meshes, in its ARNs (default: the "
                          "cluster's recorded one, else 000000000000). The first meshd of a cluster records "
                          "all three in etcd; a meshd given other values than the recorded ones will not start")
    run.add_argument("--quota", action="append", type=_quota, default=[], metavar="NAME=N",
                     help=f"refuse creates beyond N resources (LimitExceeded), with App Mesh's quota names: "
                          f"{', '.join(QUOTAS)} (repeatable; default: unlimited)")
    run.add_argument("--insecure-local", action="store_true", default=env("MESHD_INSECURE_LOCAL") == "1",
                     help="serve --admin as plaintext; refused unless it is a loopback address")
    run.add_argument("--etcd", default=env("MESHD_ETCD", ""),
                     help="etcd endpoints URL[,URL...]; empty: start a private etcd (embedded default)")
    run.add_argument("--state-dir", default=env("MESHD_STATE_DIR", DEFAULT_STATE_DIR),
                     help=f"embedded etcd data and the host identity (default {DEFAULT_STATE_DIR})")
    run.add_argument("--host-name", default=env("MESHD_HOST_NAME") or None,
                     help="this host's name in the mesh (default: the system host name)")
    run.add_argument("--scoped", action="store_true", default=env("MESHD_SCOPED", "") in ("1", "true"),
                     help="watch only the meshes of this host's apps and gateways and compile only what they "
                          "reach (their nodes' backends), as App Mesh configures each Envoy; default: every "
                          "mesh whole, so that under ALLOW_ALL an app may call any virtual service of its mesh")
    run.add_argument("--locality", default=env("MESHD_LOCALITY", ""), metavar="REGION/ZONE[/SUB_ZONE]",
                     help="where this host runs, for locality-aware balancing: its routers prefer endpoints "
                          "near it, and the instances it registers carry it (no sub-zone unless given; "
                          "default: the --config file's locality, else none)")
    run.add_argument("--cluster-key", default=env("MESHD_CLUSTER_KEY", DEFAULT_CLUSTER_KEY),
                     help=f"the cluster key file; hosts without it cannot sign (default {DEFAULT_CLUSTER_KEY})")
    run.add_argument("--trust-domain", default=env("MESHD_TRUST_DOMAIN", "meshd.local"))
    run.add_argument("--cert-ttl-hours", type=float, default=float(env("MESHD_CERT_TTL_HOURS", "24")),
                     help="lifetime of the workload and host certificates this host signs (default 24)")
    run.add_argument("--join-token", default=env("MESHD_JOIN_TOKEN", ""),
                     help="a one-time bootstrap token (meshctl token create) to obtain the host identity")
    run.add_argument("--join-server", default=env("MESHD_JOIN_SERVER", ""),
                     help="the token listener (--admin-token) of a meshd that holds the cluster key")
    run.add_argument("--signer", default=env("MESHD_SIGNER", ""),
                     help="the mTLS admin address of a signing meshd, for renewals (default: --join-server)")
    run.add_argument("--config", default=env("MESHD_CONFIG", ""),
                     help="data-plane config (YAML): the local apps this meshd serves, their egress ports, "
                          "and the virtual gateways it runs")
    run.add_argument("--egress", default=env("MESHD_EGRESS", ""),
                     help="egress listener for the first local app without one (e.g. 127.0.0.1:15001)")
    run.add_argument("--ingress", default=env("MESHD_INGRESS", ""),
                     help="mTLS ingress listener for traffic from other meshds (default 127.0.0.1:15443)")
    run.add_argument("--advertise", default=env("MESHD_ADVERTISE", ""),
                     help="the ingress address other meshds should use (default: the ingress address)")
    run.add_argument("--metrics", default=env("MESHD_METRICS"),
                     help=f"serve Prometheus /metrics on HOST:PORT (port 0: any free port; 'off': none; "
                          f"default: the config file's observability.metrics, else {DEFAULT_METRICS})")
    run.add_argument("--metrics-otlp-endpoint", default=env("MESHD_METRICS_OTLP_ENDPOINT"),
                     help="also push the metrics over OTLP gRPC to this collector, e.g. http://127.0.0.1:4317 "
                          "(default: the config file's observability.metricsOtlp.endpoint; none: no push)")
    run.add_argument("--tracing-endpoint", default=env("MESHD_TRACING_ENDPOINT"),
                     help="OTLP gRPC collector for traces, e.g. http://127.0.0.1:4317 (default: the config "
                          "file's observability.tracing.endpoint, else OTEL_EXPORTER_OTLP_ENDPOINT; none: off)")
    run.add_argument("--trace-sample-ratio", type=float, default=None,
                     help="share of new traces recorded, 0..1; a caller's sampled flag is always followed "
                          "(default: OTEL_TRACES_SAMPLER_ARG, else 1.0)")
    run.add_argument("--lease-ttl", type=int, default=10, help="host lease TTL in seconds (default 10)")
    run.add_argument("--etcd-port", type=int, default=2379, help="embedded etcd client port (default 2379)")
    run.add_argument("--etcd-peer-port", type=int, default=2380, help="embedded etcd peer port (default 2380)")
    run.add_argument("--etcd-prefix", default="/meshd/v1/", help="key prefix in etcd (default /meshd/v1/)")
    run.add_argument("--log-level", default=env("MESHD_LOG_LEVEL", "info"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshd", description="meshd: a service mesh daemon, one per host.")
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create the cluster key (once per cluster; copy it to signing hosts)")
    init.add_argument("--cluster-key", default=os.environ.get("MESHD_CLUSTER_KEY", DEFAULT_CLUSTER_KEY))
    run = sub.add_parser("run", help="run the daemon")
    _run_args(run)
    join = sub.add_parser("join", help="run the daemon, joining the cluster with a bootstrap token")
    _run_args(join)
    pi = sub.add_parser("proxy-init", help="set up the iptables rules that send an app's traffic through meshd "
                                           "(App Mesh's APPMESH_* route-manager environment)")
    what = pi.add_mutually_exclusive_group()
    what.add_argument("--clean", action="store_true", help="remove the rules instead")
    what.add_argument("--show", action="store_true", help="print the rules with their packet counters")
    sub.add_parser("sidecar", help="run in place of App Mesh's Envoy sidecar, configured by its environment "
                                   "(APPMESH_RESOURCE_ARN, ENVOY_ADMIN_ACCESS_PORT, ...; see meshd/sidecar.py)")
    ga = sub.add_parser("grant-admin", help="bootstrap an operator: a cluster-admin API token, written "
                                             "straight to etcd (whoever can write etcd is cluster admin anyway)")
    ga.add_argument("--principal", required=True)
    ga.add_argument("--etcd", required=True, help="etcd endpoints URL[,URL...]")
    ga.add_argument("--etcd-prefix", default="/meshd/v1/")
    return p


def cmd_grant_admin(args) -> int:
    import registry  # noqa: PLC0415 - only this subcommand talks to etcd directly
    from meshd.security import Roles, Tokens  # noqa: PLC0415

    store = registry.Store([e for e in args.etcd.split(",") if e], prefix=args.etcd_prefix)
    try:
        Roles(store).grant(args.principal, "admin", "*", granted_by="meshd grant-admin")
        issued = Tokens(store).create_api_token(args.principal, created_by="meshd grant-admin")
    except registry.Unavailable as err:
        print(f"meshd grant-admin: {err}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(issued.token)
    return 0


def cmd_proxy_init(args) -> int:
    from meshd import proxyinit  # noqa: PLC0415 - only this subcommand runs iptables

    try:
        cfg = proxyinit.InitConfig.from_env()
        if args.show:
            proxyinit.show(cfg)
        elif args.clean:
            proxyinit.clean(cfg)
        elif not cfg.enabled:
            print("APPMESH_START_ENABLED is not 1: no rules set up")
        else:
            proxyinit.setup(cfg)
    except proxyinit.InitError as err:
        print(f"meshd proxy-init: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_init(args) -> int:
    try:
        key = ClusterKey.generate(args.cluster_key)
    except ClusterKeyError as err:
        print(f"meshd init: {err}", file=sys.stderr)
        return 1
    print(f"cluster key written to {key.source} (mode 0600); copy it to every host that should sign")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "init":
        return cmd_init(args)
    if args.command == "grant-admin":
        return cmd_grant_admin(args)
    if args.command == "proxy-init":
        return cmd_proxy_init(args)
    if args.command == "sidecar":
        from meshd import sidecar  # noqa: PLC0415
        return sidecar.run()
    if args.command == "join" and not args.join_token:
        print("meshd join: --join-token is required", file=sys.stderr)
        return 2
    logs.setup(args.log_level)
    try:
        runtime = RuntimeConfig.load(args.config) if args.config else None
        observe = ObserveConfig.load(args.config) if args.config else ObserveConfig()
    except (OSError, ValueError) as err:
        # ConfigError (a ValueError) names the key: "apps[0].virtualnode: unknown key".
        print(f"meshd: --config {args.config}: {err}", file=sys.stderr)
        return 2
    cfg = MeshdConfig(
        admin=args.admin, admin_token=args.admin_token, insecure_local=args.insecure_local,
        etcd=[e for e in args.etcd.split(",") if e], state_dir=args.state_dir,
        lease_ttl=args.lease_ttl, embedded_etcd_port=args.etcd_port,
        embedded_peer_port=args.etcd_peer_port, etcd_prefix=args.etcd_prefix,
        cluster_key=args.cluster_key, trust_domain=args.trust_domain, join_token=args.join_token,
        cert_ttl_hours=args.cert_ttl_hours,
        join_server=args.join_server, signer=args.signer,
        runtime=runtime,
        egress=args.egress, ingress=args.ingress, advertise=args.advertise,
        aws_api=args.aws_api, aws_api_rate=args.aws_api_rate,
        aws_partition=args.aws_partition, aws_region=args.aws_region, aws_account=args.aws_account,
        quotas=dict(args.quota), scoped=args.scoped,
    )
    if args.host_name:
        cfg.host_name = args.host_name
    try:
        cfg.locality = parse_locality(args.locality or (runtime.locality if runtime else ""))
    except ValueError as err:
        print(f"meshd: --locality: {err}", file=sys.stderr)
        return 2
    cfg.observe = observe
    if args.metrics is not None:
        cfg.observe.metrics = "" if args.metrics == "off" else args.metrics
    if args.metrics_otlp_endpoint is not None:
        cfg.observe.metrics_otlp_endpoint = args.metrics_otlp_endpoint
    if args.tracing_endpoint is not None:
        cfg.observe.tracing_endpoint = args.tracing_endpoint
    if args.trace_sample_ratio is not None:
        cfg.observe.sample_ratio = args.trace_sample_ratio
    daemon = Meshd(cfg)
    stop = threading.Event()

    def _shutdown(signum, _frame):
        # Only note the request: stopping runs on the main thread below, never inside the
        # handler, which may interrupt the main thread while it holds a lock (in start()).
        log.info("signal received; shutting down", extra={"signal": signal.Signals(signum).name})
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        stop.set()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    try:
        daemon.start()
    except Exception as err:  # noqa: BLE001 - a startup failure is reported and exits non-zero
        log.error("meshd failed to start", extra={"error": str(err)})
        daemon.stop()
        return 1
    # A timed wait: the kernel may deliver SIGTERM to any thread, and then the handler runs
    # only when the main thread next executes Python; an untimed wait would never wake.
    while not stop.wait(0.5):
        pass
    daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
