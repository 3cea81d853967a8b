"""The whole system as local processes: nats-server, the edge, and one process per agent.

Used by ``make run`` (``switchboard run``) and by the system tests, so the tests start the
system exactly the way a user does.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from .nats_cluster import NatsCluster
from .nats_server import NatsServer
from .ports import free_port


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    ready: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


class Stack:
    """nats-server + edge + agents, each a real OS process, stopped in reverse order.

    ``nats_cluster=3`` starts a 3-node JetStream cluster instead of one nats-server; every process
    gets all node URLs and creates its buckets and streams with 3 replicas.
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
        self.extra_env = dict(env or {})
        self.echo = echo
        self.procs: list[Proc] = []
        self._echo_lock = threading.Lock()

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
            }
            | self.extra_env
        )

    def start(self, timeout_s: float = 60.0) -> None:
        (self.var_dir / "log").mkdir(parents=True, exist_ok=True)
        self.nats.start()
        names = self.agent_names if self.agent_names is not None else self._scenario_agents()
        for name in names:
            self.start_agent(name)
        self._spawn("edge", ["edge"])
        deadline = time.monotonic() + timeout_s
        for proc in [*self.procs]:
            self.wait_ready(proc, deadline - time.monotonic())

    def start_edge(self) -> tuple[Proc, int]:
        """One more edge process on its own port (edges are stateless; sessions live in KV)."""
        port = free_port()
        edges = sum(p.name.startswith("edge") for p in self.procs)
        proc = self._spawn(f"edge#{edges + 1}", ["edge"], {"SWITCHBOARD_EDGE_PORT": str(port)})
        self.wait_ready(proc, 30)
        self._wait_http(f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/readyz", time.monotonic() + 30)
        return proc, port

    def _scenario_agents(self) -> list[str]:
        from ..agents import load_scenario

        scenarios_dir = Path(self.env().get("SWITCHBOARD_SCENARIOS_DIR", "scenarios"))
        return load_scenario(self.scenario, scenarios_dir).config.agent_names

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
        proc = self._spawn(label, [role, "--name", name], {"SWITCHBOARD_TRACK": track} | dict(env or {}), cwd=cwd)
        if wait:
            self.wait_ready(proc, 30)
        return proc

    def _spawn(
        self, label: str, args: list[str], env: Mapping[str, str] | None = None, *, cwd: Path | None = None
    ) -> Proc:
        popen = subprocess.Popen(
            [sys.executable, "-m", "switchboard", *args], env=self.env() | dict(env or {}), cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        proc = Proc(label, popen)
        self.procs.append(proc)
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()
        return proc

    def _pump(self, proc: Proc) -> None:
        log_path = self.var_dir / "log" / f"{proc.name.replace(':', '-').replace('#', '-')}.log"
        assert proc.popen.stdout is not None
        with open(log_path, "a") as log:
            for raw in proc.popen.stdout:
                line = raw.decode(errors="replace").rstrip()
                log.write(line + "\n")
                log.flush()
                proc.lines.append(line)
                if any(f'"msg": "{role} ready"' in line for role in ("agent", "supervisor", "edge")):
                    proc.ready.set()
                if self.echo is not None:
                    with self._echo_lock:
                        self.echo.write(f"{proc.name:>18} | {_short(line)}\n")
                        self.echo.flush()

    def wait_ready(self, proc: Proc, timeout_s: float) -> None:
        deadline = time.monotonic() + max(timeout_s, 0.1)
        while not proc.ready.wait(0.05):
            if not proc.alive():
                tail = "\n".join(proc.lines[-20:])
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} not ready after {timeout_s:.0f}s")
        if proc.name == "edge":
            self._wait_http(f"{self.edge_url}/readyz", deadline)

    def _wait_http(self, url: str, deadline: float) -> None:
        # readiness of our own local process: the certificate is not the question here
        context = ssl._create_unverified_context() if url.startswith("https") else None
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1, context=context) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)  # poll interval while uvicorn binds

    def proc(self, label: str) -> Proc:
        return next(p for p in self.procs if p.name == label)

    def kill(self, label: str, sig: int = signal.SIGKILL) -> None:
        proc = self.proc(label)
        proc.popen.send_signal(sig)
        proc.popen.wait(15)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        self.procs.clear()
        self.nats.stop()

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


def _short(line: str) -> str:
    """A JSON log line as ``level msg key=value ...`` for the console."""
    try:
        rec = json.loads(line)
    except ValueError:
        return line
    if not isinstance(rec, dict):
        return line
    skip = {"ts", "level", "service", "logger", "msg"}
    extras = " ".join(f"{k}={v}" for k, v in rec.items() if k not in skip)
    return f"{rec.get('level', ''):<7} {rec.get('msg', '')} {extras}".rstrip()
