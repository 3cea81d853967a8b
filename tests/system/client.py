"""The one realtime test client of the suite.

Two faces over the same conventions:

- the official ``openai`` SDK's realtime connection (``sdk_client`` + ``open_session``/``say``/``collect``),
  what most tests use, as a user would;
- :class:`RawClient`, a plain ``websockets`` connection that records every raw server event, for the
  tests that must see bytes the SDK would hide: malformed input, the contract test, browser-style
  subprotocol auth, takeovers and close codes.

Both opt into Switchboard's platform events (``?switchboard_events=1``) unless told otherwise.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import nats
import websockets
from openai import AsyncOpenAI
from websockets.asyncio.client import ClientConnection

from switchboard.bus import Bus
from switchboard.local.stack import Stack
from switchboard.schemas import ConversationItem, HandoffDecision, MessageItem
from switchboard.state import AuditLog, SessionStore

EVENTS = {"switchboard_events": "1"}
"""The query parameter that opts a connection into ``switchboard.*`` server events."""


def sdk_client(stack: Stack, key: str | None = None, port: int | None = None, *, events: bool = True) -> AsyncOpenAI:
    base = f"ws://127.0.0.1:{port}/v1" if port else stack.ws_base
    return sdk_at(base, key or stack.api_key, events=events)


def sdk_at(base: str, key: str, *, events: bool = True) -> AsyncOpenAI:
    """The official SDK's realtime client for the edge at ``base`` (``ws://HOST:PORT/v1``), e.g. in a container."""
    return AsyncOpenAI(
        api_key=key, websocket_base_url=base, base_url=base.replace("ws", "http", 1),
        default_query=EVENTS if events else None,
    )  # fmt: skip


def user_message(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


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
    await conn.conversation.item.create(item=user_message(text))
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


class RawClient:
    """A plain WebSocket realtime client; ``events`` keeps every server event received, in order."""

    def __init__(
        self,
        stack: Stack,
        *,
        port: int | None = None,
        session_id: str | None = None,
        events: bool = True,
        key: str | None = None,
        auth: str = "bearer",
        ssl_context: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
        subprotocols: list[str] | None = None,
        timeout_s: float = 60,
    ) -> None:
        """``auth``: ``bearer`` (header), ``subprotocol`` (as browsers do) or ``none``; ``headers`` and
        ``subprotocols`` are sent as given (to present malformed credentials). ``timeout_s``: how long
        :meth:`next` waits for its event before failing with the events seen."""
        base = f"{'wss' if stack.tls else 'ws'}://127.0.0.1:{port}/v1" if port else stack.ws_base
        query = "model=switchboard" + ("&switchboard_events=1" if events else "")
        query += f"&session_id={session_id}" if session_id else ""
        self.url = f"{base}/realtime?{query}"
        self.key = key if key is not None else stack.api_key
        self.auth = auth
        self.ssl_context = ssl_context
        self.headers = headers or {}
        self.subprotocols = subprotocols
        self.timeout_s = timeout_s
        self.events: list[dict[str, Any]] = []
        self._ws: ClientConnection | None = None

    @property
    def ws(self) -> ClientConnection:
        assert self._ws is not None, "not connected"
        return self._ws

    async def __aenter__(self) -> Self:
        kwargs: dict[str, Any] = {"max_size": None, "additional_headers": dict(self.headers)}
        if self.auth == "bearer":
            kwargs["additional_headers"].setdefault("Authorization", f"Bearer {self.key}")
        elif self.auth == "subprotocol":  # what a browser sends: it cannot set headers
            kwargs["subprotocols"] = ["realtime", f"openai-insecure-api-key.{self.key}"]
        if self.subprotocols is not None:
            kwargs["subprotocols"] = self.subprotocols
        if self.ssl_context is not None:
            kwargs["ssl"] = self.ssl_context
        self._ws = await websockets.connect(self.url, **kwargs)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def send(self, event: dict[str, Any] | str) -> None:
        await self.ws.send(event if isinstance(event, str) else json.dumps(event))

    async def recv(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(await self.ws.recv())
        self.events.append(event)
        return event

    async def next(self, kind: str) -> dict[str, Any]:
        """The next event of type ``kind`` (events before it are kept in ``events``); an edge that never
        sends it fails the test after ``timeout_s`` with the last events seen."""
        start = len(self.events)
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    event = await self.recv()
                    if event["type"] == kind:
                        return event
        except TimeoutError:
            seen = [e["type"] for e in self.events[start:]][-10:]
            raise AssertionError(f"no {kind} within {self.timeout_s:.0f} s; events since asked: {seen}") from None

    async def open(self) -> dict[str, Any]:
        """``session.created``, and with platform events ``switchboard.session``; returns the last one."""
        created = await self.next("session.created")
        return await self.next("switchboard.session") if "switchboard_events=1" in self.url else created

    async def turn(self, text: str) -> list[dict[str, Any]]:
        """One user message and a response; every event up to and including ``response.done``."""
        start = len(self.events)
        await self.send({"type": "conversation.item.create", "item": user_message(text)})
        await self.send({"type": "response.create"})
        await self.next("response.done")
        return self.events[start:]


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def done_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in reversed(events) if e["type"] == "response.done")["response"]


async def session_audit(
    stack: Stack, session_id: str, count: int, *, js_of: Any = None, timeout_s: float = 5.0
) -> list[HandoffDecision]:
    """The session's handoff decisions in the audit stream, once it holds at least ``count`` of them (or
    what it holds after ``timeout_s``): the edge appends them in the background once the answer is out,
    so a caller that has just seen ``response.done`` may read before they land. ``js_of``: a JetStream
    context to read with (default: a connection of the stack's operator login)."""
    nc = None if js_of is not None else await nats.connect(stack.nats.url)
    js = js_of if js_of is not None else nc.jetstream()  # type: ignore[union-attr]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            decisions = await AuditLog(js).read_session(session_id)
            if len(decisions) >= count or loop.time() > deadline:
                return decisions
            await asyncio.sleep(0.02)  # ok-sleep: poll interval while the append lands
    finally:
        if nc is not None:
            await nc.close()


async def edge_log_lines(stack: Stack, msg: str, session_id: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The edge's JSON log lines with this message for this session, once there is one (or none after
    ``timeout_s``): the stack reads the edge's stdout on a thread of its own, so a line logged just before
    ``response.done`` may land just after it."""
    return await log_lines(stack, "edge", msg, session_id, timeout_s)


async def log_lines(
    stack: Stack, proc: str, msg: str, session_id: str, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """:func:`edge_log_lines` of any process of the stack (``agent:triage``, ``supervisor:supervisor``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        records = [json.loads(line) for line in list(stack.proc(proc).lines) if line.startswith("{")]
        found = [r for r in records if r.get("msg") == msg and r.get("session_id") == session_id]
        if found or loop.time() > deadline:
            return found
        await asyncio.sleep(0.02)  # ok-sleep: poll interval


async def stored_items(stack: Stack, session_id: str) -> list[ConversationItem]:
    """What the session store holds of the conversation, in order (window and archive)."""
    async with Bus(stack.nats_urls, name="check") as bus:
        return await (await SessionStore.open(bus.js)).transcript(session_id)


async def stored_user_texts(stack: Stack, session_id: str) -> list[str]:
    """What the session store holds of the caller's messages, in order."""
    return [i.text for i in await stored_items(stack, session_id) if isinstance(i, MessageItem) and i.role == "user"]


async def audit_decisions(stack: Stack, session_id: str, count: int) -> list[tuple[str, str, str, str]]:
    """:func:`session_audit` as (source, requested, final target, outcome)."""
    decisions = await session_audit(stack, session_id, count)
    return [(d.source, d.requested_target, d.final_target, d.outcome.value) for d in decisions]
