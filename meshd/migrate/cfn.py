"""CloudFormation templates -> App Mesh CLI-input documents.

`load` reads a template (JSON, or YAML with CloudFormation's short forms such as `!Ref` and
`!GetAtt A.B`, which it turns into their long forms). `convert` resolves the template's
intrinsic functions and turns each `AWS::AppMesh::*` resource into the document that App
Mesh's CLI takes for its Create call, in dependency order; other resource types are listed
as skipped. A template that cannot be settled here (an import from another stack, a
reference to an EC2 or ECS resource, a parameter with neither a Default nor a value given)
is refused whole with a `ConversionError` naming the JSON path of the value.

Property names are mapped by the published schemas, not by rule: CloudFormation's resource
provider schema for each `AWS::AppMesh::*` type (shipped with cfn-lint) gives the structure
of the properties, and botocore's appmesh model gives the exact App Mesh member each one
becomes (the member whose name matches case-insensitively: `DNS` -> `dns`, `AWSCloudMap`
-> `awsCloudMap`), and the member's type (strings such as "8080" become integers where App
Mesh takes a number, as CloudFormation converts them).
"""
from __future__ import annotations

import base64
import functools
import importlib.resources
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import botocore.loaders
import yaml

from meshd.api import kinds as K

# The order apply creates kinds in: what a document refers to exists before it.
KIND_ORDER = ("Mesh", "VirtualNode", "VirtualRouter", "Route", "VirtualService", "VirtualGateway", "GatewayRoute")
_PREFIX = "AWS::AppMesh::"

# Pseudo parameters when neither the template's caller nor `params` set them: the identity
# a meshd cluster has by default (meshd/api/resources.py), so ARNs match the cluster's.
PSEUDO_DEFAULTS = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "000000000000",
    "AWS::URLSuffix": "amazonaws.com",
}


class ConversionError(ValueError):
    """The template cannot be converted; `path` is the JSON path of the value at fault
    (e.g. `Resources.ApiNode.Properties.Spec.ServiceDiscovery.DNS.Hostname`)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass
class Conversion:
    """App Mesh documents as (kind title, CLI-input document), in dependency order, and the
    (logical id, resource type) of every resource that is not App Mesh's."""

    documents: list[tuple[str, dict]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


# -- Reading templates --------------------------------------------------------------------

class CfnLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus CloudFormation's short-form tags, read as their long forms:
    `!Ref X` -> {"Ref": "X"}, `!GetAtt A.B` -> {"Fn::GetAtt": ["A", "B"]},
    `!Condition C` -> {"Condition": "C"}, `!Sub ...` -> {"Fn::Sub": ...} and so on."""


def _short_form(loader: CfnLoader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _short_form)


def load(path_or_text: str | Path) -> dict:
    """A template from a file path or from its text, JSON or YAML."""
    if isinstance(path_or_text, Path) or ("\n" not in path_or_text and Path(path_or_text).is_file()):
        text = Path(path_or_text).read_text()
    else:
        text = path_or_text
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            doc = yaml.load(text, Loader=CfnLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as err:
            raise ConversionError("", f"not valid JSON or YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ConversionError("", "a CloudFormation template is an object")
    return doc


# -- The schemas ----------------------------------------------------------------------------

@functools.cache
def _appmesh_model() -> dict:
    return botocore.loaders.Loader().load_service_model("appmesh", "service-2")["shapes"]


@functools.cache
def _resource_schema(title: str) -> dict:
    """CloudFormation's provider schema of AWS::AppMesh::<title>, as cfn-lint ships it."""
    root = importlib.resources.files("cfnlint") / "data" / "schemas"
    index = json.loads((root / "providers" / "us-east-1.json").read_text())
    return json.loads((root / "resources" / f"{index[_PREFIX + title]}.json").read_text())


def _schema_def(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _props(schema: dict, node: dict) -> dict:
    return _schema_def(schema, node).get("properties", {})


# -- Converting -----------------------------------------------------------------------------

class _NoValue:
    def __repr__(self):
        return "AWS::NoValue"


NO_VALUE = _NoValue()
_FUNCTIONS = ("Ref", "Fn::GetAtt", "Fn::Sub", "Fn::Join", "Fn::Select", "Fn::Split", "Fn::If", "Fn::FindInMap",
              "Fn::Base64", "Fn::ImportValue", "Fn::GetAZs", "Fn::Cidr", "Fn::Transform", "Fn::Length",
              "Fn::ToJsonString", "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or")
_NAME_PROPS = {"Mesh": ("MeshName",), "VirtualNode": ("MeshName", "VirtualNodeName"),
               "VirtualRouter": ("MeshName", "VirtualRouterName"),
               "Route": ("MeshName", "VirtualRouterName", "RouteName"),
               "VirtualService": ("MeshName", "VirtualServiceName"),
               "VirtualGateway": ("MeshName", "VirtualGatewayName"),
               "GatewayRoute": ("MeshName", "VirtualGatewayName", "GatewayRouteName")}


def convert(template: dict, *, params: dict[str, str] = {}, source: str = "") -> Conversion:  # noqa: B006
    """The App Mesh documents of `template`'s `AWS::AppMesh::*` resources, in dependency
    order. `params` sets parameters (over their Defaults) and pseudo parameters
    (`AWS::Region`, `AWS::AccountId`, `AWS::Partition`, `AWS::StackName`); `source` (the
    file) names the stack when `AWS::StackName` is not given."""
    return _Template(template, dict(params), source).convert()


class _Template:
    def __init__(self, template: dict, params: dict[str, str], source: str):
        self.t = template
        self.params = params
        self.source = source
        resources = template.get("Resources")
        if not isinstance(resources, dict) or not resources:
            raise ConversionError("Resources", "a template needs a Resources object with at least one resource")
        self.resources: dict = resources
        self.conditions: dict = template.get("Conditions") or {}
        self.mappings: dict = template.get("Mappings") or {}
        self.parameters: dict = template.get("Parameters") or {}
        self._cond_values: dict[str, bool] = {}
        self._cond_busy: set[str] = set()
        self._ids: dict[str, tuple[str, ...]] = {}
        self._ids_busy: set[str] = set()
        self._deps: set[str] | None = None  # AppMesh resources the resource being converted refers to
        self._name_deps: dict[str, set[str]] = {}

    # Template parts ---------------------------------------------------------------------

    def resource(self, logical: str, path: str) -> tuple[str, dict]:
        res = self.resources.get(logical)
        if not isinstance(res, dict) or not isinstance(res.get("Type"), str):
            raise ConversionError(path, f"no resource {logical!r} in this template")
        return res["Type"], res

    def included(self, logical: str) -> bool:
        res = self.resources[logical]
        cond = res.get("Condition")
        if cond is None:
            return True
        if not isinstance(cond, str):
            raise ConversionError(f"Resources.{logical}.Condition", "names a condition of Conditions")
        return self.condition(cond, f"Resources.{logical}.Condition")

    def condition(self, name: str, path: str) -> bool:
        if name in self._cond_values:
            return self._cond_values[name]
        if name not in self.conditions:
            raise ConversionError(path, f"no condition {name!r} in Conditions")
        if name in self._cond_busy:
            raise ConversionError(f"Conditions.{name}", "circular condition")
        self._cond_busy.add(name)
        value = self.boolean(self.conditions[name], f"Conditions.{name}")
        self._cond_busy.discard(name)
        self._cond_values[name] = value
        return value

    def boolean(self, value, path: str) -> bool:
        if isinstance(value, dict) and list(value) == ["Condition"]:
            return self.condition(value["Condition"], path + ".Condition")
        v = self.resolve(value, path)
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return v.lower() == "true"
        raise ConversionError(path, f"a condition must be true or false, not {v!r}")

    def parameter(self, name: str, path: str):
        if name in PSEUDO_DEFAULTS or name.startswith("AWS::"):
            return self.pseudo(name, path)
        decl = self.parameters.get(name)
        if not isinstance(decl, dict):
            raise ConversionError(path, f"Ref {name!r}: no such parameter or resource in this template")
        typ = str(decl.get("Type", "String"))
        if name in self.params:
            value = self.params[name]
        elif "Default" in decl:
            value = decl["Default"]
        else:
            raise ConversionError(path, f"parameter {name} has no Default: pass --param {name}=<value>")
        if typ.startswith("AWS::SSM::Parameter::Value"):
            raise ConversionError(path, f"parameter {name} ({typ}) is read from SSM Parameter Store when the stack "
                                        f"deploys; give its value with --param {name}=<value> and Type String")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # CloudFormation passes Number parameters to properties as strings
        allowed = decl.get("AllowedValues")
        if allowed is not None and str(value) not in [str(a) for a in allowed]:
            raise ConversionError(path, f"parameter {name}={value!r} is not one of its AllowedValues {allowed}: "
                                        f"pass --param {name}=<one of them>")
        pattern = decl.get("AllowedPattern")
        if pattern is not None and isinstance(value, str) and not re.fullmatch(pattern, value):
            raise ConversionError(path, f"parameter {name}={value!r} does not match its AllowedPattern {pattern!r}")
        if typ == "CommaDelimitedList" or typ.startswith("List<"):
            return [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
        return value

    def pseudo(self, name: str, path: str):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.params:
            return self.params[name]
        if name in PSEUDO_DEFAULTS:
            return PSEUDO_DEFAULTS[name]
        if name == "AWS::StackName":
            return Path(self.source).stem if self.source else "stack"
        if name == "AWS::StackId":
            return (f"arn:{self.pseudo('AWS::Partition', path)}:cloudformation:{self.pseudo('AWS::Region', path)}:"
                    f"{self.pseudo('AWS::AccountId', path)}:stack/{self.pseudo('AWS::StackName', path)}/meshd")
        if name == "AWS::NotificationARNs":
            return []
        raise ConversionError(path, f"unknown pseudo parameter {name}")

    # Resources as values ------------------------------------------------------------------

    def appmesh(self, logical: str, path: str, what: str) -> str:
        """The kind title of AppMesh resource `logical`, which the resource being converted refers to."""
        typ, _ = self.resource(logical, path)
        if not typ.startswith(_PREFIX) or typ[len(_PREFIX):] not in KIND_ORDER:
            raise ConversionError(path, f"{what} {logical} ({typ}): only App Mesh resources convert; a value of "
                                        f"another resource is known only once CloudFormation deploys it")
        if not self.included(logical):
            raise ConversionError(path, f"{what} {logical}: that resource's Condition is false, so it is not created")
        if self._deps is not None:
            self._deps.add(logical)
        return typ[len(_PREFIX):]

    def ids(self, logical: str, path: str) -> tuple[str, ...]:
        """(mesh, [router or gateway,] name) of AppMesh resource `logical`."""
        if logical in self._ids:
            return self._ids[logical]
        title = self.resources[logical]["Type"][len(_PREFIX):]
        if logical in self._ids_busy:
            raise ConversionError(path, f"circular reference through {logical}'s names")
        self._ids_busy.add(logical)
        props = self.resources[logical].get("Properties") or {}
        out = []
        for prop in _NAME_PROPS[title]:
            p = f"Resources.{logical}.Properties.{prop}"
            if prop not in props:
                if prop != _NAME_PROPS[title][-1]:
                    raise ConversionError(p, f"required by {_PREFIX}{title}")
                out.append(logical)  # CloudFormation generates a name; the logical id is the one to keep
                continue
            saved, self._deps = self._deps, self._name_deps.setdefault(logical, set())
            value = self.resolve(props[prop], p)  # what a name refers to, its resource depends on
            self._deps = saved
            if not isinstance(value, str) or not value:
                raise ConversionError(p, f"a name must be a non-empty string, not {value!r}")
            out.append(value)
        self._ids_busy.discard(logical)
        self._ids[logical] = tuple(out)
        return self._ids[logical]

    def account(self, path: str) -> str:
        return self.pseudo("AWS::AccountId", path)

    def mesh_owner(self, logical: str, path: str) -> str:
        props = self.resources[logical].get("Properties") or {}
        if "MeshOwner" in props:
            return str(self.resolve(props["MeshOwner"], f"Resources.{logical}.Properties.MeshOwner"))
        return self.account(path)

    def arn(self, logical: str, path: str) -> str:
        title = self.resources[logical]["Type"][len(_PREFIX):]
        kind = K.BY_TITLE[title]
        return kind.arn(self.ids(logical, path), partition=self.pseudo("AWS::Partition", path),
                        region=self.pseudo("AWS::Region", path), account=self.mesh_owner(logical, path))

    def get_att(self, logical: str, attr: str, path: str):
        title = self.appmesh(logical, path, "Fn::GetAtt")
        if attr == "Arn":
            return self.arn(logical, path)
        names = _NAME_PROPS[title]
        if attr in names:
            return self.ids(logical, path)[names.index(attr)]
        if attr == "MeshOwner":
            return self.mesh_owner(logical, path)
        if attr == "ResourceOwner":
            return self.account(path)
        if attr in ("Uid", "Id"):
            raise ConversionError(path, f"Fn::GetAtt {logical}.{attr}: App Mesh assigns it when the resource is "
                                        f"created, so it cannot be known before")
        raise ConversionError(path, f"Fn::GetAtt {logical}.{attr}: {_PREFIX}{title} has no attribute {attr!r} "
                                    f"(it has Arn, {', '.join(names)}, MeshOwner, ResourceOwner)")

    # Intrinsic functions --------------------------------------------------------------------

    def resolve(self, value, path: str):
        """`value` with every intrinsic function evaluated; NO_VALUE for AWS::NoValue."""
        if isinstance(value, dict):
            if len(value) == 1:
                (fn, arg), = value.items()
                if fn in _FUNCTIONS:
                    return self.function(fn, arg, path)
            out = {}
            for k, v in value.items():
                r = self.resolve(v, f"{path}.{k}")
                if r is not NO_VALUE:
                    out[k] = r
            return out
        if isinstance(value, list):
            out = [self.resolve(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return [v for v in out if v is not NO_VALUE]
        return value

    def function(self, fn: str, arg, path: str):  # noqa: C901 - one branch per function
        if fn == "Ref":
            if not isinstance(arg, str):
                raise ConversionError(path, "Ref takes a parameter or resource name")
            if arg in self.resources:
                self.appmesh(arg, path, "Ref")
                return self.arn(arg, path)  # Ref of an AppMesh resource is its ARN
            return self.parameter(arg, path)
        if fn == "Fn::GetAtt":
            if isinstance(arg, str):
                arg = arg.split(".", 1)
            if not (isinstance(arg, list) and len(arg) == 2):
                raise ConversionError(path, "Fn::GetAtt takes [LogicalId, Attribute]")
            attr = self.resolve(arg[1], path)
            return self.get_att(arg[0], attr, path)
        if fn == "Fn::Sub":
            return self.sub(arg, path)
        if fn == "Fn::Join":
            if not (isinstance(arg, list) and len(arg) == 2):
                raise ConversionError(path, "Fn::Join takes [delimiter, [values]]")
            items = self.resolve(arg[1], path)
            if not isinstance(items, list):
                raise ConversionError(path, "Fn::Join's second argument must be a list")
            return str(self.resolve(arg[0], path)).join(_scalar(v, path) for v in items)
        if fn == "Fn::Select":
            if not (isinstance(arg, list) and len(arg) == 2):
                raise ConversionError(path, "Fn::Select takes [index, [values]]")
            index, items = self.resolve(arg[0], path), self.resolve(arg[1], path)
            try:
                return items[int(index)]
            except (ValueError, TypeError, IndexError):
                raise ConversionError(path, f"Fn::Select index {index!r} is not within {items!r}") from None
        if fn == "Fn::Split":
            if not (isinstance(arg, list) and len(arg) == 2):
                raise ConversionError(path, "Fn::Split takes [delimiter, string]")
            return _scalar(self.resolve(arg[1], path), path).split(str(arg[0]))
        if fn == "Fn::If":
            if not (isinstance(arg, list) and len(arg) == 3 and isinstance(arg[0], str)):
                raise ConversionError(path, "Fn::If takes [condition name, value if true, value if false]")
            if self.condition(arg[0], path):
                return self.resolve(arg[1], path)
            return self.resolve(arg[2], path)
        if fn == "Fn::FindInMap":
            if not (isinstance(arg, list) and len(arg) in (3, 4)):
                raise ConversionError(path, "Fn::FindInMap takes [map, top-level key, second-level key]")
            m, k1, k2 = (_scalar(self.resolve(a, path), path) for a in arg[:3])
            try:
                return self.resolve(self.mappings[m][k1][k2], f"Mappings.{m}.{k1}.{k2}")
            except (KeyError, TypeError):
                if len(arg) == 4 and isinstance(arg[3], dict) and "DefaultValue" in arg[3]:
                    return self.resolve(arg[3]["DefaultValue"], path)
                raise ConversionError(path, f"Fn::FindInMap: no Mappings.{m}.{k1}.{k2}") from None
        if fn == "Fn::Base64":
            return base64.b64encode(_scalar(self.resolve(arg, path), path).encode()).decode()
        if fn == "Fn::Equals":
            if not (isinstance(arg, list) and len(arg) == 2):
                raise ConversionError(path, "Fn::Equals takes [value, value]")
            a, b = (self.resolve(v, path) for v in arg)
            return _scalar(a, path) == _scalar(b, path) if not isinstance(a, list) else a == b
        if fn == "Fn::Not":
            if not (isinstance(arg, list) and len(arg) == 1):
                raise ConversionError(path, "Fn::Not takes [condition]")
            return not self.boolean(arg[0], path)
        if fn in ("Fn::And", "Fn::Or"):
            if not (isinstance(arg, list) and 2 <= len(arg) <= 10):
                raise ConversionError(path, f"{fn} takes 2 to 10 conditions")
            values = [self.boolean(v, f"{path}[{i}]") for i, v in enumerate(arg)]
            return all(values) if fn == "Fn::And" else any(values)
        if fn == "Fn::ImportValue":
            name = arg if isinstance(arg, str) else json.dumps(arg)
            raise ConversionError(path, f"Fn::ImportValue {name}: an output of another stack is known only to "
                                        f"CloudFormation; replace it with a parameter and pass --param")
        raise ConversionError(path, f"{fn} cannot be evaluated outside CloudFormation")

    _SUB = re.compile(r"\$\{([^}]*)\}")

    def sub(self, arg, path: str) -> str:
        if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], dict):
            text, variables = arg[0], {k: self.resolve(v, f"{path}.{k}") for k, v in arg[1].items()}
        elif isinstance(arg, str):
            text, variables = arg, {}
        else:
            raise ConversionError(path, "Fn::Sub takes a string or [string, {variables}]")
        if not isinstance(text, str):
            raise ConversionError(path, "Fn::Sub's template must be a string")

        def one(m: re.Match) -> str:
            name = m.group(1).strip()
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal} writes ${Literal}
            if name in variables:
                return _scalar(variables[name], path)
            if "." in name and not name.startswith("AWS::"):
                logical, attr = name.split(".", 1)
                return _scalar(self.get_att(logical, attr, path), path)
            return _scalar(self.function("Ref", name, path), path)

        return self._SUB.sub(one, text)

    # Resources as documents ----------------------------------------------------------------

    def convert(self) -> Conversion:
        conv = Conversion()
        docs: dict[str, tuple[str, dict]] = {}
        deps: dict[str, set[str]] = {}
        for logical, res in self.resources.items():
            path = f"Resources.{logical}"
            if not isinstance(res, dict) or not isinstance(res.get("Type"), str):
                raise ConversionError(path, "a resource needs a Type")
            typ = res["Type"]
            if not typ.startswith(_PREFIX):
                conv.skipped.append((logical, typ))
                continue
            title = typ[len(_PREFIX):]
            if title not in KIND_ORDER:
                raise ConversionError(f"{path}.Type", f"unknown App Mesh resource type {typ}")
            if not self.included(logical):
                continue
            self._deps = set()
            docs[logical] = (title, self.document(logical, title, res, path))
            self._deps |= self._name_deps.get(logical, set())
            self._deps.discard(logical)
            depends = res.get("DependsOn") or []
            for i, d in enumerate([depends] if isinstance(depends, str) else depends):
                self.resource(d, f"{path}.DependsOn" + (f"[{i}]" if isinstance(depends, list) else ""))
                if self.resources[d]["Type"].startswith(_PREFIX):
                    self._deps.add(d)
            deps[logical] = self._deps
            self._deps = None
        conv.documents = [docs[lg] for lg in _order(docs, deps)]
        return conv

    def document(self, logical: str, title: str, res: dict, path: str) -> dict:
        schema = _resource_schema(title)
        props = res.get("Properties") or {}
        if not isinstance(props, dict):
            raise ConversionError(f"{path}.Properties", "must be an object")
        read_only = {p.rsplit("/", 1)[-1] for p in schema.get("readOnlyProperties", ())}
        for prop in props:
            if prop in read_only:
                raise ConversionError(f"{path}.Properties.{prop}", f"{prop} is read-only in {_PREFIX}{title}: "
                                                                   f"App Mesh sets it")
        ids = self.ids(logical, path)
        names = dict(zip(_NAME_PROPS[title], ids))
        rest = {k: v for k, v in props.items() if k not in names}
        out = _map_object(self, schema, schema, _appmesh_model()[f"Create{title}Input"], rest, f"{path}.Properties",
                          given=names)
        shape = _appmesh_model()[f"Create{title}Input"]["members"]
        named = {_member(shape, prop, path): value for prop, value in names.items()}
        return {**named, **out}


def _scalar(v, path: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, int, float)):
        return str(v)
    raise ConversionError(path, f"expected a string here, not {v!r}")


def _member(members: dict, prop: str, path: str) -> str:
    for name in members:
        if name.lower() == prop.lower():
            return name
    raise ConversionError(path, f"App Mesh has no member for {prop!r} (members: {', '.join(members)})")


def _map_object(t: _Template, schema: dict, node: dict, shape: dict, value, path: str, given=()) -> dict:
    """`value` (template properties under schema `node`) as the App Mesh members of botocore `shape`."""
    value = t.resolve(value, path) if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _FUNCTIONS \
        else value
    if not isinstance(value, dict):
        raise ConversionError(path, f"expected an object, not {value!r}")
    props = _props(schema, node)
    out = {}
    for prop, v in value.items():
        p = f"{path}.{prop}"
        if prop not in props:
            raise ConversionError(p, f"unknown property {prop!r} (the schema has {', '.join(sorted(props)) or 'none'})")
        member = _member(shape["members"], prop, p)
        mapped = _map_value(t, schema, props[prop], shape["members"][member]["shape"], v, p)
        if mapped is not NO_VALUE:
            out[member] = mapped
    required = _schema_def(schema, node).get("required", ())
    for prop in required:
        if prop not in value and prop not in given:
            raise ConversionError(f"{path}.{prop}", f"required by {schema['typeName']}")
    return out


def _map_value(t: _Template, schema: dict, node: dict, shape_name: str, value, path: str):
    shape = _appmesh_model()[shape_name]
    typ = shape["type"]
    if typ == "structure":
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _FUNCTIONS:
            value = t.resolve(value, path)
            if value is NO_VALUE:
                return NO_VALUE
        return _map_object(t, schema, node, shape, value, path)
    value = t.resolve(value, path)
    if value is NO_VALUE:
        return NO_VALUE
    if typ == "list":
        if not isinstance(value, list):
            raise ConversionError(path, f"expected a list, not {value!r}")
        item = _schema_def(schema, node).get("items", {})
        return [_map_value(t, schema, item, shape["member"]["shape"], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if typ in ("integer", "long"):
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConversionError(path, f"expected an integer, not {value!r}") from None
    if typ == "double":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConversionError(path, f"expected a number, not {value!r}") from None
    if typ == "boolean":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, bool):
            return value
        raise ConversionError(path, f"expected true or false, not {value!r}")
    return _scalar(value, path)


def _order(docs: dict[str, tuple[str, dict]], deps: dict[str, set[str]]) -> list[str]:
    """Logical ids by kind (KIND_ORDER), and within a kind after what they refer to or
    DependsOn, otherwise in template order."""
    done: list[str] = []
    placed: set[str] = set()
    for title in KIND_ORDER:
        pending = [lg for lg, (t, _) in docs.items() if t == title]
        while pending:
            ready = [lg for lg in pending
                     if all(d in placed or docs.get(d, (None,))[0] != title for d in deps[lg])]
            if not ready:
                raise ConversionError(f"Resources.{pending[0]}", "circular dependency between "
                                      + ", ".join(pending))
            done.append(ready[0])
            placed.add(ready[0])
            pending.remove(ready[0])
    return done


# -- Export: App Mesh documents -> a CloudFormation template ---------------------------------

def export(documents: list[tuple[str, dict]], *, mesh: str) -> dict:
    """A CloudFormation template (long-form intrinsics, so plain JSON or YAML dumps it) with
    one `AWS::AppMesh::*` resource per (kind title, CLI-input document) of mesh `mesh`.
    Properties are PascalCase by the same schema mapping as `convert`. A resource's mesh and
    parent names are `Fn::GetAtt` of the resource in the template that owns them (the mesh
    name a `MeshName` parameter when the mesh itself is not among the documents), and what a
    spec refers to by name (route targets, providers, gateway route targets) becomes a
    `DependsOn`, so CloudFormation creates it first; `convert` reads the template back to
    the same documents."""
    logical: dict[tuple[str, ...], str] = {}  # (kind title, *ids) -> logical id
    used: set[str] = set()
    items = []
    for title, doc in documents:
        if title not in KIND_ORDER:
            raise ValueError(f"unknown kind {title!r}")
        names = tuple(doc[_camel(p)] for p in _NAME_PROPS[title])
        if names[0] != mesh:
            raise ValueError(f"{title} {'/'.join(names)} is not in mesh {mesh!r}")
        base = title + "".join(w[:1].upper() + w[1:] for w in re.split(r"[^A-Za-z0-9]+", "-".join(names[1:])) if w)
        lid, n = base, 2
        while lid in used:
            lid, n = f"{base}{n}", n + 1
        used.add(lid)
        logical[(title, *names)] = lid
        items.append((title, doc, names, lid))
    template: dict = {"AWSTemplateFormatVersion": "2010-09-09",
                      "Description": f"App Mesh resources of mesh {mesh}, exported by meshd", "Resources": {}}
    mesh_id = logical.get(("Mesh", mesh))
    if mesh_id is None:
        template["Parameters"] = {"MeshName": {"Type": "String", "Default": mesh}}
    by_path = {K.BY_TITLE[title].path(names): lid for title, _, names, lid in items}
    for title, doc, names, lid in items:
        kind = K.BY_TITLE[title]
        props: dict = {}
        for i, prop in enumerate(_NAME_PROPS[title]):
            if i == len(names) - 1:
                props[prop] = names[i]
            elif i == 0:
                props[prop] = {"Fn::GetAtt": [mesh_id, "MeshName"]} if mesh_id and title != "Mesh" else (
                    names[0] if title == "Mesh" else {"Ref": "MeshName"})
            else:
                parent = logical.get((prop[:-len("Name")], *names[:2]))
                props[prop] = {"Fn::GetAtt": [parent, prop]} if parent else names[i]
        schema = _resource_schema(title)
        shape = _appmesh_model()[f"Create{title}Input"]
        for member, value in doc.items():
            if member in ("clientToken",) or _camel_prop(member) in _NAME_PROPS[title]:
                continue
            prop = _prop_of(schema["properties"], member, f"{title}.{member}")
            props[prop] = _unmap(schema, schema["properties"][prop], shape["members"][member]["shape"], value,
                                 f"{title}.{member}")
        resource: dict = {"Type": _PREFIX + title}
        spec = _parse_spec(kind, doc.get("spec") or {})
        depends = [by_path[p] for p in kind.references(mesh, spec) if by_path.get(p) not in (None, lid)]
        if depends:
            resource["DependsOn"] = sorted(set(depends), key=depends.index)
        resource["Properties"] = props
        template["Resources"][lid] = resource
    return template


def _parse_spec(kind: K.Kind, spec: dict):
    from meshd.api.validate import parse_json  # noqa: PLC0415 - only export needs the messages

    return parse_json(kind.spec_cls, spec, root="spec")


def _camel(prop: str) -> str:
    return prop[:1].lower() + prop[1:]


def _camel_prop(member: str) -> str:
    return member[:1].upper() + member[1:]


def _prop_of(props: dict, member: str, path: str) -> str:
    for p in props:
        if p.lower() == member.lower():
            return p
    raise ValueError(f"{path}: CloudFormation's schema has no property for App Mesh's {member!r}")


def _unmap(schema: dict, node: dict, shape_name: str, value, path: str):
    shape = _appmesh_model()[shape_name]
    if shape["type"] == "structure":
        props = _props(schema, node)
        out = {}
        for member, v in value.items():
            prop = _prop_of(props, member, f"{path}.{member}")
            out[prop] = _unmap(schema, props[prop], shape["members"][member]["shape"], v, f"{path}.{member}")
        return out
    if shape["type"] == "list":
        item = _schema_def(schema, node).get("items", {})
        return [_unmap(schema, item, shape["member"]["shape"], v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value
