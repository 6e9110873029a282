"""Background loops that cannot vanish: a loop that raises is logged and started again.

A daemon thread whose target raises prints a traceback to stderr and is gone; for the host
lease or the registrar that means instances silently missing from every route table.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger("meshd.loops")


def supervised(name: str, body: Callable[[], None], stop: threading.Event,
               pause: float = 1.0) -> threading.Thread:
    """A started daemon thread running `body` until it returns or `stop` is set; if `body`
    raises, the error is logged with its traceback and `body` runs again after `pause`."""

    def run() -> None:
        restarts = 0
        while not stop.is_set():
            try:
                body()
                return
            except Exception:  # noqa: BLE001 - whatever it was, the loop must go on
                restarts += 1
                log.exception("background loop failed; restarting it", extra={"loop": name, "restarts": restarts})
                stop.wait(pause)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
