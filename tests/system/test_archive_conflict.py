"""Archiving through real processes: a connection's commit that archives and then loses to another writer
leaves nothing in the transcript, and a turn keeps what a commit archived while it ran (the unit tests in
``tests/unit/test_archive_conflict.py`` go through every interleaving at the store)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from switchboard.local.stack import Stack

from .client import RawClient, user_message
from .stacks import make_stack
from .test_item_saving import WAIT_S, create_item, session_store, slow_triage

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def small_window(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A window of 4 items (2 kept), items saved 1 s after they are made, a triage that answers 1 s late."""
    tmp = tmp_path_factory.mktemp("archive")
    env = {
        "SWITCHBOARD_HISTORY_MAX_ITEMS": "4", "SWITCHBOARD_HISTORY_KEEP_ITEMS": "2",
        "SWITCHBOARD_ITEM_SAVE_MS": "1000", "SWITCHBOARD_SCENARIOS_DIR": str(slow_triage(tmp, 1.0)),
    }  # fmt: skip
    with make_stack(tmp / "stack", agents=["triage", "generalist"], env=env) as stack:
        yield stack


async def four_stored_items(client: RawClient) -> None:
    """item_0 .. item_3, all stored (the second of two unsaved items is stored with the first at once)."""
    for k in range(4):
        await create_item(client, f"message {k}", f"item_{k}")


async def test_a_commit_that_archives_and_loses_leaves_nothing_in_the_transcript(small_window: Stack) -> None:
    async with session_store(small_window) as store, RawClient(small_window, timeout_s=WAIT_S) as client:
        session_id = (await client.open())["session_id"]
        await four_stored_items(client)
        state, revision = await store.load(session_id) or pytest.fail("the items were not stored")
        assert [i.id for i in state.history] == [f"item_{k}" for k in range(4)]
        await store.save(state.model_copy(update={"history": state.history[1:]}), revision)  # another writer
        await client.send({"type": "conversation.item.create", "item": {**user_message("four"), "id": "item_4"}})
        error = await client.next("error")  # its commit archived item_0 .. item_2, then lost the CAS
        assert error["error"]["code"] == "session_conflict"
        assert [i.id for i in await store.transcript(session_id)] == ["item_1", "item_2", "item_3"]

        for k in (4, 5):  # the client redoes it: this commit archives again, and wins
            await create_item(client, f"message {k}", f"item_{k}")
        loaded = await store.load(session_id) or pytest.fail("the session is gone")
        assert loaded[0].archived_items == 3
        transcript = [i.id for i in await store.transcript(session_id)]
        assert transcript == [f"item_{k}" for k in range(1, 6)]
        assert loaded[0].archived_items + len(loaded[0].history) == len(transcript)


async def test_a_turn_keeps_what_a_commit_archived_while_it_ran(small_window: Stack) -> None:
    async with session_store(small_window) as store, RawClient(small_window, timeout_s=WAIT_S) as client:
        session_id = (await client.open())["session_id"]
        await four_stored_items(client)
        await client.send({"type": "response.create"})
        await client.next("response.created")
        await create_item(client, "said while the answer was made", "item_4")  # archives item_0 .. item_2
        assert "response.done" not in [e["type"] for e in client.events]  # all of it mid-response
        done = await client.next("response.done")
        assert done["response"]["status"] == "completed"
        answer = done["response"]["output"][0]["id"]
        loaded = await store.load(session_id) or pytest.fail("the session is gone")
        transcript = [i.id for i in await store.transcript(session_id)]
        said = [f"item_{k}" for k in range(4)]
        assert transcript[:4] == said and transcript[-2:] == [answer, "item_4"]  # the turn's items between
        assert len(set(transcript)) == len(transcript)
        assert loaded[0].archived_items + len(loaded[0].history) == len(transcript)
