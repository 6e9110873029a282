"""Coverage-guided fuzzing of App Mesh document parsing: meshctl's loader, the admin API's validation and the route compiler.

Run (see fuzz/README.md):  python fuzz/fuzz_admin_json.py CORPUS_DIR -max_total_time=300 -timeout=10

One input is one file given to `meshctl apply -f`. It goes the whole way a document goes
before it reaches the store, with the project's own functions:
  1. meshctl: load_documents (JSON/YAML), kind_of_document, and the Create request built
     by parse_json (validate.py's shape check, then protobuf's json_format.ParseDict);
  2. the admin API's checks of that request, as Resources.create makes them: the names
     (Resources._ids), validate_spec, the tags, the store path, ARN and references;
  3. for a spec that passed, the compiler's (compile_route / compile_node), and a round
     trip: MessageToDict (meshctl get -o json) parsed and validated again must give the
     same message;
  4. the same document as plain JSON to validate_spec's Mapping form.
The only exceptions allowed are the declared ones: CliError (meshctl), InvalidSpec and
TooManyTags (validation) and CompileError (the compiler). Anything else escapes and is a crash.
"""
from __future__ import annotations

import json
import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import run  # noqa: E402

# atheris instruments by top-level package (all of meshd, all of google): import first what
# parses no document, generated protobuf code and protobuf's internals above all, so that
# start-up takes seconds instead of half a minute.
import google.protobuf.descriptor_pool  # noqa: E402,F401
import google.protobuf.message_factory  # noqa: E402,F401
import google.protobuf.text_format  # noqa: E402,F401
import google.rpc.error_details_pb2  # noqa: E402,F401
import google.rpc.status_pb2  # noqa: E402,F401
import meshd.observe.accesslog  # noqa: E402,F401
import meshd.security.ca  # noqa: E402,F401
import meshd.security.rbac  # noqa: E402,F401
import meshd.security.tokens  # noqa: E402,F401
import meshd.v1.admin_pb2  # noqa: E402,F401
import meshd.v1.admin_pb2_grpc  # noqa: E402,F401
import meshd.v1.spec_pb2  # noqa: E402,F401

with atheris.instrument_imports(include=["meshd.api.validate", "meshd.api.kinds", "meshd.api.resources",
                                         "meshd.cli.meshctl", "meshd.compile", "google.protobuf.json_format"]):
    from google.protobuf import json_format

    from meshd.api import kinds as K
    from meshd.api.errors import TooManyTags
    from meshd.api.resources import AwsIdentity, Resources, _validate_tags
    from meshd.api.validate import SPEC_TYPES, InvalidSpec, parse_json, validate_spec
    from meshd.cli.meshctl import CliError, _parse_create, kind_of_document, load_documents
    from meshd.compile import CompileError, compile_node, compile_route

# The checks Resources.create makes before it touches the store; they never use it.
SERVER = Resources(store=None)
# The file meshctl reads: an anonymous one (memfd), gone with the process however libFuzzer
# ends it, read through its /proc path as any file given to -f.
FD = os.memfd_create("meshd-fuzz-document")
FILE = f"/proc/self/fd/{FD}"


def server_side(kind: K.Kind, req) -> None:
    """What the admin API does with a Create request before its store transaction."""
    ids = SERVER._ids(kind, req)
    validate_spec(kind.name, req.spec)
    _validate_tags(req.tags)
    kind.path(ids)
    kind.parent_paths(ids)
    aws = AwsIdentity()
    kind.arn(ids, partition=aws.partition, region=aws.region, account=aws.account)
    tuple(kind.references(ids[0], req.spec))
    return ids


def after_validation(kind: K.Kind, ids, req) -> None:
    try:
        if kind is K.ROUTE:
            compile_route(ids[1], ids[2], req.spec)
        elif kind is K.VIRTUAL_NODE:
            compile_node(ids[0], ids[1], req.spec, "fuzz.local")
    except CompileError:
        pass
    # `meshctl get -o json` prints MessageToDict; applying that output again must work.
    again = parse_json(type(req), json_format.MessageToDict(req))
    if again != req:
        raise AssertionError(f"round trip changed the request:\n{req}\n!=\n{again}")
    server_side(kind, again)


def one_input(data: bytes) -> None:
    os.ftruncate(FD, 0)
    os.pwrite(FD, data, 0)
    try:
        docs = load_documents(FILE)
    except CliError:
        docs = []
    for _source, doc in docs:
        try:
            kind = kind_of_document(doc)
            req = _parse_create(kind, doc, "fuzz")
            ids = server_side(kind, req)
        except (CliError, InvalidSpec, TooManyTags):
            continue
        after_validation(kind, ids, req)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return      # not JSON: the stdlib's business, and meshctl read it as YAML above
    if isinstance(doc, dict) and isinstance(doc.get("spec"), dict):
        for kind in SPEC_TYPES:
            try:
                validate_spec(kind, doc["spec"])
            except InvalidSpec:
                pass


if __name__ == "__main__":
    run(one_input)
