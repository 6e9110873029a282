"""The unmodified apps of the sidecar tests, run inside a pod: each dials a plain name
through the system resolver and knows nothing of meshd. Prints one JSON line of results.

    python apps.py grpc catalog.shop.local:9080 5000   # unary echo.Echo/Say calls
    python apps.py http http://pages.shop.local:8000/hello 50 ["Header: value" ...]
    python apps.py tcp echo.shop.local 7000 65536        # byte-exact echo of random bytes
    python apps.py tcp6 echo.shop.local 7000 65536       # the same over IPv6
    python apps.py dns catalog.shop.local A              # one query to resolv.conf's resolver
    python apps.py serve 8080                            # the pod's own HTTP app
    python apps.py garbage 127.0.0.1 15001 tcp           # random bytes at a listener (tcp or udp)
    python apps.py grpc-origin catalog-v1a 7101 0        # an echo.Echo origin (failing every Nth call)
    python apps.py pages 8000 | echo 7000                # an HTTP origin, a TCP echo
    python apps.py udp 8125 FILE                         # a DogStatsD (or X-Ray) daemon's socket, to a file
"""
from __future__ import annotations

import json
import os
import socket
import socketserver
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def grpc_calls(target: str, n: int, workers: int = 4) -> dict:
    import grpc

    answers, failures = Counter(), Counter()
    lock = threading.Lock()
    with grpc.insecure_channel(target) as ch:
        say = ch.unary_unary("/echo.Echo/Say")

        def work(k: int) -> None:
            for i in range(k):
                try:
                    who = say(b"hi", timeout=10).split(b":", 1)[0].decode()
                    with lock:
                        answers[who] += 1
                except grpc.RpcError as err:
                    with lock:
                        failures[f"{err.code().name}: {err.details()}"] += 1
        share = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
        threads = [threading.Thread(target=work, args=(k,)) for k in share]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return {"answers": dict(answers), "failures": dict(failures)}


def http_calls(url: str, n: int, headers: dict | None = None) -> dict:
    bodies, failures = Counter(), Counter()
    for _ in range(n):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
                bodies[r.read().decode()] += 1
        except urllib.error.HTTPError as err:
            failures[f"{err.code} {err.headers.get('x-meshd-reason', '')}"] += 1
        except OSError as err:
            failures[type(err).__name__] += 1
    return {"bodies": dict(bodies), "failures": dict(failures)}


def tcp_echo(host: str, port: int, size: int, family: int = 0) -> dict:
    data = os.urandom(size)
    got = bytearray()
    try:
        fam, kind, proto, _, addr = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0]
        with socket.socket(fam, kind, proto) as s:
            s.settimeout(10)
            s.connect(addr)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
    except OSError as err:
        return {"echoed": False, "received": len(got), "error": f"{type(err).__name__}: {err}"}
    return {"echoed": bytes(got) == data, "received": len(got), "error": "", "address": addr[0]}


def dns_query(name: str, qtype: str) -> dict:
    """One query to the first resolver of /etc/resolv.conf, as a stub resolver sends it."""
    from dnslib import RCODE, DNSRecord

    server = next(line.split()[1] for line in open("/etc/resolv.conf") if line.startswith("nameserver"))
    reply = DNSRecord.parse(DNSRecord.question(name, qtype).send(server, 53, timeout=5))
    return {"rcode": RCODE[reply.header.rcode], "answers": sorted(str(r.rdata) for r in reply.rr)}


class AppHandler(BaseHTTPRequestHandler):
    """An HTTP app answering, as JSON, its name, the path and Host it got, and any x-meshd-*
    header that reached it (none should)."""

    name = "web"

    def do_GET(self):  # noqa: N802 - http.server's naming
        internal = sorted(k.lower() for k in self.headers if k.lower().startswith("x-meshd-"))
        seen = {"app": self.name, "path": self.path, "host": self.headers["Host"], "internal": internal}
        for k in ("X-Amzn-Trace-Id", "traceparent"):  # what tracing told this hop, when anything
            if self.headers.get(k):
                seen[k.lower()] = self.headers[k]
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(port: int) -> None:
    """The pod's own app, on all addresses."""
    ThreadingHTTPServer(("", port), AppHandler).serve_forever()


def udp_sink(port: int, path: str) -> None:
    """A DogStatsD or X-Ray daemon's socket: each datagram appended to `path`, then a newline."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, open(path, "ab", buffering=0) as out:
        s.bind(("127.0.0.1", port))
        while True:
            data, _ = s.recvfrom(65536)
            out.write(data + b"\n")


def grpc_origin(name: str, port: int, fail_every: int) -> None:
    """mesh_harness's echo.Echo origin on 127.0.0.1:port (failing every `fail_every`th call)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from mesh_harness import Origin

    o = Origin(name, port)
    o.fail_every = fail_every
    threading.Event().wait()


class EchoHandler(socketserver.BaseRequestHandler):
    """A byte-exact TCP echo, half-close aware: what came, until the client's FIN."""

    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                self.request.shutdown(socket.SHUT_WR)
                return
            self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def tcp_echo_server(port: int) -> None:
    EchoServer(("127.0.0.1", port), EchoHandler).serve_forever()


def garbage(host: str, port: int, proto: str) -> dict:
    """Random bytes at a listener (TCP: then read what comes back until it closes; UDP: one
    datagram, then a valid DNS query on the same port)."""
    data = os.urandom(4096)
    if proto == "udp":
        from dnslib import RCODE, DNSRecord

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, (host, port))
        reply = DNSRecord.parse(DNSRecord.question("catalog.shop.local", "A").send(host, port, timeout=5))
        return {"after": RCODE[reply.header.rcode], "answers": [str(r.rdata) for r in reply.rr]}
    got = b""
    try:
        with socket.create_connection((host, port), timeout=15) as s:
            s.sendall(data)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        closed = True
    except OSError as err:
        closed = isinstance(err, ConnectionResetError)
    return {"closed": closed, "received": len(got)}


def main(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "grpc":
        out = grpc_calls(argv[1], int(argv[2]))
    elif kind == "http":
        out = http_calls(argv[1], int(argv[2]), dict(h.split(": ", 1) for h in argv[3:]))
    elif kind == "tcp":
        out = tcp_echo(argv[1], int(argv[2]), int(argv[3]))
    elif kind == "tcp6":
        out = tcp_echo(argv[1], int(argv[2]), int(argv[3]), socket.AF_INET6)
    elif kind == "garbage":
        out = garbage(argv[1], int(argv[2]), argv[3])
    elif kind == "grpc-origin":
        grpc_origin(argv[1], int(argv[2]), int(argv[3]))
        return 0
    elif kind == "pages":
        pages = type("Pages", (AppHandler,), {"name": "pages"})
        ThreadingHTTPServer(("127.0.0.1", int(argv[1])), pages).serve_forever()
        return 0
    elif kind == "echo":
        tcp_echo_server(int(argv[1]))
        return 0
    elif kind == "udp":
        udp_sink(int(argv[1]), argv[2])
        return 0
    elif kind == "serve":
        serve(int(argv[1]))
        return 0
    elif kind == "dns":
        out = dns_query(argv[1], argv[2])
    else:
        raise SystemExit(f"unknown app {kind}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
