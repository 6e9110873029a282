"""meshctl's identity and access commands: login, whoami, token, apitoken, accesskey, role, audit, ca, cert,
and the ACM stand-ins: certificate and trust."""
from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from google.protobuf import json_format

from meshd.cli import credentials
from meshd.security import make_csr
from meshd.v1 import security_pb2 as sec
from meshd.v1 import security_pb2_grpc


def _sec(client):
    return security_pb2_grpc.MeshSecurityStub(client.channel)


def _call(client, method: str, request):
    from meshd.cli.meshctl import CliError, format_rpc_error  # noqa: PLC0415 - shared error formatting
    import grpc  # noqa: PLC0415

    try:
        return getattr(_sec(client), method)(request, timeout=client.timeout)
    except grpc.RpcError as err:
        raise CliError(format_rpc_error(err, client.server)) from err


def _out(client, args, msg, rows=None, headers=None) -> int:
    from meshd.cli.meshctl import _print  # noqa: PLC0415

    if args.output == "table" and rows is not None:
        _print(None, "table", rows, headers)
    else:
        _print(json_format.MessageToDict(msg), "yaml" if args.output == "table" else args.output)
    return 0


def _seconds(text: str) -> int:
    """'90', '90s', '15m', '1h', '7d' → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def cmd_login(client, args) -> int:
    ctx = credentials.Context(server=args.server, ca=os.path.abspath(args.ca_file) if args.ca_file else "",
                              cert=os.path.abspath(args.cert) if args.cert else "",
                              key=os.path.abspath(args.key) if args.key else "", token=args.token or "")
    client.channel.close()
    client.channel = ctx.channel()
    who = _call(client, "WhoAmI", sec.WhoAmIRequest())
    path = credentials.save(args.save_as, ctx)
    print(f"logged in to {args.server} as {who.subject} ({who.authenticated_by}); "
          f"context {args.save_as!r} saved in {path}")
    return 0


def cmd_whoami(client, args) -> int:
    who = _call(client, "WhoAmI", sec.WhoAmIRequest())
    rows = [[b.subject, b.role, b.mesh_name] for b in who.bindings]
    if args.output == "table":
        print(f"{who.subject} (authenticated by {who.authenticated_by})")
    return _out(client, args, who, rows, ["SUBJECT", "ROLE", "MESH"])


def cmd_token_create(client, args) -> int:
    resp = _call(client, "CreateBootstrapToken", sec.CreateBootstrapTokenRequest(ttl_seconds=_seconds(args.ttl)))
    print(resp.token)
    return 0


def cmd_token_list(client, args) -> int:
    resp = _call(client, "ListBootstrapTokens", sec.ListBootstrapTokensRequest())
    rows = [[t.token_id, t.scope, t.expires_at.ToJsonString() if t.HasField("expires_at") else "-",
             t.used_at.ToJsonString() if t.HasField("used_at") else "-", t.created_by] for t in resp.tokens]
    return _out(client, args, resp, rows, ["ID", "SCOPE", "EXPIRES", "USED", "CREATED_BY"])


def cmd_token_delete(client, args) -> int:
    _call(client, "DeleteBootstrapToken", sec.DeleteBootstrapTokenRequest(token_id=args.id))
    print(f"bootstrap token {args.id} deleted")
    return 0


def cmd_apitoken_create(client, args) -> int:
    resp = _call(client, "CreateApiToken", sec.CreateApiTokenRequest(
        principal=args.principal, ttl_seconds=_seconds(args.ttl) if args.ttl else 0))
    print(resp.token)
    return 0


def cmd_apitoken_list(client, args) -> int:
    resp = _call(client, "ListApiTokens", sec.ListApiTokensRequest())
    rows = [[t.token_id, t.scope, t.expires_at.ToJsonString() if t.HasField("expires_at") else "never", t.created_by]
            for t in resp.tokens]
    return _out(client, args, resp, rows, ["ID", "PRINCIPAL", "EXPIRES", "CREATED_BY"])


def cmd_apitoken_delete(client, args) -> int:
    _call(client, "DeleteApiToken", sec.DeleteApiTokenRequest(token_id=args.id))
    print(f"API token {args.id} deleted")
    return 0


def cmd_accesskey_create(client, args) -> int:
    resp = _call(client, "CreateAccessKey", sec.CreateAccessKeyRequest(principal=args.principal))
    if args.output != "table":
        return _out(client, args, resp)
    print(f"AccessKeyId:     {resp.access_key_id}\n"
          f"SecretAccessKey: {resp.secret_access_key}\n"
          f"Principal:       {resp.principal}\n"
          "The secret is shown only now; meshd cannot show it again. For the AWS CLI:\n"
          f"  aws configure set aws_access_key_id {resp.access_key_id} --profile meshd\n"
          f"  aws configure set aws_secret_access_key {shlex.quote(resp.secret_access_key)} --profile meshd")
    return 0


def cmd_accesskey_list(client, args) -> int:
    resp = _call(client, "ListAccessKeys", sec.ListAccessKeysRequest())
    rows = [[k.access_key_id, k.principal, k.created_at.ToJsonString(), k.created_by] for k in resp.access_keys]
    return _out(client, args, resp, rows, ["ID", "PRINCIPAL", "CREATED", "CREATED_BY"])


def cmd_accesskey_delete(client, args) -> int:
    _call(client, "DeleteAccessKey", sec.DeleteAccessKeyRequest(access_key_id=args.id))
    print(f"access key {args.id} deleted")
    return 0


def cmd_role_grant(client, args) -> int:
    b = _call(client, "GrantRole", sec.GrantRoleRequest(subject=args.subject, role=args.role,
                                                         mesh_name=args.mesh or "*")).binding
    print(f"{b.subject} is {b.role} in {'every mesh' if b.mesh_name == '*' else 'mesh ' + b.mesh_name}")
    return 0


def cmd_role_revoke(client, args) -> int:
    existed = _call(client, "RevokeRole",
                    sec.RevokeRoleRequest(subject=args.subject, mesh_name=args.mesh or "*")).existed
    print(f"role of {args.subject} revoked" if existed else f"{args.subject} had no role there")
    return 0


def cmd_role_list(client, args) -> int:
    resp = _call(client, "ListRoleBindings", sec.ListRoleBindingsRequest(mesh_name=args.mesh, subject=args.subject))
    rows = [[b.subject, b.role, b.mesh_name, b.granted_by] for b in resp.bindings]
    return _out(client, args, resp, rows, ["SUBJECT", "ROLE", "MESH", "GRANTED_BY"])


def cmd_audit(client, args) -> int:
    resp = _call(client, "ListAuditEntries", sec.ListAuditEntriesRequest(
        who=args.who, action=args.action, resource_prefix=args.resource, result=args.result,
        request_id=args.request_id, limit=args.limit))
    rows = [[e.seq, e.time.ToJsonString(), e.who, e.action, e.resource, e.result, e.request_id] for e in resp.entries]
    return _out(client, args, resp, rows, ["SEQ", "TIME", "WHO", "ACTION", "RESOURCE", "RESULT", "REQUEST_ID"])


def cmd_ca_list(client, args) -> int:
    resp = _call(client, "ListCertificateAuthorities",
                 sec.ListCertificateAuthoritiesRequest(mesh_name=args.mesh or "*"))
    rows = [[a.ca_id, a.mesh_name, a.state, a.origin, "yes" if a.signing else "", a.not_after.ToJsonString()]
            for a in resp.authorities]
    return _out(client, args, resp, rows, ["ID", "MESH", "STATE", "ORIGIN", "SIGNING", "NOT_AFTER"])


def cmd_ca_rotate(client, args) -> int:
    a = _call(client, "BeginCertificateAuthorityRotation",
              sec.BeginCertificateAuthorityRotationRequest(mesh_name=args.mesh or "*")).authority
    print(f"CA {a.ca_id} added to the trust bundle of {a.mesh_name}; switch signing with `meshctl ca switch {a.ca_id}`")
    return 0


def cmd_ca_import(client, args) -> int:
    a = _call(client, "ImportCertificateAuthority", sec.ImportCertificateAuthorityRequest(
        mesh_name=args.mesh or "*", certificate_pem=Path(args.cert).read_text(),
        private_key_pem=Path(args.key).read_text(),
        chain_pem=Path(args.chain).read_text() if args.chain else "")).authority
    state = "signing" if a.signing else "trusted, not signing yet"
    print(f"CA {a.ca_id} imported into {a.mesh_name} ({a.origin}, {state})")
    return 0


def cmd_ca_switch(client, args) -> int:
    a = _call(client, "SwitchSigningCertificateAuthority",
              sec.SwitchSigningCertificateAuthorityRequest(mesh_name=args.mesh or "*", ca_id=args.id)).authority
    print(f"CA {a.ca_id} now signs in {a.mesh_name}")
    return 0


def cmd_ca_retire(client, args) -> int:
    a = _call(client, "RetireCertificateAuthority",
              sec.RetireCertificateAuthorityRequest(mesh_name=args.mesh or "*", ca_id=args.id)).authority
    print(f"CA {a.ca_id} retired from {a.mesh_name}")
    return 0


def _pem(path: str, what: str) -> str:
    from meshd.cli.meshctl import CliError  # noqa: PLC0415

    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read the {what} {path}: {getattr(err, 'strerror', None) or err}") from err


def cmd_certificate_import(client, args) -> int:
    c = _call(client, "ImportAcmCertificate", sec.ImportAcmCertificateRequest(
        arn=args.arn, certificate_pem=_pem(args.cert, "certificate"), private_key_pem=_pem(args.key, "private key"),
        chain_pem=_pem(args.chain, "chain") if args.chain else "")).certificate
    print(f"certificate {c.arn} imported ({c.subject}, until {c.not_after.ToJsonString()}); "
          "listeners naming it serve it from their next connection")
    return 0


def cmd_certificate_list(client, args) -> int:
    resp = _call(client, "ListAcmCertificates", sec.ListAcmCertificatesRequest())
    rows = [[c.arn, c.subject, ",".join(c.dns_names), c.not_after.ToJsonString(), c.imported_by]
            for c in resp.certificates]
    return _out(client, args, resp, rows, ["ARN", "SUBJECT", "DNS_NAMES", "NOT_AFTER", "IMPORTED_BY"])


def cmd_certificate_delete(client, args) -> int:
    _call(client, "DeleteAcmCertificate", sec.DeleteAcmCertificateRequest(arn=args.arn))
    print(f"certificate {args.arn} deleted")
    return 0


def cmd_trust_import(client, args) -> int:
    a = _call(client, "ImportAcmTrust", sec.ImportAcmTrustRequest(
        arn=args.arn, certificate_pem=_pem(args.cert, "CA certificate"))).anchor
    print(f"trust anchor {a.arn} imported ({a.subject}, until {a.not_after.ToJsonString()})")
    return 0


def cmd_trust_list(client, args) -> int:
    resp = _call(client, "ListAcmTrust", sec.ListAcmTrustRequest())
    rows = [[a.arn, a.subject, a.not_after.ToJsonString(), a.imported_by] for a in resp.anchors]
    return _out(client, args, resp, rows, ["ARN", "SUBJECT", "NOT_AFTER", "IMPORTED_BY"])


def cmd_trust_delete(client, args) -> int:
    _call(client, "DeleteAcmTrust", sec.DeleteAcmTrustRequest(arn=args.arn))
    print(f"trust anchor {args.arn} deleted")
    return 0


def _acm_refs(spec) -> list[tuple[str, str, str]]:
    """(where, kind, ARN) of every ACM reference in a virtual node's or gateway's spec;
    kind is "certificate" (a listener's) or "trust" (a client policy's PCA authority)."""
    out = []
    for lst in spec.listeners:
        if lst.HasField("tls") and lst.tls.certificate.HasField("acm"):
            out.append((f"listener {lst.port_mapping.port}", "certificate", lst.tls.certificate.acm.certificate_arn))
    policies = [("backendDefaults", spec.backend_defaults.client_policy)] if spec.HasField("backend_defaults") else []
    policies += [(f"backend {b.virtual_service.virtual_service_name}", b.virtual_service.client_policy)
                 for b in getattr(spec, "backends", ())]
    for where, policy in policies:
        if policy.tls.validation.trust.HasField("acm"):
            out += [(where, "trust", arn) for arn in policy.tls.validation.trust.acm.certificate_authority_arns]
    return out


def acm_problems(client, meshes, pages, parallel: int = 1) -> list[tuple[str, str, str, str]]:
    """(mesh, resource and part, ARN, problem) for each ACM reference in the meshes' specs
    that nothing was imported for; [] when the caller may not list imports (no MANAGE_CA).
    Up to `parallel` specs are read at once (a mesh may hold hundreds of nodes)."""
    import grpc  # noqa: PLC0415
    from meshd.cli.meshctl import _concurrently  # noqa: PLC0415 - meshctl imports this module
    from meshd.v1 import admin_pb2  # noqa: PLC0415

    stub = _sec(client)
    try:
        certs = {c.arn for c in stub.ListAcmCertificates(sec.ListAcmCertificatesRequest(),
                                                         timeout=client.timeout).certificates}
        anchors = {a.arn for a in stub.ListAcmTrust(sec.ListAcmTrustRequest(), timeout=client.timeout).anchors}
    except grpc.RpcError:
        return []
    out = []
    for mesh in meshes:
        for title, field in (("VirtualNode", "virtual_node"), ("VirtualGateway", "virtual_gateway")):
            refs = pages(client, f"List{title}s", getattr(admin_pb2, f"List{title}sRequest")(mesh_name=mesh),
                         f"{field}s")
            names = [getattr(ref, f"{field}_name") for ref in refs]
            specs = _concurrently(lambda name: getattr(client.call(f"Describe{title}", getattr(
                admin_pb2, f"Describe{title}Request")(mesh_name=mesh, **{f"{field}_name": name})), field).spec,
                names, parallel)
            for name, (spec, err) in zip(names, specs):
                if err is not None:
                    raise err
                for where, kind, arn in _acm_refs(spec):
                    if arn not in (certs if kind == "certificate" else anchors):
                        problem = "certificate not imported" if kind == "certificate" else "trust anchor not imported"
                        out.append((mesh, f"{title[0].lower()}{title[1:]} {name} {where}", arn, problem))
    return out


def cmd_cert_issue(client, args) -> int:
    """Make a key and CSR here, have the cluster sign it, write key, chain and bundle."""
    key_pem, csr_pem = make_csr(args.identity)
    resp = _call(client, "SignCertificate", sec.SignCertificateRequest(
        mesh_name=args.mesh, identity=args.identity, csr_pem=csr_pem.decode(),
        ttl_seconds=_seconds(args.ttl) if args.ttl else 0))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / "tls.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    (out / "tls.crt").write_text(resp.certificate_chain_pem)
    (out / "ca.pem").write_text(resp.trust_bundle_pem)
    print(f"certificate for {args.identity} written to {out}/tls.crt (key tls.key, bundle ca.pem), "
          f"valid until {resp.not_after.ToJsonString()}")
    return 0


def add_subcommands(sub, common: argparse.ArgumentParser) -> None:
    lg = sub.add_parser("login", parents=[common], help="check credentials and save them as a context")
    lg.add_argument("--ca-file", default="", help="the cluster trust bundle (PEM)")
    lg.add_argument("--cert", default="", help="client certificate chain (PEM), for mTLS")
    lg.add_argument("--key", default="", help="client private key (PEM)")
    lg.add_argument("--token", default="", help="an API token (meshctl apitoken create), for the token listener")
    lg.add_argument("--save-as", default="default", help="name of the context to save")
    lg.set_defaults(fn=cmd_login)
    sub.add_parser("whoami", parents=[common], help="who the server says you are").set_defaults(fn=cmd_whoami)

    def group(name, help_):
        g = sub.add_parser(name, parents=[common], help=help_)
        return g.add_subparsers(dest=f"{name}_command", required=True)

    t = group("token", "one-time bootstrap tokens for joining hosts")
    tc = t.add_parser("create", parents=[common])
    tc.add_argument("--ttl", default="1h")
    tc.set_defaults(fn=cmd_token_create)
    t.add_parser("list", parents=[common]).set_defaults(fn=cmd_token_list)
    td = t.add_parser("delete", parents=[common])
    td.add_argument("id")
    td.set_defaults(fn=cmd_token_delete)

    a = group("apitoken", "bearer tokens for scripts")
    ac = a.add_parser("create", parents=[common])
    ac.add_argument("--principal", required=True)
    ac.add_argument("--ttl", default="")
    ac.set_defaults(fn=cmd_apitoken_create)
    a.add_parser("list", parents=[common]).set_defaults(fn=cmd_apitoken_list)
    ad = a.add_parser("delete", parents=[common])
    ad.add_argument("id")
    ad.set_defaults(fn=cmd_apitoken_delete)

    k = group("accesskey", "AWS-style access keys (SigV4) for the AWS CLI and SDKs")
    kc = k.add_parser("create", parents=[common])
    kc.add_argument("--principal", required=True)
    kc.set_defaults(fn=cmd_accesskey_create)
    k.add_parser("list", parents=[common]).set_defaults(fn=cmd_accesskey_list)
    kd = k.add_parser("delete", parents=[common])
    kd.add_argument("id")
    kd.set_defaults(fn=cmd_accesskey_delete)

    r = group("role", "grant, revoke and list roles (viewer, editor, admin) per mesh or cluster-wide")
    rg = r.add_parser("grant", parents=[common])
    rg.add_argument("subject")
    rg.add_argument("role", choices=("viewer", "editor", "admin"))
    rg.set_defaults(fn=cmd_role_grant)
    rr = r.add_parser("revoke", parents=[common])
    rr.add_argument("subject")
    rr.set_defaults(fn=cmd_role_revoke)
    rl = r.add_parser("list", parents=[common])
    rl.add_argument("--subject", default="")
    rl.set_defaults(fn=cmd_role_list)

    au = sub.add_parser("audit", parents=[common], help="query the audit log of writes")
    for flag in ("--who", "--action", "--resource", "--result", "--request-id"):
        au.add_argument(flag, default="")
    au.add_argument("--limit", type=int, default=50)
    au.set_defaults(fn=cmd_audit)

    c = group("ca", "the mesh CAs: list, import, rotate, switch, retire (--mesh, or the cluster CA)")
    c.add_parser("list", parents=[common]).set_defaults(fn=cmd_ca_list)
    c.add_parser("rotate", parents=[common]).set_defaults(fn=cmd_ca_rotate)
    ci = c.add_parser("import", parents=[common])
    ci.add_argument("--cert", required=True)
    ci.add_argument("--key", required=True)
    ci.add_argument("--chain", default="")
    ci.set_defaults(fn=cmd_ca_import)
    for verb, fn in (("switch", cmd_ca_switch), ("retire", cmd_ca_retire)):
        p = c.add_parser(verb, parents=[common])
        p.add_argument("id")
        p.set_defaults(fn=fn)

    ce = group("cert", "certificates signed by the cluster (the key is made here and stays here)")
    cs = ce.add_parser("issue", parents=[common])
    cs.add_argument("--identity", required=True, help="a SPIFFE ID, e.g. spiffe://meshd.local/user/alice")
    cs.add_argument("--ttl", default="")
    cs.add_argument("--out", required=True, help="directory for tls.key, tls.crt and ca.pem")
    cs.set_defaults(fn=cmd_cert_issue)

    cm = group("certificate", "certificates App Mesh specs name by ACM ARN (listener tls.certificate.acm)")
    cmi = cm.add_parser("import", parents=[common])
    cmi.add_argument("--arn", required=True, help="arn:aws:acm:<region>:<account>:certificate/<id>")
    cmi.add_argument("--cert", required=True, help="PEM: the certificate, optionally followed by intermediates")
    cmi.add_argument("--key", required=True, help="PEM: its private key (sealed under the cluster key)")
    cmi.add_argument("--chain", default="", help="PEM: intermediates, if not in --cert")
    cmi.set_defaults(fn=cmd_certificate_import)
    cm.add_parser("list", parents=[common]).set_defaults(fn=cmd_certificate_list)
    cmd = cm.add_parser("delete", parents=[common])
    cmd.add_argument("--arn", required=True)
    cmd.set_defaults(fn=cmd_certificate_delete)

    tr = group("trust", "trust anchors App Mesh specs name by ACM PCA ARN (validation.trust.acm)")
    tri = tr.add_parser("import", parents=[common])
    tri.add_argument("--arn", required=True, help="arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>")
    tri.add_argument("--cert", required=True, help="PEM: the CA certificate(s)")
    tri.set_defaults(fn=cmd_trust_import)
    tr.add_parser("list", parents=[common]).set_defaults(fn=cmd_trust_list)
    trd = tr.add_parser("delete", parents=[common])
    trd.add_argument("--arn", required=True)
    trd.set_defaults(fn=cmd_trust_delete)
