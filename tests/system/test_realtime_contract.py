"""Contract: every server event the edge emits validates against the official ``openai.types.realtime``
models, field by field; Switchboard's own facts travel in standard fields unless a client opts in."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter, ValidationError

from switchboard.local.stack import Stack

from .client import RawClient, done_of, user_message

pytestmark = pytest.mark.system

SERVER_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)

CONVERSATION = [
    "hello",  # triage answers
    "I want a refund for order A1001",  # triage -> auth (redirected_auth)
    "jane@example.com, PIN 1234",  # auth -> returns (accepted)
    "and what about my invoice?",  # returns -> billing (accepted); nothing is changed in the shared store
]

TOLERATED_EXTRAS = {
    ("session.created", "session.id"), ("session.created", "session.object"),
    ("session.updated", "session.id"), ("session.updated", "session.object"),
}  # fmt: skip
"""Fields the GA server sends too though the SDK's session model does not declare them (clients keep extras)."""


def extras(model: BaseModel, path: str = "") -> list[str]:
    """Paths of fields the SDK models do not declare, at any depth."""
    found = [f"{path}{name}" for name in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, BaseModel):
                found += extras(child, f"{path}{name}.")
    return found


def violations(events: list[dict[str, Any]]) -> list[str]:
    problems = []
    for event in events:
        try:
            parsed = SERVER_EVENTS.validate_python(event)
        except ValidationError as exc:
            problems.append(f"{event['type']}: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}")
            continue
        problems += [f"{event['type']}: undeclared field {p}" for p in extras(parsed)
                     if (event["type"], p) not in TOLERATED_EXTRAS]  # fmt: skip
    return problems


async def _conversation(client: RawClient) -> list[dict[str, Any]]:
    await client.open()
    await client.send({"type": "session.update", "session": {"type": "realtime", "instructions": "be brief"}})
    await client.next("session.updated")
    await client.send({"type": "conversation.item.create", "event_id": "evt_bad", "item": {"type": "message"}})
    await client.next("error")
    dones = [done_of(await client.turn(text)) for text in CONVERSATION]
    await client.send({"type": "conversation.item.create", "item": user_message("one more thing")})
    await client.next("conversation.item.done")
    return dones


async def test_every_server_event_validates_against_the_official_models(retail: Stack) -> None:
    async with RawClient(retail, events=False) as client:
        dones = await _conversation(client)
    kinds = {e["type"] for e in client.events}
    assert {"session.created", "session.updated", "error", "conversation.item.added", "conversation.item.done",
            "response.created", "response.output_item.added", "response.content_part.added",
            "response.output_text.delta", "response.output_text.done", "response.content_part.done",
            "response.output_item.done", "response.done"} <= kinds  # fmt: skip
    assert not [k for k in kinds if k.startswith("switchboard.")], "platform events must be opt-in"
    assert violations(client.events) == []
    assert dones[3]["metadata"]["handoff_outcomes"] == "accepted"
    # the handoff facts travel in standard fields
    assert [d["metadata"]["agent"] for d in dones] == ["triage", "auth", "returns", "billing"]
    assert dones[1]["metadata"]["agents"] == "triage,auth"
    assert dones[1]["metadata"]["handoff_outcomes"] == "redirected_auth"
    assert dones[2]["metadata"]["handoff_outcomes"] == "accepted"
    session_id = client.events[0]["session"]["id"]
    assert session_id.startswith("sess_") and all(d["metadata"]["session_id"] == session_id for d in dones)


async def test_platform_events_are_sent_when_opted_in_and_only_they_are_nonstandard(retail: Stack) -> None:
    async with RawClient(retail, events=True) as client:
        await _conversation(client)
    platform = [e for e in client.events if e["type"].startswith("switchboard.")]
    assert [e["type"] for e in platform] == ["switchboard.session"] + ["switchboard.handoff"] * 3
    assert [(h["from"], h["to"], h["outcome"]) for h in platform[1:]] == [
        ("triage", "auth", "redirected_auth"),
        ("auth", "returns", "accepted"),
        ("returns", "billing", "accepted"),
    ]
    standard = [e for e in client.events if not e["type"].startswith("switchboard.")]
    assert violations(standard) == []
    assert violations(platform)  # the official models do not know them: that is why they are opt-in


async def test_items_cancels_and_per_response_options_validate_too(retail: Stack) -> None:
    async with RawClient(retail, events=False) as client:
        await client.open()
        said = next(e for e in await client.turn("hello") if e["type"] == "response.output_item.done")["item"]["id"]
        items: list[dict[str, Any]] = [
            {"type": "conversation.item.create", "previous_item_id": "root",
             "item": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}},
            {"type": "conversation.item.create",
             "item": {"type": "function_call_output", "call_id": "c", "output": "1"}},
        ]  # fmt: skip
        for item in items:
            await client.send(item)
            await client.next("conversation.item.done")
        steps: list[tuple[dict[str, Any], str]] = [
            ({"type": "conversation.item.retrieve", "item_id": said}, "conversation.item.retrieved"),
            ({"type": "conversation.item.truncate", "item_id": said, "content_index": 0, "audio_end_ms": 0},
             "conversation.item.truncated"),
            ({"type": "conversation.item.delete", "item_id": said}, "conversation.item.deleted"),
            ({"type": "response.cancel"}, "error"),
            ({"type": "response.create", "response": {"max_output_tokens": 1}}, "response.done"),
            ({"type": "response.create", "response": {"conversation": "none", "metadata": {"k": "v"}}},
             "response.done"),
        ]  # fmt: skip
        for event, answer in steps:
            await client.send(event)
            await client.next(answer)
        await client.send({"type": "response.create"})
        await client.next("response.created")
        await client.send({"type": "response.cancel"})
        await client.next("response.done")
    statuses = {e["response"]["status"] for e in client.events if e["type"] == "response.done"}
    assert {"completed", "incomplete"} <= statuses
    assert violations(client.events) == []
