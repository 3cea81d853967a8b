"""The hot history window: what stays in the session's KV value, what moves to the history stream."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from switchboard.local import NatsServer
from switchboard.schemas import FunctionCallItem, FunctionCallOutputItem, MessageItem, SessionState
from switchboard.state import HistoryWindow, SessionStore


def _messages(n: int, size: int = 10) -> list[MessageItem]:
    return [MessageItem(id=f"i{k}", role="user" if k % 2 == 0 else "assistant", text="x" * size) for k in range(n)]


def test_nothing_moves_while_both_watermarks_hold() -> None:
    items = _messages(8)
    assert HistoryWindow(max_items=8, keep_items=4).split(items) == ([], items)


def test_past_the_item_watermark_the_oldest_move_down_to_the_low_watermark() -> None:
    items = _messages(9)
    archived, window = HistoryWindow(max_items=8, keep_items=4).split(items)
    assert [i.id for i in archived] == ["i0", "i1", "i2", "i3", "i4"]
    assert [i.id for i in window] == ["i5", "i6", "i7", "i8"]


def test_past_the_byte_watermark_items_move_even_below_the_item_count() -> None:
    items = _messages(6, size=3000)  # ~18 KB in 6 items, max 8 KB
    archived, window = HistoryWindow(max_items=64, keep_items=48, max_bytes=8192).split(items)
    assert archived and window and archived + window == items
    assert sum(len(i.model_dump_json()) for i in window) <= 8192


def test_a_tool_output_never_starts_the_window_without_its_call() -> None:
    items: list = [  # type: ignore[type-arg]
        *_messages(3),
        FunctionCallItem(id="c", call_id="call_1", name="lookup", arguments="{}"),
        FunctionCallOutputItem(id="o", call_id="call_1", output="{}"),
        *_messages(3),
    ]
    items[-3:] = [MessageItem(id=f"m{k}", role="user", text="y") for k in range(3)]
    archived, window = HistoryWindow(max_items=6, keep_items=4).split(items)
    assert not isinstance(window[0], FunctionCallOutputItem)
    assert [i.id for i in archived + window] == [i.id for i in items]


@pytest.mark.parametrize(("max_items", "keep"), [(4, 5), (4, 0)])
def test_bad_watermarks_are_refused(max_items: int, keep: int) -> None:
    with pytest.raises(ValueError, match="keep_items"):
        HistoryWindow(max_items=max_items, keep_items=keep)


async def test_a_long_conversation_keeps_a_bounded_value_and_the_whole_transcript(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as server:
        nc = await nats.connect(server.url)
        try:
            store = await SessionStore.open(nc.jetstream(), window=HistoryWindow(max_items=16, keep_items=8))
            state = SessionState(session_id="s1", scenario="t", active_agent="a", created_at=0, updated_at=0)
            revision = 0
            for k in range(500):
                item = MessageItem(id=f"i{k}", role="user", text=f"message {k}")
                state = state.model_copy(update={"history": [*state.history, item]})
                state, revision = await store.commit(state, revision)
                assert len(state.history) <= 16
            entry = await store._kv.get("s1")
            assert entry.value is not None and len(entry.value) < 4096  # 500 items, and the value stays small
            loaded, _ = await store.load("s1")  # type: ignore[misc]
            assert loaded.archived_items + len(loaded.history) == 500
            assert [i.id for i in await store.transcript("s1")] == [f"i{k}" for k in range(500)]
        finally:
            await nc.close()
