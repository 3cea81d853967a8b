"""Conversation items: what the caller and the agents said and did, in order."""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Annotated, Any, Literal

import orjson
from pydantic import Field, TypeAdapter

from ._base import WireModel


class MessageItem(WireModel):
    """A text message from the caller, an agent or the system."""

    type: Literal["message"] = "message"
    id: str
    """Item id, unique within the session (Realtime-style ``item_...``)."""
    role: Literal["user", "assistant", "system"]
    """Who said it."""
    text: str
    """The message text (for voice, the transcript)."""
    agent: str | None = None
    """For assistant messages: the agent that spoke."""


class FunctionCallItem(WireModel):
    """A tool call an agent made during a turn."""

    type: Literal["function_call"] = "function_call"
    id: str
    """Item id."""
    call_id: str
    """Correlates the call with its output."""
    name: str
    """Tool name."""
    arguments: str
    """JSON-encoded arguments, as the model produced them."""
    agent: str | None = None
    """The agent that called the tool."""


class FunctionCallOutputItem(WireModel):
    """The result of a tool call."""

    type: Literal["function_call_output"] = "function_call_output"
    id: str
    """Item id."""
    call_id: str
    """The ``call_id`` of the call this answers."""
    output: str
    """JSON-encoded tool output (or an error object)."""
    agent: str | None = None
    """The agent whose tool produced it."""


ConversationItem = Annotated[MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")]
"""Any item in a session's history."""

conversation_item_adapter: TypeAdapter[ConversationItem] = TypeAdapter(ConversationItem)


_item_json: dict[int, tuple[weakref.ref[Any], bytes]] = {}


def item_json(item: ConversationItem) -> bytes:
    """An item's wire JSON, serialized once per item object.

    Items are frozen, and a conversation's items are re-sent with every commit and every agent request
    while they stay in the window: serializing each object once turns that cost from the window's
    length into the number of new items. The entry goes when the item object does.
    """
    key = id(item)
    hit = _item_json.get(key)
    if hit is not None and hit[0]() is item:
        return hit[1]
    data = item.to_bytes()
    _item_json[key] = (weakref.ref(item, lambda _gone, key=key: _item_json.pop(key, None)), data)  # type: ignore[misc]
    return data


HISTORY_CACHE_SIZE = 1024
"""Histories whose encoding :func:`history_json` keeps (about one per live session)."""

_history_json: OrderedDict[int, tuple[list[ConversationItem], bytes]] = OrderedDict()


def history_json(history: list[ConversationItem]) -> bytes:
    """``history`` as a JSON array of each item's :func:`item_json`.

    A conversation's window is encoded again at every commit and in every agent request, each time the
    same items with a few new ones at the end. The encoding of the last history seen that started with
    the same item object is kept: a history that begins with its items (the same objects, in order)
    reuses those bytes and encodes only the items after them, so a turn costs a comparison of pointers
    and one copy instead of a lookup per item. Anything else (an item replaced, removed or archived) is
    encoded whole. The kept copy holds its items, so a key (the first item's ``id()``) is never reused
    while its entry lives.
    """
    if not history:
        return b"[]"
    key = id(history[0])
    hit = _history_json.get(key)
    data: bytes | None = None
    if hit is not None:
        items, encoded = hit
        seen = len(items)
        if seen <= len(history) and history[:seen] == items:  # identical objects compare without __eq__
            if seen == len(history):
                _history_json.move_to_end(key)
                return encoded
            data = encoded[:-1] + b"," + b",".join([item_json(i) for i in history[seen:]]) + b"]"
    if data is None:
        data = b"[" + b",".join([item_json(i) for i in history]) + b"]"
    _history_json[key] = (list(history), data)
    _history_json.move_to_end(key)
    if len(_history_json) > HISTORY_CACHE_SIZE:
        _history_json.popitem(last=False)
    return data


def dump_with_history(model: WireModel, history: list[ConversationItem]) -> bytes:
    """``model.to_bytes()`` for a model whose ``history`` field is ``history``, encoded by
    :func:`history_json` (the same bytes a parser reads back, in a different key order)."""
    data = model.model_dump(mode="json", exclude_none=True, exclude={"history"})
    data["history"] = orjson.Fragment(history_json(history))
    return orjson.dumps(data)
