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


def test_a_failing_http1_parser_callback_is_logged_as_the_relays_error(caplog):
    """httptools turns an exception in a callback into a parse error; the relay says which
    it was (fuzzing found such bugs invisible: a 400 and a protocol-error count)."""
    import logging  # noqa: PLC0415

    import httptools  # noqa: PLC0415

    from meshd.dataplane.h1 import _callback_failed, _Stop  # noqa: PLC0415

    class Broken:
        def on_url(self, url):
            raise ValueError("relay bug")

    class Stopping:  # the relay's own way of stopping the parser: not an error
        def on_url(self, url):
            raise _Stop()

    caplog.set_level(logging.ERROR, logger="meshd.dataplane")
    for data, proto, broken in ((b"GET / HTTP/1.1\r\n\r\n", Broken, True),
                                (b"GET / HTTP/1.1\r\n\r\n", Stopping, False),
                                (b"\x00garbage\r\n\r\n", Broken, False)):
        caplog.clear()
        try:
            httptools.HttpRequestParser(proto()).feed_data(data)
        except httptools.HttpParserError as err:
            _callback_failed(err, "downstream")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        if broken:
            assert errors and isinstance(errors[0].exc_info[1], ValueError), errors
        else:
            assert not errors  # a client's garbage stays a client error


def test_a_response_parsed_after_its_client_left_stops_the_upstream_parser(tmp_path):
    """fuzz_h1.py (mode 0x19: one-byte reads, FIN, then wait): a chunked HEAD whose client
    sent FIN. The client's FIN ends the exchange while the upstream's response is being
    parsed; the parser's later callbacks found no exchange (AttributeError, which llhttp
    turned into a parse error). They now stop the parser. Replayed through the harness."""
    import base64  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    case = tmp_path / "crash-h1-up-after-close"
    case.write_bytes(base64.b64decode(
        "GUhFQUQgLyBIVFRQLzEuMQ0KaG9zdDogYQ0KdHJhbnNmZXItZW5jb2Rpbmc6IGNodW5rZWQNCg0KNQ0KaGVsbG8NCjANCngtdDogMQ0KDQo="))
    harness = Path(__file__).resolve().parents[2] / "fuzz" / "fuzz_h1.py"
    run = subprocess.run([sys.executable, str(harness), str(case)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
