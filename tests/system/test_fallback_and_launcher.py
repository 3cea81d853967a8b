"""Unavailable agents fall back to the generalist; ``switchboard run`` starts and stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .client import open_session, say, sdk_client
from .stacks import ROOT, make_stack

pytestmark = pytest.mark.system


async def test_missing_agent_falls_back_to_the_generalist(tmp_path: Path) -> None:
    with make_stack(tmp_path, agents=["triage", "generalist"]) as stack:  # no auth, no returns
        async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
            await open_session(conn)
            reply = await say(conn, "refund for order A1001 please")
    assert [(h["from"], h["to"], h["outcome"]) for h in reply.handoffs] == [
        ("triage", "auth", "redirected_auth"),
        ("auth", "generalist", "unavailable"),
    ]
    assert "no responders" in reply.handoffs[1]["detail"]
    assert reply.agent == "generalist" and "general assistant" in reply.text


async def test_killed_agent_falls_back_and_the_conversation_continues(tmp_path: Path) -> None:
    with make_stack(tmp_path) as stack:
        async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
            await open_session(conn)
            assert (await say(conn, "I want to return order A1001")).agent == "auth"
            stack.kill("agent:auth")
            reply = await say(conn, "jane@example.com 1234")
            assert [h["outcome"] for h in reply.handoffs] == ["unavailable"]
            assert reply.agent == "generalist"
            again = await say(conn, "start over")
            assert again.agent == "triage"


async def test_frozen_agent_is_noticed_at_once_and_the_fallback_answers(tmp_path: Path) -> None:
    """A frozen replica keeps its NATS subscription, so only its missing acknowledgement shows it is
    gone: the fallback must answer in about a second (3 tries x 0.25 s), not after idle timeouts or
    the 10 s hop timeout."""
    with make_stack(tmp_path) as stack:
        async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
            await open_session(conn)
            assert (await say(conn, "hello")).agent == "triage"
            stack.proc("agent:triage").popen.send_signal(signal.SIGSTOP)  # hung, not dead: no "no responders"
            try:
                started = time.monotonic()
                reply = await say(conn, "hello again")
                elapsed = time.monotonic() - started
            finally:
                stack.proc("agent:triage").popen.send_signal(signal.SIGCONT)
    assert [(h["from"], h["to"], h["outcome"]) for h in reply.handoffs] == [("triage", "generalist", "unavailable")]
    assert "did not acknowledge" in reply.handoffs[0]["detail"]
    assert reply.agent == "generalist" and reply.status == "completed"
    assert elapsed < 1.5, elapsed  # ~0.9 s; the margin is for a loaded machine (idle timeouts alone: 2.3 s)


def test_switchboard_run_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    env = os.environ | {
        "SWITCHBOARD_API_KEYS": "launcher-key", "SWITCHBOARD_EDGE_PORT": "0", "OPENAI_API_KEY": "",
        "SWITCHBOARD_SCENARIOS_DIR": str(ROOT / "scenarios"),
    }  # fmt: skip
    from switchboard.local import free_port

    env["SWITCHBOARD_EDGE_PORT"] = str(free_port())
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchboard", "run", "--var-dir", str(tmp_path), "--nats-port", "0", "--quiet"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    banner = "".join(lines)
    assert "API key       : launcher-key" in banner, banner
    assert f"ws://127.0.0.1:{env['SWITCHBOARD_EDGE_PORT']}/v1/realtime" in banner
    children = _children(proc.pid)
    assert len(children) == 7, children  # nats-server, 5 agents, edge
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()
    assert proc.wait(30) == 0
    assert "stopped." in rest
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists() and _state(pid) != "Z"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "gone"
