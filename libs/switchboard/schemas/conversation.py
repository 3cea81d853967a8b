"""Conversation items: what the caller and the agents said and did, in order."""

from __future__ import annotations

import weakref
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


def dump_with_history(model: WireModel, history: list[ConversationItem]) -> bytes:
    """``model.to_bytes()`` for a model whose ``history`` field is ``history``, with each item's JSON
    from :func:`item_json` (the same bytes a parser reads back, in a different key order)."""
    data = model.model_dump(mode="json", exclude_none=True, exclude={"history"})
    data["history"] = [orjson.Fragment(item_json(i)) for i in history]
    return orjson.dumps(data)
