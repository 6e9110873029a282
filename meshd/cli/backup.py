"""`meshctl backup` and `meshctl restore`: all mesh state as one file of App Mesh CLI-input
documents (plus instances), read at one etcd revision, and re-created in dependency order.

The backup reads the admin API's Watch from `resumeRevision` 0: its snapshot is a range read
pinned to one etcd revision, so the documents are a consistent point in time even while
others write. Tags are not part of that snapshot; they are read right after it, resource by
resource (ListTagsForResource), so a tag changed during the backup may be newer than the
revision. The mesh CA and other secrets are not resources and are not in the file.

A restore goes through the same plan as `meshctl apply` (`_plan`, `APPLY_ORDER`): what a
document refers to is created first; a resource that exists with the same spec is left
alone, so a restore that was interrupted can simply be run again.
"""
from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import grpc
import yaml
from google.protobuf import json_format

from meshd.api import kinds as K
from meshd.cli.meshctl import APPLY_ORDER, CliError, Client, _label, _plan, format_rpc_error, kind_of_document
from meshd.v1 import admin_pb2

FORMAT = "meshd-backup/v1"


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def _document(kind: K.Kind, data) -> dict:
    """The App Mesh CLI-input document (as `create-<kind> --cli-input-json` takes) for `data`."""
    doc = {_camel(f): getattr(data, f) for f in kind.id_fields}
    doc["spec"] = json_format.MessageToDict(data.spec)
    return doc


def _tags(client: Client, arn: str) -> list[dict]:
    tags, token = [], ""
    while True:
        resp = client.call("ListTagsForResource", admin_pb2.ListTagsForResourceRequest(resource_arn=arn, next_token=token))
        tags += [{"key": t.key, "value": t.value} for t in resp.tags]
        token = resp.next_token
        if not token:
            return tags


def snapshot(client: Client, mesh: str = "") -> tuple[int, list]:
    """(revision, events) of the Watch snapshot: every resource and instance at one revision."""
    stream = client.stub.Watch(admin_pb2.WatchRequest(mesh_name=mesh, resume_revision=0), timeout=client.timeout)
    events, revision = [], 0
    try:
        for resp in stream:
            if resp.reset:
                events.clear()
            events.extend(resp.events)
            revision = resp.revision
            if resp.snapshot_done:
                return revision, events
    except grpc.RpcError as err:
        raise CliError(format_rpc_error(err, client.server)) from err
    finally:
        stream.cancel()
    raise CliError("the Watch stream ended before its snapshot was complete")


def backup(client: Client, mesh: str = "") -> dict:
    """All mesh state (or one mesh's) as a backup document."""
    revision, events = snapshot(client, mesh)
    resources, instances, metadata = [], [], {}
    order = {k.name: i for i, k in enumerate(APPLY_ORDER)}
    for ev in sorted(events, key=lambda e: (order.get(e.kind, len(order)), e.path)):
        if ev.kind == "instance":
            inst = json_format.MessageToDict(ev.resource.instance)
            for transient in ("leaseId", "registeredAt"):
                inst.pop(transient, None)
            instances.append(inst)
            continue
        kind = K.BY_NAME[ev.kind]
        data = getattr(ev.resource, kind.field)
        if kind is K.ROLLOUT and data.status.phase in K.FINISHED_PHASES:
            # History, not state: re-created, a finished rollout would start again from its
            # first step (a status is the server's, never restored) and move its route back.
            continue
        doc = _document(kind, data)
        tags = _tags(client, data.metadata.arn)
        if tags:
            doc["tags"] = tags
        resources.append(doc)
        metadata[ev.path] = {"version": data.metadata.version, "uid": data.metadata.uid, "arn": data.metadata.arn}
    return {
        "format": FORMAT, "revision": revision, "mesh": mesh, "server": client.server,
        "createdAt": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "resources": resources, "instances": instances,
        # For reading only: restore creates new resources, with new versions and uids.
        "metadata": metadata,
    }


def load(path: str) -> dict:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    try:
        doc = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as err:
        raise CliError(f"{path}: not a backup file: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CliError(f"{path}: not a {FORMAT} file")
    return doc


def restore(client: Client, doc: dict, *, source: str = "backup", overwrite: bool = False,
            instances: bool = False, dry_run: bool = False, out=print) -> dict:
    """Re-create the backup's resources in dependency order; returns counts by outcome."""
    docs = [(f"{source}: resources[{i}]", d) for i, d in enumerate(doc.get("resources", []))]
    for s, d in docs:
        kind_of_document(d)  # every document names its kind, before anything is written
    plan = _plan(client, docs)
    differing = [_label(kind, req) for _, kind, req, current in plan if current is not None and current.spec != req.spec]
    if differing and not overwrite:
        raise CliError("the target already holds different versions of " + ", ".join(differing)
                       + "; restore into an empty cluster or prefix, or pass --overwrite")
    counts = {"created": 0, "updated": 0, "unchanged": 0, "instances": 0}
    for _, kind, req, current in plan:
        label = _label(kind, req)
        if current is not None and current.spec == req.spec:
            counts["unchanged"] += 1
            out(f"{label} unchanged")
            continue
        if dry_run:
            out(f"{label} would be {'created' if current is None else 'updated'}")
            continue
        if current is None:
            client.call(f"Create{kind.title}", req)
            counts["created"] += 1
            out(f"{label} created")
        else:
            upd = getattr(admin_pb2, f"Update{kind.title}Request")(
                **{f: getattr(req, f) for f in kind.id_fields}, spec=req.spec,
                expected_version=current.metadata.version)
            client.call(f"Update{kind.title}", upd)
            counts["updated"] += 1
            out(f"{label} updated")
    held = doc.get("instances", [])
    if instances and not dry_run:
        for inst in held:
            req = admin_pb2.RegisterInstanceRequest(
                mesh_name=inst["meshName"], virtual_node_name=inst["virtualNodeName"],
                instance_id=inst["instanceId"], address=inst["address"], port=int(inst["port"]),
                attributes=inst.get("attributes", {}), ttl_seconds=int(inst.get("ttlSeconds", 0)),
                health=inst.get("health", ""), locality=json_format.ParseDict(inst.get("locality", {}),
                                                                              admin_pb2.Locality()))
            client.call("RegisterInstance", req)
            counts["instances"] += 1
        out(f"{len(held)} instances registered through {client.server} (held by its lease now)")
    elif held:
        out(f"{len(held)} instances in the backup not registered: their hosts register them again "
            "(or pass --instances)")
    return counts


def cmd_backup(client: Client, args) -> int:
    doc = backup(client, args.mesh)
    text = (yaml.safe_dump(doc, sort_keys=False) if args.file.endswith((".yaml", ".yml"))
            else json.dumps(doc, indent=2) + "\n")
    if args.file == "-":
        sys.stdout.write(text)
    else:
        Path(args.file).write_text(text)
        print(f"backed up {len(doc['resources'])} resources and {len(doc['instances'])} instances "
              f"at revision {doc['revision']} to {args.file}", file=sys.stderr)
    return 0


def cmd_restore(client: Client, args) -> int:
    doc = load(args.file)
    counts = restore(client, doc, source=args.file, overwrite=args.overwrite, instances=args.instances,
                     dry_run=args.dry_run)
    print(", ".join(f"{n} {k}" for k, n in counts.items()), file=sys.stderr)
    return 0


def add_subcommands(sub, common) -> None:
    """`backup` and `restore` for meshctl's parser."""
    b = sub.add_parser("backup", parents=[common], help="write all mesh state (one revision) to a file")
    b.add_argument("-f", "--file", required=True, help="JSON, or YAML by extension; - for stdout")
    b.set_defaults(fn=cmd_backup)
    r = sub.add_parser("restore", parents=[common], help="re-create a backup's resources in dependency order")
    r.add_argument("-f", "--file", required=True, help="a file written by backup; - for stdin")
    r.add_argument("--overwrite", action="store_true", help="update resources that exist with another spec")
    r.add_argument("--instances", action="store_true",
                   help="also register the backup's instances (through this meshd's host lease)")
    r.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    r.set_defaults(fn=cmd_restore)
