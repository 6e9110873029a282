"""A real meshd serving App Mesh's REST API over TLS (its host certificate, made by the
cluster's CA), on the suite's etcd, with access keys made as `meshctl accesskey create`
makes them, and a gRPC admin client beside it for comparing the two protocols."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import grpc
from botocore.config import Config

from meshd.app import Meshd, MeshdConfig
from meshd.embedded_etcd import free_port
from meshd.security import ClusterKey, Roles, Tokens
from meshd.security.accesskeys import AccessKeys
from meshd.v1 import admin_pb2_grpc, security_pb2_grpc

@dataclass
class Key:
    principal: str
    access_key_id: str
    secret: str


@dataclass
class AwsMesh:
    """One meshd with --aws-api, and ways to call it."""

    daemon: Meshd
    endpoint: str
    bundle: str
    region: str
    root: Key
    grpc_admin: admin_pb2_grpc.MeshAdminStub
    grpc_security: security_pb2_grpc.MeshSecurityStub
    keys: AccessKeys
    roles: Roles
    _channels: list = field(default_factory=list)

    def key(self, principal: str, role: str | None = None, mesh: str = "*") -> Key:
        """A new access key for `principal`, granted `role` in `mesh` when given."""
        issued = self.keys.create(principal, created_by="test")
        if role is not None:
            self.roles.grant(principal, role, mesh)
        return Key(principal, issued.access_key_id, issued.secret_access_key)

    def client(self, key: Key | None = None, *, secret: str | None = None, retries: int = 0, **kw):
        """boto3's appmesh client for `key` (the cluster admin's by default), signing for real."""
        key = key or self.root
        return boto3.client(
            "appmesh", endpoint_url=self.endpoint, region_name=self.region, verify=self.bundle,
            aws_access_key_id=key.access_key_id, aws_secret_access_key=secret or key.secret,
            config=Config(retries={"max_attempts": retries + 1, "mode": "standard"}, **kw))

    def cli_env(self, key: Key | None = None) -> dict[str, str]:
        """The environment the AWS CLI runs with in the shell-script tests."""
        key = key or self.root
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=key.access_key_id, AWS_SECRET_ACCESS_KEY=key.secret,
                   AWS_DEFAULT_REGION=self.region, AWS_CA_BUNDLE=self.bundle, AWS_MAX_ATTEMPTS="1",
                   MESHD_ENDPOINT=self.endpoint, AWS_PAGER="", AWS_CONFIG_FILE="/dev/null",
                   AWS_SHARED_CREDENTIALS_FILE="/dev/null")
        return env


def start_aws_mesh(etcd, tmp: Path, *, name: str = "h1", **overrides) -> AwsMesh:
    key_path = tmp / "cluster.key"
    if not key_path.exists():
        ClusterKey.generate(key_path)
    cfg = MeshdConfig(admin=f"127.0.0.1:{free_port()}", admin_token=f"127.0.0.1:{free_port()}",
                      etcd=[etcd.url], etcd_prefix=f"/meshd-awsapi/{uuid.uuid4().hex}/v1/",
                      state_dir=str(tmp / name), host_name=name, cluster_key=str(key_path), lease_ttl=5,
                      aws_api=f"127.0.0.1:{free_port()}")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    daemon = Meshd(cfg).start()
    bundle = tmp / name / "identity" / "bundle.pem"
    roles = Roles(daemon.store)
    keys = daemon.access_keys  # the meshd's own: the REST API's lookups share its cache
    # The operator's bootstrap, as `meshd grant-admin` does it, then an admin access key.
    roles.grant("root", "admin", "*")
    token = Tokens(daemon.store).create_api_token("root").token
    creds = grpc.composite_channel_credentials(grpc.ssl_channel_credentials(bundle.read_bytes()),
                                               grpc.access_token_call_credentials(token))
    channel = grpc.secure_channel(daemon.admin.addresses["token"], creds)
    issued = keys.create("root", created_by="test")
    region = daemon.resources.aws.region
    return AwsMesh(daemon, f"https://{daemon.aws_api.address}", str(bundle), region,
                   Key("root", issued.access_key_id, issued.secret_access_key),
                   admin_pb2_grpc.MeshAdminStub(channel), security_pb2_grpc.MeshSecurityStub(channel),
                   keys, roles, [channel])


def stop_aws_mesh(m: AwsMesh) -> None:
    for ch in m._channels:
        ch.close()
    m.daemon.stop()
