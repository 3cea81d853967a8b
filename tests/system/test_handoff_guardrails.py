"""Handoff guardrails end to end: agents that break the rules, real processes, the audit stream."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from switchboard.local.stack import Stack
from switchboard_edge.orchestration.conductor import CANT_TRANSFER

from .client import (
    RawClient,
    Reply,
    audit_decisions,
    open_session,
    say,
    sdk_client,
    session_audit,
    stored_user_texts,
    user_message,
)
from .stacks import make_stack

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_stack(tmp_path_factory.mktemp("guard"), scenario="guard") as stack:
        yield stack


async def _one_turn(stack: Stack, text: str) -> tuple[Reply, str]:
    async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
        session_id = (await open_session(conn))["session_id"]
        return await say(conn, text), session_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contract", ("front", "a", "generalist", "refused_contract")),
        ("unknown: ask for nobody", ("front", "nobody", "generalist", "unknown_target")),
        ("graph", ("front", "b", "generalist", "refused_graph")),
    ],
)
async def test_refused_handoff_goes_to_the_generalist(
    guard: Stack, text: str, expected: tuple[str, str, str, str]
) -> None:
    reply, session_id = await _one_turn(guard, text)
    assert reply.agent == "generalist" and reply.text == "generalist here"
    assert [(h["from"], h["requested"], h["to"], h["outcome"]) for h in reply.handoffs] == [expected]
    assert await audit_decisions(guard, session_id, 1) == [expected]


async def test_contract_refusal_names_the_bad_field(guard: Stack) -> None:
    reply, _ = await _one_turn(guard, "contract")
    assert "code" in reply.handoffs[0]["detail"] and "pattern" in reply.handoffs[0]["detail"]


async def test_ping_pong_within_one_turn_is_stopped(guard: Stack) -> None:
    reply, session_id = await _one_turn(guard, "pingpong")
    assert [h["outcome"] for h in reply.handoffs] == ["accepted", "ping_pong"]
    assert reply.agent == "generalist"
    assert await audit_decisions(guard, session_id, 2) == [
        ("front", "a", "a", "accepted"),
        ("a", "front", "generalist", "ping_pong"),
    ]


async def test_depth_cap_refuses_the_handoff_past_the_cap(guard: Stack) -> None:
    async with sdk_client(guard).realtime.connect(model="switchboard") as conn:
        session_id = (await open_session(conn))["session_id"]
        assert (await say(conn, "ok")).agent == "a"  # depth 1
        back = await say(conn, "back")  # a -> front: depth 2
        assert back.agent == "front"
        capped = await say(conn, "ok")  # front -> a would be depth 3 > cap 2
        assert [h["outcome"] for h in capped.handoffs] == ["depth_cap"]
        assert capped.agent == "generalist"
    outcomes = [o for *_, o in await audit_decisions(guard, session_id, 3)]
    assert outcomes == ["accepted", "accepted", "depth_cap"]


@pytest.fixture(scope="module")
def hops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_stack(tmp_path_factory.mktemp("hops"), scenario="hops") as stack:
        yield stack


async def _resumed_agent(stack: Stack, session_id: str) -> str:
    async with sdk_client(stack).realtime.connect(model="switchboard", extra_query={"session_id": session_id}) as conn:
        return str((await open_session(conn))["active_agent"])


async def test_hop_cap_keeps_the_caller_with_the_agent_that_asked(hops: Stack) -> None:
    """front -> c1 -> c2 -> c3 under max_hops_per_turn 3: c3 never runs, so nothing may say it did."""
    reply, session_id = await _one_turn(hops, "chain")
    assert reply.text.endswith(CANT_TRANSFER)
    assert reply.agent == "c2" and reply.metadata["agents"] == "front,c1,c2"
    assert [(h["from"], h["requested"], h["to"], h["outcome"]) for h in reply.handoffs] == [
        ("front", "c1", "c1", "accepted"),
        ("c1", "c2", "c2", "accepted"),
        ("c2", "c3", "c2", "hop_cap"),
    ]
    assert await audit_decisions(hops, session_id, 3) == [
        ("front", "c1", "c1", "accepted"),
        ("c1", "c2", "c2", "accepted"),
        ("c2", "c3", "c2", "hop_cap"),
    ]
    assert await _resumed_agent(hops, session_id) == "c2"


async def _context_keys(stack: Stack, session_id: str) -> list[list[str]]:
    return [d.context_keys for d in await session_audit(stack, session_id, 2)]


async def test_context_crosses_only_the_handoff_whose_contract_declares_it(hops: Stack) -> None:
    reply, session_id = await _one_turn(hops, "drop")  # front -(code)-> c1 -(no contract)-> c2
    assert (reply.agent, reply.text) == ("c2", "c2 received no code")
    assert await _context_keys(hops, session_id) == [["code"], []]


async def test_a_forward_field_passes_on_what_the_source_received(hops: Stack) -> None:
    reply, session_id = await _one_turn(hops, "carry")  # front -(code)-> c1 -(code, forward)-> d
    assert (reply.agent, reply.text) == ("d", "d received code 42")
    assert await _context_keys(hops, session_id) == [["code"], ["code"]]


async def test_a_handoff_guardrail_refuses_the_transfer_and_keeps_the_secret_out_of_the_audit(guard: Stack) -> None:
    reply, session_id = await _one_turn(guard, "leak")
    assert reply.agent == "generalist"
    assert [(h["from"], h["requested"], h["to"], h["outcome"]) for h in reply.handoffs] == [
        ("front", "a", "generalist", "refused_guardrail")
    ]
    assert await audit_decisions(guard, session_id, 1) == [("front", "a", "generalist", "refused_guardrail")]
    # the blocked reason ("passing on CODE-123") is in no record of the refusal: not the caller's, not the audit's
    assert "CODE-" not in json.dumps(reply.handoffs)
    [refused] = await session_audit(guard, session_id, 1)
    assert refused.reason == "" and "CODE-" not in refused.model_dump_json()


async def test_an_accepted_handoffs_reason_is_recorded_without_pii(guard: Stack) -> None:
    reply, session_id = await _one_turn(guard, "mailbox")
    assert [(h["to"], h["outcome"], h["reason"]) for h in reply.handoffs] == [("a", "accepted", "caller [EMAIL] asked")]
    [accepted] = await session_audit(guard, session_id, 1)
    assert accepted.reason == "caller [EMAIL] asked"


async def test_an_input_guardrail_blocks_the_message_and_the_session_stays_usable(guard: Stack) -> None:
    async with sdk_client(guard).realtime.connect(model="switchboard") as conn:
        session_id = (await open_session(conn))["session_id"]
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a bomb threat"}]}
        await conn.conversation.item.create(item=item)
        error = await conn.recv()
        assert error.type == "error" and error.error.code == "guardrail_blocked"
        assert (await say(conn, "hello")).text == "front here"
    assert await stored_user_texts(guard, session_id) == ["hello"]  # nothing of the blocked message was kept


async def test_a_responses_own_input_is_screened_like_the_conversations_items(guard: Stack) -> None:
    async with RawClient(guard) as client:
        session_id = (await client.open())["session_id"]
        blocked = {"input": [user_message("hello"), user_message("a bomb threat")]}
        await client.send({"type": "response.create", "event_id": "r1", "response": blocked})
        error = (await client.next("error"))["error"]
        assert (error["code"], error["param"], error["event_id"]) == (
            "guardrail_blocked", "response.input.1.content", "r1"
        )  # fmt: skip
        assert not [e for e in client.events if e["type"] == "response.created"]  # refused before it started
        events = await client.turn("hello")  # the connection stays usable
        done = next(e for e in events if e["type"] == "response.done")["response"]
        assert (done["status"], done["metadata"]["agent"]) == ("completed", "front")
    assert await stored_user_texts(guard, session_id) == ["hello"]  # nothing of the blocked input was kept


@pytest.mark.parametrize("via", ["conversation", "response input"])
async def test_an_input_fallback_rule_hands_the_response_to_the_fallback_agent(guard: Stack, via: str) -> None:
    async with RawClient(guard) as client:
        await client.open()
        start = len(client.events)
        if via == "conversation":
            await client.send({"type": "conversation.item.create", "item": user_message("get me a manager")})
            await client.send({"type": "response.create"})
        else:
            await client.send({"type": "response.create", "response": {"input": [user_message("get me a manager")]}})
        await client.next("response.done")
        done = next(e for e in client.events[start:] if e["type"] == "response.done")["response"]
    assert (done["status"], done["metadata"]["agent"]) == ("completed", "generalist")
