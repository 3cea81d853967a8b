"""A long conversation through real processes: the session's KV value stays bounded, nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.bus import Bus
from switchboard.schemas import MessageItem
from switchboard.state import SessionStore

from .client import open_session, say, sdk_client
from .stacks import make_stack

pytestmark = pytest.mark.system


async def test_a_long_call_keeps_a_small_window_and_the_whole_transcript(tmp_path: Path) -> None:
    env = {"SWITCHBOARD_HISTORY_MAX_ITEMS": "8", "SWITCHBOARD_HISTORY_KEEP_ITEMS": "4"}
    with make_stack(tmp_path, env=env) as stack:
        async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
            session_id = (await open_session(conn))["session_id"]
            for n in range(25):
                assert (await say(conn, f"hello number {n}")).agent == "triage"
            # the handoff chain still works with the start of the call long archived
            assert (await say(conn, "I want to return order A1001")).agent == "auth"
            reply = await say(conn, "jane@example.com 1234")
            assert reply.agent == "returns" and "A1001" in reply.text
        async with Bus(stack.nats_urls, name="check") as bus:
            store = await SessionStore.open(bus.js)
            loaded = await store.load(session_id)
            assert loaded is not None
            state = loaded[0]
            assert len(state.history) <= 8 and state.archived_items >= 40
            entry = await store._kv.get(session_id)
            assert entry.value is not None and len(entry.value) < 16 * 1024
            transcript = await store.transcript(session_id)
        said = [i.text for i in transcript if isinstance(i, MessageItem) and i.role == "user"]
        assert said[:25] == [f"hello number {n}" for n in range(25)]
        assert len(transcript) == state.archived_items + len(state.history)
        async with sdk_client(stack).realtime.connect(
            model="switchboard", extra_query={"session_id": session_id}
        ) as conn:
            info = await open_session(conn)
            assert info["history_items"] == len(transcript) and info["active_agent"] == "returns"
