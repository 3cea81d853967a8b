"""A conversation's history, kept so that a turn's cost does not grow with the conversation.

The session's KV value holds only a bounded **hot window** of the newest items: what agents and the
supervisor receive, and what a resumed session shows. When a commit pushes the window past its high
watermark (items or bytes), the oldest items are first appended to the ``SWITCHBOARD_HISTORY`` stream
(one message per item, ``Nats-Msg-Id`` = session and item id, so a retried append is stored once) and
only then dropped from the window, down to the low watermark. The archive plus the window is the whole
transcript; the window alone is the declared policy for what goes to the models.

A window never starts with a tool call's output whose call was archived: models reject an output
without its call, so such outputs leave the window together with their call.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import Header
from pydantic import TypeAdapter

from ..bus.rpc import message_headers
from ..bus.subjects import HISTORY_STREAM, HISTORY_SUBJECTS, history_items
from ..schemas import ConversationItem, FunctionCallOutputItem, SessionState
from ..schemas.conversation import history_json, item_json
from .retry import StateRetry
from .streams import ensure_stream

log = logging.getLogger(__name__)

_item_adapter: TypeAdapter[ConversationItem] = TypeAdapter(ConversationItem)


@dataclass(frozen=True)
class HistoryWindow:
    """How much history stays hot (in the session's KV value and in every agent request)."""

    max_items: int = 64
    """High watermark: a commit that leaves more items than this archives the oldest ones."""
    keep_items: int = 48
    """Low watermark: items left in the window after archiving (archiving happens in batches)."""
    max_bytes: int = 256 * 1024
    """High watermark in serialized bytes, so one KV value stays far below NATS' 1 MiB message limit."""

    def __post_init__(self) -> None:
        if not 1 <= self.keep_items <= self.max_items:
            raise ValueError(
                f"history window: need 1 <= keep_items ({self.keep_items}) <= max_items ({self.max_items})"
            )
        if self.max_bytes < 4096:
            raise ValueError(f"history window: max_bytes ({self.max_bytes}) must be at least 4096")

    def split(self, items: list[ConversationItem]) -> tuple[list[ConversationItem], list[ConversationItem]]:
        """``(to_archive, window)``: nothing to archive while both watermarks hold. Bytes are the items' wire
        JSON (``history_json``, which the commit then reuses), so the check costs little at every commit."""
        if len(items) <= self.max_items and len(history_json(items)) <= self.max_bytes:
            return [], items
        sizes = [len(item_json(i)) + 1 for i in items]  # + 1: the comma between items
        cut = max(0, len(items) - self.keep_items)
        budget = self.max_bytes * self.keep_items // self.max_items
        while cut < len(items) - 1 and sum(sizes[cut:]) > budget:
            cut += 1
        while cut < len(items) - 1 and isinstance(items[cut], FunctionCallOutputItem):
            cut += 1  # its call is archived: the output goes with it
        return items[:cut], items[cut:]


class HistoryArchive:
    """The ``SWITCHBOARD_HISTORY`` stream: items that left their session's window, oldest first."""

    def __init__(self, js: JetStreamContext, retry: StateRetry | None = None) -> None:
        self._js = js
        self.retry = retry or StateRetry()

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int = 1, retry: StateRetry | None = None) -> HistoryArchive:
        retry = retry or StateRetry()

        await ensure_stream(js, HISTORY_STREAM, HISTORY_SUBJECTS, replicas=replicas, retry=retry)
        return cls(js, retry)

    async def append(self, session_id: str, items: list[ConversationItem]) -> None:
        """Store ``items`` durably, in order; a retried or repeated append of an item is stored once."""
        subject = history_items(session_id)
        for item in items:
            headers = message_headers(session_id) | {Header.MSG_ID.value: f"{session_id}.{item.id}"}
            data = item_json(item)
            await self.retry.run(
                "history.append",
                lambda data=data, headers=headers: self._js.publish(subject, data, headers=headers),  # type: ignore[misc]
            )

    async def read(self, session_id: str, *, timeout_s: float = 2.0) -> list[ConversationItem]:
        """Every archived item of a session, oldest first, each once."""
        retry = dataclasses.replace(self.retry, attempt_timeout_s=max(self.retry.attempt_timeout_s, 15 * timeout_s))
        return await retry.run("history.read", lambda: self._read(session_id, timeout_s))

    async def _read(self, session_id: str, timeout_s: float) -> list[ConversationItem]:
        subject = history_items(session_id)
        info = await self._js.stream_info(HISTORY_STREAM, subjects_filter=subject)
        expected = sum((info.state.subjects or {}).values())
        out: dict[str, ConversationItem] = {}
        if expected == 0:
            return []
        sub = await self._js.subscribe(subject, ordered_consumer=True, stream=HISTORY_STREAM)
        try:
            for _ in range(expected):
                item = _item_adapter.validate_json((await sub.next_msg(timeout=timeout_s)).data)
                out.setdefault(item.id, item)  # an append repeated after the dedup window is read once
        finally:
            await sub.unsubscribe()
        return list(out.values())


async def full_history(state: SessionState, archive: HistoryArchive) -> list[ConversationItem]:
    """The whole conversation: archived items, then the window (an item in both is shown once)."""
    archived = await archive.read(state.session_id)
    hot = {i.id for i in state.history}
    return [i for i in archived if i.id not in hot] + list(state.history)
