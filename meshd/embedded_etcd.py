"""A private single-member etcd run as a supervised child process (meshd's embedded default)."""
from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger("meshd.etcd")

ETCD_SEARCH = ("/usr/bin/etcd", "/usr/local/bin/etcd")


class EtcdError(Exception):
    """The embedded etcd could not be found or started."""


def _die_with_parent(args: list[str], parent_pid: int) -> list[str]:
    """`args` wrapped so the child gets SIGKILL when its parent dies, even by SIGKILL.

    SIGKILL, not SIGTERM: etcd acknowledges a write only after its WAL is fsynced, so
    killing it loses nothing acknowledged, and it cannot ignore or stall on it.

    util-linux's setpriv sets PR_SET_PDEATHSIG and execs; the setting survives exec. It is
    done there and not in a preexec_fn on purpose: meshd forks while gRPC's threads run,
    and Python code between fork and exec in such a process can die by SIGABRT/SIGSEGV
    (gRPC's fork handlers). Without a preexec_fn no Python runs in the child. If the parent
    died between fork and prctl no signal will ever come, so the shell checks it still has
    the parent that spawned it before it becomes the program.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        log.warning("setpriv (util-linux) not found: children will not die with a SIGKILLed meshd")
        return list(args)
    check = f'[ "$PPID" = "{parent_pid}" ] || exit 70; exec "$@"'
    return [setpriv, "--pdeathsig", "KILL", "--", "/bin/sh", "-c", check, "meshd-spawn", *args]


class _Spawner:
    """Starts child processes from one thread that lives as long as the process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process
    (prctl(2)). meshd forks etcd from whichever thread calls start() or resume(), or from
    the supervisor that restarts it, and any of those may end while meshd runs on (a test's
    thread, a supervisor after stop): the child would be killed with a live meshd. So every
    fork happens here, on a daemon thread that never returns; it ends only with the process.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._owner = 0  # the pid that started the thread: a forked copy of meshd needs its own

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._owner != os.getpid():
                self._jobs = queue.SimpleQueue()
                threading.Thread(target=self._run, args=(self._jobs,), name="meshd-spawner", daemon=True).start()
                self._owner = os.getpid()
            jobs = self._jobs
        done: concurrent.futures.Future = concurrent.futures.Future()
        jobs.put((done, args, kwargs))
        return done.result()

    @staticmethod
    def _run(jobs: queue.SimpleQueue) -> None:
        while True:
            done, args, kwargs = jobs.get()
            try:
                done.set_result(subprocess.Popen(_die_with_parent(args, os.getpid()), **kwargs))
            except BaseException as err:  # noqa: BLE001 - handed to the caller, which raises it
                done.set_exception(err)


_spawner = _Spawner()


def find_etcd() -> str:
    """The etcd binary: $MESHD_ETCD_BIN, then PATH, then Debian's etcd-server location."""
    explicit = os.environ.get("MESHD_ETCD_BIN")
    if explicit:
        return explicit
    found = shutil.which("etcd")
    if found:
        return found
    for candidate in ETCD_SEARCH:
        if os.access(candidate, os.X_OK):
            return candidate
    raise EtcdError("etcd binary not found: install Debian's etcd-server package "
                    "(`apt-get install etcd-server`) or set MESHD_ETCD_BIN")


_handed_out: set[int] = set()
_handed_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now, for a listener that binds it a moment later.

    Chosen below the kernel's ephemeral range, where no outgoing connection is ever given a
    port, so nothing can take it in between; and never the same one twice in a process
    (binding port 0 may hand the same port to two callers in turn). Falls back to port 0's
    choice when the range below is too small to pick from."""
    lo, _ = _ephemeral_range()
    first = 10000
    if lo - first >= 1000:
        rng = random.SystemRandom()
        with _handed_lock:
            for _ in range(200):
                port = rng.randrange(first, lo)
                if port in _handed_out:
                    continue
                with socket.socket() as s:
                    try:
                        s.bind((host, port))
                    except OSError:
                        continue
                _handed_out.add(port)
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedEtcd:
    """One etcd member on loopback, data under `data_dir`, restarted if it dies unexpectedly.

    Ports are fixed at construction so a restarted member keeps its address; clients (and
    watches) reconnect to the same URL.
    """

    def __init__(self, data_dir: str | os.PathLike, *, host: str = "127.0.0.1",
                 client_port: int | None = None, peer_port: int | None = None,
                 name: str = "meshd-embedded", supervise: bool = True,
                 extra_args: tuple[str, ...] = ()):
        self.data_dir = Path(data_dir)
        self.host = host
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.name = name
        self.supervise = supervise
        self.extra_args = extra_args
        self._proc: subprocess.Popen | None = None
        self._stopping = False
        self._paused = False
        self._supervisor: threading.Thread | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _command(self) -> list[str]:
        peer = f"http://{self.host}:{self.peer_port}"
        return [
            find_etcd(),
            "--name", self.name,
            "--data-dir", str(self.data_dir / "member-data"),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}",
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-outputs", "stderr",
            *self.extra_args,
        ]

    def start(self, timeout: float = 20.0) -> "EmbeddedEtcd":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        self._paused = False
        self._spawn()
        self.wait_ready(timeout)
        if self.supervise and self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, name="etcd-supervisor", daemon=True)
            self._supervisor.start()
        return self

    def _spawn(self) -> None:
        if self._log_file is None:
            self._log_file = open(self.data_dir / "etcd.log", "ab")
        env = dict(os.environ)
        # Debian's etcd 3.4 refuses to start on unsupported architectures without this.
        env.setdefault("ETCD_UNSUPPORTED_ARCH", os.uname().machine)
        # Its own session keeps a terminal's ^C (meant for meshd) from reaching etcd first;
        # the spawner makes it die with meshd all the same, even when meshd is SIGKILLed.
        self._proc = _spawner.popen(self._command(), stdout=self._log_file, stderr=self._log_file,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.info("etcd started", extra={"pid": self._proc.pid, "url": self.url})

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise EtcdError(f"etcd exited with {self._proc.returncode}; see {self.data_dir / 'etcd.log'}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                    if b'"health":"true"' in resp.read().replace(b" ", b""):
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        raise EtcdError(f"etcd at {self.url} not healthy within {timeout}s")

    def _supervise(self) -> None:
        backoff = 0.2
        while not self._stopping:
            proc = self._proc
            if proc is None or self._paused:
                time.sleep(0.1)
                continue
            code = proc.wait()
            if self._stopping or self._paused:
                continue
            log.warning("etcd exited unexpectedly; restarting", extra={"code": code})
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            try:
                self._spawn()
                self.wait_ready()
                backoff = 0.2
            except EtcdError as err:
                log.error("etcd restart failed", extra={"error": str(err)})

    def stop(self, timeout: float = 10.0) -> None:
        """Stop etcd for good (SIGTERM, then SIGKILL after `timeout`)."""
        self._stopping = True
        self._terminate(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # Outage simulation for tests and failure drills: stop without the supervisor restarting.
    def pause(self) -> None:
        self._paused = True
        self._terminate(10.0)

    def resume(self, timeout: float = 20.0) -> None:
        """Start etcd again after pause(); a no-op while it runs (a second member on the same
        data dir and ports would replace the handle to the first, which then outlives stop())."""
        if self._proc is not None and self._proc.poll() is None:
            self._paused = False
            return
        self._spawn()
        self.wait_ready(timeout)
        self._paused = False
