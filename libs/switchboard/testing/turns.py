"""Drive one agent's queue group directly over NATS, as the conductor does, for scaling measurements.

``AgentDriver.turn`` sends a ``TurnRequest`` to ``switchboard.v1.agent.<agent>.turn`` and returns the
``TurnResult``; a ``busy`` refusal (the replica that took the request is at
``SWITCHBOARD_AGENT_MAX_INFLIGHT``) is retried after a short jittered pause until the deadline, so a
saturated agent shows up as longer turns, never as failures. ``closed_loop`` runs callers back to back
and reports throughput and latency.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client

from ..bus.errors import RemoteError
from ..bus.rpc import StreamingClient
from ..bus.subjects import agent_turn
from ..schemas import CallerIdentity, MessageItem, TurnRequest, TurnResult, turn_reply_adapter


@dataclass
class TurnFigures:
    """What a run of turns against one agent measured."""

    agent: str
    latencies_s: list[float] = field(default_factory=list)
    replicas: list[str] = field(default_factory=list)
    """The replica that answered each turn (``TurnResult.replica``)."""
    busy_retries: int = 0
    elapsed_s: float = 0.0

    @property
    def turns(self) -> int:
        return len(self.latencies_s)

    @property
    def turns_per_s(self) -> float:
        return self.turns / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def p(self, q: float) -> float:
        """The q-quantile (0..1) of the turn latency in seconds."""
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    @property
    def p50_s(self) -> float:
        return statistics.median(self.latencies_s) if self.latencies_s else 0.0


class AgentDriver:
    """Sends turns to agents over one NATS connection."""

    def __init__(self, nc: Client, *, busy_pause_s: float = 0.01, timeout_s: float = 30.0) -> None:
        self.client = StreamingClient(nc)
        self.busy_pause_s = busy_pause_s
        self.timeout_s = timeout_s

    async def turn(
        self, agent: str, texts: Sequence[str], *, caller: CallerIdentity | None = None, session_id: str | None = None
    ) -> tuple[TurnResult, int]:
        """One turn with ``texts`` as the caller's messages; returns the result and the busy retries."""
        session = session_id or f"sess_{uuid.uuid4().hex[:16]}"
        history = [MessageItem(id=f"item_{uuid.uuid4().hex[:12]}", role="user", text=t) for t in texts]
        req = TurnRequest(
            session_id=session, turn_id=f"turn_{uuid.uuid4().hex[:12]}", agent=agent, history=list(history),
            caller=caller or CallerIdentity(),
        )  # fmt: skip
        deadline = time.time() + self.timeout_s
        busy = 0
        while True:
            try:
                async for reply in self.client.stream(
                    agent_turn(agent), req, turn_reply_adapter, lambda r: isinstance(r, TurnResult),
                    deadline=deadline, session_id=session,
                ):  # fmt: skip
                    if isinstance(reply, TurnResult):
                        return reply, busy
                raise AssertionError("the reply stream ended without a turn result")
            except RemoteError as exc:
                if not exc.backpressure or time.time() > deadline:
                    raise
                busy += 1
                await asyncio.sleep(random.uniform(0.5, 1.5) * self.busy_pause_s)  # ok-sleep: backoff after busy

    async def closed_loop(
        self, agent: str, texts: Sequence[str], *, callers: int, turns: int, stop: asyncio.Event | None = None
    ) -> TurnFigures:
        """``callers`` callers doing turns back to back until ``turns`` are done (or ``stop`` is set)."""
        figures = TurnFigures(agent)
        left = turns

        async def caller() -> None:
            nonlocal left
            while left > 0 and not (stop is not None and stop.is_set()):
                left -= 1
                started = time.perf_counter()
                result, busy = await self.turn(agent, texts)
                figures.latencies_s.append(time.perf_counter() - started)
                figures.replicas.append(result.replica or "")
                figures.busy_retries += busy

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        figures.elapsed_s = time.perf_counter() - t0
        return figures

    async def aclose(self) -> None:
        await self.client.stop()


async def alongside(
    driver: AgentDriver, loaded: str, other: str, texts: Sequence[str], *, callers: int, turns: int
) -> tuple[TurnFigures, TurnFigures]:
    """Load ``loaded`` with ``callers`` back-to-back callers for ``turns`` turns while one caller does
    turns with ``other`` one at a time, for as long as the load lasts: (loaded's, other's figures)."""
    done = asyncio.Event()

    async def load() -> TurnFigures:
        try:
            return await driver.closed_loop(loaded, texts, callers=callers, turns=turns)
        finally:
            done.set()

    return await asyncio.gather(load(), driver.closed_loop(other, texts, callers=1, turns=1_000_000, stop=done))
