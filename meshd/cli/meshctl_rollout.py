"""`meshctl rollout start|status|pause|resume|abort|promote`: drive a Rollout (meshd.v1) from
the command line. The controller does the work; these commands create the rollout, set the
spec's intents (with the version read, retried when the controller wrote its status in
between) and show where it is against its thresholds."""
from __future__ import annotations

import argparse
import time

import grpc

from meshd.api import kinds as K
from meshd.v1 import admin_pb2

FINISHED = K.FINISHED_PHASES
# An intent is written against the version just read; the controller writes the status
# once per analysis interval, so a conflict is retried with a fresh read a few times.
INTENT_ATTEMPTS = 8
# What each intent command sets in the spec (paused, abort, promote).
INTENTS = {
    "pause": {"paused": True},
    "resume": {"paused": False},
    "abort": {"abort": True},
    "promote": {"promote": True},
}


def _cli():
    from meshd.cli import meshctl  # noqa: PLC0415 - meshctl imports this module's add_subcommands

    return meshctl


def _ids(args, name: str) -> dict:
    if not args.mesh:
        raise _cli().CliError("rollouts need --mesh (or $MESHCTL_MESH)")
    return {"mesh_name": args.mesh, "rollout_name": name}


def _describe(client, ids: dict):
    return client.call("DescribeRollout", admin_pb2.DescribeRolloutRequest(**ids)).rollout


def cmd_start(client, args) -> int:
    """Create the rollouts of -f; one that exists and has finished starts again from its first
    step (deleted and created anew, its history with it); one in progress is left alone."""
    cli = _cli()
    docs = [(src, doc) for src, doc in cli.load_documents(args.file) if cli.kind_of_document(doc) is K.ROLLOUT]
    if not docs:
        raise cli.CliError(f"{args.file}: no Rollout document (kind: Rollout, rolloutName: ...)")
    for source, doc in docs:
        req = cli._parse_create(K.ROLLOUT, doc, source)
        ids = {"mesh_name": req.mesh_name, "rollout_name": req.rollout_name}
        label = f"rollout/{req.rollout_name}"
        current = cli._current(client, K.ROLLOUT, req)
        if current is not None:
            phase = current.status.phase
            if phase not in FINISHED:
                raise cli.CliError(f"{label} is in progress ({phase}, step {current.status.step + 1}); "
                                   "abort or promote it first")
            client.call("DeleteRollout", admin_pb2.DeleteRolloutRequest(
                **ids, expected_version=current.metadata.version))
        client.call("CreateRollout", req)
        print(f"{label} {'restarted' if current is not None else 'started'}")
    return 0


def cmd_intent(client, args) -> int:
    """pause, resume, abort, promote: the intent written into the spec with the version read."""
    cli = _cli()
    ids = _ids(args, args.name)
    for _ in range(INTENT_ATTEMPTS):
        r = _describe(client, ids)
        if r.status.phase in FINISHED:
            raise cli.CliError(f"rollout/{args.name} has finished ({r.status.phase})")
        spec = type(r.spec)()
        spec.CopyFrom(r.spec)
        for field, value in INTENTS[args.rollout_command].items():
            setattr(spec, field, value)
        try:
            client.stub.UpdateRollout(admin_pb2.UpdateRolloutRequest(
                **ids, spec=spec, expected_version=r.metadata.version), timeout=client.timeout)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.ABORTED:
                continue  # the controller wrote the status meanwhile: read again
            raise cli.CliError(cli.format_rpc_error(err, client.server)) from err
        print(f"rollout/{args.name}: {args.rollout_command} requested")
        return 0
    raise cli.CliError(f"rollout/{args.name} kept changing; try again")


def _measured(current, value, fmt: str) -> str:
    """A figure of the current window, or "-" while the window holds no canary request
    (a rate or a percentile of nothing is not 0)."""
    if not current.canary_requests or value is None:
        return "-"
    return format(value, fmt)


def _threshold(analysis, field: str, fmt: str) -> str:
    return fmt.format(getattr(analysis, field)) if analysis.HasField(field) else "-"


def _duration(d) -> str:
    return f"{d.value}{d.unit}" if d.HasField("value") else "-"


def status_lines(r) -> list[str]:
    """The rollout as a person reads it: where it is, the last analysis against the
    thresholds, and every finished step."""
    st, spec = r.status, r.spec
    a = spec.analysis
    n = len(spec.steps)
    step = f"{st.step + 1}/{n}" if st.step >= 0 else f"0/{n} (not started)"
    lines = [
        f"rollout {r.mesh_name}/{r.rollout_name}: {st.phase}   step {step}   "
        f"route {spec.route.virtual_router_name}/{spec.route.route_name}",
        f"weights     {spec.stable.virtual_node} {100 - st.canary_weight}%   "
        f"{spec.canary.virtual_node} {st.canary_weight}%",
        f"controller  {st.controller or '-'}",
        f"message     {st.message or '-'}",
    ]
    c = st.current
    ratio = c.canary_p99_ms / c.stable_p99_ms if c.stable_p99_ms else None
    if st.step >= 0:
        s = spec.steps[st.step] if st.step < n else None
        min_requests = s.min_requests if s is not None and s.HasField("min_requests") else "-"
        lines += [
            "analysis    measured      threshold",
            f"  requests      {c.canary_requests:<13} min {min_requests} (stable {c.stable_requests})",
            f"  success rate  {_measured(c, c.canary_success_rate, '.2f'):<13} "
            f"min {_threshold(a, 'min_success_rate', '{:g}%')}",
            f"  p99 ms        {_measured(c, c.canary_p99_ms, '.1f'):<13} max "
            f"{_duration(a.max_latency_p99) if a.HasField('max_latency_p99') else '-'}",
            f"  p99 / stable  {_measured(c, ratio, '.2f'):<13} "
            f"max {_threshold(a, 'max_latency_p99_ratio', '{:g}')}",
        ]
    if st.history:
        lines.append("history")
        lines.append(f"  {'STEP':<5} {'WEIGHT':<7} {'RESULT':<9} {'REQUESTS':<9} {'SUCCESS%':<9} "
                     f"{'P99 MS':<8} {'STABLE P99':<10} REASON")
        for h in st.history:
            lines.append(f"  {h.step + 1:<5} {h.weight:<7} {h.result:<9} {h.canary_requests:<9} "
                         f"{h.canary_success_rate:<9.2f} {h.canary_p99_ms:<8.1f} {h.stable_p99_ms:<10.1f} {h.reason}")
    return lines


def cmd_status(client, args) -> int:
    """The rollout's status; with --watch, again every --interval seconds until it finishes
    (or --max-wait seconds pass)."""
    cli = _cli()
    ids = _ids(args, args.name)
    deadline = time.monotonic() + args.max_wait
    while True:
        r = _describe(client, ids)
        if args.output == "table":
            print("\n".join(status_lines(r)), flush=True)
        else:
            cli._print(cli._to_dict(r), args.output)
        if not args.watch or r.status.phase in FINISHED:
            return 0 if r.status.phase != "ROLLED_BACK" or not args.watch else 3
        if time.monotonic() > deadline:
            raise cli.CliError(f"rollout/{args.name} still {r.status.phase} after {args.max_wait:g} s")
        time.sleep(args.interval)
        print()


def add_subcommands(sub, common: argparse.ArgumentParser) -> None:
    ro = sub.add_parser("rollout", parents=[common], help="start, follow and steer canary rollouts")
    rsub = ro.add_subparsers(dest="rollout_command", required=True)
    st = rsub.add_parser("start", parents=[common], help="create rollouts from a file (or restart finished ones)")
    st.add_argument("-f", "--file", required=True, help="a JSON/YAML file of Rollout documents, or - for stdin")
    st.set_defaults(fn=cmd_start)
    s = rsub.add_parser("status", parents=[common], help="phase, step, weights, figures against thresholds, history")
    s.add_argument("name")
    s.add_argument("--watch", "-w", action="store_true", help="refresh until the rollout finishes "
                   "(exit status 3 if it was rolled back)")
    s.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    s.add_argument("--max-wait", type=float, default=3600.0, help="give up watching after this many seconds")
    s.set_defaults(fn=cmd_status)
    for name, help_ in (("pause", "hold at the current step"), ("resume", "carry on from a pause"),
                        ("abort", "roll back to the stable target now"),
                        ("promote", "skip the remaining steps: all traffic to the canary now")):
        p = rsub.add_parser(name, parents=[common], help=help_)
        p.add_argument("name")
        p.set_defaults(fn=cmd_intent)
