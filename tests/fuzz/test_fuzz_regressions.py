"""Inputs the fuzz/ harnesses found, replayed against the real code as plain (unmarked, quick) tests."""
from __future__ import annotations

from meshd.cli import meshctl


def test_meshctl_apply_of_a_file_that_is_not_utf8_is_an_error_not_a_traceback(tmp_path, capsys):
    # fuzz_admin_json.py: a byte 0xff inside a corpus document made load_documents raise
    # UnicodeDecodeError out of meshctl, past its CliError handling.
    doc = tmp_path / "mesh.json"
    doc.write_bytes(b'{"meshName": "shop", "spec": {"egressFilter": {"type": "ALLOW_ALL\xff"}}}')
    assert meshctl.main(["apply", "-f", str(doc), "--server", "127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "not UTF-8 text" in err and str(doc) in err
