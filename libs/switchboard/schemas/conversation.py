"""Conversation items: what the caller and the agents said and did, in order."""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
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


class HistoryEncoder:
    """Encodes histories as JSON arrays of their items' :func:`item_json`, keeping recent encodings.

    A conversation's window is encoded again at every commit and in every agent request, each time the
    same items with a few new ones at the end. The encoding of the last history seen that started with
    a given item object is kept: a history that begins with its items (the same objects, in order)
    reuses those bytes and encodes only the items after them, so a turn costs a comparison of pointers
    and one copy instead of a lookup per item. Anything else (an item replaced, removed or archived) is
    encoded whole. A kept encoding holds its items, so its key (the first item's ``id()``) is never
    reused while it is kept.

    What is kept is bounded twice: the least recently used go once ``max_bytes`` of encodings are kept
    (they hold their items and the items' own JSON too, ~4-5x those bytes in all), and an encoding
    unused for ``max_idle_s`` goes at the next call, so an ended conversation does not linger.
    """

    def __init__(self, max_bytes: int, max_idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.max_idle_s = max_idle_s
        self.kept_bytes = 0
        self._clock = clock
        self._kept: OrderedDict[int, tuple[list[ConversationItem], bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def encode(self, history: list[ConversationItem]) -> bytes:
        now = self._clock()
        self._expire(now)
        if not history:
            return b"[]"
        key = id(history[0])
        hit = self._kept.pop(key, None)
        if hit is None:
            return self._keep(key, list(history), _encoded(history), now)
        items, encoded, _ = hit
        self.kept_bytes -= len(encoded)
        seen = len(items)
        if seen > len(history) or history[:seen] != items:  # identical objects compare without __eq__
            return self._keep(key, list(history), _encoded(history), now)
        if seen == len(history):
            return self._keep(key, items, encoded, now)
        return self._keep(key, list(history), encoded[:-1] + b"," + _encoded(history[seen:])[1:], now)

    def _keep(self, key: int, items: list[ConversationItem], data: bytes, now: float) -> bytes:
        self._kept[key] = (items, data, now)
        self.kept_bytes += len(data)
        while self.kept_bytes > self.max_bytes and len(self._kept) > 1:
            self.kept_bytes -= len(self._kept.popitem(last=False)[1][1])
        return data

    def _expire(self, now: float) -> None:
        while self._kept:
            key, (_, data, used) = next(iter(self._kept.items()))  # the least recently used
            if now - used <= self.max_idle_s:
                return
            del self._kept[key]
            self.kept_bytes -= len(data)


def _encoded(items: list[ConversationItem]) -> bytes:
    return b"[" + b",".join([item_json(i) for i in items]) + b"]"


HISTORY_CACHE_BYTES = 16 << 20
"""Encoded bytes kept for reuse: about one window per live session, ~1,000 windows of 16 KB."""

HISTORY_CACHE_IDLE_S = 120.0
"""An encoding unused this long is dropped (a conversation that ended, or a window that moved on)."""

history_json = HistoryEncoder(HISTORY_CACHE_BYTES, HISTORY_CACHE_IDLE_S).encode
"""``history`` as a JSON array of each item's :func:`item_json` (see :class:`HistoryEncoder`)."""


def dump_with_history(model: WireModel, history: list[ConversationItem]) -> bytes:
    """``model.to_bytes()`` for a model whose ``history`` field is ``history``, encoded by
    :func:`history_json` (the same bytes a parser reads back, in a different key order)."""
    data = model.model_dump(mode="json", exclude_none=True, exclude={"history"})
    data["history"] = orjson.Fragment(history_json(history))
    return orjson.dumps(data)
