"""Traffic through real meshds over mTLS: two hosts, real gRPC origins and clients."""
from __future__ import annotations

import time
from collections import Counter
from concurrent import futures

import grpc
import pytest

from mesh_harness import Mesh, Origin, route_spec, shop_config
from meshd.api import kinds as K
from meshd.api.validate import parse_json
from meshd.v1 import admin_pb2 as pb

pytestmark = [pytest.mark.dataplane, pytest.mark.etcd]


@pytest.fixture
def mesh_factory(etcd, etcd_prefix, tmp_path):
    made = []

    def make(origins, **config):
        m = Mesh(etcd, etcd_prefix, tmp_path, origins)
        made.append(m)
        shop_config(m.a.resources, K, pb, **config)
        return m
    yield make
    for m in made:
        m.close()


def _calls(call, n, workers=8):
    """n calls through the mesh from `workers` threads; returns (answers, errors)."""
    answers, errors = Counter(), []

    def one(i):
        try:
            return call(b"%d" % i, timeout=10).split(b":", 1)[0].decode()
        except grpc.RpcError as err:
            errors.append(err)
            return None
    with futures.ThreadPoolExecutor(workers) as pool:
        for who in pool.map(one, range(n)):
            if who:
                answers[who] += 1
    return answers, errors


def test_canary_split_and_live_weight_shift(mesh_factory):
    m = mesh_factory({"api-v1": Origin("api-v1"), "api-v2": Origin("api-v2")}, targets={"api-v1": 90, "api-v2": 10})
    call = m.client()
    m.wait_routable(call)
    answers, errors = _calls(call, 5000)
    assert not errors
    share = answers["api-v2"] / 5000
    assert 0.08 <= share <= 0.12, answers
    # Shift every call to api-v2 through the API; within 1 s traffic follows, no call fails.
    m.a.resources.update(K.ROUTE, parse_json(pb.UpdateRouteRequest, {
        "meshName": "shop", "virtualRouterName": "api-router", "routeName": "api",
        "spec": route_spec({"api-v1": 0, "api-v2": 100})}))
    t0 = time.monotonic()
    shifted_at = None
    while time.monotonic() - t0 < 3:
        who = call(b"x", timeout=5).split(b":", 1)[0]
        if who == b"api-v2" and shifted_at is None:
            shifted_at = time.monotonic() - t0
        if shifted_at is not None:
            break
    assert shifted_at is not None and shifted_at < 1.0
    answers, errors = _calls(call, 300)
    assert not errors and answers == Counter({"api-v2": 300})
