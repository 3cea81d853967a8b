"""The retail scenario on real model clients: agent processes call an OpenAI-compatible server.

The server is the scripted double shipped in ``switchboard.testing``; the agents use the real
``openai`` client over HTTP, so tool calls, handoff tools and streaming take the production path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from switchboard.bus import Bus
from switchboard.schemas import MessageItem
from switchboard.state import SessionStore
from switchboard.testing import ScriptedOpenAIServer, ScriptedReply

from .client import RawClient, done_of, open_session, say, sdk_client, text_of
from .stacks import make_stack

pytestmark = pytest.mark.system


def _agent_of(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"]
    for name, marker in [
        ("generalist", "generalist recovery"),
        ("triage", "front desk"),
        ("auth", "You verify callers"),
        ("returns", "handle returns"),
    ]:
        if marker in system:
            return name
    return "other"


def _respond(body: dict[str, Any]) -> ScriptedReply:
    """A tiny 'model': route by agent and by the last message, like a real LLM would."""
    agent = _agent_of(body)
    last = body["messages"][-1]
    if agent == "triage":
        return ScriptedReply(tool_calls=[("transfer_to_returns", {"reason": "refund request", "order_id": "A1001"})])
    if agent == "auth":
        if last["role"] == "tool" and "verified" in last["content"]:
            return ScriptedReply(tool_calls=[("transfer_to_returns", {"reason": "verified", "order_id": "A1001"})])
        user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        if "@" in user:
            return ScriptedReply(tool_calls=[("verify_customer", {"email": "jane@example.com", "pin": "1234"})])
        return ScriptedReply(text="Please tell me your email and PIN.")
    if agent == "returns":
        if last["role"] == "tool" and '"item"' in last["content"]:
            order = json.loads(last["content"])
            return ScriptedReply(text=f"Your {order['item']} can be refunded: ${order['total']}.")
        return ScriptedReply(tool_calls=[("lookup_order", {"order_id": "A1001"})])
    return ScriptedReply(text="generalist reply")


async def test_real_openai_client_path_across_processes(tmp_path: Path) -> None:
    async with ScriptedOpenAIServer(responder=_respond) as model:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": model.base_url}
        with make_stack(tmp_path, env=env) as stack:
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                await open_session(conn)
                first = await say(conn, "refund please")
                assert first.agent == "auth"
                second = await say(conn, "jane@example.com 1234")
    assert [h["outcome"] for h in first.handoffs] == ["redirected_auth"]
    assert [(h["from"], h["to"]) for h in second.handoffs] == [("auth", "returns")]
    assert second.agent == "returns"
    assert second.text == "Your wireless headphones can be refunded: $89.99."
    assert first.metadata["agent"] == "auth" and int(second.events[-1].response.usage.output_tokens) > 0
    agents_called = [_agent_of(r) for r in model.requests]
    assert agents_called[:2] == ["triage", "auth"]
    triage_tools = {t["function"]["name"] for t in model.requests[0]["tools"]}
    assert triage_tools == {"transfer_to_returns", "transfer_to_billing", "transfer_to_auth"}
    returns_request = next(r for r in model.requests if _agent_of(r) == "returns")
    system = returns_request["messages"][0]["content"]
    assert "pending_agent" not in system and '"order_id": "A1001"' in system  # contract context reached returns
    assert "Caller verified: yes (customer C001)" in system
    assert all(r.get("stream") is True for r in model.requests)
    # every tool call in the history the model sees is answered (the API rejects dangling calls)
    for request in model.requests:
        calls = [c["id"] for m in request["messages"] if m["role"] == "assistant" for c in m.get("tool_calls") or []]
        answered = [m["tool_call_id"] for m in request["messages"] if m["role"] == "tool"]
        assert calls == answered, request["messages"]


async def test_model_errors_are_retried_then_fall_back(tmp_path: Path) -> None:
    async with ScriptedOpenAIServer(responder=_respond) as model:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": model.base_url}
        with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                await open_session(conn)
                model.script(ScriptedReply(status=500), ScriptedReply(status=429))  # then the responder
                flaky = await say(conn, "refund please")
            triage_calls = len([r for r in model.requests if _agent_of(r) == "triage"])
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                await open_session(conn)
                model.script(*[ScriptedReply(status=503)] * 3)  # every attempt of the next turn fails
                down = await say(conn, "refund please")
    assert triage_calls == 3  # 500, 429, then the answer: retried inside the agent, not by the caller
    assert [h["outcome"] for h in flaky.handoffs] == ["redirected_auth", "unavailable"]  # auth isn't running
    assert [h["outcome"] for h in down.handoffs] == ["unavailable"]
    assert "model_error" in down.handoffs[0]["detail"] and "503" in down.handoffs[0]["detail"]
    assert down.agent == "generalist" and down.status == "completed"


async def test_what_a_cut_off_agent_said_stays_in_the_conversation(tmp_path: Path) -> None:
    """The triage model goes silent mid-answer past the hop deadline: the caller heard its first words (what
    the output guardrails released), then the fallback agent. The session keeps both, with the ids the
    client was shown, in the order heard."""
    cut = "Thanks for calling. Our store is open every day of the week, and on public holidays we keep hours "

    def respond(body: dict[str, Any]) -> ScriptedReply:
        if _agent_of(body) == "triage":
            return ScriptedReply(text=cut + "that are shorter.", stall_after=len(cut), stall_s=60)
        return ScriptedReply(text="generalist reply")

    async with ScriptedOpenAIServer(responder=respond) as model:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": model.base_url, "SWITCHBOARD_HOP_TIMEOUT_S": "2",
               "SWITCHBOARD_LEDGER_TAKEOVER_S": "1"}  # fmt: skip
        with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:
            async with RawClient(stack, timeout_s=15) as client:
                session_id = (await client.open())["session_id"]
                events = await client.turn("when are you open?")
                retrieved = []
                for item in done_of(events)["output"]:
                    await client.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
                    retrieved.append((await client.next("conversation.item.retrieved"))["item"])
            async with Bus(stack.nats_urls, name="check") as bus:
                transcript = await (await SessionStore.open(bus.js)).transcript(session_id)
    output = done_of(events)["output"]
    assert [o["status"] for o in output] == ["incomplete", "completed"]
    first = output[0]["content"][0]["text"]
    assert first and cut.startswith(first)
    assert text_of(events) == first + "generalist reply"  # what the caller heard
    said = [(i.id, i.agent, i.text) for i in transcript if isinstance(i, MessageItem) and i.role == "assistant"]
    assert said == [(output[0]["id"], "triage", first), (output[1]["id"], "generalist", "generalist reply")]
    assert [r["content"][0]["text"] for r in retrieved] == [first, "generalist reply"]
