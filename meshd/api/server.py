"""The gRPC face of the admin API: MeshAdmin, grpc.health.v1 and server reflection."""
from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from meshd.api import kinds as K
from meshd.api.errors import to_status
from meshd.api.resources import Resources
from meshd.v1 import admin_pb2, admin_pb2_grpc

log = logging.getLogger("meshd.api")
SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["MeshAdmin"].full_name


def _abort(context: grpc.ServicerContext, err: Exception, method: str) -> None:
    code, message, rich = to_status(err)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("internal error", extra={"method": method})
    else:
        log.info("request refused", extra={"method": method, "code": code.name, "error": message})
    context.abort_with_status(rpc_status.to_status(rich))


def _unary(method: str, call):
    def handler(self, request, context):
        try:
            return call(self.resources, request)
        except Exception as err:  # noqa: BLE001 - every error goes through the one mapping table
            _abort(context, err, method)
    handler.__name__ = method
    return handler


class AdminServicer(admin_pb2_grpc.MeshAdminServicer):
    """MeshAdmin: each RPC delegates to `Resources`; errors map through `to_status`."""

    def __init__(self, resources: Resources):
        self.resources = resources
        self._stopping = threading.Event()

    def stop_streams(self) -> None:
        self._stopping.set()

    def Watch(self, request, context):
        active = lambda: context.is_active() and not self._stopping.is_set()  # noqa: E731
        watches = []
        context.add_callback(lambda: [w.cancel() for w in watches])
        try:
            yield from self.resources.watch(request, active, on_start=watches.append)
        except Exception as err:  # noqa: BLE001
            _abort(context, err, "Watch")


for _kind in K.KINDS:
    for _verb, _fn in (("Create", Resources.create), ("Describe", Resources.describe),
                       ("Update", Resources.update), ("Delete", Resources.delete)):
        setattr(AdminServicer, f"{_verb}{_kind.title}",
                _unary(f"{_verb}{_kind.title}", lambda r, req, k=_kind, f=_fn: f(r, k, req)))
    setattr(AdminServicer, f"List{_kind.plural_title}",
            _unary(f"List{_kind.plural_title}", lambda r, req, k=_kind: r.list(k, req)))
for _method, _fn in (("TagResource", Resources.tag_resource), ("UntagResource", Resources.untag_resource),
                     ("ListTagsForResource", Resources.list_tags),
                     ("RegisterInstance", Resources.register_instance),
                     ("DeregisterInstance", Resources.deregister_instance),
                     ("ListInstances", Resources.list_instances)):
    setattr(AdminServicer, _method, _unary(_method, lambda r, req, f=_fn: f(r, req)))


class AdminServer:
    """A grpc.Server with MeshAdmin, health and reflection, bound to one address."""

    def __init__(self, resources: Resources, address: str, *, max_workers: int = 64,
                 credentials: grpc.ServerCredentials | None = None):
        self.servicer = AdminServicer(resources)
        self.health = health.HealthServicer()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="admin"),
            options=[("grpc.max_receive_message_length", 16 << 20),
                     ("grpc.so_reuseport", 0)],
        )
        admin_pb2_grpc.add_MeshAdminServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"cannot bind admin API to {address}")
        host = address.rsplit(":", 1)[0]
        self.address = f"{host}:{self.port}"

    def start(self) -> None:
        self.server.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.servicer.stop_streams()
        self.server.stop(grace).wait()
