"""The "nothing lost" checker's judgement, on hand-made histories (no cluster needed)."""
from __future__ import annotations

import pytest

from meshd.v1 import admin_pb2 as pb
from meshd.v1 import spec_pb2

from .ledger import Entry, _judge


def _final(version: int, port: int = 80):
    data = pb.VirtualNodeData(virtual_node_name="n")
    data.metadata.version = version
    data.spec.listeners.add().port_mapping.port = port
    return data


def _spec(port: int) -> bytes:
    spec = spec_pb2.VirtualNodeSpec()
    spec.listeners.add().port_mapping.port = port
    return spec.SerializeToString(deterministic=True)


@pytest.mark.parametrize("history,final,lost", [
    ([Entry(True, "put", 1, _spec(80))], _final(1, 80), False),
    ([Entry(True, "put", 2, _spec(80))], _final(1, 80), True),            # rolled back
    ([Entry(True, "put", 1, _spec(80))], None, True),                     # missing
    ([Entry(True, "put", 1, _spec(80))], _final(1, 81), True),            # another spec at that version
    ([Entry(True, "put", 1, _spec(80))], _final(2, 81), True),            # a change nobody made
    ([Entry(True, "put", 1, _spec(80)), Entry(False, "put", spec=_spec(81))], _final(2, 81), False),
    ([Entry(True, "put", 1, _spec(80)), Entry(False, "put", spec=_spec(81))], _final(1, 80), False),
    ([Entry(True, "put", 1, _spec(80)), Entry(False, "delete")], None, False),
    ([Entry(True, "delete")], None, False),
    ([Entry(True, "delete")], _final(1), True),                           # a delete undone
    ([Entry(False, "put", spec=_spec(80))], None, False),                 # nothing acknowledged
])
def test_judge(history, final, lost):
    assert (_judge(history, final) is not None) == lost
