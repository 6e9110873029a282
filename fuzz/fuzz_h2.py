"""Coverage-guided fuzzing of the HTTP/2 engine's request path: one input is one downstream connection's bytes.

Run (see fuzz/README.md):  python fuzz/fuzz_h2.py CORPUS_DIR -max_total_time=300 -timeout=10

Input: byte 0 chooses how the bytes arrive (_common.drive), the rest is what a client sends on
one connection, preface first. Each input gets a fresh connection to a long-lived Engine
(meshd.dataplane.Engine) whose decide() routes to a real HTTP/2 origin on loopback,
to a closed port, or refuses, by the request's path. A crash is any of:
  - an exception out of the engine's protocol methods;
  - an exception the engine caught and logged at ERROR, or one that reached the loop;
  - streams or counters still held a second after the client went away (a hang or a leak);
  - a signal (libFuzzer's own handlers report it), or a libFuzzer -timeout.
"""
from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_native_h2  # noqa: E402

NATIVE = load_native_h2()    # None unless MESHD_FUZZ_NATIVE=1
# The engine is native (see MESHD_FUZZ_NATIVE); no Python module of it to instrument.
from meshd.dataplane import Engine, Refusal, Target, counters  # noqa: E402

from _common import Signals, drive, h2_frames, moved, new_loop, released, run  # noqa: E402
from _origins import H2Origin, Routes, closed_port, start  # noqa: E402

loop, errors = new_loop()
_, ORIGIN_PORT = loop.run_until_complete(start(loop, H2Origin))
DOWN_PORT = loop.run_until_complete(closed_port(loop))

ROUTES = Routes(Target, Refusal, ORIGIN_PORT, DOWN_PORT)
engine = Engine(ROUTES.decide, ROUTES.retry, loop=loop, complete=ROUTES.complete,
                # Small limits, so that inputs of a few hundred bytes reach them.
                max_concurrent_streams=8, stream_window=16384, connection_window=32768,
                max_header_list=4096, header_timeout=0.5, connect_timeout=0.2,
                retry_buffer=1024, upstream_max_streams=4)
BASE = counters()["active_streams"]
signals = Signals()


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, data = data[0], data[1:]
    before = counters()
    pipe = drive(loop, engine.protocol_factory(), data, mode, lambda proto: engine.open_streams == 0)
    # What the engine and nghttp2 did with this input, as coverage (the shipped engine is
    # not instrumented; with MESHD_FUZZ_NATIVE=1 this only adds to its own coverage).
    signals.report([("frame", *f) for f in h2_frames(bytes(pipe.out))] + moved(before, counters()))
    released(loop, errors, lambda: engine.open_streams == 0 and engine.downstream_connections == 0
             and counters()["active_streams"] == BASE,
             lambda: f"open_streams={engine.open_streams} downstream_connections="
                     f"{engine.downstream_connections} active_streams={counters()['active_streams'] - BASE}")


if __name__ == "__main__":
    run(one_input, NATIVE)
