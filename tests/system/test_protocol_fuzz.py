"""Fuzz the edge with malformed and out-of-order client events built from the protocol's models.

Each example opens a connection and sends a sequence of events, each followed by a probe (a retrieve of an
item that does not exist, whose ``error`` marks the end of the answers to that event). Every event must get
an ``error`` naming it or its correct answer; afterwards every response has its one ``response.done``, the
connection still holds a normal turn, and the edge's memory stays bounded over all examples.
"""

from __future__ import annotations

import asyncio
import json
import typing
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.local.stack import Stack
from switchboard_edge.client_events import ClientEvent

from .client import RawClient, user_message

pytestmark = pytest.mark.system

MODELS = {
    typing.get_args(m.model_fields["type"].annotation)[0]: m for m in typing.get_args(typing.get_args(ClientEvent)[0])
}
"""Client event type -> its model, from the edge's own typed protocol."""
ANSWERS = {
    "session.update": {"session.updated"},
    "conversation.item.create": {"conversation.item.added"},
    "conversation.item.retrieve": {"conversation.item.retrieved"},
    "conversation.item.delete": {"conversation.item.deleted"},
    "conversation.item.truncate": {"conversation.item.truncated"},
    "response.create": {"response.created"},
    "response.cancel": {"response.done"},
}
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "item": st.sampled_from([
        user_message("hello"), user_message("I want a refund for order A1001"),
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "said"}]},
        {"type": "function_call_output", "call_id": "call_1", "output": "{}"},
    ]),
    "session": st.sampled_from([{}, {"instructions": "x"}, {"tools": [{"type": "function", "name": "t"}]},
                                {"tool_choice": "none"}]),
    "response": st.sampled_from([{}, {"conversation": "none"}, {"max_output_tokens": 3}, {"metadata": {"k": "v"}},
                                 {"input": [user_message("hello")]}, {"tool_choice": "none"}]),
    "item_id": st.sampled_from(["item_fz", "item_nope"]),
    "previous_item_id": st.sampled_from(["root", "item_fz", "item_nope"]),
    "response_id": st.sampled_from(["resp_nope"]),
    "content_index": st.integers(-1, 2),
    "audio_end_ms": st.integers(-5, 5),
}  # fmt: skip
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def client_events(draw: st.DrawFn) -> tuple[str, dict[str, Any] | str]:
    """``(type, event)``: a model's fields, each well-formed, ill-typed or missing, sometimes an unknown
    field or type; or a frame that is not an event at all."""
    if draw(st.integers(0, 9)) == 0:
        return "", draw(st.sampled_from(["{", "[]", "null", '{"type": 7}', '"text"']))
    kind = draw(st.sampled_from([*MODELS, "conversation.item.explode"]))
    event: dict[str, Any] = {"type": kind}
    for name in MODELS[kind].model_fields if kind in MODELS else ():
        if name in {"type", "event_id"}:
            continue
        choice = draw(st.integers(0, 5))
        if choice <= 3 and name in GOOD:
            event[name] = draw(GOOD[name])
        elif choice == 4:
            event[name] = draw(JUNK)
    if draw(st.integers(0, 7)) == 0:
        event[draw(st.sampled_from(["temperature", "voice", "x"]))] = draw(JUNK)
    return kind, event


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def play(stack: Stack, events: list[tuple[str, dict[str, Any] | str]]) -> None:
    async with asyncio.timeout(60), RawClient(stack, events=False) as client:
        await client.open()
        for n, (kind, event) in enumerate(events):
            start = len(client.events)
            await client.send(event if isinstance(event, str) else {**event, "event_id": f"f{n}"})
            await client.send({"type": "conversation.item.retrieve", "item_id": "item_probe", "event_id": f"p{n}"})
            while not (client.events and client.events[-1].get("error", {}).get("event_id") == f"p{n}"):
                await client.recv()
            got = client.events[start:-1]
            errors = [e["error"] for e in got if e["type"] == "error"]
            answered = any(e["type"] in ANSWERS.get(kind, ()) for e in got) or any(
                err.get("event_id") == (f"f{n}" if kind else None) for err in errors
            )
            crossing = kind == "response.cancel" and any(e["type"] == "response.done" for e in client.events[:start])
            assert answered or crossing, (event, got)
        await client.send({"type": "response.cancel"})
        while True:  # every response ends with exactly one response.done
            created = Counter(e["response"]["id"] for e in client.events if e["type"] == "response.created")
            done = Counter(e["response"]["id"] for e in client.events if e["type"] == "response.done")
            if created == done:
                break
            assert all(done[r] <= 1 for r in done), done
            await client.recv()
        await client.send({"type": "session.update", "session": {"tool_choice": "auto"}})
        await client.next("session.updated")
        final = await client.turn("hello")
        assert [e["response"]["status"] for e in final if e["type"] == "response.done"] == ["completed"]
        assert json.dumps(final)  # the connection still holds a normal turn


def test_malformed_and_out_of_order_events_never_break_a_session(retail: Stack) -> None:
    edge = retail.proc("edge").pid
    asyncio.run(play(retail, [("response.create", {"type": "response.create"})]))  # first-use allocations
    before = rss_kib(edge)

    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(client_events(), min_size=1, max_size=12))
    def run(events: list[tuple[str, dict[str, Any] | str]]) -> None:
        asyncio.run(play(retail, events))

    run()
    grown = rss_kib(edge) - before
    # measured: 0.4-0.8 MiB; a leak of 100 KiB per session (40 of them) goes over
    assert grown < 4 * 1024, f"the edge grew by {grown} KiB over the fuzz run"
