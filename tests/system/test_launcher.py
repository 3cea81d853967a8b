"""The launcher keeps going: ``switchboard run`` restarts a killed process, reports a crash loop while
the others serve, and stops edge -> agents -> NATS within 2 s on Ctrl-C. Readiness is each process's
``/readyz``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from switchboard.bus import Bus
from switchboard.bus.subjects import SESSIONS_BUCKET
from switchboard.local import NatsServer, free_port
from switchboard.local.stack import http_ok
from switchboard.local.supervision import RestartPolicy

from .client import EVENTS, Reply, open_session, say, sdk_at, sdk_client
from .stacks import ROOT, TEST_SCENARIOS, make_stack, probe

pytestmark = pytest.mark.system

STOP_TARGET_S = 2.0
"""Ctrl-C to every process gone, for an idle stack (issue 11.3)."""


EFFECTS = {
    "SWITCHBOARD_API_KEYS": "k",
    "SWITCHBOARD_SCENARIOS_DIR": str(TEST_SCENARIOS),
    "SWITCHBOARD_SCENARIO": "effects",
}
"""The launcher's environment for a small scenario (two agents), API key ``k``."""


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # ok-sleep: poll interval


def children(pid: int) -> dict[int, str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(line.split(None, 1)[0]): line.split(None, 1)[1] for line in out.splitlines() if line.strip()}


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def metrics_port(pid: int) -> int:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in env if v.startswith(b"SWITCHBOARD_METRICS_PORT=")).split(b"=", 1)[1])


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in list(lines) if line.startswith("{")]


class Launcher:
    """``switchboard run --quiet`` in ``var`` as a real process; ``lines`` fills with its output as it comes."""

    def __init__(
        self, var: Path, env: dict[str, str], *options: str, hang_up_at: str | None = None, terminal: bool = False
    ) -> None:
        """``options``: more options of ``switchboard run``; ``hang_up_at``: stop reading its output (close
        the pipe, or the terminal) after the line that holds this; ``terminal``: its output is a terminal (a
        pseudo-terminal the test reads), not a pipe."""
        self.port = free_port()
        master, console = pty.openpty() if terminal else (-1, subprocess.PIPE)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "switchboard", "run", "--var-dir", str(var), "--nats-port", "0", "--quiet",
             *options],
            env=os.environ | {"SWITCHBOARD_EDGE_PORT": str(self.port), "OPENAI_API_KEY": ""} | env,
            stdout=console, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        if terminal:
            os.close(console)
        self.console = open(master, errors="replace") if terminal else self.popen.stdout  # noqa: SIM115
        self.hung_up = threading.Event()
        self.lines: list[str] = []
        self.seen: set[int] = set()
        """Every process it was seen to start (:meth:`children`): :meth:`close` kills those still there."""
        self._reader = threading.Thread(target=self._read, args=(hang_up_at,), daemon=True)
        self._reader.start()

    def _read(self, hang_up_at: str | None) -> None:
        assert self.console is not None
        try:
            for line in self.console:
                self.lines.append(line)
                if hang_up_at is not None and hang_up_at in line:
                    self.console.close()
                    self.hung_up.set()
                    return
        except OSError:  # a terminal whose other side is closed: EIO, as the end of a pipe
            return

    def children(self) -> dict[int, str]:
        procs = children(self.popen.pid)
        self.seen.update(procs)
        return procs

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in json_lines(self.lines) if r.get("event") == event]

    def banner(self) -> bool:
        return any("Ctrl-C stops everything" in line for line in self.lines)

    def wait_banner(self, timeout_s: float = 90) -> None:
        wait_for(lambda: self.banner() or self.popen.poll() is not None, timeout_s, "the banner")
        assert self.banner(), f"the launcher exited with {self.popen.returncode}:\n" + "\n".join(self.lines[-15:])

    def ctrl_c(self, procs: dict[int, str]) -> float:
        """Ctrl-C; once the launcher exited 0 and ``procs`` are gone, the seconds that took."""
        started = time.monotonic()
        self.popen.send_signal(signal.SIGINT)
        assert self.popen.wait(30) == 0
        wait_for(lambda: all(gone(pid) for pid in procs), 10, "every process to be gone")
        return time.monotonic() - started

    async def hello(self, key: str) -> Reply:
        async with sdk_at(f"ws://127.0.0.1:{self.port}/v1", key).realtime.connect(model="switchboard") as conn:
            await open_session(conn)
            return await say(conn, "hello")

    def close(self) -> None:
        """Ctrl-C it if still running; SIGKILL it and any process of it left (a failed test leaves none)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for pid in self.seen:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        self._reader.join(5)


def test_switchboard_run_restarts_a_killed_agent_and_ctrl_c_stops_in_order_within_2s(tmp_path: Path) -> None:
    port = free_port()
    env = os.environ | {
        "SWITCHBOARD_API_KEYS": "launcher-key", "SWITCHBOARD_EDGE_PORT": str(port), "OPENAI_API_KEY": "",
        "SWITCHBOARD_SCENARIOS_DIR": str(ROOT / "scenarios"), "SWITCHBOARD_LOG_LEVEL": "INFO",
    }  # fmt: skip
    launcher = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "run", "--var-dir", str(tmp_path), "--nats-port", "0", "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert launcher.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(launcher.stdout or []), daemon=True)
    reader.start()

    def launcher_events(event: str) -> list[dict[str, Any]]:
        return [r for r in json_lines(lines) if r.get("event") == event]

    async def kill_returns_mid_conversation(returns: int) -> Reply:
        client = AsyncOpenAI(
            api_key="launcher-key",
            websocket_base_url=f"ws://127.0.0.1:{port}/v1",
            base_url=f"http://127.0.0.1:{port}/v1",
            default_query=EVENTS,
        )
        async with client.realtime.connect(model="switchboard") as conn:
            await open_session(conn)
            assert (await say(conn, "I want to return order A1001")).agent == "auth"
            os.kill(returns, signal.SIGKILL)
            restarted = await asyncio.to_thread(
                wait_for, lambda: launcher_events("restarted"), 30, "the launcher to restart agent:returns"
            )
            assert restarted[0]["label"] == "agent:returns"
            new = restarted[0]["pid"]
            assert new != returns and new in children(launcher.pid)
            await asyncio.to_thread(
                wait_for, lambda: probe(f"http://127.0.0.1:{metrics_port(new)}/readyz")[0] == 200, 30, "returns ready"
            )
            return await say(conn, "jane@example.com 1234")

    procs: dict[int, str] = {}
    everything: dict[int, str] = {}
    try:
        wait_for(lambda: any("Ctrl-C stops everything" in line for line in lines), 90, "the banner")
        assert any(f"ws://127.0.0.1:{port}/v1/realtime" in line for line in lines)
        assert any("API key       : launcher-key" in line for line in lines)
        procs = children(launcher.pid)
        assert len(procs) == 7, procs  # nats-server, 5 agents, edge
        returns = next(pid for pid, args in procs.items() if args.endswith("--name returns"))
        reply = asyncio.run(kill_returns_mid_conversation(returns))
        crashed = launcher_events("crashed")[0]
        assert (crashed["label"], crashed["exit_code"], crashed["level"]) == ("agent:returns", -9, "warning")
        assert 0 < crashed["backoff_s"] <= 0.5
        assert [(h["to"], h["outcome"]) for h in reply.handoffs] == [("returns", "accepted")]
        assert reply.agent == "returns" and reply.status == "completed"
        assert launcher.poll() is None  # the stack kept going

        everything = children(launcher.pid)
        started = time.monotonic()
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(30) == 0
        elapsed = time.monotonic() - started
    finally:  # a failed test must not leave a stack behind
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)
            try:
                launcher.wait(15)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
        for pid in [*procs, *everything, *children(launcher.pid)]:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    reader.join(5)
    left = [pid for pid in [*procs, *everything] if not gone(pid)]
    assert not left, left
    assert elapsed < STOP_TARGET_S, f"Ctrl-C took {elapsed:.2f}s"
    print(f"\nCtrl-C to every process gone: {elapsed:.2f}s")  # the measured figure, in -s output

    # In order: every edge had stopped before any agent stopped, and nothing lost NATS on the way out.
    logs = {p.stem: json_lines(p.read_text().splitlines()) for p in (tmp_path / "log").glob("*.log")}
    stopped = {
        name: r["ts"] for name, recs in logs.items() for r in recs if r["msg"] in ("edge stopped", "agent stopped")
    }
    assert stopped.keys() == {"edge", *(f"agent-{a}" for a in ("triage", "auth", "returns", "billing", "generalist"))}
    assert all(stopped["edge"] <= ts for name, ts in stopped.items() if name != "edge"), stopped
    lost = [(name, r["ts"]) for name, recs in logs.items() for r in recs if r["msg"] == "nats disconnected"]
    assert not lost, lost


def test_a_crash_loop_is_reported_while_the_others_keep_serving(tmp_path: Path) -> None:
    env = {"SWITCHBOARD_BREAKER_COOLDOWN_S": "0.5"}
    with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:

        async def hello() -> Reply:  # a new session: its entry agent is triage
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                await open_session(conn)
                return await say(conn, "hello")

        events: list[tuple[str, dict[str, object]]] = []
        policy = RestartPolicy(initial_backoff_s=0.1, max_backoff_s=0.4, crash_loop_crashes=3, crash_loop_window_s=60)
        supervisor = stack.supervise(policy, on_event=lambda kind, fields: events.append((kind, fields)))
        triage, generalist = stack.proc("agent:triage"), stack.proc("agent:generalist")
        generalist_pid = generalist.pid
        # Occupy triage's health port: every restart fails at start-up, on its own, as a real crash loop does.
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            os.kill(triage.pid, signal.SIGKILL)
            triage.popen.wait(10)
            blocker.bind(("127.0.0.1", int(triage.env["SWITCHBOARD_METRICS_PORT"])))
            blocker.listen()
            wait_for(lambda: supervisor.crash_looping() == ["agent:triage"], 90, "the crash loop to be reported")
            loop = next(fields for kind, fields in events if kind == "crash_loop")
            assert loop["label"] == "agent:triage" and loop["crashes"] == 3
            assert all(kind != "crash_loop" or f["label"] == "agent:triage" for kind, f in events)
            reply = asyncio.run(hello())  # the others keep serving: the fallback answers for triage
            assert reply.status == "completed" and reply.agent == "generalist"
            assert generalist.pid == generalist_pid and generalist.restarts == 0 and stack.proc("edge").alive()
        finally:
            blocker.close()
        wait_for(triage.is_ready, 60, "triage to come back once its port is free")
        assert triage.restarts >= 3
        # once the edge's breaker for triage half-opens (0.5 s cool-down), triage answers again
        wait_for(lambda: asyncio.run(hello()).agent == "triage", 20, "triage to answer again")


def test_readyz_of_an_agent_follows_its_subscription_and_nats(tmp_path: Path) -> None:
    nats = NatsServer(tmp_path / "nats")  # not started yet
    port = free_port()
    env = os.environ | {
        "SWITCHBOARD_NATS_URL": nats.url, "SWITCHBOARD_METRICS_PORT": str(port), "OPENAI_API_KEY": "",
        "SWITCHBOARD_SCENARIOS_DIR": str(ROOT / "scenarios"), "SWITCHBOARD_SCENARIO": "retail",
        "SWITCHBOARD_DATA_DIR": str(tmp_path / "data"),
    }  # fmt: skip
    agent = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "agent", "--name", "triage"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: probe(f"{url}/healthz")[0] == 200, 60, "the agent to serve /healthz")
        assert probe(f"{url}/readyz") == (503, {"status": "not_ready", "reason": "nats not connected"})
        with nats:
            wait_for(lambda: probe(f"{url}/readyz")[0] == 200, 30, "ready once NATS is up")
            assert probe(f"{url}/readyz")[1] == {"status": "ready"}
            with urllib.request.urlopen(f"{url}/metrics", timeout=2) as resp:
                assert "process_cpu_seconds_total" in resp.read().decode()
            nats.kill()
            wait_for(lambda: probe(f"{url}/readyz")[0] == 503, 10, "not ready once NATS is gone")
            assert probe(f"{url}/readyz")[1]["reason"] == "nats not connected"
            assert probe(f"{url}/healthz")[0] == 200  # alive all along
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0  # stops promptly though NATS is gone
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_readyz_of_the_edge_checks_the_session_store_and_nats(tmp_path: Path) -> None:
    async def delete_sessions_bucket(servers: list[str]) -> None:
        async with Bus(servers, name="test") as bus:
            await bus.js.delete_key_value(SESSIONS_BUCKET)

    with make_stack(tmp_path, agents=["triage", "generalist"]) as stack:
        assert probe(f"{stack.edge_url}/readyz") == (200, {"status": "ready"})
        asyncio.run(delete_sessions_bucket(stack.nats_urls))
        status, body = probe(f"{stack.edge_url}/readyz")
        assert status == 503 and body["reason"].startswith("session store unreachable"), body
        stack.nats.stop()
        wait_for(lambda: probe(f"{stack.edge_url}/readyz")[1].get("reason") == "nats not connected", 10, "503")
        assert probe(f"{stack.edge_url}/healthz")[0] == 200


def test_a_killed_nats_server_is_restarted_and_the_stack_recovers(tmp_path: Path) -> None:
    with make_stack(tmp_path, agents=["triage", "generalist"]) as stack:
        events: list[tuple[str, str]] = []
        stack.supervise(
            RestartPolicy(initial_backoff_s=0.1), on_event=lambda kind, f: events.append((kind, str(f["label"])))
        )
        assert isinstance(stack.nats, NatsServer) and stack.nats.proc is not None
        os.kill(stack.nats.proc.pid, signal.SIGKILL)
        wait_for(lambda: ("restarted", "nats") in events, 30, "nats-server to be restarted")
        wait_for(lambda: all(p.is_ready() for p in stack.procs), 30, "every process ready again")

        async def hello() -> Reply:
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                await open_session(conn)
                return await say(conn, "hello")

        assert asyncio.run(hello()).agent == "triage"
        assert all(p.restarts == 0 for p in stack.procs)  # they rode it out by reconnecting


def test_a_nats_server_that_cannot_restart_is_reported_crash_looping_and_recovers(tmp_path: Path) -> None:
    """Its restarts fail at once (another program took its port): each failure counts as a crash, so the
    crash loop is reported as for any other process; it was only ever "restart failed"."""
    with make_stack(tmp_path, agents=["triage", "generalist"]) as stack:
        events: list[tuple[str, str]] = []
        policy = RestartPolicy(initial_backoff_s=0.5, max_backoff_s=1.0, crash_loop_crashes=3)
        supervisor = stack.supervise(policy, on_event=lambda kind, f: events.append((kind, str(f["label"]))))
        assert isinstance(stack.nats, NatsServer) and stack.nats.proc is not None
        with socket.socket() as taker:
            taker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # its connections linger in TIME_WAIT
            stack.nats.proc.kill()
            stack.nats.proc.wait()
            taker.bind(("127.0.0.1", stack.nats.port))  # before the first restart, 0.4-0.5 s later
            taker.listen()
            wait_for(lambda: supervisor.crash_looping() == ["nats"], 30, "nats-server's crash loop to be reported")
            assert events.count(("crash_loop", "nats")) == 1 and ("restart_failed", "nats") in events
        wait_for(lambda: ("restarted", "nats") in events, 30, "nats-server to be restarted once its port is free")
        wait_for(lambda: all(p.is_ready() for p in stack.procs), 30, "every process ready again")


def test_processes_stop_when_the_launcher_is_killed(tmp_path: Path) -> None:
    env = os.environ | {
        "SWITCHBOARD_API_KEYS": "k", "SWITCHBOARD_EDGE_PORT": str(free_port()), "OPENAI_API_KEY": "",
        "SWITCHBOARD_SCENARIOS_DIR": str(ROOT / "tests" / "system" / "scenarios"), "SWITCHBOARD_SCENARIO": "effects",
    }  # fmt: skip
    launcher = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "run", "--var-dir", str(tmp_path), "--nats-port", "0", "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert launcher.stdout is not None
    for line in launcher.stdout:
        if "Ctrl-C stops everything" in line:
            break
    procs = children(launcher.pid)
    python = [pid for pid, args in procs.items() if "-m switchboard" in args]
    assert len(python) == 3, procs  # two agents and the edge (and nats-server)
    launcher.kill()  # no chance to stop anything itself
    launcher.wait()
    try:  # nats-server too, though it cannot watch for the launcher itself
        wait_for(lambda: all(gone(pid) for pid in procs), 15, "the launcher's processes to stop on their own")
    finally:
        for pid in procs:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def odd_agent_scenario(tmp_path: Path, odd: str, what_it_does: str) -> dict[str, str]:
    """A scenario of agents front, ``odd`` and generalist, whose ``tools.py`` (every process loads it) runs
    ``what_it_does`` in the ``odd`` agent's process only; the launcher's environment for it."""
    scenario = tmp_path / "scenarios" / "odd"
    scenario.mkdir(parents=True)
    agents = [("front", "front here"), (odd, "never heard"), ("generalist", "generalist here")]
    scenario.joinpath("scenario.yaml").write_text(
        "name: odd\nentry_agent: front\nfallback_agent: generalist\nagents:\n"
        + "".join(f"  - {{name: {n}, instructions: x, model: {{provider: offline}}, offline: {{default: {d}}}}}\n"
                  for n, d in agents)
    )  # fmt: skip
    scenario.joinpath("tools.py").write_text(
        "import sys, threading\nfrom switchboard.agents import ToolRegistry\n\nregistry = ToolRegistry()\n"
        f"if sys.argv[-2:] == ['--name', '{odd}']:\n    {what_it_does}\n"
    )
    return {
        "SWITCHBOARD_API_KEYS": "k",
        "SWITCHBOARD_SCENARIOS_DIR": str(scenario.parent),
        "SWITCHBOARD_SCENARIO": "odd",
    }


def test_an_agent_that_crashes_at_start_is_reported_and_the_others_serve(tmp_path: Path) -> None:
    """A scenario with a broken agent: ``switchboard run`` reports its crash loop and serves with the rest."""
    launcher = Launcher(tmp_path / "var", odd_agent_scenario(tmp_path, "broken", "raise SystemExit('broken')"))
    try:
        launcher.wait_banner()
        assert launcher.popen.poll() is None
        loop = launcher.events("crash_loop")
        assert [(r["label"], r["level"]) for r in loop] == [("agent:broken", "error")], launcher.lines
        assert any("NOT serving" in line and "agent:broken" in line for line in launcher.lines)
        assert {"agent --name front", "agent --name generalist", "edge"} <= {
            args.split(" switchboard ", 1)[-1] for args in launcher.children().values()
        }
        reply = asyncio.run(launcher.hello("k"))
        assert (reply.agent, reply.text, reply.status) == ("front", "front here", "completed")
    finally:
        launcher.close()


def test_an_agent_stuck_while_starting_is_named_and_the_others_serve(tmp_path: Path) -> None:
    """An agent that never gets ready (it hangs at import): past the ready timeout the launcher names it and
    the others serve; before, the whole stack was stopped with a TimeoutError traceback."""
    env = odd_agent_scenario(tmp_path, "stuck", "threading.Event().wait()")
    launcher = Launcher(tmp_path / "var", env, "--ready-timeout", "5")
    try:
        launcher.wait_banner()
        assert any("NOT serving" in line and "agent:stuck (not ready after 5 s)" in line for line in launcher.lines)
        reply = asyncio.run(launcher.hello("k"))
        assert (reply.agent, reply.text, reply.status) == ("front", "front here", "completed")
        assert launcher.popen.poll() is None
    finally:
        launcher.close()


def test_ctrl_c_while_starting_stops_at_once(tmp_path: Path) -> None:
    """Ctrl-C before every process is ready (one never gets there: it hangs at start) stops everything
    within the 2 s target; it does not wait for the start to finish first."""
    launcher = Launcher(tmp_path / "var", odd_agent_scenario(tmp_path, "stuck", "threading.Event().wait()"))
    try:
        wait_for(lambda: probe(f"http://127.0.0.1:{launcher.port}/readyz")[0] == 200, 90, "the edge to be ready")
        procs = launcher.children()
        assert any(args.endswith("--name stuck") for args in procs.values()), procs
        assert not any("Ctrl-C stops everything" in line for line in launcher.lines)  # still starting
        elapsed = launcher.ctrl_c(procs)
    finally:
        launcher.close()
    assert elapsed < STOP_TARGET_S, f"Ctrl-C while starting took {elapsed:.2f}s"


def test_processes_stop_when_the_launcher_is_killed_while_one_is_stuck_starting(tmp_path: Path) -> None:
    """An agent stuck at start-up has not begun to watch for the launcher: it must not outlive it either."""
    launcher = Launcher(tmp_path / "var", odd_agent_scenario(tmp_path, "stuck", "threading.Event().wait()"))
    try:
        wait_for(lambda: probe(f"http://127.0.0.1:{launcher.port}/readyz")[0] == 200, 90, "the edge to be ready")
        procs = launcher.children()
        assert len(procs) == 5 and any(args.endswith("--name stuck") for args in procs.values()), procs
        launcher.popen.kill()
        launcher.popen.wait()
        wait_for(lambda: all(gone(pid) for pid in procs), 15, "the launcher's processes to stop on their own")
    finally:
        launcher.close()


@pytest.mark.parametrize("frozen", [("--name front", "switchboard edge"), ("nats-server",)], ids=["edge+agent", "nats"])
def test_ctrl_c_does_not_wait_for_a_frozen_process(tmp_path: Path, frozen: tuple[str, ...]) -> None:
    """A stopped process (SIGSTOP, a debugger, Ctrl-Z) acts on SIGTERM only once continued: Ctrl-C must
    not wait out its grace period (12 s) and then SIGKILL it. A frozen nats-server, stopped last, would
    hold up the drain of every other process before it."""
    launcher = Launcher(tmp_path / "var", EFFECTS)
    try:
        launcher.wait_banner()
        procs = launcher.children()
        stopped = [pid for pid, args in procs.items() if any(what in args for what in frozen)]
        assert len(stopped) == len(frozen), procs
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: all(Path(f"/proc/{p}/stat").read_text().split()[2] == "T" for p in stopped), 5, "stopped")
        elapsed = launcher.ctrl_c(procs)
    finally:
        launcher.close()
    assert elapsed < STOP_TARGET_S, f"Ctrl-C with {frozen} frozen took {elapsed:.2f}s"
    assert not [line for line in launcher.lines if "ignored SIGTERM" in line]


def test_a_log_file_that_cannot_be_written_does_not_stall_its_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk under var/log (here the edge's log file is /dev/full): the edge's output is still read,
    so it keeps serving once it has written more than a pipe holds, and the launcher says so once."""
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "edge.log").symlink_to("/dev/full")
    pipe_bytes = 65536  # Linux's default pipe capacity: unread, the edge blocks on its next line past it
    with make_stack(tmp_path, agents=["triage", "generalist"], env={"SWITCHBOARD_LOG_LEVEL": "DEBUG"}) as stack:
        edge = stack.proc("edge")

        def read_from_edge() -> int:
            return sum(len(line) + 1 for line in list(edge.lines))

        async def talk_past_a_full_pipe() -> int:
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                await open_session(conn)
                turns = 0
                while read_from_edge() < 2 * pipe_bytes:
                    reply = await asyncio.wait_for(say(conn, "hello"), 10)
                    assert reply.status == "completed"
                    turns += 1
                    assert turns < 2000, "the edge writes less than expected at DEBUG"
                return turns

        turns = asyncio.run(talk_past_a_full_pipe())
        assert probe(f"{stack.edge_url}/readyz")[0] == 200
    dropped = [r for r in caplog.records if r.getMessage().startswith("cannot write a process's log file")]
    assert [(getattr(r, "label", None), r.levelname) for r in dropped] == [("edge", "ERROR")]
    print(f"\n{turns} turns, {read_from_edge()} bytes of edge output read with its log file full")


def test_a_second_run_in_the_same_var_dir_is_refused(tmp_path: Path) -> None:
    """Two runs in one var directory ran two nats-servers on one JetStream store and wrote the same log
    files; the second is refused in one line naming the first, which serves on."""
    first = Launcher(tmp_path / "var", EFFECTS)
    second = None
    try:
        first.wait_banner()
        procs = first.children()
        second = Launcher(tmp_path / "var", EFFECTS)  # on ports of its own: only the directory is shared
        wait_for(lambda: second.popen.poll() is not None or second.banner(), 90, "the second run to start or stop")
        assert second.popen.wait(5) == 2, second.lines
        assert len(second.lines) == 1, second.lines
        assert second.lines[0].startswith(
            f"switchboard run: {tmp_path / 'var'} is in use by another `switchboard run` (pid {first.popen.pid})"
        )
        assert first.children() == procs
        assert asyncio.run(first.hello("k")).status == "completed"
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_console_that_is_gone_does_not_skip_the_orderly_stop(tmp_path: Path) -> None:
    """``switchboard run | head``, or a pipe reader that the same Ctrl-C ended first: the launcher's next
    line failed (BrokenPipeError), and it exited with a traceback before stopping anything in order."""
    launcher = Launcher(tmp_path / "var", EFFECTS, hang_up_at="Ctrl-C stops everything")
    try:
        launcher.wait_banner()
        procs = launcher.children()
        launcher.ctrl_c(procs)
    finally:
        launcher.close()
    assert_stopped_in_order(tmp_path / "var", {"agent-front", "agent-generalist"})


def test_closing_its_terminal_stops_the_stack_in_order(tmp_path: Path) -> None:
    """The terminal window of ``make run`` closed: the terminal is gone (a write to it fails with EIO) and
    the launcher gets SIGHUP. It died of the SIGHUP on the spot: the kernel then stopped every process at
    once, nats-server with the edges still draining, and none of their last lines reached the log files."""
    launcher = Launcher(tmp_path / "var", EFFECTS, hang_up_at="Ctrl-C stops everything", terminal=True)
    try:
        launcher.wait_banner()
        procs = launcher.children()
        assert launcher.hung_up.wait(5)
        launcher.popen.send_signal(signal.SIGHUP)  # as the kernel does when the terminal closes
        assert launcher.popen.wait(30) == 0
        wait_for(lambda: all(gone(pid) for pid in procs), 10, "every process to be gone")
    finally:
        launcher.close()
    assert_stopped_in_order(tmp_path / "var", {"agent-front", "agent-generalist"})


def assert_stopped_in_order(var: Path, agents: set[str]) -> None:
    """The log files under ``var`` show the edge stopped, then the ``agents``, and nothing lost NATS."""
    logs = {p.stem: json_lines(p.read_text().splitlines()) for p in (var / "log").glob("*.log")}
    stopped = {
        name: r["ts"] for name, recs in logs.items() for r in recs if r["msg"] in ("edge stopped", "agent stopped")
    }
    assert stopped.keys() == {"edge", *agents}, stopped
    assert all(stopped["edge"] <= ts for ts in stopped.values()), stopped
    lost = [(name, r["ts"]) for name, recs in logs.items() for r in recs if r["msg"] == "nats disconnected"]
    assert not lost, lost


def test_a_ready_port_held_by_a_server_that_is_not_http_is_not_ready(tmp_path: Path) -> None:
    """The readiness probe answered by something that does not speak HTTP (a nats-server greets every
    connection with INFO) means "not ready"; it raised BadStatusLine, which ended the launcher's start."""
    with NatsServer(tmp_path / "nats") as nats:
        assert http_ok(f"http://127.0.0.1:{nats.port}/readyz") is False


def test_a_second_ctrl_c_while_nats_starts_stops_at_once(tmp_path: Path) -> None:
    """A second Ctrl-C kills everything at once, also while the start waits for NATS (a 3-node cluster
    electing a leader): it used to wait out the start's 30 s deadline for the nodes it had just killed,
    then end with a TimeoutError traceback."""
    launcher = Launcher(tmp_path / "var", EFFECTS | {"SWITCHBOARD_NATS_CLUSTER": "3"})
    try:
        wait_for(lambda: any("nats-server" in args for args in launcher.children().values()), 30, "nats-server")
        started = time.monotonic()
        stopping = lambda: any(line.startswith("stopping ...") for line in launcher.lines)  # noqa: E731
        while not stopping() and time.monotonic() - started < 30:  # Ctrl-C, again and again, until it stops
            launcher.popen.send_signal(signal.SIGINT)  # (two sent at once would arrive as one)
            with contextlib.suppress(subprocess.TimeoutExpired):
                launcher.popen.wait(0.1)
        assert launcher.popen.wait(30) == 0, launcher.lines
        wait_for(lambda: all(gone(pid) for pid in launcher.seen), 10, "every process to be gone")
        elapsed = time.monotonic() - started
    finally:
        launcher.close()
    assert elapsed < STOP_TARGET_S, f"a second Ctrl-C while starting took {elapsed:.2f}s"
    assert not [line for line in launcher.lines if "Traceback" in line], launcher.lines
