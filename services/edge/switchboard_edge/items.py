"""Conversation items between the Realtime wire shape and the session's history.

The session keeps a bounded hot window of its newest items (``switchboard.state.history``); older ones
are archived. Items are found, inserted, deleted and truncated in the window only: an archived item is
``item_not_found``, as documented in docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from switchboard.schemas import ConversationItem, FunctionCallItem, FunctionCallOutputItem, MessageItem

from .client_events import ClientItem, FunctionCall, FunctionCallOutput
from .protocol import ProtocolError, assistant_item, function_call_item, user_item

ROOT = "root"
"""``previous_item_id`` that inserts at the beginning of the conversation (GA)."""


def from_client(item: ClientItem, item_id: str, text: str | None = None) -> ConversationItem:
    """The history item for a client's item; ``text`` replaces a message's text (a redacted copy)."""
    if isinstance(item, FunctionCall):
        return FunctionCallItem(id=item_id, call_id=item.call_id, name=item.name, arguments=item.arguments)
    if isinstance(item, FunctionCallOutput):
        return FunctionCallOutputItem(id=item_id, call_id=item.call_id, output=item.output)
    return MessageItem(id=item_id, role=item.role, text=item.text if text is None else text)


def to_realtime(item: ConversationItem) -> dict[str, Any]:
    """The GA ``realtime.item`` for a history item."""
    if isinstance(item, FunctionCallItem):
        return function_call_item(item.id, item.call_id, item.name, item.arguments, "completed")
    if isinstance(item, FunctionCallOutputItem):
        return {"id": item.id, "type": "function_call_output", "object": "realtime.item", "status": "completed",
                "call_id": item.call_id, "output": item.output}  # fmt: skip
    if item.role == "assistant":
        return assistant_item(item.id, item.text, "completed")
    return user_item(item.id, item.text) | {"role": item.role}


def position(history: list[ConversationItem], previous_item_id: str | None, archived: int) -> int:
    """Where an item goes: after ``previous_item_id``, at the start for ``root``, else at the end."""
    if previous_item_id is None:
        return len(history)
    if previous_item_id == ROOT:
        if archived:
            raise ProtocolError(
                "item_not_found", "previous_item_id 'root': the conversation's first items are archived",
                param="previous_item_id",
            )  # fmt: skip
        return 0
    for i, existing in enumerate(history):
        if existing.id == previous_item_id:
            return i + 1
    raise ProtocolError(
        "item_not_found", f"previous item {previous_item_id!r} not found (or no longer in the session's window)",
        param="previous_item_id",
    )  # fmt: skip


def find(history: list[ConversationItem], item_id: str) -> int:
    for i, existing in enumerate(history):
        if existing.id == item_id:
            return i
    raise ProtocolError(
        "item_not_found", f"item {item_id!r} not found (or no longer in the session's window)", param="item_id"
    )


def previous_id(history: list[ConversationItem], index: int) -> str | None:
    return history[index - 1].id if index > 0 else None


def is_assistant_message(item: ConversationItem) -> bool:
    return isinstance(item, MessageItem) and item.role == "assistant"


class TurnBase:
    """The history a turn started from, to tell which items the turn added and where they go.

    A history that still begins with these very items (the conductor's, always) is read by position,
    without building a set of the window's ids at every turn; any other is read by id."""

    def __init__(self, history: list[ConversationItem]) -> None:
        self.history = history

    @cached_property
    def ids(self) -> set[str]:
        return {i.id for i in self.history}

    def added(self, history: list[ConversationItem]) -> Sequence[int]:
        """Where ``history`` has items that are not in the base, in order."""
        start = len(self.history)
        if history[:start] == self.history:  # the same objects compare without __eq__
            return range(start, len(history))
        ids = self.ids
        return [i for i, item in enumerate(history) if item.id not in ids]


def adopt_ids(produced: list[ConversationItem], shown: list[str]) -> list[ConversationItem]:
    """Give a turn's new assistant messages (``produced``: what the turn added) the ids the client was shown,
    so it can retrieve, delete or truncate them (a failed attempt's text is one of them); unchanged when the
    counts differ."""
    new = [i for i, item in enumerate(produced) if is_assistant_message(item)]
    if not new or len(new) != len(shown):
        return produced
    renamed = list(produced)
    for index, item_id in zip(new, shown, strict=True):
        renamed[index] = produced[index].model_copy(update={"id": item_id})
    return renamed


def merged(current: list[ConversationItem], base: TurnBase, produced: list[ConversationItem]) -> list[ConversationItem]:
    """The window to commit when a turn that started from ``base`` produced ``produced`` and the window is now
    ``current``: whatever the client did meanwhile (items added, deleted or cut, the oldest archived) stays, and
    the turn's items follow the last of its starting items still there (lead the window when none is)."""
    if current is base.history:  # nothing changed meanwhile
        return [*current, *produced]
    ids = base.ids
    at = next((i + 1 for i in range(len(current) - 1, -1, -1) if current[i].id in ids), 0)
    return [*current[:at], *produced, *current[at:]]
