"""The `aws_mesh` fixture: one meshd serving App Mesh's REST API per test module."""
from __future__ import annotations

import pytest

from tests.awsapi.harness import start_aws_mesh, stop_aws_mesh


@pytest.fixture(scope="module")
def aws_mesh(etcd, tmp_path_factory):
    m = start_aws_mesh(etcd, tmp_path_factory.mktemp("awsapi"))
    yield m
    stop_aws_mesh(m)
