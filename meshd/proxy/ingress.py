"""Inbound: requests and connections from other meshds (and callers outside the mesh) to the
local instances this meshd serves, admitted by the caller's identity and the mesh's policy.

The ingress checks the caller's identity (its certificate's SPIFFE ID, from the mesh CA)
and, with the mesh's egressFilter DROP_ALL, that the caller declared the service as a
backend, then delivers to the local instance the request names.
"""
from __future__ import annotations

import time

import _fastroute as fr
from meshd.compile import listener_timeouts, services_reaching
from meshd.dataplane import Target
from meshd.gateway import gateway_targets
from meshd.observe import INGRESS
from meshd.observe.metrics import UNKNOWN
from meshd.proxy.config import INSTANCE_HEADER, INTERNAL_HEADER_PREFIX, SERVICE_HEADER
from meshd.proxy.egress import MAX_BINDINGS
from meshd.proxy.outcomes import FAILURES, REFUSALS
from meshd.proxy.tls import all_sans
from meshd.security import spiffe


class _Admission:
    """The ingress's verdict on one (local instance, caller certificate, service) within one
    generation of the mesh's table: the caller's name for metrics, the series, the
    Refusal or the Target of the local instance, and the token bucket of the instance's
    node listener (NodePolicy) or None. Made by the first such request."""

    __slots__ = ("live", "app", "source", "series", "answer", "bucket")

    def __init__(self, live, app, source, series, answer, bucket):
        self.live = live
        self.app = app
        self.source = source
        self.series = series
        self.answer = answer
        self.bucket = bucket


# The engines' completion reason when the upstream could not be connected to (the
# connect_error row of the outcomes table): at the ingress, the local app is not listening.
_CONNECT_FAILURE = FAILURES["connect_error"].reason


class Ingress:
    """Admits callers to the local instances; `local` maps "mesh/node/instance" to its app.

    `on_unreachable(key)` is told when a local instance refused the ingress's connection:
    its process is gone or not listening, which no caller can fix by waiting.
    """

    def __init__(self, view, observe, tls, on_unreachable=lambda key: None):
        self.view = view
        self.observe = observe
        self.tls = tls
        self.on_unreachable = on_unreachable
        self.local: dict[str, object] = {}
        self._admissions: dict[tuple, _Admission] = {}
        # (mesh, node, listener port) -> (its RateLimit, the TokenBucket of this meshd): a
        # bucket outlives table generations while its limit is unchanged, so a configuration
        # change elsewhere in the mesh never refills it.
        self._buckets: dict[tuple[str, str, int], tuple] = {}
        # Per caller, the virtual services its DROP_ALL admission allows; rebuilt per config.
        self._declared: dict[tuple, frozenset[str]] = {}

    def config_changed(self) -> None:
        self._declared.clear()

    def decide(self, head):
        """The decide hook of the HTTP/2 and HTTP/1.1 ingress listeners."""
        x = self.observe.begin(head, INGRESS)
        dest = head.header(INSTANCE_HEADER) or ""
        app = self.local.get(dest)
        if app is None:
            return REFUSALS["unknown_instance"]
        x.mesh, x.local = app.mesh, app.virtual_node
        service = head.header(SERVICE_HEADER) or ""
        key = (dest, head.peer_cert, service)
        a = self._admissions.get(key)
        if a is None or a.live is not self.view.live(app.mesh) or a.app is not app:
            a = self._admission(key, app, head.peer_cert, service, x)
        x.source = a.source
        self.observe.bound(x, a.series, app.virtual_node, app.instance_id)
        if a.bucket is not None and not a.bucket.take(time.monotonic_ns()):
            return REFUSALS["rate_limited"]
        return a.answer

    def complete(self, head, target, status, grpc_status, reason, duration_ns) -> None:
        """The ingress listeners' completion hook: record it; a refused connection to the
        local app marks that instance unreachable at once (passive health)."""
        self.observe.end(head, target, status, grpc_status, reason, duration_ns)
        if reason == _CONNECT_FAILURE:
            x = head.context
            if x is not None and x.instance:
                self.on_unreachable(f"{x.mesh}/{x.local}/{x.instance}")

    def tcp_decide_hook(self, app):
        """A TCP app's own ingress port: every connection goes to the app. It is written to
        the app's access log but not counted again (the caller's meshd counts it, direction tcp)."""
        # (the live table, the app's Target under it, its listener's token bucket): one per generation
        made = [None, None, None]

        def decide(head):
            x = self.observe.begin(head, INGRESS, app.mesh, app.virtual_node, counted=False)
            x.instance = app.instance_id
            live = self.view.live(app.mesh)
            if made[0] is not live:
                snap = self.view.snapshot(app.mesh)
                node = snap.nodes.get(app.virtual_node) if snap is not None else None
                idle = listener_timeouts(node.spec)[1] if node is not None else None
                made[:] = live, Target(app.address, app.port, idle_timeout=idle), self.listener_bucket(app)
            refusal = self.admit(app, head.peer_cert, None)[1]
            if refusal is not None:
                return refusal
            # A TCP listener's token bucket counts connections (Envoy's network local rate limit).
            bucket = made[2]
            if bucket is not None and not bucket.take(time.monotonic_ns()):
                return REFUSALS["rate_limited"]
            return made[1]
        return decide

    def _admission(self, key: tuple, app, peer_cert: bytes | None, service: str, x) -> _Admission:
        """Check a caller at the ingress (`admit`) and keep the verdict for this generation
        of the mesh's table: a connection's requests present one certificate object."""
        live = self.view.live(app.mesh)
        sid, refusal = self.admit(app, peer_cert, service or None)
        snap = self.view.snapshot(app.mesh)
        # The caller names the service: a label only when the mesh has it (bounded series).
        x.source = (sid.name if sid.kind == spiffe.GATEWAY else sid.node) if sid is not None else UNKNOWN
        series = self.observe.series(x, service if snap is not None and service in snap.services else UNKNOWN, "",
                                     app.virtual_node)
        answer = refusal or self._local_target(snap, app)
        # Only a request that would reach the app takes a token: refusals cost it nothing.
        a = _Admission(live, app, x.source, series, answer,
                       self.listener_bucket(app) if answer.__class__ is Target else None)
        if len(self._admissions) >= MAX_BINDINGS:
            self._admissions.clear()
        self._admissions[key] = a
        return a

    def listener_bucket(self, app):
        """The token bucket of `app`'s node listener on this meshd (NodePolicy
        listenerRateLimits), or None. The listener is the one on the app's port, or the
        node's only listener (meshd serves a node's instances on one listener port)."""
        live = self.view.live(app.mesh)
        if live is None:
            return None
        limits = live.compiled.listener_limits
        port = app.port
        if (app.virtual_node, port) not in limits:
            node = live.snapshot.nodes.get(app.virtual_node) if live.snapshot is not None else None
            listeners = node.spec.listeners if node is not None else ()
            if len(listeners) != 1:
                return None
            port = listeners[0].port_mapping.port
        rl = limits.get((app.virtual_node, port))
        key = (app.mesh, app.virtual_node, port)
        kept = self._buckets.get(key)
        if rl is None:
            self._buckets.pop(key, None)
            return None
        if kept is None or kept[0] != rl:
            kept = self._buckets[key] = (rl, fr.TokenBucket(rl.max_tokens, rl.tokens_per_fill, rl.fill_interval_ms))
        return kept[1]

    @staticmethod
    def _local_target(snap, app) -> Target:
        """The local instance, with its node listener's App Mesh timeouts (perRequest, idle).
        meshd's own headers go neither way: the app does not see a caller's, and what the app
        answers with them is dropped (a caller's meshd believes this ingress's
        x-meshd-reason, and a forged "could not reach my app" would be retried as a request
        never processed)."""
        node = snap.nodes.get(app.virtual_node) if snap is not None else None
        per_request, idle = listener_timeouts(node.spec) if node is not None else (0.0, None)
        return Target(app.address, app.port, timeout=per_request, idle_timeout=idle,
                      strip_prefix=INTERNAL_HEADER_PREFIX, strip_response_prefix=INTERNAL_HEADER_PREFIX)

    def admit(self, app, peer_cert: bytes | None, service: str | None):
        """May this caller reach `app` through the ingress? (caller's SpiffeId or None,
        a Refusal or None). `service` is the virtual service the caller routed by; None for
        a TCP connection, which names none: under DROP_ALL the caller must then declare a
        backend whose traffic can reach the app's node."""
        tls = self.tls.listener_tls(app.mesh, app.virtual_node)
        if tls is not None and tls.HasField("validation") and tls.validation.trust.HasField("file"):
            # The operator's own PKI (App Mesh `file` trust) verified the caller in the
            # handshake; its subjectAlternativeNames, when given, must name the caller.
            exact = list(tls.validation.subject_alternative_names.match.exact)
            if exact and not set(exact) & set(all_sans(peer_cert)):
                return None, REFUSALS["identity_refused"]
            return None, None
        caller = self.tls.peer_identity(peer_cert)
        try:
            sid = spiffe.parse(caller) if caller else None
        except Exception:  # noqa: BLE001 - an unparsable identity is refused below
            sid = None
        if (sid is None or sid.kind not in spiffe.MESH_KINDS or sid.mesh != app.mesh
                or not self._listener_allows(app, caller)):
            return None, REFUSALS["identity_refused"]
        snap = self.view.snapshot(app.mesh)
        if snap is None or snap.mesh is None or snap.mesh.spec.egress_filter.type != "DROP_ALL":
            return sid, None
        # What this caller may reach *and* what routes to this node: the service the caller
        # names (x-meshd-service) is its own assertion, so it counts only when it is in both.
        # A caller naming one of its backends that routes elsewhere is refused, as a TCP
        # connection (which names no service) is unless some backend of its reaches here.
        reachable = self._allowed_services(snap, sid) & self._allowed_services(snap, None, app.virtual_node)
        ok = bool(reachable) if service is None else service in reachable
        return sid, None if ok else REFUSALS["not_a_backend"]

    def _allowed_services(self, snap, sid, node: str = "") -> frozenset[str]:
        """Under DROP_ALL: the services caller `sid` may call (a node's backends; a gateway's
        gateway-route targets), or with sid None those whose traffic reaches local `node`.
        Kept until the next configuration is published, not rebuilt per request."""
        key = (snap.name, sid.kind, sid.name or sid.node) if sid is not None else (snap.name, "reaching", node)
        got = self._declared.get(key)
        if got is None:
            if sid is None:
                live = self.view.live(snap.name)
                got = services_reaching(snap, node, live.compiled.table if live is not None else None)
            elif sid.kind == spiffe.GATEWAY:
                got = gateway_targets(snap, sid.name)
            else:
                caller = snap.nodes.get(sid.node)
                got = frozenset(b.virtual_service.virtual_service_name
                                for b in caller.spec.backends) if caller is not None else frozenset()
            self._declared[key] = got
        return got

    def _listener_allows(self, app, caller: str) -> bool:
        """App Mesh listener tls.validation.subjectAlternativeNames.match.exact, when set."""
        snap = self.view.snapshot(app.mesh)
        node = snap.nodes.get(app.virtual_node) if snap else None
        if node is None:
            return True
        for lst in node.spec.listeners:
            v = lst.tls.validation if lst.HasField("tls") and lst.tls.HasField("validation") else None
            if v is not None and v.HasField("subject_alternative_names"):
                exact = list(v.subject_alternative_names.match.exact)
                if exact and caller not in exact:
                    return False
        return True
