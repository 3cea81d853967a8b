"""``response.create``'s options: out-of-band responses, ``input``, ``instructions``, ``metadata``,
``output_modalities``, ``max_output_tokens`` and ``tool_choice``, each honoured."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from switchboard.bus import Bus
from switchboard.local.stack import Stack
from switchboard.schemas import TurnRecord
from switchboard.state import AuditLog
from switchboard.testing import ScriptedOpenAIServer, ScriptedReply

from .client import RawClient, done_of, text_of, user_message
from .stacks import make_stack

pytestmark = pytest.mark.system

REFUND = "I want a refund for order A1001"


async def respond(client: RawClient, options: dict[str, Any]) -> list[dict[str, Any]]:
    start = len(client.events)
    await client.send({"type": "response.create", "response": options})
    await client.next("response.done")
    return client.events[start:]


async def add(client: RawClient, text: str) -> None:
    await client.send({"type": "conversation.item.create", "item": user_message(text)})
    await client.next("conversation.item.done")


async def test_out_of_band_response_on_its_own_input_commits_nothing(retail: Stack) -> None:
    async with RawClient(retail) as client:
        await client.open()
        await add(client, REFUND)  # the session's last word: a refund, which triage hands off
        events = await respond(client, {"conversation": "none", "input": [user_message("hello")],
                                        "metadata": {"purpose": "greeting"}})  # fmt: skip
        done = done_of(events)
        assert done["status"] == "completed" and done["metadata"]["purpose"] == "greeting"
        assert done["metadata"]["agent"] == "triage" and done["metadata"]["handoffs"] == "0"  # it saw "hello" only
        assert not [e for e in events if e["type"].startswith("conversation.item.")]
        await client.send({"type": "conversation.item.retrieve", "item_id": done["output"][0]["id"]})
        assert (await client.next("error"))["error"]["code"] == "item_not_found"
        after = done_of(await respond(client, {}))  # the session still ends with the refund, still on triage
    assert (after["metadata"]["agents"], after["metadata"]["handoff_outcomes"]) == ("triage,auth", "redirected_auth")


async def test_input_replaces_the_context_and_what_it_produces_joins_the_session(retail: Stack) -> None:
    async with RawClient(retail) as client:
        await client.open()
        await add(client, "hello")
        events = await respond(client, {"input": [user_message(REFUND)]})
        done = done_of(events)
        assert done["metadata"]["agent"] == "auth"  # it answered the input, not the session's "hello"
        said = next(e for e in events if e["type"] == "response.output_item.done")["item"]["id"]
        await client.send({"type": "conversation.item.retrieve", "item_id": said})
        assert (await client.next("conversation.item.retrieved"))["item"]["role"] == "assistant"


async def test_max_output_tokens_tool_choice_and_output_modalities(retail: Stack) -> None:
    async with RawClient(retail) as client:
        await client.open()
        await add(client, "hello")
        capped = await respond(client, {"max_output_tokens": 2})
        assert len(text_of(capped).split()) == 2
        assert done_of(capped)["status"] == "incomplete"
        assert done_of(capped)["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
        await add(client, REFUND)
        no_tools = done_of(await respond(client, {"tool_choice": "none"}))
        assert (no_tools["metadata"]["agent"], no_tools["metadata"]["handoffs"]) == ("triage", "0")
        both = {"output_modalities": ["text", "audio"]}  # GA: one modality (audio carries its transcript)
        await client.send({"type": "response.create", "event_id": "e1", "response": both})
        error = (await client.next("error"))["error"]
        assert (error["param"], error["event_id"]) == ("response.output_modalities", "e1")
        assert done_of(await respond(client, {}))["metadata"]["agent"] == "auth"  # the same refund, with tools


async def test_a_capped_response_is_recorded_in_the_audit_timeline(retail: Stack) -> None:
    async with RawClient(retail) as client:
        session_id = (await client.open())["session_id"]
        await add(client, "hello")
        capped = done_of(await respond(client, {"max_output_tokens": 2}))
        assert capped["status"] == "incomplete"
        after = done_of(await respond(client, {}))
    async with Bus(retail.nats_urls, name="check") as bus:
        audit = AuditLog(bus.js)
        for _ in range(250):  # the edge appends turn records in the background, after response.done
            turns = [r for r in await audit.read_timeline(session_id) if isinstance(r, TurnRecord)]
            if any(t.response_id == after["id"] for t in turns):
                break
            await asyncio.sleep(0.02)  # ok-sleep: poll interval while the append lands
    assert [(t.response_id, t.status) for t in turns] == [(capped["id"], "incomplete"), (after["id"], "completed")]


async def test_instructions_tool_choice_and_token_cap_reach_the_model(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> ScriptedReply:
        seen.append(body)
        return ScriptedReply(text="ok")

    async with ScriptedOpenAIServer(responder=responder) as model:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": model.base_url}
        with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:
            async with RawClient(stack) as client:
                await client.open()
                await add(client, "hello")
                options = {"instructions": "Answer in French.", "tool_choice": "required", "max_output_tokens": 50}
                await respond(client, options)
                await respond(client, {})
                await respond(client, {"input": [user_message("only this")]})
                await respond(client, {"input": [user_message("my card is 4242 4242 4242 4242")]})
    system = [m["content"] for m in seen[0]["messages"] if m["role"] == "system"]
    # input replaces the session's items as the context: the model never sees "hello" with it
    assert [m["content"] for m in seen[2]["messages"] if m["role"] == "user"] == ["only this"]
    # and it is screened like the conversation's items: the card number never reaches the model
    assert [m["content"] for m in seen[3]["messages"] if m["role"] == "user"] == ["my card is [CARD]"]
    assert "For this response: Answer in French." in json.dumps(system)
    assert (seen[0]["tool_choice"], seen[0]["max_completion_tokens"]) == ("required", 50)
    assert "Answer in French." not in json.dumps(seen[1]["messages"]) and "tool_choice" not in seen[1]
