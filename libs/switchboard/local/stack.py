"""The whole system as local processes: nats-server, the edge, and one process per agent.

Used by ``make run`` (``switchboard run``) and by the system tests, so the tests start the
system exactly the way a user does.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from ..logs import JsonFormatter
from ..runtime.health import PID_HEADER
from ..security.bus_access import EDGE, BusCredentials, identity_name, service_identities
from .nats_cluster import NatsCluster
from .nats_server import NatsServer
from .parent import LAUNCHER_PID_ENV, popen_tied
from .ports import free_port
from .supervision import RestartPolicy, Supervisor

log = logging.getLogger(__name__)


@dataclass
class Proc:
    """One supervised OS process of the stack; ``restart`` starts it again with the same arguments."""

    name: str
    args: list[str]
    env: dict[str, str]
    ready_url: str
    """Its ``/readyz``: 200 once it serves (the edge's own port; an agent's ``SWITCHBOARD_METRICS_PORT``)."""
    popen: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    restarts: int = 0
    cwd: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    @property
    def is_edge(self) -> bool:
        return self.name == "edge" or self.name.startswith("edge#")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def is_ready(self, timeout_s: float = 1.0) -> bool:
        """One ``GET /readyz``: True on 200 from this very process (another one may hold its port)."""
        return http_ok(self.ready_url, timeout_s, pid=self.pid)


def http_ok(url: str, timeout_s: float = 1.0, *, pid: int | None = None) -> bool:
    """One ``GET``: True on 200 (with ``pid``: answered by that process, see ``PID_HEADER``); False when
    refused (not bound yet), 503, too slow, or answered by another process, HTTP or not."""
    try:
        # readiness of our own local process: the certificate is not the question here
        context = ssl._create_unverified_context() if url.startswith("https") else None
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as resp:
            return bool(resp.status == 200) and (pid is None or resp.headers.get(PID_HEADER) == str(pid))
    except (OSError, http.client.HTTPException):  # the latter: something that does not speak HTTP holds the port
        return False


def wait_http_ok(url: str, deadline: float) -> None:
    """Poll ``url`` until it answers 200; ``TimeoutError`` past ``deadline`` (``time.monotonic()``)."""
    while not http_ok(url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 in time")
        time.sleep(0.05)  # ok-sleep: poll interval while the process binds


@dataclass
class NatsProc:
    """A nats-server (one node of a cluster) as the supervisor sees it: restarted on its port and store."""

    name: str
    popen: Callable[[], subprocess.Popen[bytes] | None]
    restart: Callable[[], None]

    @property
    def pid(self) -> int:
        popen = self.popen()
        return popen.pid if popen is not None else 0

    @property
    def returncode(self) -> int | None:
        popen = self.popen()
        return popen.returncode if popen is not None else None

    def alive(self) -> bool:
        popen = self.popen()
        return popen is not None and popen.poll() is None


@dataclass(frozen=True)
class StopTimings:
    """Seconds each phase of :meth:`Stack.stop` took (edge, then agents, then NATS)."""

    edges_s: float
    agents_s: float
    nats_s: float

    @property
    def total_s(self) -> float:
        return self.edges_s + self.agents_s + self.nats_s


class Stack:
    """nats-server + edge + agents, each a real OS process; stopped edge first, NATS last.

    Readiness comes from each process's ``/readyz`` (and the NATS port answering), never from its
    logs. ``supervise()`` restarts processes that crash (see ``supervision``). ``nats_cluster=3``
    starts a 3-node JetStream cluster instead of one nats-server; every process gets all node URLs
    and creates its buckets and streams with 3 replicas.

    The bus is locked down as in production: each service connects with its own NKey (seed files under
    ``var_dir/bus``, mode 0600) and inbox prefix, and may touch only its own subjects
    (``switchboard.security.bus_access``). ``nats.url``, ``nats_urls`` and ``env()`` carry the
    **operator** login (every right), for tests, people and CLI commands; ``bus_auth=False`` leaves the
    bus open.
    """

    def __init__(
        self,
        var_dir: Path,
        *,
        scenario: str = "retail",
        agents: list[str] | None = None,
        api_key: str,
        edge_port: int = 0,
        nats_port: int = 0,
        nats_cluster: int = 1,
        env: Mapping[str, str] | None = None,
        echo: IO[str] | None = None,
        stop_grace_s: float = 15.0,
        bus_auth: bool = True,
        keep_lines: int | None = None,
    ) -> None:
        self.var_dir = var_dir
        self.scenario = scenario
        self.agent_names = agents
        self.api_key = api_key
        self.edge_port = edge_port or free_port()
        self.nats: NatsServer | NatsCluster
        if nats_cluster > 1:
            self.nats = NatsCluster(var_dir / "nats", nats_cluster, port=nats_port, log_dir=var_dir / "log")
        else:
            self.nats = NatsServer(var_dir / "nats", port=nats_port, log_file=var_dir / "log" / "nats.log")
        self.js_replicas = min(nats_cluster, 3)
        self.bus_auth = bus_auth
        self.bus_credentials: BusCredentials | None = None
        """Every service's seed file and the operator login, once :meth:`start` wrote them."""
        self.extra_env = dict(env or {})
        self.echo = echo
        self.keep_lines = keep_lines
        """How many of each process's latest output lines ``Proc.lines`` holds (at least; up to twice as many):
        ``switchboard run`` serves for hours, and every line it kept grew its memory. None keeps them all, for
        tests and the benchmark, which search them."""
        self.stop_grace_s = stop_grace_s
        """Per phase of :meth:`stop`: how long processes get to exit after SIGTERM before SIGKILL."""
        self.procs: list[Proc] = []
        self.supervisor: Supervisor | None = None
        self.stop_timings: StopTimings | None = None
        self._echo_lock = threading.Lock()
        self._procs_lock = threading.RLock()

    @property
    def nats_urls(self) -> list[str]:
        """Every nats-server client URL (one, or one per cluster node): pass it to ``nats.connect``."""
        return self.nats.urls

    @property
    def nats_cluster(self) -> NatsCluster:
        """The NATS cluster, for fault tests (only when started with ``nats_cluster`` > 1)."""
        if not isinstance(self.nats, NatsCluster):
            raise RuntimeError("this stack runs a single nats-server")
        return self.nats

    @property
    def tls(self) -> bool:
        """The edge serves TLS (``SWITCHBOARD_TLS_CERT`` in its environment): URLs are https/wss."""
        return bool(self.env().get("SWITCHBOARD_TLS_CERT"))

    @property
    def edge_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.edge_port}"

    @property
    def ws_base(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.edge_port}/v1"

    def env(self) -> dict[str, str]:
        return (
            os.environ
            | {
                "SWITCHBOARD_NATS_URL": self.nats.url,
                "SWITCHBOARD_JS_REPLICAS": str(self.js_replicas),
                "SWITCHBOARD_SCENARIO": self.scenario,
                "SWITCHBOARD_API_KEYS": self.api_key,
                "SWITCHBOARD_EDGE_PORT": str(self.edge_port),
                "PYTHONUNBUFFERED": "1",
                LAUNCHER_PID_ENV: str(os.getpid()),
            }
            | self.extra_env
        )

    @property
    def operator_env_file(self) -> Path:
        """``SWITCHBOARD_NATS_URL=<url with the operator login>``: ``set -a; . <file>`` before CLI commands."""
        return self.var_dir / "bus" / "operator.env"

    def start(self, timeout_s: float = 60.0) -> None:
        """:meth:`launch`, then wait until every process is ready; a process that exits meanwhile raises."""
        self.launch()
        deadline = time.monotonic() + timeout_s
        for proc in [*self.procs]:
            self.wait_ready(proc, deadline - time.monotonic())

    def launch(self) -> None:
        """Start nats-server (returns once it accepts clients), then every agent and the edge, not waiting
        for them: :meth:`start` or :meth:`wait_serving` does."""
        (self.var_dir / "log").mkdir(parents=True, exist_ok=True)
        if self.bus_auth:
            self._lock_bus()
        self.nats.start()
        names = self.agent_names if self.agent_names is not None else self._scenario_agents()
        for name in names:
            self.start_agent(name)
        self._spawn("edge", ["edge"], {}, f"{self.edge_url}/readyz")

    def wait_serving(self, timeout_s: float, stop: threading.Event) -> dict[str, str]:
        """Wait, under :meth:`supervise`, until every process is ready: one that exits meanwhile is
        restarted, and one reported crash-looping is not waited for. Returns the processes that do not
        serve, and why: crash-looping, or not ready within ``timeout_s`` (stuck while starting); the others
        serve without them. Returns early once ``stop`` is set (Ctrl-C while starting)."""
        supervisor = self.supervisor
        if supervisor is None:
            raise RuntimeError("wait_serving needs supervise(): nothing would restart a process that exits")
        deadline = time.monotonic() + timeout_s
        while True:
            looping = supervisor.crash_looping()
            waiting = [p.name for p in self._snapshot() if p.name not in looping and not p.is_ready()]
            late = time.monotonic() > deadline
            if not waiting or stop.is_set() or late:
                retried = f"crash-looping, retried every ~{supervisor.policy.max_backoff_s:.0f} s"
                return {name: retried for name in looping} | {
                    name: f"not ready after {timeout_s:.0f} s" for name in waiting if late
                }
            stop.wait(0.05)  # ok-sleep: readiness poll interval

    def supervise(self, policy: RestartPolicy | None = None, **kwargs: Any) -> Supervisor:
        """Restart crashed processes, nats-server included, from now on (``switchboard run`` does);
        :meth:`stop` ends it."""
        if self.supervisor is None:
            nats = self._nats_procs()
            self.supervisor = Supervisor(lambda: [*nats, *self._snapshot()], self._restart, policy, **kwargs)
            self.supervisor.start()
        return self.supervisor

    def _nats_procs(self) -> list[NatsProc]:
        cluster = self.nats
        if isinstance(cluster, NatsCluster):
            return [
                NatsProc(node.name, partial(getattr, node, "proc"), partial(cluster.restart, i))
                for i, node in enumerate(cluster.nodes)
            ]
        server = cluster
        return [NatsProc("nats", lambda: server.proc, server.start)]

    def start_edge(self) -> tuple[Proc, int]:
        """One more edge process on its own port (edges are stateless; sessions live in KV)."""
        port = free_port()
        edges = sum(p.is_edge for p in self.procs)
        proc = self._spawn(
            f"edge#{edges + 1}", ["edge"], {"SWITCHBOARD_EDGE_PORT": str(port)},
            f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/readyz",
        )  # fmt: skip
        self.wait_ready(proc, 30)
        return proc, port

    def _lock_bus(self) -> None:
        """One NKey per service of the scenario (kept across restarts) and the server's authorization."""
        from ..agents import load_scenario

        scenarios_dir = Path(self.env().get("SWITCHBOARD_SCENARIOS_DIR", "scenarios"))
        config = load_scenario(self.scenario, scenarios_dir).config
        creds = BusCredentials(
            self.var_dir / "bus", service_identities(config.name, [(a.name, a.role) for a in config.agents])
        )
        creds.write()
        self.nats.authorization = creds.server_config()
        self.nats.operator = creds.operator_login
        fd = os.open(self.operator_env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"SWITCHBOARD_NATS_URL={self.nats.url}\n")
        self.bus_credentials = creds

    def _bus_env(self, args: list[str]) -> dict[str, str]:
        """The bus identity of a service process: its URL without the operator login, its seed, its inbox."""
        creds = self.bus_credentials
        if creds is None:
            return {}
        identity = EDGE if args[0] == "edge" else identity_name(args[0], args[2])
        env = {"SWITCHBOARD_NATS_URL": self.nats.client_url}
        return env | creds.service_env(identity) if creds.has(identity) else env

    def _scenario_agents(self) -> list[str]:
        from ..agents import load_scenario

        scenarios_dir = Path(self.env().get("SWITCHBOARD_SCENARIOS_DIR", "scenarios"))
        config = load_scenario(self.scenario, scenarios_dir).config
        return [a.name for a in config.agents if not a.upstream]  # those run at the edge, on the Realtime API

    def _role(self, name: str) -> str:
        from ..agents import load_scenario

        scenarios_dir = Path(self.env().get("SWITCHBOARD_SCENARIOS_DIR", "scenarios"))
        agent = load_scenario(self.scenario, scenarios_dir).config.agent(name)
        return agent.role if agent else "agent"

    def start_agent(
        self,
        name: str,
        *,
        wait: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        track: str = "stable",
    ) -> Proc:
        """Start one more replica of an agent (or supervisor); labels are ``agent:<name>[@track][#n]``.

        ``env`` adds to (or overrides) the stack's environment for this replica only; ``cwd`` runs it in
        another working directory (as a replica on another machine would have its own disk); ``track`` is
        the version track it serves (``SWITCHBOARD_TRACK``).
        """
        role = self._role(name)
        base = f"{role}:{name}" + (f"@{track}" if track != "stable" else "")
        replica = sum(p.name == base or p.name.startswith(f"{base}#") for p in self.procs)
        label = base + (f"#{replica + 1}" if replica else "")
        port = free_port()
        health = {"SWITCHBOARD_METRICS_PORT": str(port), "SWITCHBOARD_METRICS_HOST": "127.0.0.1"}
        proc = self._spawn(
            label, [role, "--name", name], health | {"SWITCHBOARD_TRACK": track} | dict(env or {}),
            f"http://127.0.0.1:{port}/readyz", cwd=cwd,
        )  # fmt: skip
        if wait:
            self.wait_ready(proc, 30)
        return proc

    def _spawn(
        self, label: str, args: list[str], env: Mapping[str, str], ready_url: str, *, cwd: Path | None = None
    ) -> Proc:
        full_env = self.env() | self._bus_env(args) | dict(env)
        proc = Proc(label, args, full_env, ready_url, self._popen(args, full_env, cwd), cwd=cwd)
        with self._procs_lock:
            self.procs.append(proc)
        self._start_pump(proc)
        return proc

    def _popen(self, args: list[str], env: dict[str, str], cwd: Path | None) -> subprocess.Popen[bytes]:
        # tied as well as watching (LAUNCHER_PID_ENV): a service stuck while starting, before it watches, goes too
        return popen_tied(
            [sys.executable, "-m", "switchboard", *args],
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def _restart(self, proc: Any) -> None:
        """Start a crashed process again: same label, arguments, environment and ports."""
        if isinstance(proc, NatsProc):
            proc.restart()
            return
        assert isinstance(proc, Proc)
        with self._procs_lock:
            if proc not in self.procs or proc.alive():
                return
            proc.popen = self._popen(proc.args, proc.env, proc.cwd)
            proc.restarts += 1
        self._start_pump(proc)

    def _snapshot(self) -> list[Proc]:
        with self._procs_lock:
            return list(self.procs)

    def _start_pump(self, proc: Proc) -> None:
        threading.Thread(target=self._pump, args=(proc, proc.popen), daemon=True).start()

    def _pump(self, proc: Proc, popen: subprocess.Popen[bytes]) -> None:
        """Copy a process's output to its log file, ``proc.lines`` and the console until it exits. The pipe
        is read whatever happens to the file or the console (a full disk, a closed terminal): a process
        whose output is no longer read blocks on its next log line and stops serving."""
        log_file = _LogFile(self.var_dir / "log" / f"{proc.name.replace(':', '-').replace('#', '-')}.log", proc.name)
        assert popen.stdout is not None
        try:
            for raw in popen.stdout:
                line = raw.decode(errors="replace").rstrip()
                log_file.write(line)
                proc.lines.append(line)
                if self.keep_lines is not None and len(proc.lines) >= 2 * self.keep_lines:
                    del proc.lines[: -self.keep_lines]  # in chunks: a copy per line would cost as much as the line
                if self.echo is not None:
                    self._echo(f"{proc.name:>18} | {_short(line)}\n")
        finally:
            log_file.close()

    def _echo(self, text: str) -> None:
        with self._echo_lock:
            if self.echo is None:
                return
            try:
                self.echo.write(text)
                self.echo.flush()
            except (OSError, ValueError):  # the console is gone (a closed pipe or file): the log files remain
                self.echo = None

    def wait_ready(self, proc: Proc, timeout_s: float) -> None:
        """Poll the process's ``/readyz`` until 200; raise if it exits or the time runs out."""
        deadline = time.monotonic() + max(timeout_s, 0.1)
        while not proc.is_ready():
            if not proc.alive():
                tail = "\n".join(proc.lines[-20:])
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} not ready after {timeout_s:.0f}s ({proc.ready_url})")
            time.sleep(0.05)  # ok-sleep: readiness poll interval

    def proc(self, label: str) -> Proc:
        return next(p for p in self.procs if p.name == label)

    def kill(self, label: str, sig: int = signal.SIGKILL) -> None:
        proc = self.proc(label)
        proc.popen.send_signal(sig)
        proc.popen.wait(15)

    def stop(self) -> StopTimings:
        """Stop in order: the edges (they drain sessions), then agents and supervisors, then NATS last,
        so nothing waits on a bus that is already gone. Safe to call twice."""
        if self.supervisor is not None:
            self.supervisor.stop()
        for nats in self._nats_procs():  # a frozen (SIGSTOPped) nats-server would hold up every drain below
            popen = nats.popen()
            if popen is not None and popen.poll() is None:
                popen.send_signal(signal.SIGCONT)
        procs = self._snapshot()
        t0 = time.monotonic()
        _terminate([p for p in procs if p.is_edge], self.stop_grace_s)
        t1 = time.monotonic()
        _terminate([p for p in procs if not p.is_edge], self.stop_grace_s)
        t2 = time.monotonic()
        self.nats.stop()
        with self._procs_lock:
            self.procs.clear()
        self.stop_timings = StopTimings(t1 - t0, t2 - t1, time.monotonic() - t2)
        log.info(
            "stack stopped", extra={"edges_s": round(self.stop_timings.edges_s, 3),
            "agents_s": round(self.stop_timings.agents_s, 3), "nats_s": round(self.stop_timings.nats_s, 3)},
        )  # fmt: skip
        return self.stop_timings

    def kill_all(self) -> None:
        """SIGKILL every process at once (a second Ctrl-C); :meth:`stop` then only reaps them."""
        for proc in self._snapshot():
            if proc.alive():
                proc.popen.kill()
        if isinstance(self.nats, NatsCluster):
            for i in range(len(self.nats.nodes)):
                self.nats.kill(i)
        else:
            self.nats.kill()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _LogFile:
    """A process's log file that never raises: a line that cannot be written (a full or read-only disk) is
    dropped, and the launcher says so once, then once more when lines are written again."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label
        self.failing = False
        self._fd: int | None = None

    def write(self, line: str) -> None:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            os.write(self._fd, (line + "\n").encode())
        except OSError as exc:
            if not self.failing:
                self.failing = True
                log.error(
                    "cannot write a process's log file: its lines are dropped until it can",
                    extra={"label": self.label, "path": str(self.path), "error": str(exc)},
                )
            return
        if self.failing:
            self.failing = False
            log.info("log file written again", extra={"label": self.label, "path": str(self.path)})

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _terminate(procs: list[Proc], grace_s: float) -> None:
    """SIGTERM them all, wait up to ``grace_s`` together, then SIGKILL what is left."""
    for proc in procs:
        if proc.alive():
            proc.popen.send_signal(signal.SIGTERM)
            proc.popen.send_signal(signal.SIGCONT)  # a stopped (frozen) one acts on the SIGTERM only once continued
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.popen.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            log.warning("process ignored SIGTERM; killing it", extra={"label": proc.name, "pid": proc.pid})
            proc.popen.kill()
            proc.popen.wait()


class ConsoleFormatter(logging.Formatter):
    """The launcher's own log lines in the console form of the processes it echoes."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.json = JsonFormatter(service)
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.service:>18} | {_short(self.json.format(record))}"


def _short(line: str) -> str:
    """A JSON log line as ``level msg key=value ...`` for the console."""
    try:
        rec = json.loads(line)
    except ValueError:
        return line
    if not isinstance(rec, dict):
        return line
    skip = {"ts", "level", "service", "logger", "msg"}
    extras = " ".join(f"{k}={v}" for k, v in rec.items() if k not in skip and v is not None)
    return f"{rec.get('level', ''):<7} {rec.get('msg', '')} {extras}".rstrip()
