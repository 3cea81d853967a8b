"""A terminal client for the edge, built on the official ``openai`` SDK's realtime client."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from typing import Any

from openai import AsyncOpenAI


async def chat(url: str, key: str, session: str | None, lines: list[str] | None) -> None:
    client = AsyncOpenAI(api_key=key or "missing", websocket_base_url=url, base_url=url.replace("ws", "http", 1))
    query = {"switchboard_events": "1"} | ({"session_id": session} if session else {})  # handoffs are shown
    async with client.realtime.connect(model="switchboard", extra_query=query) as conn:
        async for event in conn:
            if event.type == "session.created":
                break
        session_event = await conn.recv()
        print(f"[session {getattr(session_event, 'session_id', '?')}]", flush=True)
        script = iter(lines) if lines else None
        while True:
            text = next(script, None) if script is not None else await _read_line()
            if text is None:
                return
            if not text.strip():
                continue
            if script is not None:
                print(f"you> {text}")
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
            )
            await conn.response.create()
            await _print_response(conn)


def is_wav_error(exc: BaseException) -> bool:
    """A WAV file the voice code could not read. Its module is not imported here: the voice package needs
    numpy, which only the ``voice`` extra installs (the image has none), and where no voice code ran, no
    exception can be one."""
    errors = sys.modules.get("switchboard.voice.errors")
    return errors is not None and isinstance(exc, errors.WavError)


def refusal(exc: BaseException, url: str) -> str | None:
    """What to tell the user when the edge cannot be reached or refuses the connection (its error message
    when it sent one), or a file of theirs cannot be read or written; ``None`` for any other failure."""
    from websockets.exceptions import InvalidMessage, InvalidStatus, InvalidURI

    if isinstance(exc, InvalidStatus):
        response = exc.response
        try:
            message = json.loads(response.body or b"")["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = (response.body or b"").decode(errors="replace").strip()[:200]
        if response.status_code in (403, 404) and not message:  # no realtime endpoint at that path
            message = "no realtime endpoint there: give the edge's base URL, ending in /v1 (ws://host:8080/v1)"
        return f"the edge at {url} refused the connection: HTTP {response.status_code}" + (
            f": {message}" if message else ""
        )
    if isinstance(exc, InvalidURI):
        return f"{url!r} is not a WebSocket URL: give the edge's base URL, e.g. ws://127.0.0.1:8080/v1"
    if isinstance(exc, InvalidMessage):
        return f"what answers at {url} is not an edge (no valid HTTP response to the WebSocket handshake)"
    if isinstance(exc, (ConnectionError, socket.gaierror, TimeoutError)):
        return f"cannot reach the edge at {url}: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    if is_wav_error(exc):
        return str(exc)
    return None


async def _print_response(conn: Any) -> None:
    speaking = False
    async for event in conn:
        kind = event.type
        if kind == "response.output_text.delta":
            if not speaking:
                print("bot> ", end="", flush=True)
                speaking = True
            print(event.delta, end="", flush=True)
        elif kind == "response.output_item.done" and speaking:
            print(flush=True)
            speaking = False
        elif kind == "switchboard.handoff":
            extra = event.model_extra or {}
            print(f"  -> handoff {extra.get('from')} -> {extra.get('to')} ({extra.get('outcome')}): "
                  f"{extra.get('reason')}", flush=True)  # fmt: skip
        elif kind == "error":
            print(f"  !! error {event.error.code}: {event.error.message}", flush=True)
        elif kind == "response.done":
            meta = event.response.metadata or {}
            print(f"  [answered by {meta.get('agent')}]", flush=True)
            return


async def _read_line() -> str | None:
    """The next line typed (None at end of input), read on a daemon thread: one that is still waiting in
    ``readline`` when Ctrl-C ends the chat must not keep the process alive until Enter."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[str] = loop.create_future()

    def deliver(line: str) -> None:
        if not got.done():
            got.set_result(line)

    def read() -> None:
        loop.call_soon_threadsafe(deliver, sys.stdin.readline())

    threading.Thread(target=read, name="chat-stdin", daemon=True).start()
    line = await got
    return line.rstrip("\n") if line else None
