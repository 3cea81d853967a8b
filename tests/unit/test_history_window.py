"""The hot history window: what stays in the session's KV value, what moves to the history stream."""

from __future__ import annotations

from pathlib import Path

import nats
import orjson
import pytest

from switchboard.local import NatsServer
from switchboard.schemas import (
    ConversationItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    SessionState,
    conversation,
)
from switchboard.schemas.conversation import HistoryEncoder, history_json
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


def _wire(history: list[ConversationItem]) -> list[object]:
    return [i.model_dump(mode="json", exclude_none=True) for i in history]


def test_an_encoded_history_is_its_items_whatever_changed_since_the_last_encoding() -> None:
    history: list[ConversationItem] = list(_messages(6))
    steps = [
        lambda h: h,  # the same list again
        lambda h: [*h, MessageItem(id="n1", role="user", text="new")],  # grown
        lambda h: [*h[:3], h[3].model_copy(update={"text": "edited"}), *h[4:]],  # one item replaced
        lambda h: h[:2] + h[3:],  # one removed
        lambda h: h[:-1],  # shortened
        lambda h: h[2:],  # the oldest archived
        lambda h: [MessageItem(id=h[0].id, role="user", text="same id, other text"), *h[1:]],
        lambda h: [],
    ]
    for step in steps:
        history = step(list(history))
        assert orjson.loads(history_json(history)) == _wire(history)


def test_a_grown_history_encodes_only_its_new_items(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[str] = []
    real = conversation.item_json
    monkeypatch.setattr(conversation, "item_json", lambda item: encoded.append(item.id) or real(item))
    history: list[ConversationItem] = list(_messages(40))
    history_json(history)
    encoded.clear()
    for turn in range(3):
        history = [
            *history,
            MessageItem(id=f"u{turn}", role="user", text="hi"),
            MessageItem(id=f"a{turn}", role="assistant", text="ok"),
        ]
        history_json(history)
        history_json(list(history))  # the turn's request and its commit: the same items
    assert encoded == ["u0", "a0", "u1", "a1", "u2", "a2"]


def test_the_encodings_kept_are_bounded_in_bytes() -> None:
    encoder = HistoryEncoder(max_bytes=1000, max_idle_s=60)
    for n in range(20):
        size = len(encoder.encode([MessageItem(id=f"s{n:02d}", role="user", text="hello " * 20)]))
    assert len(encoder) == 1000 // size  # the newest ones
    assert encoder.kept_bytes == len(encoder) * size


def test_a_new_history_is_never_given_the_bytes_of_a_freed_one() -> None:
    """Each history below is freed before the next is built, so new items often reuse the freed ones'
    addresses: the encoder must never take one for the other (it keeps the objects of what it keeps)."""
    encoder = HistoryEncoder(max_bytes=400, max_idle_s=60)
    for n in range(300):
        history: list[ConversationItem] = [MessageItem(id=f"i{n}", role="user", text=f"turn {n}")]
        assert orjson.loads(encoder.encode(history)) == _wire(history)
        del history  # freed now: the next iteration's item is likely made at the same address


def test_an_encoding_unused_for_long_is_dropped() -> None:
    now = [0.0]
    encoder = HistoryEncoder(max_bytes=1 << 20, max_idle_s=60, clock=lambda: now[0])
    ended, live = _messages(4), _messages(4)
    encoder.encode(ended)
    for _ in range(3):
        now[0] += 30
        live = [*live, MessageItem(id=f"n{now[0]:.0f}", role="user", text="more")]
        encoder.encode(live)
    assert len(encoder) == 1  # the ended conversation's went 90 s after its last use; the live one stays
    assert encoder.kept_bytes == len(encoder.encode(live))


def test_the_byte_watermark_counts_the_items_wire_bytes() -> None:
    items = _messages(4, size=1000)
    exact = len(history_json(items))
    assert HistoryWindow(max_items=64, keep_items=48, max_bytes=exact).split(items) == ([], items)
    archived, _ = HistoryWindow(max_items=64, keep_items=48, max_bytes=exact - 1).split(items)
    assert archived


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
