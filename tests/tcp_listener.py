"""A loopback TCP listener for tests that play a peer by hand (a silent host, a cut link, a
hand-written HTTP/2 origin): the accept loop runs on a daemon thread and hands each
connection to the subclass's `accepted`."""
from __future__ import annotations

import socket
import threading


class Listener:
    """Listens on 127.0.0.1 (`port`); `accepted(conn)` is called on the accept thread for
    each connection. Subclasses set what `accepted` needs before calling this __init__."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted(conn)

    def accepted(self, conn: socket.socket) -> None:
        """Keep the connection open and never answer (override for more)."""
        self.conns.append(conn)

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


class Blackhole(Listener):
    """A TCP port that accepts connections and never answers: a partitioned peer."""
