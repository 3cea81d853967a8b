"""A conversation load for fault tests: concurrent callers over the official openai SDK client, every
turn recorded, and an afterwards check that no committed turn was lost from the session store."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from system.client import Reply, open_session, say, sdk_client

from switchboard.bus import Bus
from switchboard.local.stack import Stack
from switchboard.schemas import MessageItem
from switchboard.state import SessionStore

SCRIPT = [
    "hello",  # triage answers itself
    "I want a refund for order A1001",  # triage -> auth (redirected_auth)
    "jane@example.com, PIN 1234",  # auth -> returns (accepted), lookup_order
    "yes please",  # returns: create_return (side-effect ledger)
]
"""One caller's conversation; each caller repeats it on a fresh session."""

TURN_TIMEOUT_S = 45.0


@dataclass
class Turn:
    session_id: str
    text: str
    started: float
    ended: float = 0.0
    status: str = "timeout"
    agent: str | None = None
    handoffs: int = 0
    item_id: str | None = None
    reply: str = ""
    errors: list[Any] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def overlaps(self, start: float, end: float) -> bool:
        return self.started <= end and self.ended >= start


class Conversations:
    """``callers`` concurrent callers looping over ``SCRIPT`` until ``stop()``."""

    def __init__(self, stack: Stack, callers: int = 6) -> None:
        self.stack = stack
        self.callers = callers
        self.turns: list[Turn] = []
        self.sessions: list[str] = []
        self._done = [0] * callers
        self._stop = asyncio.Event()
        self._progress = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Conversations:
        self._tasks = [asyncio.create_task(self._caller(i)) for i in range(self.callers)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def each_completes(self, turns: int, timeout_s: float = 60.0) -> None:
        """Wait until every caller has finished ``turns`` more turns (whatever their outcome)."""
        base = list(self._done)
        async with asyncio.timeout(timeout_s), self._progress:
            await self._progress.wait_for(lambda: all(d - b >= turns for d, b in zip(self._done, base, strict=True)))

    async def _caller(self, i: int) -> None:
        client = sdk_client(self.stack)
        while not self._stop.is_set():
            async with client.realtime.connect(model="switchboard") as conn:
                session_id = str((await open_session(conn))["session_id"])
                self.sessions.append(session_id)
                for text in SCRIPT:
                    if self._stop.is_set():
                        break
                    turn = Turn(session_id, text, time.monotonic())
                    self.turns.append(turn)
                    try:
                        async with asyncio.timeout(TURN_TIMEOUT_S):
                            reply = await say(conn, text)
                    except TimeoutError:
                        turn.ended = time.monotonic()
                        return  # the connection is in an unknown state: this caller stops
                    _record(turn, reply)
                    async with self._progress:
                        self._done[i] += 1
                        self._progress.notify_all()


def _record(turn: Turn, reply: Reply) -> None:
    turn.ended = time.monotonic()
    turn.status, turn.agent, turn.reply = reply.status, reply.agent, reply.text
    turn.handoffs, turn.errors = len(reply.handoffs), reply.errors
    added = [e for e in reply.events if e.type == "conversation.item.added"]
    turn.item_id = added[0].item.id if added else None


async def lost_turns(stack: Stack, turns: list[Turn]) -> list[Turn]:
    """Completed turns whose user item or answer is missing from the session in KV."""
    lost: list[Turn] = []
    async with Bus(stack.nats_urls, name="chaos-check") as bus:
        store = await SessionStore.open(bus.js)
        states = {}
        for sid in {t.session_id for t in turns}:
            states[sid] = await store.transcript(sid)
    for turn in turns:
        history = states[turn.session_id]
        ids = [item.id for item in history]
        if turn.item_id is None or turn.item_id not in ids:
            lost.append(turn)
            continue
        after = history[ids.index(turn.item_id) + 1 :]
        answer: list[str] = []
        for item in after:
            if isinstance(item, MessageItem) and item.role == "user":
                break
            if isinstance(item, MessageItem) and item.role == "assistant":
                answer.append(item.text)
        if turn.status == "completed" and "".join(answer) != turn.reply:  # the answer the caller heard
            lost.append(turn)
    return lost


async def resumed_history_items(stack: Stack, session_id: str) -> int:
    """``history_items`` the edge reports when the session is resumed."""
    async with sdk_client(stack).realtime.connect(model="switchboard", extra_query={"session_id": session_id}) as conn:
        info = await open_session(conn)
    assert info["resumed"] is True
    return int(info["history_items"])


def summary(turns: list[Turn], fault: tuple[float, float]) -> dict[str, Any]:
    """Counts and latencies; 'during' = turns in flight at some point of the fault window."""
    done = [t for t in turns if t.ended]
    during = sorted(t.seconds for t in done if t.overlaps(*fault))
    calm = sorted(t.seconds for t in done if not t.overlaps(*fault))
    return {
        "attempted": len(turns),
        "completed": sum(t.status == "completed" for t in turns),
        "failed": sum(t.status != "completed" for t in turns),
        "errors": sum(len(t.errors) for t in turns),
        "fallbacks": sum(t.agent == "generalist" for t in turns),
        "handoff_turns": sum(t.handoffs > 0 for t in turns),
        "turns_during_fault": len(during),
        "p50_during_fault_s": round(statistics.median(during), 2) if during else None,
        "max_during_fault_s": round(max(during), 2) if during else None,
        "p50_outside_fault_s": round(statistics.median(calm), 3) if calm else None,
    }
