"""Fixtures of the security suite: a cluster key, mesh CAs on the real etcd store, TLS servers."""
from __future__ import annotations

import pytest

from meshd.security.ca import MeshCA
from meshd.security.clusterkey import ClusterKey

from .helpers import CA_EPOCH, EchoServer, real_now


@pytest.fixture
def cluster_key(tmp_path):
    return ClusterKey.generate(tmp_path / "cluster.key")


@pytest.fixture
def mesh_ca(store, cluster_key):
    """A MeshCA with meshes m1 and m2, each with its own generated CA."""
    ca = MeshCA(store, cluster_key)
    for mesh in ("m1", "m2"):
        ca.create(mesh, now=real_now() - CA_EPOCH)
    return ca


@pytest.fixture
def servers():
    """Start EchoServers with `servers(context, allowed)`; all are closed after the test."""
    started = []

    def start(context, allowed=None):
        s = EchoServer(context, allowed)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()
