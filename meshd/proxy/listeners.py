"""The listeners a data plane has open: their engines (drained and closed on stop, counted for
open connections) and their addresses by name (`ingress`, `egress:web`, `gateway:edge:8443`)."""
from __future__ import annotations


class Listeners:
    """Engines and named addresses; touched on the data-plane loop, read from any thread."""

    def __init__(self):
        self.engines: list = []
        self.addresses: dict[str, str] = {}

    def add(self, engine, name: str = "", address: str = "") -> None:
        if engine not in self.engines:
            self.engines.append(engine)
        if name:
            self.addresses[name] = address

    def remove(self, engine, name: str = "") -> None:
        if engine in self.engines:
            self.engines.remove(engine)
        if name:
            self.addresses.pop(name, None)

    def open_connections(self) -> int:
        """Downstream connections open on every listener."""
        return sum(e.downstream_connections for e in self.engines)
