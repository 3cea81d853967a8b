"""When a client's items reach the session KV (``SWITCHBOARD_ITEM_SAVE_MS``): with the response that follows
them (one KV write per text turn), after the save delay when none follows, when the connection ends, and
before a newer connection takes the session over; a lost item is reported, never dropped silently."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import yaml

from switchboard.bus import Bus
from switchboard.local.stack import Stack
from switchboard.state import SessionStore

from .client import RawClient, user_message
from .stacks import ROOT, make_stack

pytestmark = pytest.mark.system

AGENTS = ["triage", "generalist"]
WAIT_S = 10.0
"""Upper bound on waiting for a state to be stored (far above the 50 ms the default needs)."""


@pytest.fixture(scope="module")
def slow_save(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Items wait the longest save delay allowed (1 s) unless something stores them first."""
    with make_stack(tmp_path_factory.mktemp("slow"), agents=AGENTS, env={"SWITCHBOARD_ITEM_SAVE_MS": "1000"}) as s:
        yield s


@asynccontextmanager
async def session_store(stack: Stack) -> AsyncIterator[SessionStore]:
    async with Bus(stack.nats_urls, name="check") as bus:
        yield await SessionStore.open(bus.js)


async def stored_item_ids(store: SessionStore, session_id: str) -> tuple[list[str], int]:
    """Item ids of the stored window and its KV revision (``[], 0`` before the first write)."""
    loaded = await store.load(session_id)
    if loaded is None:
        return [], 0
    state, revision = loaded
    return [item.id for item in state.history], revision


async def until_stored(store: SessionStore, session_id: str, item_id: str) -> None:
    """Watch the session's KV entry until a stored window holds ``item_id``."""
    watcher = await store._kv.watch(session_id)
    try:
        async with asyncio.timeout(WAIT_S):
            async for entry in watcher:
                if entry is not None and entry.value and item_id in (await stored_item_ids(store, session_id))[0]:
                    return
    finally:
        await watcher.stop()


async def create_item(client: RawClient, text: str, item_id: str) -> None:
    await client.send({"type": "conversation.item.create", "item": {**user_message(text), "id": item_id}})
    await client.next("conversation.item.done")


@pytest.mark.parametrize(("save_ms", "writes_per_turn"), [(None, 1), ("0", 2)])
async def test_a_text_turn_is_stored_in_one_write_by_default(
    tmp_path: Path, save_ms: str | None, writes_per_turn: int
) -> None:
    env = {"SWITCHBOARD_ITEM_SAVE_MS": save_ms} if save_ms is not None else {}
    with make_stack(tmp_path, agents=AGENTS, env=env) as stack:
        async with session_store(stack) as store, RawClient(stack) as client:
            session_id = (await client.open())["session_id"]
            await client.turn("hello")
            revisions = [(await stored_item_ids(store, session_id))[1]]
            for n in range(3):
                await client.turn(f"hello again {n}")
                revisions.append((await stored_item_ids(store, session_id))[1])
            ids, _ = await stored_item_ids(store, session_id)
    assert [b - a for a, b in zip(revisions, revisions[1:], strict=False)] == [writes_per_turn] * 3
    assert len(ids) == 8  # every caller item and every answer is stored


async def test_an_item_with_no_response_is_stored_after_the_save_delay(retail: Stack) -> None:
    async with session_store(retail) as store, RawClient(retail) as client:
        session_id = (await client.open())["session_id"]
        await create_item(client, "just a note", "item_note")
        await until_stored(store, session_id, "item_note")  # the default delay is 50 ms; nothing else stores it


async def test_an_item_is_stored_when_its_connection_ends(slow_save: Stack) -> None:
    async with session_store(slow_save) as store:
        async with RawClient(slow_save) as client:
            session_id = (await client.open())["session_id"]
            await create_item(client, "said just before hanging up", "item_last")
        # stored before the connection's handler ended, not by the save timer a second later
        async with RawClient(slow_save, session_id=session_id) as again:
            info = await again.open()
        assert info["history_items"] == 1
        assert (await stored_item_ids(store, session_id))[0] == ["item_last"]


async def test_a_newer_connection_sees_the_items_of_the_one_it_takes_over(slow_save: Stack) -> None:
    async with RawClient(slow_save) as old:
        session_id = (await old.open())["session_id"]
        await create_item(old, "first words", "item_first")
        async with RawClient(slow_save, session_id=session_id) as new:
            info = await new.open()
            assert info["history_items"] == 1
            await new.send({"type": "conversation.item.retrieve", "item_id": "item_first"})
            got = await new.next("conversation.item.retrieved")
    assert got["item"]["content"][0]["text"] == "first words"


async def test_an_item_lost_to_another_writer_is_reported(slow_save: Stack) -> None:
    async with session_store(slow_save) as store, RawClient(slow_save, timeout_s=WAIT_S) as client:
        session_id = (await client.open())["session_id"]
        await client.turn("hello")
        await create_item(client, "written while someone else writes", "item_lost")
        state, revision = await store.load(session_id) or pytest.fail("the first turn was not stored")
        await store.save(state, revision)  # another writer moves the session on before the save timer fires
        error = await client.next("error")
        assert error["error"]["code"] == "session_conflict"
        assert "item_lost" not in (await stored_item_ids(store, session_id))[0]


def slow_triage(tmp: Path, delay_s: float) -> Path:
    """The retail scenarios folder with a triage model that answers ``delay_s`` late."""
    folder = tmp / "scenarios"
    shutil.copytree(ROOT / "scenarios", folder)
    path = folder / "retail" / "scenario.yaml"
    data = yaml.safe_load(path.read_text())
    triage = next(a for a in data["agents"] if a["name"] == "triage")
    triage["model"].setdefault("settings", {})["delay_s"] = delay_s
    path.write_text(yaml.safe_dump(data))
    return folder


async def test_an_item_is_stored_after_the_save_delay_even_while_its_response_runs(tmp_path: Path) -> None:
    """An edge that dies mid-response loses at most the save delay of what it acknowledged: the item is
    stored on its timer while a slow agent (0.3 s) is still answering, not only by the turn's commit."""
    env = {"SWITCHBOARD_SCENARIOS_DIR": str(slow_triage(tmp_path, 0.3))}
    with make_stack(tmp_path / "stack", agents=AGENTS, env=env) as stack:
        async with session_store(stack) as store, RawClient(stack, timeout_s=WAIT_S) as client:
            session_id = (await client.open())["session_id"]
            await create_item(client, "hello", "item_early")
            await client.send({"type": "response.create"})
            await until_stored(store, session_id, "item_early")
            ids, _ = await stored_item_ids(store, session_id)
            assert ids == ["item_early"]  # the answer is not there yet: stored by the timer, mid-response
            done = await client.next("response.done")
    assert done["response"]["status"] == "completed"


async def test_what_the_client_does_while_a_response_runs_is_kept_with_the_answer(tmp_path: Path) -> None:
    """The turn's commit keeps what the client did meanwhile (an item added, one deleted: the window has as
    many items as when the turn started), puts the answer after what the turn started from, and the answer
    keeps the id the client was shown; the same for a response on the client's own ``input``."""
    env = {"SWITCHBOARD_SCENARIOS_DIR": str(slow_triage(tmp_path, 1.0))}
    with make_stack(tmp_path / "stack", agents=AGENTS, env=env) as stack:
        async with session_store(stack) as store:
            on_input = {"type": "response.create", "response": {"input": [user_message("on my input")]}}
            for response in ({"type": "response.create"}, on_input):
                async with RawClient(stack, timeout_s=WAIT_S) as client:
                    session_id = (await client.open())["session_id"]
                    await create_item(client, "said first", "item_old")
                    await create_item(client, "hello", "item_early")
                    await client.send(response)
                    await client.next("response.created")
                    await client.send({"type": "conversation.item.delete", "item_id": "item_old"})
                    await client.next("conversation.item.deleted")
                    await create_item(client, "and one more thing", "item_mid")
                    assert "response.done" not in [e["type"] for e in client.events]  # all of it mid-response
                    done = await client.next("response.done")
                    ids, _ = await stored_item_ids(store, session_id)
                answer = done["response"]["output"][0]["id"]
                assert ids == ["item_early", answer, "item_mid"], response
