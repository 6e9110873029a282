"""App Mesh's REST-JSON protocol, read from botocore's `appmesh` service model (2019-01-25).

The model is the contract the AWS CLI, the SDKs and Terraform were built from: each
operation's method and `requestUri`, which input members travel in the path, the query
string or the JSON body, which output member is the whole body (`payload`), and the error
shapes with their HTTP statuses. meshd reads all of it from botocore rather than copying
it, so the REST front end cannot drift from what the clients send.

Two converters run per request, both driven by the model's shapes and the protobuf
descriptors of `meshd.v1` (whose fields are App Mesh's members in snake_case):
- `to_request`: path, query and JSON body → the MeshAdmin request message. The body goes
  through `meshd.api.validate.parse_json`, as meshctl's App Mesh JSON does, so both
  protocols parse one way.
- `to_output`: the response message → the output JSON, member by member as the model
  lists them (timestamps as epoch seconds, `long`s as numbers, required members always
  present), leaving out anything the model does not have.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable
from urllib.parse import unquote

import botocore.loaders

from meshd.api import kinds as K
from meshd.api.resources import Resources
from meshd.api.validate import parse_json
from meshd.v1 import admin_pb2

SERVICE = "appmesh"
API_VERSION = "2019-01-25"


class RequestError(Exception):
    """A request that does not fit the model: BadRequestException, with the member named."""

    def __init__(self, member: str, description: str):
        self.member, self.description = member, description
        super().__init__(f"{member}: {description}")


@lru_cache(maxsize=1)
def service_model() -> dict:
    return botocore.loaders.Loader().load_service_model(SERVICE, "service-2", API_VERSION)


def error_statuses() -> dict[str, int]:
    """Every modelled error shape's name and HTTP status."""
    shapes = service_model()["shapes"]
    return {name: s["error"]["httpStatusCode"] for name, s in shapes.items() if s.get("exception")}


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


@dataclass(frozen=True)
class Operation:
    """One App Mesh operation as served: how to find it, read it and answer it."""

    name: str  # "DescribeRoute": also the MeshAdmin RPC of the same name
    method: str
    pattern: re.Pattern  # requestUri with its {labels} as named groups
    uri_members: tuple[tuple[str, str], ...]  # (member, proto field)
    query_members: tuple[tuple[str, str, str, str], ...]  # (query name, member, proto field, shape type)
    body_members: frozenset[str]
    required_body: tuple[str, ...]
    request_cls: type
    output_shape: str
    payload: str | None  # the output member that is the whole body, if any
    status: int
    call: Callable[[Resources, object], object]

    @property
    def rpc(self) -> str:
        return f"/meshd.v1.MeshAdmin/{self.name}"


def _app_mesh_resource(fn: Callable[[Resources, object], object]) -> Callable[[Resources, object], object]:
    """A tag operation on App Mesh's resources only. meshd's own kinds (RoutePolicy,
    NodePolicy, Rollout) have ARNs of the same form, but App Mesh has no such resources, so
    its API does not offer them; meshd's admin API (meshctl) tags them."""
    def call(r: Resources, req):
        try:
            kind = K.parse_arn(req.resource_arn).kind
        except ValueError:
            kind = None  # the operation itself refuses a malformed ARN, as for any other
        if kind in K.BEYOND_KINDS:
            raise RequestError("resourceArn", f"App Mesh has no {kind.name} resources: {req.resource_arn!r} is "
                                              "served by meshd's admin API (meshctl), not App Mesh's")
        return fn(r, req)
    return call


def _call_for(name: str) -> Callable[[Resources, object], object]:
    """The `Resources` method behind an operation: the same one the gRPC servicer calls."""
    special = {"TagResource": Resources.tag_resource, "UntagResource": Resources.untag_resource,
               "ListTagsForResource": Resources.list_tags}
    if name in special:
        return _app_mesh_resource(special[name])
    for kind in K.APPMESH_KINDS:
        if name == f"List{kind.plural_title}":
            return lambda r, req, k=kind: r.list(k, req)
        for verb, fn in (("Create", Resources.create), ("Describe", Resources.describe),
                         ("Update", Resources.update), ("Delete", Resources.delete)):
            if name == f"{verb}{kind.title}":
                return lambda r, req, k=kind, f=fn: f(r, k, req)
    raise LookupError(f"App Mesh operation {name} has no meshd implementation")


def operations() -> list[Operation]:
    """All of the model's operations, each bound to its MeshAdmin request and call."""
    model = service_model()
    shapes = model["shapes"]
    out = []
    for name, op in model["operations"].items():
        http = op["http"]
        in_shape = shapes[op["input"]["shape"]]
        uri, query, body = [], [], []
        for member, ref in in_shape["members"].items():
            loc = ref.get("location")
            if loc == "uri":
                uri.append((ref.get("locationName", member), _snake(member)))
            elif loc == "querystring":
                query.append((ref.get("locationName", member), member, _snake(member), shapes[ref["shape"]]["type"]))
            elif loc is None:
                body.append(member)
            else:
                raise LookupError(f"{name}: member {member} in {loc} is not served")
        regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(http["requestUri"])) + "$"
        out_shape = shapes[op["output"]["shape"]]
        out.append(Operation(
            name=name, method=http["method"], pattern=re.compile(regex),
            uri_members=tuple(uri), query_members=tuple(query), body_members=frozenset(body),
            required_body=tuple(m for m in in_shape.get("required", ()) if m in body),
            request_cls=getattr(admin_pb2, f"{name}Request"), output_shape=op["output"]["shape"],
            payload=out_shape.get("payload"), status=http.get("responseCode", 200), call=_call_for(name)))
    return out


class Router:
    """(method, path) → the operation and its path parameters."""

    def __init__(self, ops: list[Operation]):
        self._by_method: dict[str, list[Operation]] = {}
        for op in ops:
            self._by_method.setdefault(op.method, []).append(op)
        self.paths = {op.pattern.pattern for op in ops}

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """(operation, decoded path labels, whether the path exists under another method)."""
        for op in self._by_method.get(method, ()):
            m = op.pattern.match(path)
            if m is not None:
                return op, {k: unquote(v) for k, v in m.groupdict().items()}, True
        other = any(op.pattern.match(path) for ops in self._by_method.values() for op in ops)
        return None, {}, other


def to_request(op: Operation, labels: dict[str, str], query, body: dict | None):
    """The MeshAdmin request for one REST call. `query` is a multidict of the query string."""
    req = op.request_cls()
    if body:
        unknown = sorted(set(body) - op.body_members)
        if unknown:
            raise RequestError(unknown[0], f"not a member of {op.name}'s input")
        # App Mesh JSON, parsed as meshctl's and gRPC's JSON is (meshd.api.validate): unknown
        # members, types and the model's non-empty lists are refused with their paths.
        req = parse_json(op.request_cls, body)
    for member in op.required_body:
        if not body or body.get(member) is None:
            raise RequestError(member, f"required by {op.name}")
    for label, field in op.uri_members:
        setattr(req, field, labels[label])
    for qname, member, field, typ in op.query_members:
        values = query.getall(qname, ())
        if not values:
            continue
        if len(values) > 1:
            raise RequestError(member, "given more than once")
        value = values[0]
        if typ == "integer":
            try:
                number = int(value)
            except ValueError:
                raise RequestError(member, f"not an integer: {value!r}") from None
            if number == 0:
                # Over gRPC 0 means "not given"; the REST form always gives it, and the
                # model's minimum is 1.
                raise RequestError(member, "must be at least 1")
            setattr(req, field, number)
        else:
            setattr(req, field, value)
    return req


# -- output -------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _plan(shape_name: str, descriptor) -> tuple:
    """(member, proto field name, member's shape, field descriptor, required) per output
    member the message has, in the model's order."""
    shape = service_model()["shapes"][shape_name]
    required = set(shape.get("required", ()))
    by_json = {f.json_name: f for f in descriptor.fields}
    plan = []
    for member, ref in shape["members"].items():
        f = by_json.get(member)
        if f is None:
            continue  # a member meshd does not keep (none today; the model decides the form)
        plan.append((member, f.name, ref["shape"], f, member in required))
    return tuple(plan)


def _value(v, shape_name: str, field):
    shape = service_model()["shapes"][shape_name]
    typ = shape["type"]
    if typ == "structure":
        return to_output(v, shape_name)
    if typ == "timestamp":  # epoch seconds, as rest-json sends them
        return v.seconds + v.nanos / 1e9
    if field.enum_type is not None:
        return field.enum_type.values_by_number[v].name
    if typ in ("integer", "long"):
        return int(v)
    if typ == "double":
        return float(v)
    return v


def to_output(msg, shape_name: str) -> dict:
    """The model's JSON form of a response message (or one of its parts)."""
    out = {}
    shapes = service_model()["shapes"]
    for member, fname, sub, field, required in _plan(shape_name, msg.DESCRIPTOR):
        if field.is_repeated:
            items = getattr(msg, fname)
            if not items and not required:
                continue
            member_shape = shapes[sub]["member"]["shape"]
            out[member] = [_value(v, member_shape, field) for v in items]
        elif field.message_type is not None or field.has_presence:
            if not msg.HasField(fname):
                continue
            out[member] = _value(getattr(msg, fname), sub, field)
        else:
            v = getattr(msg, fname)
            if not v and not required:
                continue  # proto3's "not set"
            out[member] = _value(v, sub, field)
    return out


def output_body(op: Operation, resp) -> dict:
    """The HTTP body of an operation's response: its payload member alone, or the output."""
    out = to_output(resp, op.output_shape)
    if op.payload is not None:
        return out.get(op.payload, {})
    return out
