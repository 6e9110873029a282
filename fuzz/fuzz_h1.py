"""Coverage-guided fuzzing of the HTTP/1.1 engine's request path: one input is one downstream connection's bytes.

Run (see fuzz/README.md):  python fuzz/fuzz_h1.py CORPUS_DIR -max_total_time=300 -timeout=10

Input: byte 0 chooses how the bytes arrive (_common.drive), the rest is what a client
sends on one connection. Each input gets a fresh connection to a long-lived H1Engine
whose decide() routes to a real HTTP/1.1 origin on loopback, to a closed port, or
refuses, by the request's path. The engine module is pure Python, so atheris traces it
line by line. A crash is an exception out of the protocol, one raised in its parser
callbacks (which llhttp turns into a parse error), one the engine caught and logged at
ERROR or that reached the loop, a connection or upstream still held a second
after the client went away, or a libFuzzer -timeout.
"""
from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["meshd.dataplane.h1", "meshd.dataplane._relay"]):
    from meshd.dataplane import H1Engine, Refusal, Target
    from meshd.dataplane.h1 import _Stop

from _common import drive, new_loop, released, run, watch_llhttp  # noqa: E402
from _origins import H1Origin, Routes, closed_port, start  # noqa: E402

loop, errors = new_loop()
watch_llhttp(errors, expected=_Stop)
_, ORIGIN_PORT = loop.run_until_complete(start(loop, H1Origin))
DOWN_PORT = loop.run_until_complete(closed_port(loop))

ROUTES = Routes(Target, Refusal, ORIGIN_PORT, DOWN_PORT)
engine = H1Engine(ROUTES.decide, ROUTES.retry, loop=loop, complete=ROUTES.complete, header_timeout=0.5,
                  connect_timeout=0.2, max_header_bytes=2048, retry_buffer=256, high_water=4096)


def busy() -> bool:
    return bool(engine.conns) or any(c.ex is not None for p in engine.pools.values() for c in p.idle)


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, data = data[0], data[1:]
    proto = engine.protocol_factory()
    drive(loop, proto, data, mode, lambda p: not p.queue and p.cur is None)
    released(loop, errors, lambda: not busy() and not proto.queue,
             lambda: f"conns={len(engine.conns)} queue={len(proto.queue)}")


if __name__ == "__main__":
    run(one_input)
