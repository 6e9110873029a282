"""The data plane gets plain values in: it imports neither etcd, the registry nor the admin API."""
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.dataplane

FORBIDDEN = re.compile(r"^\s*(?:from|import|cimport)\s+(etcd3|registry|meshd\.api|meshd\.app|grpc)\b", re.M)


def test_dataplane_sources_import_no_control_plane():
    root = Path(__file__).resolve().parents[2] / "meshd" / "dataplane"
    sources = [p for p in root.iterdir() if p.suffix in {".py", ".pyx", ".pxi", ".pxd"}]
    assert len(sources) >= 7
    offenders = {p.name: FORBIDDEN.findall(p.read_text()) for p in sources}
    assert {k: v for k, v in offenders.items() if v} == {}
