"""The gRPC face of the admin API: MeshAdmin, MeshSecurity, grpc.health.v1 and reflection,
on one server with up to three listeners:

- mTLS (client certificate required): meshds, operators and tools with certificates;
- TLS with bearer tokens: scripts holding an API token;
- plaintext on loopback, only with --insecure-local: the local operator (a cluster admin).

gRPC Python's TLS either requires client certificates or never asks for them, so the two
kinds of TLS caller need two listeners.
"""
from __future__ import annotations

import ipaddress
import logging
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from meshd.api import kinds as K
from meshd.api.auth import Access, Caller, request_id
from meshd.api.errors import to_status
from meshd.api.resources import Resources
from meshd.api.security_service import Security
from meshd.v1 import admin_pb2, admin_pb2_grpc, security_pb2, security_pb2_grpc

log = logging.getLogger("meshd.api")
SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["MeshAdmin"].full_name
SECURITY_SERVICE_NAME = security_pb2.DESCRIPTOR.services_by_name["MeshSecurity"].full_name


class ListenerError(Exception):
    """A listener that may not or cannot be bound."""


@dataclass(frozen=True)
class Listener:
    """One admin listener: mode "mtls", "token" or "local", and its address."""

    address: str
    mode: str


def _abort(context: grpc.ServicerContext, err: Exception, method: str) -> None:
    code, message, rich = to_status(err)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("internal error", extra={"method": method})
    else:
        log.info("request refused", extra={"method": method, "code": code.name, "error": message})
    context.abort_with_status(rpc_status.to_status(rich))


class _Gate:
    """Authentication, authorization and audit around every call (one place, every RPC)."""

    def __init__(self, access: Access | None):
        self.access = access

    def run(self, service: str, method: str, request, context, call: Callable[[Caller | None], object]):
        full = f"/meshd.v1.{service}/{method}"
        rid = request_id(context)
        context.send_initial_metadata((("x-request-id", rid),))
        caller = None
        rule = self.access.rules[full] if self.access else None
        try:
            if self.access is not None:
                if not rule.public:
                    caller = self.access.authenticate(context)
                    self.access.authorize(caller, rule, request)
            result = call(caller)
        except Exception as err:  # noqa: BLE001 - every error goes through the one mapping table
            if self.access is not None:
                self.access.audit(caller, full, rule, request, to_status(err)[0].name, rid)
            _abort(context, err, method)
        if self.access is not None:
            self.access.audit(caller, full, rule, request, "OK", rid)
        return result


def _admin_unary(method: str, fn):
    def handler(self, request, context):
        return self.gate.run("MeshAdmin", method, request, context, lambda caller: fn(self.resources, request))
    handler.__name__ = method
    return handler


class AdminServicer(admin_pb2_grpc.MeshAdminServicer):
    """MeshAdmin: each RPC passes the gate, then delegates to `Resources`."""

    def __init__(self, resources: Resources, gate: _Gate):
        self.resources = resources
        self.gate = gate
        self._stopping = threading.Event()
        self._watches: set = set()

    def stop_streams(self) -> None:
        """End every open Watch now: an idle etcd watch would otherwise hold shutdown until
        the server's grace period runs out."""
        self._stopping.set()
        for w in list(self._watches):
            w.cancel()

    def Watch(self, request, context):
        # Authenticate and authorize before the first response; the stream itself is read-only.
        self.gate.run("MeshAdmin", "Watch", request, context, lambda caller: None)
        active = lambda: context.is_active() and not self._stopping.is_set()  # noqa: E731
        watches = []

        def started(w):
            watches.append(w)
            self._watches.add(w)
            if self._stopping.is_set():
                w.cancel()

        def ended():
            for w in watches:
                w.cancel()
                self._watches.discard(w)
        context.add_callback(ended)
        try:
            yield from self.resources.watch(request, active, on_start=started)
        except Exception as err:  # noqa: BLE001
            _abort(context, err, "Watch")


for _kind in K.KINDS:
    for _verb, _fn in (("Create", Resources.create), ("Describe", Resources.describe),
                       ("Update", Resources.update), ("Delete", Resources.delete)):
        setattr(AdminServicer, f"{_verb}{_kind.title}",
                _admin_unary(f"{_verb}{_kind.title}", lambda r, req, k=_kind, f=_fn: f(r, k, req)))
    setattr(AdminServicer, f"List{_kind.plural_title}",
            _admin_unary(f"List{_kind.plural_title}", lambda r, req, k=_kind: r.list(k, req)))
for _method, _fn in (("TagResource", Resources.tag_resource), ("UntagResource", Resources.untag_resource),
                     ("ListTagsForResource", Resources.list_tags),
                     ("RegisterInstance", Resources.register_instance),
                     ("DeregisterInstance", Resources.deregister_instance),
                     ("ListInstances", Resources.list_instances),
                     ("ListHosts", Resources.list_hosts)):
    setattr(AdminServicer, _method, _admin_unary(_method, lambda r, req, f=_fn: f(r, req)))


class SecurityServicer(security_pb2_grpc.MeshSecurityServicer):
    """MeshSecurity: each RPC passes the gate, then delegates to `Security`."""

    def __init__(self, security: Security, gate: _Gate):
        self.security = security
        self.gate = gate


for _name in security_pb2.DESCRIPTOR.services_by_name["MeshSecurity"].methods_by_name:
    def _sec_handler(self, request, context, _m=_name):
        return self.gate.run("MeshSecurity", _m, request, context,
                             lambda caller: getattr(self.security, _m)(caller, request))
    _sec_handler.__name__ = _name
    setattr(SecurityServicer, _name, _sec_handler)


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminServer:
    """A grpc.Server with MeshAdmin, MeshSecurity, health and reflection.

    `access=None` serves without authentication: only for in-process tests and only on
    loopback plaintext. `tls` provides server credentials for mTLS and token listeners.
    """

    def __init__(self, resources: Resources, listeners: list[Listener] | str, *,
                 security: Security | None = None, access: Access | None = None,
                 tls: Callable[[bool], grpc.ServerCredentials] | None = None, max_workers: int = 64):
        if isinstance(listeners, str):
            listeners = [Listener(listeners, "local")]
        gate = _Gate(access)
        self.access = access
        self.servicer = AdminServicer(resources, gate)
        self.health = health.HealthServicer()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="admin"),
            options=[("grpc.max_receive_message_length", 16 << 20), ("grpc.so_reuseport", 0)],
        )
        admin_pb2_grpc.add_MeshAdminServicer_to_server(self.servicer, self.server)
        names = [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
        if security is not None:
            security_pb2_grpc.add_MeshSecurityServicer_to_server(SecurityServicer(security, gate), self.server)
            names.append(SECURITY_SERVICE_NAME)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(names, self.server)
        self.addresses: dict[str, str] = {}
        for lst in listeners:
            if lst.mode == "local":
                if not is_loopback(lst.address):
                    raise ListenerError(f"plaintext admin API refused on {lst.address}: --insecure-local "
                                        "binds loopback only; use mTLS or tokens elsewhere")
                port = self.server.add_insecure_port(lst.address)
            elif lst.mode in ("mtls", "token"):
                if tls is None:
                    raise ListenerError(f"{lst.mode} listener {lst.address} needs a host certificate "
                                        "(run with a cluster key, or join with a bootstrap token)")
                port = self.server.add_secure_port(lst.address, tls(lst.mode == "mtls"))
            else:
                raise ListenerError(f"unknown listener mode {lst.mode!r}")
            if port == 0:
                raise ListenerError(f"cannot bind admin API to {lst.address}")
            self.addresses[lst.mode] = f"{lst.address.rsplit(':', 1)[0]}:{port}"
        self.address = next(iter(self.addresses.values()))
        self.port = int(self.address.rsplit(":", 1)[1])

    def start(self) -> None:
        self.server.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.servicer.stop_streams()
        self.server.stop(grace).wait()
        if self.access is not None:
            self.access.close()
