"""The ``switchboard`` command's own output: ``trace`` keeps stderr clean (but for its one-line refusals),
``validate`` says what is wrong."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from switchboard.bus import Bus
from switchboard.local import NatsServer
from switchboard.local.ports import free_port
from switchboard.local.stack import Stack
from switchboard.schemas import TurnRecord
from switchboard.state import AuditLog

from .stacks import ROOT

pytestmark = pytest.mark.system


def _switchboard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchboard", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_a_bad_launcher_setting_does_not_break_help() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "switchboard", "--help"], capture_output=True, text=True, timeout=30, cwd=ROOT,
        env={**os.environ, "SWITCHBOARD_NATS_PORT": "abc"},
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.startswith("usage: switchboard"), run.stderr


async def test_trace_writes_the_timeline_and_nothing_on_stderr(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as server:
        async with Bus([server.url], name="test") as bus:
            audit = await AuditLog.open(bus.js)  # the stream a stack creates
            await audit.append_turn(TurnRecord(
                session_id="sess_seen", response_id="resp_1", status="completed", agents=["triage"],
                agent="triage", latency_ms=3.0, ts=time.time(),
            ))  # fmt: skip
        run = _switchboard("trace", "sess_seen", "--nats-url", server.url)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("session sess_seen: 1 records\n") and "triage" in run.stdout
    assert run.stderr == ""


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
async def test_trace_of_a_session_without_records_says_so_on_stderr_and_exits_1(
    tmp_path: Path, json_flag: list[str]
) -> None:
    """It printed the line on stdout and exited 0: a script could not tell it from a timeline."""
    with NatsServer(tmp_path / "nats") as server:
        async with Bus([server.url], name="test") as bus:
            await AuditLog.open(bus.js)
        run = _switchboard("trace", "sess_nothing_here", "--nats-url", server.url, *json_flag)
    assert run.returncode == 1, run.stderr
    assert run.stderr == "switchboard trace: no audit records for session sess_nothing_here\n"
    assert run.stdout == ""


def test_trace_against_a_nats_without_switchboard_says_so_in_one_line(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as server:
        run = _switchboard("trace", "sess_x", "--nats-url", server.url)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1, run.stderr
    assert "no audit stream SWITCHBOARD_AUDIT" in run.stderr


def test_run_with_a_bad_nats_thread_count_says_so_in_one_line(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "switchboard", "run", "--var-dir", str(tmp_path)], capture_output=True, text=True,
        timeout=60, cwd=ROOT, env={**os.environ, "SWITCHBOARD_NATS_GOMAXPROCS": "two"},
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1, run.stderr
    assert "SWITCHBOARD_NATS_GOMAXPROCS must be a whole number" in run.stderr


def test_chat_without_an_edge_says_so_in_one_line() -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1"  # nothing listens there
    run = _switchboard("chat", "--url", url, "--key", "k", "--say", "hello")
    assert run.returncode == 1
    assert run.stderr.startswith(f"switchboard chat: cannot reach the edge at {url}: ") and run.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["agent", "--name", "nobody"], {}, "switchboard agent: no agent 'nobody' in scenario 'retail' (known: "),
        (["supervisor", "--name", "triage"], {}, "switchboard supervisor: no supervisor 'triage' in scenario"),
        (["edge"], {"SWITCHBOARD_API_KEYS": "", "SWITCHBOARD_API_KEYS_FILE": ""}, "switchboard edge: no API keys: "),
        (
            ["edge"],
            {"SWITCHBOARD_API_KEYS": "k", "SWITCHBOARD_CANARY_WEIGHTS": "x"},
            "switchboard edge: canary weight 'x'",
        ),
        (
            ["agent", "--name", "triage"],
            {"SWITCHBOARD_LOG_LEVEL": "loud"},
            "switchboard agent: SWITCHBOARD_LOG_LEVEL: ",
        ),
        (["trace", "sess_x]"], {}, "switchboard trace: invalid session id 'sess_x]'"),
        (
            ["trace", "sess_x"],
            {"SWITCHBOARD_NATS_SEED_FILE": str(ROOT / "README.md")},
            "switchboard trace: SWITCHBOARD_NATS_SEED_FILE ",
        ),
        (
            ["audit"],
            {"SWITCHBOARD_NATS_SEED_FILE": "/nonexistent.seed"},
            "switchboard audit: SWITCHBOARD_NATS_SEED_FILE /nonexistent.seed: No such file",
        ),
        (["run"], {"SWITCHBOARD_NATS_PORT": "abc"}, "switchboard run: SWITCHBOARD_NATS_PORT must be a port number"),
        (["run", "--nats-port", "99999"], {}, "switchboard run: nats port 99999 is not a port number"),
        (
            ["validate"],
            {"SWITCHBOARD_SCENARIOS_DIR": "/nonexistent"},
            "switchboard validate: scenario 'retail': there is no scenarios folder /nonexistent; ",
        ),
    ],
)
def test_a_wrong_setting_or_name_is_one_line_before_anything_starts(
    args: list[str], env: dict[str, str], says: str
) -> None:
    unreachable = {"SWITCHBOARD_NATS_URL": "nats://127.0.0.1:9"}  # nothing may wait for NATS before refusing
    run = subprocess.run(
        [sys.executable, "-m", "switchboard", *args], capture_output=True, text=True, timeout=30, cwd=ROOT,
        env={**os.environ, **unreachable, **env},
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith(says) and run.stderr.count("\n") == 1, run.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--url", "127.0.0.1:8080", "--say", "hi"], "'127.0.0.1:8080' is not a WebSocket URL: "),
        (["--voice", "/nonexistent/in.wav", "out.wav"], "/nonexistent/in.wav: No such file or directory"),
        (["--voice", str(ROOT / "README.md"), "out.wav"], f"{ROOT / 'README.md'}: not a PCM WAV file"),
        (["--voice", str(ROOT / "README.md"), "/nonexistent/out.wav"], "/nonexistent: no such folder"),
    ],
)
def test_chat_says_what_is_wrong_with_its_arguments_in_one_line(args: list[str], says: str) -> None:
    run = _switchboard("chat", *args)
    assert run.returncode == 1
    assert run.stderr.startswith(f"switchboard chat: {says}") and run.stderr.count("\n") == 1, run.stderr


def test_chat_pointed_at_something_that_is_not_an_edge_says_so(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as server:  # a TCP server that does not speak HTTP
        url = f"ws://127.0.0.1:{server.port}/v1"
        run = _switchboard("chat", "--url", url, "--key", "k", "--say", "hello")
    assert run.returncode == 1
    assert (
        run.stderr.startswith(f"switchboard chat: what answers at {url} is not an edge ")
        and run.stderr.count("\n") == 1
    )


def test_ctrl_c_at_the_chat_prompt_ends_it_at_once_and_quietly(retail: Stack) -> None:
    chat = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "chat", "--url", retail.ws_base, "--key", retail.api_key],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert chat.stdout is not None and chat.stdout.readline().startswith("[session ")  # at the prompt
    chat.send_signal(signal.SIGINT)  # no line typed: it is waiting in readline
    _, err = chat.communicate(timeout=10)
    assert (chat.returncode, err) == (130, "")


@pytest.mark.parametrize("held", ["nats", "edge"])
def test_run_refuses_a_port_something_else_holds(tmp_path: Path, held: str) -> None:
    """Before: nats-server crash-looped on the port while the agents and edge joined whatever held it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        nats_port = port if held == "nats" else free_port()
        run = subprocess.run(
            [sys.executable, "-m", "switchboard", "run", "--var-dir", str(tmp_path), "--nats-port", str(nats_port)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "SWITCHBOARD_EDGE_PORT": str(port if held == "edge" else free_port())},
        )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.startswith(f"switchboard run: port {port} (") and "is in use" in run.stderr, run.stderr
    assert not (tmp_path / "nats").exists()  # nothing was started


def test_run_refuses_one_port_for_nats_and_the_edge(tmp_path: Path) -> None:
    """Before: nats-server took the port, the edge crash-looped on it, and the readiness probe of the
    edge reached nats-server."""
    port = str(free_port())
    run = subprocess.run(
        [sys.executable, "-m", "switchboard", "run", "--var-dir", str(tmp_path), "--nats-port", port],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "SWITCHBOARD_EDGE_PORT": port},
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.startswith(f"switchboard run: nats-server and the edge cannot share port {port}: ")
    assert run.stderr.count("\n") == 1, run.stderr
    assert not (tmp_path / "nats").exists()  # nothing was started


def test_an_edge_waiting_for_nats_stops_on_sigterm(tmp_path: Path) -> None:
    """It waited for NATS forever: SIGTERM and Ctrl-C were ignored until NATS answered. (Its only keys are
    in a file that is not there: it says so, as a typo in that path would otherwise refuse every client.)"""
    nowhere, missing = f"nats://127.0.0.1:{free_port()}", tmp_path / "api-keys.json"
    env = {"SWITCHBOARD_NATS_URL": nowhere, "SWITCHBOARD_API_KEYS": "", "SWITCHBOARD_API_KEYS_FILE": str(missing)}
    edge = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "edge"], env={**os.environ, **env, "SWITCHBOARD_EDGE_PORT": "0"},
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert edge.stdout is not None
    seen = []
    for line in edge.stdout:  # until it is trying NATS, and says where
        seen.append(line)
        if '"msg": "nats error"' in line:
            assert nowhere.removeprefix("nats://") in line
            break
    assert any("API key file not found" in line and str(missing) in line for line in seen), seen
    edge.send_signal(signal.SIGTERM)
    rest, _ = edge.communicate(timeout=10)
    # uvicorn ends a stop by a signal by raising that signal again, as after a drain
    assert edge.returncode == -signal.SIGTERM and "edge stopped before NATS answered" in rest, rest[-2000:]


@pytest.mark.parametrize(
    "args",
    [
        ["voice", "transcribe", "/nonexistent/in.wav"],
        ["voice", "say", "hello", "/nonexistent/out.wav"],
        ["routing-eval", "/nonexistent/set.yaml"],
    ],
)
def test_a_file_that_is_not_there_is_one_line_naming_it(args: list[str]) -> None:
    run = _switchboard(*args)
    assert run.returncode == 2
    assert run.stderr == f"switchboard {args[0]}: {args[-1]}: No such file or directory\n", run.stderr
