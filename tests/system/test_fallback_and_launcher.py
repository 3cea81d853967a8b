"""Unavailable agents fall back to the generalist (the launcher itself: ``test_launcher.py``)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from .client import open_session, say, sdk_client, session_audit
from .stacks import make_stack

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


async def test_a_failed_turn_still_audits_its_handoffs(tmp_path: Path) -> None:
    """No specialist and no fallback running: the turn fails, and the handoffs it made are audited."""
    with make_stack(tmp_path, agents=["triage"]) as stack:
        async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
            session_id = (await open_session(conn))["session_id"]
            reply = await say(conn, "refund for order A1001 please")
        decisions = await session_audit(stack, session_id, 2)
    assert reply.status == "failed" and [e.code for e in reply.errors] == ["turn_failed"]
    assert [(d.source, d.final_target, d.outcome.value, d.target_ok) for d in decisions] == [
        ("triage", "auth", "redirected_auth", False),
        ("auth", "generalist", "unavailable", False),
    ]


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
