"""One response's server events: the only place that turns a turn's progress into Realtime events.

A :class:`ResponseWriter` has one lifecycle, ``new → started → (items) → done``, and owns the order of
its events: ``response.created`` first, each output item opened and closed in order, and exactly one
``response.done`` at the end, whatever ends the response (an answer, a failure, a client's cancel, a
takeover, a disconnect). Every ``finish_*`` method is idempotent: the first one wins, later calls do
nothing, so the session can always call :meth:`ResponseWriter.cancelled` in a ``finally``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from .orchestration import AgentFinished, ConductorEvent, HandoffMade, TextDelta
from .protocol import assistant_item, error_event, function_call_item, new_event_id, new_id
from .server_events import (
    OutputRef,
    PartRef,
    ServerEvent,
    SwitchboardHandoff,
)

log = logging.getLogger(__name__)

Send = Callable[[ServerEvent], Awaitable[None]]


class Phase(Enum):
    NEW = "new"
    STARTED = "started"
    DONE = "done"


@dataclass
class _OpenItem:
    item_id: str
    output_index: int
    agent: str
    text: list[str] = field(default_factory=list)


class ResponseWriter:
    """Writes one response's events in order and ends it with exactly one ``response.done``."""

    def __init__(
        self, send: Send, response_id: str, *, platform_events: bool = False, metadata: dict[str, str] | None = None,
        modalities: list[str] | None = None, previous_item_id: str | None = None, in_conversation: bool = True,
    ) -> None:  # fmt: skip
        self._send = send
        self.response_id = response_id
        self.platform_events = platform_events
        self.client_metadata = dict(metadata or {})
        """The client's ``response.metadata`` (from ``response.create``), echoed beside Switchboard's."""
        self.phase = Phase.NEW
        self.status: str | None = None
        """``completed``, ``failed`` or ``cancelled`` once done."""
        self.output: list[dict[str, Any]] = []
        self._open: _OpenItem | None = None
        self._previous = previous_item_id
        self.in_conversation = in_conversation
        """False for an out-of-band response (``conversation: "none"``): no conversation item events."""
        self.cancel_reason = "client_cancelled"
        """Why a cancel stops it (``turn_detected`` for a barge-in), set before the task is cancelled."""
        self._base = {"id": response_id, "object": "realtime.response", "output_modalities": modalities or ["text"]}

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    def follows(self, item_id: str | None) -> None:
        """The response's first item goes after ``item_id`` (set before it has any item: the caller's words
        it waited for joined the conversation after it started)."""
        if not self.output and self._open is None:
            self._previous = item_id

    async def start(self) -> None:
        """``response.created``; once."""
        if self.phase is not Phase.NEW:
            return
        self.phase = Phase.STARTED
        created = self._base | {"status": "in_progress", "output": []}
        await self._send({"type": "response.created", "event_id": new_event_id(), "response": created})

    async def on_event(self, ev: ConductorEvent) -> None:
        """The conductor's progress, as item events (ignored once the response is done)."""
        if self.phase is not Phase.STARTED:
            return
        if isinstance(ev, TextDelta):
            await self._delta(ev.agent, ev.text, ev.item_id)
        elif isinstance(ev, AgentFinished):
            await self._close_item(ev.ok)
        elif isinstance(ev, HandoffMade) and self.platform_events:
            d = ev.decision
            handoff: SwitchboardHandoff = {
                "type": "switchboard.handoff", "event_id": new_event_id(), "response_id": self.response_id,
                "from": d.source, "to": d.final_target, "requested": d.requested_target, "reason": d.reason,
                "outcome": d.outcome.value, "detail": d.detail, "depth": d.depth,
            }  # fmt: skip
            await self._send(handoff)

    async def function_call(self, item_id: str, call_id: str, name: str, arguments: str) -> None:
        """A call of one of the client's tools: the client runs it and answers with its output."""
        if self.phase is not Phase.STARTED:
            return
        await self._close_item(True)
        ids: OutputRef = {"response_id": self.response_id, "output_index": len(self.output)}
        added = function_call_item(item_id, call_id, name, "", "in_progress")
        await self._send({"type": "response.output_item.added", "event_id": new_event_id(), **ids, "item": added})
        await self._conversation_item("conversation.item.added", added)
        await self._send({
            "type": "response.function_call_arguments.delta", "event_id": new_event_id(), **ids, "item_id": item_id,
            "call_id": call_id, "delta": arguments,
        })  # fmt: skip
        await self._send({
            "type": "response.function_call_arguments.done", "event_id": new_event_id(), **ids, "item_id": item_id,
            "call_id": call_id, "name": name, "arguments": arguments,
        })  # fmt: skip
        done = function_call_item(item_id, call_id, name, arguments, "completed")
        await self._send({
            "type": "response.output_item.done", "event_id": new_event_id(), "response_id": self.response_id,
            "output_index": len(self.output), "item": done,
        })  # fmt: skip
        await self._conversation_item("conversation.item.done", done)
        self.output.append(done)
        self._previous = item_id

    async def completed(
        self, metadata: dict[str, str], usage: dict[str, int], max_output_tokens: int | None = None
    ) -> None:
        """``response.done``: ``completed``, or ``incomplete`` when the output reached ``max_output_tokens``."""
        if self.phase is not Phase.STARTED:
            return
        capped = max_output_tokens is not None and usage.get("output_tokens", 0) >= max_output_tokens
        await self._close_item(not capped)
        tokens = {"input_tokens": usage.get("input_tokens", 0), "output_tokens": usage.get("output_tokens", 0)}
        details = {"status_details": {"type": "incomplete", "reason": "max_output_tokens"}} if capped else {}
        await self._finish("incomplete" if capped else "completed", details | {
            "metadata": self.client_metadata | metadata,
            "usage": tokens | {"total_tokens": tokens["input_tokens"] + tokens["output_tokens"]},
        })  # fmt: skip

    async def failed(self, code: str, message: str, metadata: dict[str, str], *, client_error: bool = False) -> None:
        """An ``error`` event, then ``response.done`` with ``status: failed``."""
        if self.phase is Phase.DONE:
            return
        await self.start()
        await self._close_item(False)
        kind = "invalid_request_error" if client_error else "server_error"
        await self._send(error_event(code=code, message=message, kind=kind))
        await self._finish("failed", {
            "status_details": {"type": "failed", "error": {"type": kind, "code": code}},
            "metadata": self.client_metadata | metadata,
        })  # fmt: skip

    async def cancelled(self, reason: str | None = None) -> None:
        """``response.done`` with ``status: cancelled``; safe at any point, a no-op once done.

        Never raises: it runs in ``finally`` blocks where the client may already be gone.
        """
        if self.phase is Phase.DONE:
            return
        try:
            await self.start()
            await self._close_item(False)
            details = {"type": "cancelled", "reason": reason or self.cancel_reason}
            await self._finish("cancelled", {"status_details": details})
        except Exception:  # the client is already gone
            self.phase, self.status = Phase.DONE, "cancelled"
            log.debug("could not report cancellation", extra={"response_id": self.response_id}, exc_info=True)

    async def _finish(self, status: str, extra: dict[str, Any]) -> None:
        self.phase, self.status = Phase.DONE, status  # first: a send that fails must not allow a second done
        response = self._base | {"status": status, "output": self.output} | extra
        await self._send({"type": "response.done", "event_id": new_event_id(), "response": response})

    async def _delta(self, agent: str, text: str, item_id: str | None = None) -> None:
        item = self._open
        if item is None or item.agent != agent or (item_id is not None and item.item_id != item_id):
            await self._close_item(True)
            item = self._open = _OpenItem(item_id or new_id("item"), len(self.output), agent)
            ids: OutputRef = {"response_id": self.response_id, "output_index": item.output_index}
            added = assistant_item(item.item_id, "", "in_progress")
            await self._send({"type": "response.output_item.added", "event_id": new_event_id(), **ids, "item": added})
            await self._conversation_item("conversation.item.added", added)
            await self._send({
                "type": "response.content_part.added", "event_id": new_event_id(), **ids, "item_id": item.item_id,
                "content_index": 0, "part": {"type": "text", "text": ""},
            })  # fmt: skip
        item.text.append(text)
        await self._send({
            "type": "response.output_text.delta", "event_id": new_event_id(), "response_id": self.response_id,
            "item_id": item.item_id, "output_index": item.output_index, "content_index": 0, "delta": text,
        })  # fmt: skip

    async def _close_item(self, ok: bool) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        text = "".join(item.text)
        ids: PartRef = {"response_id": self.response_id, "item_id": item.item_id, "output_index": item.output_index}
        done = assistant_item(item.item_id, text, "completed" if ok else "incomplete")
        self.output.append(done)  # before the sends: a cancel mid-close still reports the item
        await self._send({
            "type": "response.output_text.done", "event_id": new_event_id(), **ids, "content_index": 0, "text": text
        })  # fmt: skip
        await self._send({
            "type": "response.content_part.done", "event_id": new_event_id(), **ids, "content_index": 0,
            "part": {"type": "text", "text": text},
        })  # fmt: skip
        await self._send({
            "type": "response.output_item.done", "event_id": new_event_id(), "response_id": self.response_id,
            "output_index": item.output_index, "item": done,
        })  # fmt: skip
        await self._conversation_item("conversation.item.done", done)
        self._previous = item.item_id

    async def _conversation_item(
        self, kind: Literal["conversation.item.added", "conversation.item.done"], item: dict[str, Any]
    ) -> None:
        if not self.in_conversation:
            return
        if kind == "conversation.item.added":
            await self._send({
                "type": kind, "event_id": new_event_id(), "previous_item_id": self._previous, "item": item
            })  # fmt: skip
        else:
            await self._send({
                "type": kind, "event_id": new_event_id(), "previous_item_id": self._previous, "item": item
            })  # fmt: skip

    def message_ids(self) -> list[str]:
        """Ids of the assistant message items the client was shown, in order (the open one included)."""
        ids = [o["id"] for o in self.output if o["type"] == "message"]
        return ids + ([self._open.item_id] if self._open is not None else [])
