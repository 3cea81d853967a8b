"""A conversation's history, kept so that a turn's cost does not grow with the conversation.

The session's KV value holds only a bounded **hot window** of the newest items: what agents and the
supervisor receive, and what a resumed session shows. When a commit pushes the window past its high
watermark (items or bytes), the oldest items are first appended to the ``SWITCHBOARD_HISTORY`` stream
and only then dropped from the window, down to the low watermark. The archive plus the window is the whole
transcript; the window alone is the declared policy for what goes to the models.

The items one commit archives are a **batch**: one message per item, each naming the batch (a fresh
random id, :data:`BATCH_HEADER`) and the batch before it (:data:`AFTER_HEADER`, the session's
``archive_head`` the commit started from), ``Nats-Msg-Id`` = session, batch and index, so a retried
publish is stored once. The commit then writes ``archive_head`` = its batch with compare-and-set. A commit
that loses its compare-and-set has appended a batch that no stored state names: readers follow the chain
back from the stored ``archive_head`` and never see it, and a redo appends a new batch. Messages without
a batch header were written before batches existed (schema < 1.4): they come first, each id once, as
they were read then.

A window never starts with a tool call's output whose call was archived: models reject an output
without its call, so such outputs leave the window together with their call.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import Header
from pydantic import TypeAdapter

from ..bus.rpc import message_headers
from ..bus.subjects import HISTORY_STREAM, HISTORY_SUBJECTS, history_items
from ..schemas import ConversationItem, FunctionCallOutputItem, SessionState
from ..schemas.conversation import history_json, item_json
from .errors import StateError
from .retry import StateRetry
from .streams import ensure_stream

log = logging.getLogger(__name__)

BATCH_HEADER = "Switchboard-Archive-Batch"
"""The batch an archived item belongs to: the items one commit archived."""
AFTER_HEADER = "Switchboard-Archive-After"
"""The batch before it in the session's chain; absent on the session's first batch."""

_item_adapter: TypeAdapter[ConversationItem] = TypeAdapter(ConversationItem)


class ArchiveBroken(StateError):
    """The batch a session's state names is not in the history stream (or its chain loops): the archive
    lost messages it was written, so the transcript cannot be given whole."""


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

    async def append(self, session_id: str, items: list[ConversationItem], *, after: str | None) -> str:
        """Store ``items`` durably, in order, as a new batch following batch ``after`` (the session's
        ``archive_head``); return the batch's id, for the commit to record. A retried publish is stored once."""
        subject = history_items(session_id)
        batch = secrets.token_hex(8)
        chain = {BATCH_HEADER: batch} | ({AFTER_HEADER: after} if after else {})
        for k, item in enumerate(items):
            headers = message_headers(session_id) | chain | {Header.MSG_ID.value: f"{session_id}.{batch}.{k}"}
            data = item_json(item)
            await self.retry.run(
                "history.append",
                lambda data=data, headers=headers: self._js.publish(subject, data, headers=headers),  # type: ignore[misc]
            )
        return batch

    async def read(
        self, session_id: str, *, head: str | None, count: int = 0, timeout_s: float = 2.0
    ) -> list[ConversationItem]:
        """Every archived item of a session whose stored state has ``archive_head`` = ``head`` and
        ``archived_items`` = ``count``, oldest first, each once: items from before batches existed, then the
        batches of the chain that ends at ``head``. Fewer than ``count`` that way means an edge older than
        batches wrote the session after a newer one archived (it drops ``archive_head``): then every archived
        item is read, each id once, as before batches (a lost commit's items included, none missing)."""
        retry = dataclasses.replace(self.retry, attempt_timeout_s=max(self.retry.attempt_timeout_s, 15 * timeout_s))
        return await retry.run("history.read", lambda: self._read(session_id, head, count, timeout_s))

    async def _read(self, session_id: str, head: str | None, count: int, timeout_s: float) -> list[ConversationItem]:
        subject = history_items(session_id)
        info = await self._js.stream_info(HISTORY_STREAM, subjects_filter=subject)
        expected = sum((info.state.subjects or {}).values())
        every: dict[str, ConversationItem] = {}
        unbatched: dict[str, ConversationItem] = {}
        batches: dict[str, tuple[str | None, list[ConversationItem]]] = {}
        if expected == 0:
            return []
        sub = await self._js.subscribe(subject, ordered_consumer=True, stream=HISTORY_STREAM)
        try:
            for _ in range(expected):
                msg = await sub.next_msg(timeout=timeout_s)
                item = _item_adapter.validate_json(msg.data)
                headers = msg.headers or {}
                batch = headers.get(BATCH_HEADER)
                if batch is None:  # written before batches: an append repeated after the dedup window is read once
                    unbatched.setdefault(item.id, item)
                else:
                    batches.setdefault(batch, (headers.get(AFTER_HEADER), []))[1].append(item)
                every.setdefault(item.id, item)
        finally:
            await sub.unsubscribe()
        chained = list(unbatched.values()) + _chain(session_id, batches, head)
        if len(chained) >= count:
            return chained
        log.warning("archive_head dropped by an older edge: every archived item read", extra={"session_id": session_id})
        return list(every.values())


def _chain(
    session_id: str, batches: dict[str, tuple[str | None, list[ConversationItem]]], head: str | None
) -> list[ConversationItem]:
    """The items of the batches from the session's first to ``head``, in order; batches not on that chain
    (appended by commits that then lost their compare-and-set) are left out."""
    chain: list[list[ConversationItem]] = []
    seen: set[str] = set()
    while head is not None:
        if head in seen or head not in batches:
            raise ArchiveBroken(f"session {session_id}: archived batch {head} is missing from {HISTORY_STREAM}")
        seen.add(head)
        head, items = batches[head]
        chain.append(items)
    if len(batches) > len(chain):
        log.debug("archived batches of lost commits left out", extra={"session_id": session_id})
    return [item for items in reversed(chain) for item in items]


async def full_history(state: SessionState, archive: HistoryArchive) -> list[ConversationItem]:
    """The whole conversation: archived items, then the window (an item in both is shown once: only a
    session archived before batches existed can have one)."""
    archived = await archive.read(state.session_id, head=state.archive_head, count=state.archived_items)
    hot = {i.id for i in state.history}
    return [i for i in archived if i.id not in hot] + list(state.history)
