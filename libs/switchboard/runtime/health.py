"""Health and metrics endpoints of agent and supervisor processes, on the process's own event loop.

``GET /healthz`` answers 200 while the event loop runs (a frozen loop does not answer: that is the
liveness signal). ``GET /readyz`` answers 200 ``{"status": "ready"}`` when the readiness check
returns no reason, else 503 ``{"status": "not_ready", "reason": ...}``. ``GET /metrics`` is the
Prometheus text format. A deliberately small HTTP/1.1 server (one request per connection): probes
and scrapers need nothing more, and it keeps a second web framework out of every agent process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST

from ..lifecycle import StartStop

log = logging.getLogger(__name__)

PID_HEADER: Final = "Switchboard-Pid"
"""Every health response names the process that answered: a launcher probing a port it gave a process
checks that this process is the one answering (not another that bound the port first)."""

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_HEAD_LIMIT: Final = 8192
_READ_TIMEOUT_S: Final = 5.0

Readiness = Callable[[], str | None]
"""Returns ``None`` when ready, else why not (one short phrase, e.g. ``"nats not connected"``)."""


class HealthServer(StartStop):
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` on ``host:port`` (``port=0``: a free one).

    An async context manager; :meth:`stop` is safe to call twice.
    """

    def __init__(self, host: str, port: int, readiness: Readiness, render_metrics: Callable[[], bytes]) -> None:
        self.host = host
        self.requested_port = port
        self.readiness = readiness
        self.render_metrics = render_metrics
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        self._server = await asyncio.start_server(self._serve, self.host, self.requested_port, limit=_HEAD_LIMIT)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for one request (no I/O: the routing, testable alone)."""
        if method not in ("GET", "HEAD"):
            return 405, "application/json", b'{"error": "method not allowed"}'
        if path == "/healthz":
            return 200, "application/json", b'{"status": "ok"}'
        if path == "/readyz":
            reason = self.readiness()
            if reason is None:
                return 200, "application/json", b'{"status": "ready"}'
            return 503, "application/json", json.dumps({"status": "not_ready", "reason": reason}).encode()
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self.render_metrics()
        return 404, "application/json", b'{"error": "not found"}'

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) == 3:
                method, target = parts[0], parts[1]
                status, ctype, body = self.respond(method, target.split("?", 1)[0])
            else:
                method, status, ctype, body = "GET", 400, "application/json", b'{"error": "bad request"}'
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n{PID_HEADER}: {os.getpid()}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a probe that hung up or sent garbage: nothing to answer
        except Exception:
            log.warning("health request failed", exc_info=True)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
