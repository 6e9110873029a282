"""MeshView fed by the real Watch stream: config changes publish a new router generation,
instance changes reach the live router without a rebuild."""
from __future__ import annotations

import threading
import time

import pytest

from _fastroute import constants as C
from builders import shop, update, route_spec
from meshd.meshview import MeshView
from meshd.v1 import admin_pb2 as pb

pytestmark = pytest.mark.etcd


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def fed_view(admin):
    view = MeshView(seed=3)
    stop = threading.Event()
    stream = admin.stub.Watch(pb.WatchRequest())

    def pump():
        try:
            for resp in stream:
                view.feed(resp)
        except Exception:  # noqa: BLE001 - the stream is cancelled at teardown
            pass

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    yield view
    stop.set()
    stream.cancel()


def test_config_change_publishes_and_instances_update_in_place(admin, fed_view):
    s = admin.stub
    shop(s)
    # shop() creates web.shop.local last: once it is in, no further config change is coming,
    # so the generation captured here is the one the instance events must update in place.
    _wait(lambda: fed_view.live("shop") is not None and
          {s.name for s in fed_view.live("shop").compiled.table.services} == {"api.shop.local", "web.shop.local"})
    live = fed_view.live("shop")
    d = live.router.decide(C.PROTO_HTTP, "api.shop.local:8080", 8080, "GET", "http", "/", {}, 1)
    assert d.status == C.NO_ENDPOINT  # routed to a node with no instances yet
    s.RegisterInstance(pb.RegisterInstanceRequest(mesh_name="shop", virtual_node_name="api-v1", instance_id="a",
                                                  address="127.0.0.1", port=9001))
    s.RegisterInstance(pb.RegisterInstanceRequest(mesh_name="shop", virtual_node_name="api-v2", instance_id="b",
                                                  address="127.0.0.1", port=9002))
    _wait(lambda: len(live.router.endpoints("api-v2")) == 1 and len(live.router.endpoints("api-v1")) == 1)
    assert fed_view.live("shop") is live, "instances must not rebuild the table"
    # Shift all traffic to api-v2: a new generation, and it routes there.
    update(s, "Route", meshName="shop", virtualRouterName="api-router", routeName="api",
           spec=route_spec({"api-v1": 0, "api-v2": 100}))
    _wait(lambda: fed_view.live("shop").generation > live.generation)
    new = fed_view.live("shop")
    for i in range(50):
        d = new.router.decide(C.PROTO_HTTP, "api.shop.local:8080", 8080, "GET", "http", "/", {}, 10 + i)
        assert (d.status, d.target, d.endpoint.port) == (C.ROUTED, "api-v2", 9002)
        new.router.result(d, C.RESULT_HTTP, 200, 10 + i)
    # The old generation is untouched: in-flight requests keep their table.
    assert [r.routes[0].targets for r in live.compiled.table.routers if r.name == "api-router"][0][0].weight == 90


def test_an_instance_folded_while_the_first_generation_waits_for_the_loop_reaches_it(admin):
    """The config thread compiles a mesh's first generation and hands it to the loop; an
    instance event folded before the loop has published it must still reach that router
    (it used to be dropped as "not live yet", and with no config change coming, the node
    answered "no healthy endpoint" until one did)."""
    s = admin.stub
    shop(s)
    view = MeshView(seed=3)
    stream = s.Watch(pb.WatchRequest(), timeout=20)
    try:
        for resp in stream:  # the snapshot: every resource of shop(), no instance yet
            assert not view.apply(resp)
            if resp.snapshot_done:
                break
        prepared = view.prepare()  # compiled on the config thread, not yet published
        assert view.live("shop") is None and not view.dirty
        s.RegisterInstance(pb.RegisterInstanceRequest(mesh_name="shop", virtual_node_name="api-v1", instance_id="a",
                                                      address="127.0.0.1", port=9001))
        changes = []
        for resp in stream:
            changes += view.apply(resp)
            if any(ev.path.startswith("instances/") for ev in resp.events):
                break
        assert not view.dirty, "no recompile is coming: the instance must travel with the push"
        view.publish(prepared)  # the loop runs the publish, then the push queued after it
        view.push_endpoints(changes)
        assert [e.port for e in view.live("shop").router.endpoints("api-v1")] == [9001]
    finally:
        stream.cancel()
