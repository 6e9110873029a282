"""The systemd units in deploy/systemd: systemd itself accepts them without a warning, and
they carry what the operations guide promises (environment files, restart and stop
behaviour, hardening)."""
from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[1] / "deploy" / "systemd"
UNITS = ("meshd.service", "etcd-member.service")


def _unit(name: str) -> configparser.ConfigParser:
    # Units repeat keys (SystemCallFilter=); keep the last like systemd's merge would for these checks.
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read(SYSTEMD / name)
    return cp


def _env_file(name: str) -> dict[str, str]:
    out = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_systemd_analyze_verify_accepts_the_units_without_warnings(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not found: install Debian's systemd package (scripts/setup.sh)")
    # The units name the installed paths; verify checks that ExecStart is executable, so
    # point it at stand-ins here and keep every other line as shipped.
    stub = tmp_path / "meshd"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    for name in UNITS:
        text = (SYSTEMD / name).read_text().replace("/usr/local/bin/meshd", str(stub))
        if not Path(etcd).exists():
            text = text.replace("/usr/bin/etcd", str(stub))
        (tmp_path / name).write_text(text)
    proc = subprocess.run([analyze, "verify", *(str(tmp_path / n) for n in UNITS)],
                          capture_output=True, text=True, timeout=60)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if any(n in line for n in UNITS)]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_meshd_unit_runs_from_its_environment_file_and_stops_cleanly():
    svc = _unit("meshd.service")["Service"]
    assert svc["EnvironmentFile"] == "/etc/meshd/meshd.env"
    assert svc["ExecStart"].startswith("/usr/local/bin/meshd run --etcd ${MESHD_ETCD}")
    assert svc["Type"] == "simple"
    assert svc["Restart"] == "on-failure"
    assert svc["KillSignal"] == "SIGTERM"  # meshd revokes its host lease on SIGTERM
    assert int(svc["TimeoutStopSec"]) >= 10
    # Every variable the unit uses is set by the example environment file.
    env = _env_file("meshd.env.example")
    for var in ("MESHD_ETCD", "MESHD_LEASE_TTL", "MESHD_ADMIN", "MESHD_STATE_DIR", "MESHD_HOST_NAME"):
        assert env.get(var), var


@pytest.mark.parametrize("name", UNITS)
def test_units_are_hardened(name):
    svc = _unit(name)["Service"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "RestrictNamespaces": "yes"}.items():
        assert svc.get(key) == value, key
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert svc["ReadWritePaths"].startswith("/var/lib/")
    assert "CapabilityBoundingSet" in svc
    assert svc.get("User") and svc["User"] != "root"


def test_etcd_member_environment_is_a_static_cluster_member():
    env = _env_file("etcd-member.env.example")
    for key in ("ETCD_NAME", "ETCD_DATA_DIR", "ETCD_INITIAL_CLUSTER", "ETCD_INITIAL_CLUSTER_STATE",
                "ETCD_INITIAL_CLUSTER_TOKEN", "ETCD_LISTEN_PEER_URLS", "ETCD_ADVERTISE_CLIENT_URLS"):
        assert env.get(key), key
    members = dict(m.split("=", 1) for m in env["ETCD_INITIAL_CLUSTER"].split(","))
    assert len(members) in (3, 5)
    assert members[env["ETCD_NAME"]] == env["ETCD_INITIAL_ADVERTISE_PEER_URLS"]
    assert env["ETCD_DATA_DIR"] == _unit("etcd-member.service")["Service"]["ReadWritePaths"]
    # meshd's endpoints are exactly the members' client URLs.
    client_urls = {u.replace(":2380", ":2379") for u in members.values()}
    assert set(_env_file("meshd.env.example")["MESHD_ETCD"].split(",")) == client_urls
