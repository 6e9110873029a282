"""`free_port`, which every multi-process test and bench picks its listeners with, hands out
ports no outgoing connection can take before the listener binds them (outside the kernel's
ephemeral range), and never the same port twice in one process. A port picked from the
ephemeral range could be taken by any client socket in between, and the listener would then
fail to open while the test talks to someone else's socket."""
from __future__ import annotations

import socket
from pathlib import Path

from meshd.embedded_etcd import free_port


def _ephemeral() -> tuple[int, int]:
    lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(lo), int(hi)


def test_ports_are_outside_the_ephemeral_range_distinct_and_bindable():
    lo, hi = _ephemeral()
    ports = [free_port() for _ in range(300)]
    assert not [p for p in ports if lo <= p <= hi], "free_port handed out ports from the ephemeral range"
    assert len(set(ports)) == len(ports), "free_port handed out a port twice"
    for p in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_a_port_someone_listens_on_is_never_handed_out():
    taken = []
    try:
        for _ in range(50):
            s = socket.socket()
            s.bind(("127.0.0.1", free_port()))
            s.listen()
            taken.append(s)
        busy = {s.getsockname()[1] for s in taken}
        assert not busy & {free_port() for _ in range(300)}
    finally:
        for s in taken:
            s.close()
