"""`meshd`: the per-host daemon's command line."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from meshd import logs
from meshd.app import DEFAULT_ADMIN, DEFAULT_STATE_DIR, Meshd, MeshdConfig

log = logging.getLogger("meshd")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshd", description="meshd: a service mesh daemon, one per host.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--admin", default=os.environ.get("MESHD_ADMIN", DEFAULT_ADMIN),
                     help=f"admin API address HOST:PORT (default {DEFAULT_ADMIN})")
    run.add_argument("--etcd", default=os.environ.get("MESHD_ETCD", ""),
                     help="etcd endpoints URL[,URL...]; empty: start a private etcd (embedded default)")
    run.add_argument("--state-dir", default=os.environ.get("MESHD_STATE_DIR", DEFAULT_STATE_DIR),
                     help=f"where the embedded etcd keeps its data (default {DEFAULT_STATE_DIR})")
    run.add_argument("--host-name", default=os.environ.get("MESHD_HOST_NAME") or None,
                     help="this host's name in the mesh (default: the system host name)")
    run.add_argument("--lease-ttl", type=int, default=10, help="host lease TTL in seconds (default 10)")
    run.add_argument("--etcd-port", type=int, default=2379, help="embedded etcd client port (default 2379)")
    run.add_argument("--etcd-peer-port", type=int, default=2380, help="embedded etcd peer port (default 2380)")
    run.add_argument("--etcd-prefix", default="/meshd/v1/", help="key prefix in etcd (default /meshd/v1/)")
    run.add_argument("--log-level", default=os.environ.get("MESHD_LOG_LEVEL", "info"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.setup(args.log_level)
    cfg = MeshdConfig(
        admin=args.admin, etcd=[e for e in args.etcd.split(",") if e], state_dir=args.state_dir,
        lease_ttl=args.lease_ttl, embedded_etcd_port=args.etcd_port,
        embedded_peer_port=args.etcd_peer_port, etcd_prefix=args.etcd_prefix,
    )
    if args.host_name:
        cfg.host_name = args.host_name
    daemon = Meshd(cfg)

    def _shutdown(signum, _frame):
        log.info("signal received; shutting down", extra={"signal": signal.Signals(signum).name})
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        daemon.stop()

    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    try:
        daemon.start()
    except Exception as err:  # noqa: BLE001 - a startup failure is reported and exits non-zero
        log.error("meshd failed to start", extra={"error": str(err)})
        daemon.stop()
        return 1
    daemon.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
