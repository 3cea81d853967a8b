"""Moderation-model guardrails through the real edge: a scripted moderation server, a real Stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from switchboard.bus import Bus
from switchboard.local.stack import Stack
from switchboard.testing import ScriptedModeration, ScriptedOpenAIServer

from .client import open_session, say, sdk_client, session_audit, stored_user_texts, user_message
from .stacks import make_stack

pytestmark = pytest.mark.system


def judge(text: str, model: str) -> ScriptedModeration:
    """``kill`` is violence; ``outage-closed`` and ``outage-open`` make that model's server fail."""
    if f"outage-{model.removeprefix('mod-')}" in text:
        return ScriptedModeration(status=500)
    return ScriptedModeration(categories=["violence"] if "kill" in text else [])


@asynccontextmanager
async def moderated(tmp: Path) -> AsyncIterator[tuple[Stack, ScriptedOpenAIServer]]:
    async with ScriptedOpenAIServer(moderation_responder=judge) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        with make_stack(tmp, scenario="moderated", env=env) as stack:
            yield stack, server


async def _refused(conn: object, text: str) -> str:
    await conn.conversation.item.create(item=user_message(text))  # type: ignore[attr-defined]
    event = await conn.recv()  # type: ignore[attr-defined]
    assert event.type == "error", event
    return str(event.error.code)


async def test_caller_input_is_moderated_and_a_failing_model_follows_on_error(tmp_path: Path) -> None:
    async with moderated(tmp_path) as (stack, server):
        async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
            session_id = (await open_session(conn))["session_id"]
            assert await _refused(conn, "I will kill the courier") == "guardrail_blocked"
            assert await _refused(conn, "hello outage-closed") == "guardrail_blocked"  # fail_closed: no verdict blocks
            passed = await say(conn, "hello outage-open")  # fail_open: no verdict, the message passes
            assert (passed.errors, passed.text) == ([], "front here")
            assert (await say(conn, "where is my parcel")).text == "front here"
        asked = [(r["model"], r["input"]) for r in server.moderation_requests]
        assert ("mod-closed", "I will kill the courier") in asked and ("mod-open", "where is my parcel") in asked
        said = await stored_user_texts(stack, session_id)
    assert said == ["hello outage-open", "where is my parcel"]  # nothing of the refused messages was stored


async def test_a_flagged_handoff_goes_to_the_fallback_agent(tmp_path: Path) -> None:
    async with moderated(tmp_path) as (stack, server):
        async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
            session_id = (await open_session(conn))["session_id"]
            clean = await say(conn, "transfer please")
            assert clean.agent == "a" and [h["outcome"] for h in clean.handoffs] == ["accepted"]
        async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
            flagged_session = (await open_session(conn))["session_id"]
            flagged = await say(conn, "escalate please")
            assert flagged.agent == "generalist" and flagged.text == "generalist here"
            assert [(h["to"], h["outcome"]) for h in flagged.handoffs] == [("generalist", "refused_guardrail")]
        assert any(r["input"] == "the caller wants to kill someone" for r in server.moderation_requests)
        async with Bus(stack.nats_urls, name="check") as bus:
            assert [d.outcome.value for d in await session_audit(stack, flagged_session, 1, js_of=bus.js)] == [
                "refused_guardrail"
            ]
            assert [d.outcome.value for d in await session_audit(stack, session_id, 1, js_of=bus.js)] == ["accepted"]
