"""`meshd proxy-init` in a fresh network namespace: the rules App Mesh's route manager sets,
from its environment, idempotent, removed by `--clean`, and refused settings named."""
from __future__ import annotations

import subprocess

import pytest

from meshd.proxyinit import InitConfig, InitError, rules

from .pods import PYTHON, Pod, free_index, sweep_orphans

pytestmark = [pytest.mark.sidecar]

ENV = {"APPMESH_START_ENABLED": "1", "APPMESH_IGNORE_UID": "1337", "APPMESH_IGNORE_GID": "1338",
       "APPMESH_APP_PORTS": "8080,8443", "APPMESH_ENVOY_INGRESS_PORT": "15000", "APPMESH_ENVOY_EGRESS_PORT": "15001",
       "APPMESH_EGRESS_IGNORED_IP": "169.254.169.254,169.254.170.2,fd00:ec2::254",
       "APPMESH_EGRESS_IGNORED_PORTS": "22,2049", "APPMESH_ENABLE_IPV6": "1", "MESHD_DNS_PORT": "15053"}


@pytest.fixture
def pod():
    sweep_orphans()
    p = Pod("init", free_index())
    yield p
    p.close()


def _init(pod, *args, env=ENV, check=True):
    return pod.run([PYTHON, "-m", "meshd.cli.meshd_main", "proxy-init", *args], env=env, check=check)


def _nat(pod, family: int) -> str:
    cmd = "iptables-save" if family == 4 else "ip6tables-save"
    out = pod.run([cmd, "-t", "nat", "-c"]).stdout  # with counters
    return "\n".join(line for line in out.splitlines() if not line.startswith("#"))


def _root_nat() -> dict[int, str]:
    out = {}
    for fam, cmd in ((4, "iptables-save"), (6, "ip6tables-save")):
        text = subprocess.run([cmd, "-t", "nat"], capture_output=True, text=True, timeout=30).stdout
        out[fam] = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return out


def test_rules_are_app_mesh_route_managers_and_a_second_run_changes_nothing(pod):
    first = _init(pod).stdout
    assert "created MESHD_EGRESS" in first and "added -A OUTPUT" in first, first
    for fam in (4, 6):
        want = rules(InitConfig.from_env(ENV), fam)
        save = _nat(pod, fam)
        for chain in ("MESHD_EGRESS", "MESHD_INGRESS", "MESHD_DNS"):
            rows = [line.split("] ", 1)[-1] for line in save.splitlines()]  # less the [packets:bytes]
            got = [r for r in rows if r.startswith(f"-A {chain} ")]
            assert got == want[chain], (fam, chain, got)
        out = [line.split("] ", 1)[-1] for line in save.splitlines() if "-A OUTPUT " in line]
        assert out == want["OUTPUT"], out  # DNS capture ahead of the egress jump
    v4 = rules(InitConfig.from_env(ENV), 4)
    assert "-A MESHD_EGRESS -m owner --uid-owner 1337 -j RETURN" in v4["MESHD_EGRESS"]
    assert "-A MESHD_EGRESS -d 169.254.169.254/32 -p tcp -j RETURN" in v4["MESHD_EGRESS"]
    assert not any("fd00:ec2::254" in r for r in v4["MESHD_EGRESS"])  # each family its own addresses
    assert any("fd00:ec2::254/128" in r for r in rules(InitConfig.from_env(ENV), 6)["MESHD_EGRESS"])
    assert v4["MESHD_INGRESS"] == [
        "-A MESHD_INGRESS -p tcp -m multiport --dports 8080,8443 -j REDIRECT --to-ports 15000"]

    # Traffic through the rules, then run again: nothing changes, the counters included.
    pod.run([PYTHON, "-c", "import socket\ntry: socket.create_connection(('192.0.2.1', 80), timeout=0.2)\n"
                           "except OSError: pass"])
    before = {f: _nat(pod, f) for f in (4, 6)}
    assert "[1:60] -A MESHD_EGRESS -p tcp -j REDIRECT" in before[4], before[4]
    second = _init(pod).stdout
    assert "unchanged" in second and "added" not in second and "created" not in second, second
    assert {f: _nat(pod, f) for f in (4, 6)} == before


def test_a_changed_setting_replaces_the_chain_and_clean_leaves_no_rule(pod):
    _init(pod)
    changed = _init(pod, env={**ENV, "APPMESH_APP_PORTS": "9090"}).stdout
    assert "replaced MESHD_INGRESS" in changed, changed
    assert "--dports 9090 -j REDIRECT" in _nat(pod, 4)
    pristine = _root_nat()  # the test host's own rules: never touched
    cleaned = _init(pod, "--clean").stdout
    assert "removed chain MESHD_EGRESS" in cleaned, cleaned
    for fam in (4, 6):
        assert "MESHD" not in _nat(pod, fam), _nat(pod, fam)
    assert "no meshd interception rules were present" in _init(pod, "--clean").stdout
    assert _root_nat() == pristine


def test_show_prints_the_chains_with_counters(pod):
    _init(pod)
    out = _init(pod, "--show").stdout
    assert "Chain MESHD_EGRESS" in out and "redir ports 15001" in out and "owner UID match 1337" in out, out


@pytest.mark.parametrize("name,value,says", [
    ("APPMESH_APP_PORTS", "8080,http", "APPMESH_APP_PORTS: 'http' is not a port number"),
    ("APPMESH_ENVOY_EGRESS_PORT", "70000", "APPMESH_ENVOY_EGRESS_PORT: a port number (1-65535) is required"),
    ("APPMESH_IGNORE_UID", "envoy", "APPMESH_IGNORE_UID: a numeric id is required"),
    ("APPMESH_EGRESS_IGNORED_IP", "169.254.169.254,metadata", "APPMESH_EGRESS_IGNORED_IP: 'metadata' is not an IP"),
])
def test_a_bad_setting_is_refused_by_name_and_nothing_is_set_up(pod, name, value, says):
    p = _init(pod, env={**ENV, name: value}, check=False)
    assert p.returncode == 1 and says in p.stderr, (p.returncode, p.stderr)
    assert "MESHD" not in _nat(pod, 4)
    with pytest.raises(InitError, match=name):
        InitConfig.from_env({**ENV, name: value})


def test_not_enabled_sets_nothing_up(pod):
    out = _init(pod, env={**ENV, "APPMESH_START_ENABLED": "0"}).stdout
    assert "no rules set up" in out
    assert "MESHD" not in _nat(pod, 4)
