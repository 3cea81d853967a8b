"""Conversation items over the wire: create (user, system, assistant, function output; ``previous_item_id``),
retrieve, delete and truncate; a response's assistant items are conversation items too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from switchboard.local.stack import Stack

from .client import RawClient, stored_items, user_message
from .stacks import make_stack

pytestmark = pytest.mark.system


def assistant_message(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


async def create(client: RawClient, item: dict[str, Any], previous: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "conversation.item.create", "item": item}
    if previous is not None:
        event["previous_item_id"] = previous
    await client.send(event)
    added = await client.next("conversation.item.added")
    done = await client.next("conversation.item.done")
    assert done["item"] == added["item"]
    return added


async def request(client: RawClient, event: dict[str, Any]) -> dict[str, Any]:
    """Send ``event`` and return the next answer: an ``error`` or the named server event."""
    await client.send(event)
    while True:
        got = await client.recv()
        if got["type"] in {"error", "conversation.item.retrieved", "conversation.item.deleted",
                           "conversation.item.truncated"}:  # fmt: skip
            return got


async def test_items_are_created_where_asked_and_can_be_retrieved_and_deleted(retail: Stack) -> None:
    async with RawClient(retail) as client:
        session_id = (await client.open())["session_id"]
        first = await create(client, {**user_message("first"), "id": "item_first"})
        said = await create(client, {**assistant_message("said earlier"), "id": "item_said"}, previous="item_first")
        assert said["previous_item_id"] == "item_first" and said["item"]["role"] == "assistant"
        between = await create(client, {**user_message("between"), "id": "item_between"}, previous="item_first")
        assert between["previous_item_id"] == "item_first"
        root = await create(client, {**user_message("at the start"), "id": "item_root"}, previous="root")
        assert root["previous_item_id"] is None and first["item"]["id"] == "item_first"

        missing = await request(client, {"type": "conversation.item.create", "event_id": "e1",
                                         "item": user_message("x"), "previous_item_id": "item_nope"})  # fmt: skip
        assert (missing["error"]["code"], missing["error"]["param"]) == ("item_not_found", "previous_item_id")
        assert missing["error"]["event_id"] == "e1"

        got = await request(client, {"type": "conversation.item.retrieve", "item_id": "item_said"})
        assert got["item"]["content"] == [{"type": "output_text", "text": "said earlier"}]
        # the order the client asked for: root, first, between, said
        deleted = await request(client, {"type": "conversation.item.delete", "item_id": "item_between"})
        assert deleted == {**deleted, "type": "conversation.item.deleted", "item_id": "item_between"}
        gone = await request(client, {"type": "conversation.item.retrieve", "item_id": "item_between"})
        assert gone["error"]["code"] == "item_not_found"
        again = await request(client, {"type": "conversation.item.delete", "item_id": "item_between"})
        assert again["error"]["code"] == "item_not_found"
    # the store holds them where they were asked for (saved when the connection ends: wait for that)
    deadline, asked = asyncio.get_running_loop().time() + 10, ["item_root", "item_first", "item_said"]
    while (stored := [i.id for i in await stored_items(retail, session_id)]) != asked:
        assert asyncio.get_running_loop().time() < deadline, stored
        await asyncio.sleep(0.05)  # ok-sleep: poll interval


async def test_a_responses_assistant_item_is_a_conversation_item(retail: Stack) -> None:
    async with RawClient(retail) as client:
        await client.open()
        events = await client.turn("hello")
        output = next(e for e in events if e["type"] == "response.output_item.done")["item"]
        added = [e for e in events if e["type"] == "conversation.item.added" and e["item"]["role"] == "assistant"]
        done = [e for e in events if e["type"] == "conversation.item.done" and e["item"]["role"] == "assistant"]
        assert [e["item"]["id"] for e in added] == [e["item"]["id"] for e in done] == [output["id"]]
        user_id = next(e for e in events if e["type"] == "conversation.item.added")["item"]["id"]
        assert added[0]["previous_item_id"] == user_id

        got = await request(client, {"type": "conversation.item.retrieve", "item_id": output["id"]})
        assert got["item"]["content"] == output["content"]  # the committed item has the id the client saw
        cut = await request(client, {"type": "conversation.item.truncate", "item_id": output["id"],
                                     "content_index": 0, "audio_end_ms": 0})  # fmt: skip
        assert (cut["type"], cut["item_id"]) == ("conversation.item.truncated", output["id"])
        wrong = await request(client, {"type": "conversation.item.truncate", "item_id": user_id,
                                       "content_index": 0, "audio_end_ms": 0})  # fmt: skip
        assert wrong["error"]["code"] == "invalid_value"
        gone = await request(client, {"type": "conversation.item.delete", "item_id": output["id"]})
        assert gone["type"] == "conversation.item.deleted"


async def test_archived_items_are_not_found(tmp_path: Path) -> None:
    env = {"SWITCHBOARD_HISTORY_MAX_ITEMS": "4", "SWITCHBOARD_HISTORY_KEEP_ITEMS": "2"}
    with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:
        async with RawClient(stack) as client:
            await client.open()
            for i in range(5):
                await create(client, {**user_message(f"message {i}"), "id": f"item_{i}"})
            for event in ({"type": "conversation.item.retrieve", "item_id": "item_0"},
                          {"type": "conversation.item.delete", "item_id": "item_0"},
                          {"type": "conversation.item.truncate", "item_id": "item_0", "content_index": 0,
                           "audio_end_ms": 0}):  # fmt: skip
                error = await request(client, event)
                assert (error["type"], error["error"]["code"]) == ("error", "item_not_found"), error
            kept = await request(client, {"type": "conversation.item.retrieve", "item_id": "item_4"})
            assert kept["item"]["id"] == "item_4"
            root = await request(client, {"type": "conversation.item.create", "previous_item_id": "root",
                                          "item": user_message("too early")})  # fmt: skip
            assert root["error"]["code"] == "item_not_found"


async def create_or_error(client: RawClient, item: dict[str, Any]) -> dict[str, Any]:
    """Create ``item``: its ``conversation.item.done``, or the ``error`` that refused it."""
    await client.send({"type": "conversation.item.create", "item": item})
    while (got := await client.recv())["type"] not in {"error", "conversation.item.done"}:
        pass
    return got


async def test_an_archived_items_id_is_not_given_to_another_item(tmp_path: Path) -> None:
    """Item ids are unique in the whole conversation, not only in the window: an item reusing an archived
    item's id was acknowledged and then lost from the transcript (the archive keeps one item per id), and
    ``history_items`` no longer added up."""
    env = {"SWITCHBOARD_HISTORY_MAX_ITEMS": "4", "SWITCHBOARD_HISTORY_KEEP_ITEMS": "2"}
    with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:
        async with RawClient(stack) as client:
            session_id = (await client.open())["session_id"]
            for i in range(6):
                await create(client, {**user_message(f"message {i}"), "id": f"item_{i}"})
            reused = await create_or_error(client, {**user_message("again"), "id": "item_0"})
            assert reused["type"] == "error", reused  # it was acknowledged (conversation.item.done)
            assert (reused["error"]["code"], reused["error"]["param"]) == ("item_id_exists", "item.id")
            for i in range(6, 9):  # archived by this connection after it first read the archive
                await create(client, {**user_message(f"message {i}"), "id": f"item_{i}"})
            reused = await create_or_error(client, {**user_message("again"), "id": "item_5"})
            assert reused["type"] == "error" and reused["error"]["code"] == "item_id_exists", reused
        async with RawClient(stack, session_id=session_id) as again:  # a new connection: the archive is read
            info = await again.open()
            reused = await create_or_error(again, {**user_message("again"), "id": "item_1"})
            assert reused["type"] == "error" and reused["error"]["code"] == "item_id_exists", reused
            await create(again, {**user_message("a new one"), "id": "item_new"})
        ids = [f"item_{i}" for i in range(9)]
        deadline = asyncio.get_running_loop().time() + 10
        while (stored := [i.id for i in await stored_items(stack, session_id)]) != [*ids, "item_new"]:
            assert asyncio.get_running_loop().time() < deadline, stored
            await asyncio.sleep(0.05)  # ok-sleep: poll interval while the last item is saved
        assert info["history_items"] == len(ids)
