"""What a turn added to the history it started from (``switchboard_edge.items``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from switchboard.schemas import ConversationItem, FunctionCallItem, MessageItem
from switchboard_edge.items import TurnBase, adopt_ids, merged


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
    call = FunctionCallItem(id="c1", call_id="call_1", name="lookup", arguments="{}")
    produced: list[ConversationItem] = [_said("tmp1", "assistant"), call, _said("tmp2", "assistant")]
    renamed = adopt_ids(produced, ["shown1", "shown2"])
    assert [i.id for i in renamed] == ["shown1", "c1", "shown2"]
    assert renamed[1] is call
    assert adopt_ids(produced, ["only one"]) is produced  # counts differ: unchanged


BASE = [_said("u1"), _said("a1", "assistant")]
ANSWER = _said("shown", "assistant")


@pytest.mark.parametrize(
    ("meanwhile", "expected"),
    [
        (lambda h: h, ["u1", "a1", "shown"]),  # nothing happened meanwhile
        (lambda h: [*h, _said("mid")], ["u1", "a1", "shown", "mid"]),  # the client added an item
        (lambda h: [h[0], _said("mid")], ["u1", "shown", "mid"]),  # ... and deleted one: same count
        (lambda h: [h[1], _said("mid")], ["a1", "shown", "mid"]),  # the oldest archived by a mid-turn commit
        (lambda h: [_said("m1"), _said("m2")], ["shown", "m1", "m2"]),  # all it started from gone
        (lambda h: [*h[:1], _said("root-mid"), *h[1:]], ["u1", "root-mid", "a1", "shown"]),  # inserted before
    ],
)
def test_a_turns_items_join_what_the_window_became_meanwhile(
    meanwhile: Callable[[list[ConversationItem]], list[ConversationItem]], expected: list[str]
) -> None:
    base: list[ConversationItem] = list(BASE)
    current = meanwhile(base)
    assert [i.id for i in merged(current, TurnBase(base), [ANSWER])] == expected


def test_an_item_cut_meanwhile_stays_cut() -> None:
    base: list[ConversationItem] = list(BASE)
    cut = base[1].model_copy(update={"text": "what was heard"})
    window = merged([base[0], cut], TurnBase(base), [ANSWER])
    assert window == [base[0], cut, ANSWER]
