"""Test client helpers on top of the official openai SDK realtime client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from openai import AsyncOpenAI

from switchboard.local.stack import Stack


def sdk_client(stack: Stack, key: str | None = None, port: int | None = None) -> AsyncOpenAI:
    base = f"ws://127.0.0.1:{port}/v1" if port else stack.ws_base
    return AsyncOpenAI(api_key=key or stack.api_key, websocket_base_url=base, base_url=base.replace("ws", "http", 1))


@dataclass
class Reply:
    text: str
    agent: str | None
    metadata: dict[str, Any]
    status: str
    handoffs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)


async def open_session(conn: Any) -> dict[str, Any]:
    """Read ``session.created`` and ``switchboard.session``; return the latter's fields."""
    created = await conn.recv()
    assert created.type == "session.created", created
    info = await conn.recv()
    assert info.type == "switchboard.session", info
    return dict(info.model_extra or {})


async def say(conn: Any, text: str) -> Reply:
    """Send one user message, ask for a response, and collect it until ``response.done``."""
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await conn.response.create()
    return await collect(conn)


async def collect(conn: Any) -> Reply:
    deltas: list[str] = []
    handoffs: list[dict[str, Any]] = []
    errors: list[Any] = []
    events: list[Any] = []
    async for event in conn:
        events.append(event)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "switchboard.handoff":
            handoffs.append(dict(event.model_extra or {}))
        elif event.type == "error":
            errors.append(event.error)
        elif event.type == "response.done":
            meta = dict(event.response.metadata or {})
            return Reply(
                "".join(deltas), meta.get("agent"), meta, event.response.status or "", handoffs, errors, events
            )
    raise AssertionError("connection closed before response.done")
