"""Client function tools (declared in ``session.update``) reach the active agent's model; a call of one is
streamed as a ``function_call`` item, the client answers with its output, and the same agent continues."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from switchboard.local.stack import Stack
from switchboard.testing import ScriptedOpenAIServer

from .client import RawClient, done_of, text_of
from .stacks import calls_client_tool, make_stack
from .test_realtime_contract import violations

pytestmark = pytest.mark.system

NOTE_TOOL = {
    "type": "function", "name": "order_note", "description": "The caller app's private note on an order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
}  # fmt: skip


async def declare(client: RawClient, tools: list[dict[str, Any]]) -> dict[str, Any]:
    await client.send(
        {"type": "session.update", "session": {"type": "realtime", "tools": tools, "tool_choice": "auto"}}
    )
    session: dict[str, Any] = (await client.next("session.updated"))["session"]
    return session


async def test_a_client_tool_call_is_streamed_answered_and_continued_on_the_same_agent(tmp_path: Path) -> None:
    calls = calls_client_tool("order_note", {"order_id": "A1001"})
    offered: list[list[str]] = []

    def responder(body: dict[str, Any]) -> Any:
        offered.append([t["function"]["name"] for t in body.get("tools") or []])
        return calls(body)

    async with ScriptedOpenAIServer(responder=responder) as model:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": model.base_url}
        with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:
            async with RawClient(stack, events=False) as client:
                await client.open()
                session = await declare(client, [NOTE_TOOL])
                assert [t["name"] for t in session["tools"]] == ["order_note"] and session["tool_choice"] == "auto"

                first = await client.turn("what is the note on order A1001?")
                kinds = [e["type"] for e in first if e["type"].startswith("response.")]
                assert kinds == [
                    "response.created", "response.output_item.added", "response.function_call_arguments.delta",
                    "response.function_call_arguments.done", "response.output_item.done", "response.done",
                ]  # fmt: skip
                call = next(e for e in first if e["type"] == "response.output_item.done")["item"]
                assert (call["type"], call["name"], call["status"]) == ("function_call", "order_note", "completed")
                assert json.loads(call["arguments"]) == {"order_id": "A1001"}
                done = done_of(first)
                assert done["status"] == "completed" and done["output"] == [call]
                assert done["metadata"]["agent"] == "triage"

                output = {"type": "function_call_output", "call_id": call["call_id"], "output": "gift wrapped"}
                await client.send({"type": "conversation.item.create", "item": output})
                added = await client.next("conversation.item.added")
                assert added["item"]["type"] == "function_call_output" and added["previous_item_id"] == call["id"]
                start = len(client.events)
                await client.send({"type": "response.create"})
                await client.next("response.done")
                second = client.events[start:]
    assert text_of(second) == "The tool said: gift wrapped"
    # the client's tool is offered beside the agent's own (its handoff tools), at every model call
    assert offered and all({"order_note", "transfer_to_auth"} <= set(names) for names in offered), offered
    assert done_of(second)["metadata"]["agent"] == "triage"
    assert not [e for e in client.events if e["type"] == "error"]
    assert violations(client.events) == []  # function_call events too validate against the official models


async def test_server_tools_and_handoffs_work_beside_client_tools(retail: Stack) -> None:
    async with RawClient(retail) as client:
        await client.open()
        # a client tool named as the agent's own handoff tool: the agent's own wins, the handoff still happens
        await declare(client, [NOTE_TOOL, {**NOTE_TOOL, "name": "transfer_to_returns"}])
        dones = [
            done_of(await client.turn(text))
            for text in ["I want a refund for order A1001", "jane@example.com, PIN 1234"]
        ]
    assert [d["metadata"]["agent"] for d in dones] == ["auth", "returns"]
    assert [d["metadata"]["handoff_outcomes"] for d in dones] == ["redirected_auth", "accepted"]


async def test_the_offline_provider_calls_a_client_tool_and_speaks_its_output(tmp_path: Path) -> None:
    with make_stack(tmp_path, scenario="clienttools") as stack:
        async with RawClient(stack, events=False) as client:
            await client.open()
            await declare(client, [NOTE_TOOL])
            call = done_of(await client.turn("what is the note on my order?"))["output"][0]
            assert (call["type"], json.loads(call["arguments"])) == ("function_call", {"order_id": "A1001"})
            output = {"type": "function_call_output", "call_id": call["call_id"], "output": '{"note": "gift wrapped"}'}
            await client.send({"type": "conversation.item.create", "item": output})
            await client.next("conversation.item.done")
            start = len(client.events)
            await client.send({"type": "response.create"})
            await client.next("response.done")
    assert text_of(client.events[start:]) == "The note says: gift wrapped"
