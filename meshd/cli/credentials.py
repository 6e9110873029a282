"""meshctl's credentials: a kubeconfig-like file of named contexts, and the gRPC channel
each context opens (plaintext loopback, mTLS with a client certificate, or TLS with a
bearer API token).

File (`$MESHCTL_CONFIG`, default `~/.config/meshd/meshctl.yaml`, mode 0600):

    current: prod
    contexts:
      prod: {server: 10.0.0.5:7000, ca: /etc/meshd/ca.pem, cert: ~/.meshd/me.crt, key: ~/.meshd/me.key}
      ci:   {server: 10.0.0.5:7001, ca: /etc/meshd/ca.pem, token: api.1234.secret}
      dev:  {server: 127.0.0.1:7000}          # the --insecure-local listener
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import yaml


def config_path() -> Path:
    return Path(os.environ.get("MESHCTL_CONFIG") or Path.home() / ".config" / "meshd" / "meshctl.yaml")


@dataclass
class Context:
    """How to reach and authenticate to one meshd admin API."""

    server: str
    ca: str = ""  # trust bundle PEM file; required for cert or token
    cert: str = ""
    key: str = ""
    token: str = ""

    def channel(self) -> grpc.Channel:
        if not (self.cert or self.token):
            return grpc.insecure_channel(self.server)
        root = Path(self.ca).expanduser().read_bytes() if self.ca else None
        if self.cert:
            creds = grpc.ssl_channel_credentials(root, Path(self.key).expanduser().read_bytes(),
                                                 Path(self.cert).expanduser().read_bytes())
        else:
            creds = grpc.composite_channel_credentials(
                grpc.ssl_channel_credentials(root), grpc.access_token_call_credentials(self.token))
        return grpc.secure_channel(self.server, creds)


def load(name: str | None = None) -> Context | None:
    """The named (or current) context from the config file; None if there is no file."""
    path = config_path()
    if not path.exists():
        return None
    doc = yaml.safe_load(path.read_text()) or {}
    name = name or doc.get("current")
    ctx = (doc.get("contexts") or {}).get(name)
    return Context(**ctx) if ctx else None


def save(name: str, ctx: Context, *, make_current: bool = True) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load(path.read_text()) if path.exists() else {}
    doc = doc or {}
    doc.setdefault("contexts", {})[name] = {k: v for k, v in asdict(ctx).items() if v}
    if make_current:
        doc["current"] = name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return path
