"""What a turn added to the history it started from (``switchboard_edge.items``)."""

from __future__ import annotations

from switchboard.schemas import ConversationItem, MessageItem
from switchboard_edge.items import TurnBase, adopt_ids


def _said(item_id: str, role: str = "user") -> MessageItem:
    return MessageItem(id=item_id, role=role, text=f"text of {item_id}")  # type: ignore[arg-type]


def test_the_items_after_the_base_are_added() -> None:
    base = [_said("u1"), _said("a1", "assistant")]
    grown: list[ConversationItem] = [*base, _said("u2"), _said("a2", "assistant")]
    assert list(TurnBase(base).added(grown)) == [2, 3]
    assert list(TurnBase(base).added(list(base))) == []


def test_items_are_told_apart_by_id_once_the_oldest_were_archived() -> None:
    base = [_said("u1"), _said("a1", "assistant"), _said("u2")]
    window: list[ConversationItem] = [base[2], _said("mid"), base[1].model_copy(update={"text": "edited"})]
    assert list(TurnBase(base).added(window)) == [1]


def test_the_turns_new_answers_take_the_ids_the_client_was_shown() -> None:
    earlier = _said("a0", "assistant")
    base = [_said("u0"), earlier, _said("u1")]
    history: list[ConversationItem] = [*base, _said("tmp1", "assistant"), _said("tmp2", "assistant")]
    renamed = adopt_ids(history, TurnBase(base), ["shown1", "shown2"])
    assert [i.id for i in renamed] == ["u0", "a0", "u1", "shown1", "shown2"]
    assert renamed[1] is earlier
    assert adopt_ids(history, TurnBase(base), ["only one"]) is history  # counts differ: unchanged
