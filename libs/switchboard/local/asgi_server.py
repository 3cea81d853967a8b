"""Serve an ASGI app inside the current event loop, on a port bound up front (port 0 = any free one).

Used by the test doubles that ship with Switchboard (the scripted OpenAI server, the OTLP receiver).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from ..lifecycle import StartStop


class _QuietServer(uvicorn.Server):
    """Leaves signal handlers alone (the host process owns them) and reports readiness."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class InProcessServer(StartStop):
    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        """``config``: further ``uvicorn.Config`` options (e.g. ``ws``, the WebSocket protocol class)."""
        self.app = app
        self.config = config
        self.host = host
        self.port = port
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP; with
        # proto 0 a burst of small writes waits for the peer's delayed ACK (~40 ms)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, lifespan="off", log_config=None, log_level="warning", access_log=False,
            timeout_graceful_shutdown=1, **self.config,
        )  # fmt: skip
        self._server = server = _QuietServer(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait([ready, self._task], return_when=asyncio.FIRST_COMPLETED)
        if not server.ready.is_set():
            ready.cancel()
            await self._task  # re-raises the startup failure
            raise RuntimeError("server stopped during startup")

    async def stop(self) -> None:
        """Stop serving and wait for the server to finish; safe to call twice."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        task, self._task = self._task, None
        await task
