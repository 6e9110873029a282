"""Shared fixtures: a real etcd server started by the suite itself, and store/meshd builders."""
from __future__ import annotations

import itertools
import os
import sys

import pytest

from meshd.embedded_etcd import EmbeddedEtcd
from registry import Store

_counter = itertools.count()


@pytest.fixture(scope="session")
def etcd(tmp_path_factory):
    """One etcd member for the session, on free loopback ports and a temporary data dir.

    A missing etcd binary is an error here, never a skip: the test setup installs it.
    """
    server = EmbeddedEtcd(tmp_path_factory.mktemp("etcd"), supervise=False,
                          extra_args=("--auto-compaction-retention", "0"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_etcd(tmp_path):
    """A private etcd the test may stop, start or raise alarms on."""
    server = EmbeddedEtcd(tmp_path / "etcd", supervise=False).start()
    yield server
    server.stop()


@pytest.fixture
def etcd_prefix():
    """A fresh key prefix per test, so tests sharing the session etcd never see each other."""
    return f"/meshd-test/{os.getpid()}-{next(_counter)}/v1/"


@pytest.fixture
def store(etcd, etcd_prefix):
    s = Store([etcd.url], prefix=etcd_prefix, timeout=2.0)
    yield s
    s.close()


class AdminHarness:
    """A real admin gRPC server (in this process) on a free port, and a stub for it."""

    def __init__(self, store, host_name="test-host", lease_ttl=5):
        import grpc

        from meshd.api.resources import Resources
        from meshd.api.server import AdminServer
        from meshd.app import instance_on_lease
        from meshd.lease import HostLease
        from meshd.v1 import admin_pb2_grpc

        self.store = store
        self.lease = HostLease(store, ttl=lease_ttl, rewrite=instance_on_lease)
        self.resources = Resources(store, host=host_name, host_lease=self.lease)
        self.server = AdminServer(self.resources, "127.0.0.1:0")
        self.server.start()
        self.address = self.server.address
        self.channel = grpc.insecure_channel(self.address)
        self.stub = admin_pb2_grpc.MeshAdminStub(self.channel)

    def close(self):
        self.channel.close()
        self.server.stop(grace=1)
        self.lease.stop(revoke=True)


@pytest.fixture
def admin(store):
    h = AdminHarness(store)
    yield h
    h.close()
