"""Server events that leave in the same event-loop step share one socket write.

A response's events come in bursts: when the agent's first words arrive the edge sends
``response.output_item.added``, ``conversation.item.added``, ``response.content_part.added`` and the
first delta, one after another without waiting. uvicorn writes each WebSocket frame to the socket as
it is sent, one ``send()`` system call per event; on loopback and on a busy host that call, which also
delivers the bytes to the peer, was the largest single cost of a turn in the edge's profile. Here the
frames of one loop step are joined and written once, at the end of the step: the same frames, in
the same order, a few microseconds later, with a fraction of the system calls.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class CoalescingTransport:
    """Wraps a transport: ``write`` buffers until the end of the current loop step; the rest passes
    through (``close`` writes what is buffered first)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self.writes = 0
        """Socket writes made (each carrying the frames of one loop step)."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        if not self._transport.is_closing():
            self.writes += 1
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, writing through a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # uvloop's transports are not asyncio.Transport subclasses
        self.transport = CoalescingTransport(cast(asyncio.Transport, transport), self.loop)  # type: ignore[assignment]
