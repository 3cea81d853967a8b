"""Coalesced text deltas: the chunks a model produces close together travel as one message.

A model (or the offline provider) hands the loop its text in small chunks, often many in the same
instant. Sending each one as its own bus message, and then as its own client event, costs a NATS
message, a parse and a WebSocket frame per chunk. :class:`DeltaCoalescer` buffers chunks and sends
them joined: with ``flush_after_s == 0`` what arrives within one event-loop step (no added latency),
otherwise what arrives within ``flush_after_s`` of the first unsent chunk. :meth:`DeltaCoalescer.aclose`
sends what is left, so the text always reaches the caller before the turn's result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class DeltaCoalescer:
    """Joins text chunks and hands them to ``publish`` in order, never two at once."""

    def __init__(self, publish: Callable[[str], Awaitable[None]], flush_after_s: float = 0.0) -> None:
        if flush_after_s < 0:
            raise ValueError("flush_after_s must be >= 0")
        self._publish = publish
        self._after = flush_after_s
        self._parts: list[str] = []
        self._timer: asyncio.Handle | None = None
        self._lock = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()
        self.sent = 0
        """Messages published so far."""
        self.published: list[str] = []
        """The text published so far, in order."""

    def add(self, text: str) -> None:
        """Buffer ``text``; it is published with the chunks that follow it within the flush interval."""
        if not text:
            return
        self._parts.append(text)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._after, self._due) if self._after > 0 else loop.call_soon(self._due)

    def _due(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self._flush_logged())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:  # the turn's own send of its result reports a broken connection
            log.warning("text delta not sent", exc_info=True)

    async def flush(self) -> None:
        """Publish the buffered text now (after any flush already under way)."""
        async with self._lock:
            if not self._parts:
                return
            text = "".join(self._parts)
            self._parts.clear()
            self.sent += 1
            self.published.append(text)
            await self._publish(text)

    async def close_into(self, full_text: str) -> bool:
        """End without publishing the unsent text when ``full_text`` is exactly what was published plus
        it: the receiver takes that tail from the result (one message fewer). Returns False, having
        published it as :meth:`aclose` does, when ``full_text`` says something else."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushes:
            await asyncio.wait(set(self._flushes))
        async with self._lock:
            if full_text == "".join(self.published) + "".join(self._parts):
                self._parts.clear()
                return True
        await self.aclose()
        return False

    async def aclose(self) -> None:
        """Publish what is left and wait for flushes under way: afterwards every chunk has been sent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.flush()
        if self._flushes:
            await asyncio.wait(set(self._flushes))
