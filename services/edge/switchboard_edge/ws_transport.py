"""Server events that leave in the same event-loop step share one socket write.

A response's events come in bursts: when the agent's first words arrive the edge sends
``response.output_item.added``, ``conversation.item.added``, ``response.content_part.added`` and the
first delta, one after another without waiting. uvicorn writes each WebSocket frame to the socket as
it is sent, one ``send()`` system call per event; on loopback and on a busy host that call, which also
delivers the bytes to the peer, was the largest single cost of a turn in the edge's profile. Here the
frames of one loop step are joined and written once, at the end of the step: the same frames, in
the same order, a few microseconds later, with a fraction of the system calls.

A server event also need not cross the ASGI layers to become a frame. Starlette's ``WebSocket``, its
exception-handling wrappers and uvicorn's ``send`` take the event as text, which the sans-I/O protocol
encodes back to bytes and frames: ~13 events a plain turn, each through five layers of coroutines, was a
tenth of the edge's Python. The protocol here offers the session a direct path for an open connection
(:data:`TEXT_FRAMES`, a scope extension): the encoded event becomes one unmasked text frame written to
the same coalescing transport. Whenever that path cannot be taken (the handshake not done, a close sent
or received, the socket's buffer above its high-water mark, a compression extension negotiated) it says
so and the session uses the ASGI ``send``, which waits or raises as before.

The same extension can hold the frames back for a moment. A text turn's answer arrives in one reply and
becomes its item events at once; the turn is then committed to the session KV (a JetStream round trip),
and only then is ``response.done`` sent. Held during the commit, the answer's frames and ``response.done``
leave in one write, one wake-up of the client instead of two, the answer at most the commit's time later
(never more than the hold's bound: a slow commit lets them go).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

TEXT_FRAMES = "edge.text_frames"
"""The scope extension holding the connection's :class:`DirectFrames` (absent under other servers and clients)."""


@dataclass(frozen=True, slots=True)
class DirectFrames:
    """What the edge's WebSocket protocol offers the session beside the ASGI ``send``."""

    text: Callable[[bytes], bool]
    """Writes UTF-8 ``bytes`` as one text frame and returns True, or returns False having written nothing."""
    held: Callable[[float], Any]
    """``with held(max_s):`` what is written inside leaves when the block ends, or after ``max_s``, in one write."""


class CoalescingTransport:
    """Wraps a transport: ``write`` buffers until the end of the current loop step; the rest passes
    through (``close`` writes what is buffered first)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._hold: asyncio.TimerHandle | None = None
        self.writes = 0
        """Socket writes made (each carrying the frames of one loop step)."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    @contextmanager
    def held(self, max_s: float) -> Iterator[None]:
        """Keep what waits and what is written until the block ends or ``max_s`` has passed, then write it
        at the end of that loop step. Not nested: an inner block changes nothing."""
        if self._hold is not None:
            yield
            return
        self._hold = self._loop.call_later(max_s, self._release)
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        if self._hold is None:
            return
        self._hold.cancel()
        self._hold = None
        if self._pending:
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        if not self._pending or self._hold is not None:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        if not self._transport.is_closing():
            self.writes += 1
            self._transport.write(data)

    def close(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, writing through a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # uvloop's transports are not asyncio.Transport subclasses
        self.transport = CoalescingTransport(cast(asyncio.Transport, transport), self.loop)  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)  # builds the scope and schedules the app, which has not run yet
        scope = getattr(self, "scope", None)
        if scope is not None:
            frames = DirectFrames(self.send_text_frame, cast(CoalescingTransport, self.transport).held)
            scope["extensions"][TEXT_FRAMES] = frames

    def send_text_frame(self, payload: bytes) -> bool:
        """Write ``payload`` (valid UTF-8) as one final, unmasked text frame, as the ASGI ``send`` would, and
        return True; or return False, writing nothing, when the ASGI ``send`` must handle it (it waits for a
        full buffer to drain, raises on a closed connection, and frames through a negotiated extension)."""
        if (
            self.disconnected or self.close_sent or not self.handshake_complete or self.initial_response is not None
            or not self.writable.is_set() or self.conn.state is not State.OPEN or self.conn.extensions
        ):  # fmt: skip
            return False
        self.transport.write(frame_header(len(payload)) + payload)
        return True


def frame_header(length: int) -> bytes:
    """The header of a server's final text frame (RFC 6455 5.2: FIN and opcode 1, no mask) of ``length`` bytes."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)
