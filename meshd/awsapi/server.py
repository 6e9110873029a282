"""App Mesh's HTTP API (REST-JSON, SigV4) in front of the same resource layer as MeshAdmin.

`aws appmesh ... --endpoint-url`, `boto3.client("appmesh", endpoint_url=...)` and
Terraform's `endpoints { appmesh = ... }` reach meshd here. Each request is:
1. routed by the botocore model (`meshd.awsapi.model`);
2. authenticated by its SigV4 signature (`meshd.awsapi.sigv4`, with an access key from
   `meshctl accesskey create`);
3. authorized and audited by the admin API's own `Access`, with the rule of the MeshAdmin
   RPC of the same name: one permission table, one audit log for both protocols;
4. served by `Resources`, the code behind MeshAdmin: validation, storage and integrity
   rules are written once.

The HTTP server is aiohttp's low-level `web.Server`: an HTTP/1.1 server built for asyncio
with a C parser, keep-alive and request size limits, that takes an `ssl.SSLContext` (so
the host certificate can be swapped at renewal) and needs no routing framework, since
the model routes. `http.server` has none of keep-alive under load, TLS rotation or
bounded bodies. Blocking etcd work runs in a thread pool; the event loop only parses
and writes HTTP.

Errors are App Mesh's: the `x-amzn-ErrorType` header and a `{"message": ...}` body with
the status the model gives each error shape, so the SDKs raise their modelled classes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from aiohttp import web

from meshd.api.auth import Access, Caller
from meshd.api.errors import classify, error_message
from meshd.api.server import is_loopback
from meshd.api.resources import Resources
from meshd.awsapi import model
from meshd.awsapi.sigv4 import SignatureError, Verifier
from meshd.security.tls import Credentials, ServerFront, server_context

log = logging.getLogger("meshd.awsapi")

_ERROR_NS = ":http://internal.amazon.com/coral/com.amazonaws.appmesh/"
# An admin API error's reason (meshd.api.errors, meshd.security.errors) → App Mesh's
# error shape. The statuses come from the model. Anything else is an internal error.
_BY_REASON = {
    "INVALID_SPEC": "BadRequestException",
    "BAD_REQUEST": "BadRequestException",
    "NOT_FOUND": "NotFoundException",
    "ALREADY_EXISTS": "ConflictException",
    "CONFLICT": "ConflictException",
    "VERSION_CONFLICT": "ConflictException",
    # App Mesh: "a client token that was used for a previous ... call with different
    # specifications" is a ConflictException (gRPC says INVALID_ARGUMENT).
    "IDEMPOTENT_PARAMETER_MISMATCH": "ConflictException",
    "RESOURCE_IN_USE": "ResourceInUseException",
    "FORBIDDEN": "ForbiddenException",
    "LIMIT_EXCEEDED": "LimitExceededException",
    "TOO_MANY_TAGS": "TooManyTagsException",
    "ETCD_UNAVAILABLE": "ServiceUnavailableException",
    # This meshd cannot open access keys' secrets: another meshd (with the key) can.
    "NO_CLUSTER_KEY": "ServiceUnavailableException",
    "PERMISSION_DENIED": "AccessDeniedException",
}
_STATUS_EXTRA = {"AccessDeniedException": 403, "UnknownOperationException": 404}


class AwsApiError(Exception):
    """A refusal decided in this layer: its App Mesh error code, status and message."""

    def __init__(self, code: str, status: int, message: str):
        self.code, self.status = code, status
        super().__init__(message)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    error: str = ""


class _Buckets:
    """A token bucket per access key: `rate` requests/s, bursts of `burst`."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock()
        with self._lock:
            tokens, then = self._state.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            ok = tokens >= 1
            self._state[key] = (tokens - 1 if ok else tokens, now)
            if len(self._state) > 10_000:  # keys come and go; never grow without bound
                self._state.clear()
            return ok


class AwsApi:
    """The REST front end's request handling, independent of the HTTP server."""

    def __init__(self, resources: Resources, access: Access, verifier: Verifier, *,
                 rate: float = 100.0, burst: float | None = None):
        self.resources = resources
        self.access = access
        self.verifier = verifier
        self.router = model.Router(model.operations())
        self.statuses = {**model.error_statuses(), **_STATUS_EXTRA}
        self.buckets = _Buckets(rate, burst if burst is not None else 2 * rate)

    def refusal(self, code: str, message: str, status: int | None = None) -> Reply:
        return Reply(status or self.statuses.get(code, 500), json.dumps({"message": message}).encode(), code)

    def handle(self, method: str, host: str, raw_target: str, path: str, query, headers, body: bytes,
               *, tls: bool, request_id: str) -> Reply:
        op, labels, path_known = self.router.match(method, path)
        try:
            principal, key_id = self.verifier.verify(method, host, raw_target, headers, body, tls=tls)
        except SignatureError as err:
            log.info("request refused", extra={"code": err.code, "error": str(err), "path": path})
            return self.refusal(err.code, str(err), err.status)
        except Exception as err:  # noqa: BLE001 - the key lookup failed (etcd, cluster key)
            return self._failure(err, None, None, None, request_id)
        if op is None:
            if path_known:
                return self.refusal("UnknownOperationException", f"{method} is not an operation on {path}", 405)
            return self.refusal("UnknownOperationException", f"no App Mesh operation at {method} {path}")
        if not self.buckets.take(key_id):
            return self.refusal("TooManyRequestsException",
                               f"access key {key_id} is over its request rate; retry with backoff")
        caller = Caller(principal, "sigv4")
        rule = self.access.rules[op.rpc]
        request = None
        try:
            try:
                doc = json.loads(body) if body else None
            except ValueError as err:
                raise model.RequestError("body", f"not JSON: {err}") from None
            if doc is not None and not isinstance(doc, dict):
                raise model.RequestError("body", "must be a JSON object")
            request = model.to_request(op, labels, query, doc)
            self.access.authorize(caller, rule, request)
            response = op.call(self.resources, request)
        except Exception as err:  # noqa: BLE001 - every error goes through the one mapping
            return self._failure(err, caller, op, request, request_id, rule)
        self.access.audit(caller, op.rpc, rule, request, "OK", request_id)
        return Reply(op.status, json.dumps(model.output_body(op, response), separators=(",", ":")).encode())

    def _failure(self, err: Exception, caller, op, request, request_id: str, rule=None) -> Reply:
        if isinstance(err, model.RequestError):
            code, message = "BadRequestException", f"invalid request: {err}"
            grpc_name = "INVALID_ARGUMENT"
        else:
            grpc_code, reason = classify(err)
            grpc_name, message = grpc_code.name, error_message(err)
            code = _BY_REASON.get(reason, "InternalServerErrorException")
            if code == "InternalServerErrorException":
                log.error("internal error", exc_info=err, extra={"operation": op.name if op else ""})
        if rule is not None and request is not None:
            self.access.audit(caller, op.rpc, rule, request, grpc_name, request_id)
        return self.refusal(code, message)


class HostTLS:
    """The REST listener's TLS: the host certificate, no client certificate asked (callers
    sign with SigV4), following renewals: a `ServerFront` hands each new connection the
    context of the certificate current at its accept (`meshd.security.tls`)."""

    def __init__(self, credentials: Credentials):
        self._credentials = credentials
        self._generation = -1
        self._ctx: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self.context = ServerFront(self._current)

    def _current(self) -> ssl.SSLContext:
        c = self._credentials
        with self._lock:
            if c.generation != self._generation:
                self._ctx = server_context(c.cert_chain_pem, c.key_pem, None, alpn=("http/1.1",), client_auth=False)
                self._generation = c.generation
            return self._ctx


class AwsApiServer:
    """The HTTP listener: aiohttp on its own event loop thread, calls in a thread pool."""

    def __init__(self, api: AwsApi, address: str, *, tls: HostTLS | None, max_workers: int = 16):
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        if tls is None and not is_loopback(address):
            raise ValueError(f"plaintext App Mesh API refused on {address}: plaintext binds loopback only; "
                             "serve TLS (a host certificate) elsewhere")
        self.api = api
        self._host, self._port = host, int(port)
        self._tls = tls
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="awsapi")
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.ServerRunner | None = None
        self._error: BaseException | None = None
        self.address = ""
        self._thread = threading.Thread(target=self._run, name="awsapi-http", daemon=True)

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        rid = request.headers.get("x-amzn-RequestId") or uuid.uuid4().hex
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            # aiohttp's default bound, 1 MiB: App Mesh specs are a few kilobytes.
            reply = self.api.refusal("BadRequestException", "request body over 1 MiB", 413)
        else:
            reply = await self._loop.run_in_executor(
                self._pool, lambda: self.api.handle(
                    request.method, request.host, request.raw_path, request.rel_url.raw_path,
                    request.rel_url.query, request.headers, body, tls=self._tls is not None, request_id=rid))
        headers = {"Content-Type": "application/json", "x-amzn-RequestId": rid}
        if reply.error:
            headers["x-amzn-ErrorType"] = reply.error + _ERROR_NS
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as err:  # noqa: BLE001 - reported to start()
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        server = web.Server(self._handle, access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port,
                           ssl_context=self._tls.context if self._tls else None, reuse_address=True)
        await site.start()
        port = self._runner.addresses[0][1]  # the bound port, when 0 was asked
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.address = f"{host}:{port}"

    def start(self) -> "AwsApiServer":
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        log.info("App Mesh API serving", extra={"address": self.address, "tls": self._tls is not None})
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown():
            if self._runner is not None:
                await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)
