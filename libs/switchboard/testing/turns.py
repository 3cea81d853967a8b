"""Drive one agent's queue group directly over NATS, as the conductor does, for scaling measurements.

``AgentDriver.turn`` sends a ``TurnRequest`` to ``switchboard.v1.agent.<agent>.turn`` and returns the
``TurnResult``; a ``busy`` refusal (the replica that took the request is at
``SWITCHBOARD_AGENT_MAX_INFLIGHT``) is retried after a short jittered pause until the deadline, so a
saturated agent shows up as longer turns, never as failures. ``closed_loop`` runs callers back to back
and reports throughput and latency.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client

from ..bus.rpc import StreamingClient
from ..bus.subjects import agent_turn
from ..resilience.retry import RetryPolicy, call_with_retry, is_backpressure
from ..schemas import CallerIdentity, MessageItem, TurnRequest, TurnResult, turn_reply_adapter


@dataclass(frozen=True)
class DrivenTurn:
    """One turn's result, and how many ``busy`` refusals were retried before it."""

    result: TurnResult
    busy_retries: int


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
        self.busy_retry = RetryPolicy(
            attempts=None, base_s=busy_pause_s, max_backoff_s=busy_pause_s, retry_if=is_backpressure
        )
        """Only ``busy`` is retried (a short jittered pause, until the deadline): a saturated agent shows
        up as longer turns, never as failures."""
        self.timeout_s = timeout_s

    async def turn(
        self, agent: str, texts: Sequence[str], *, caller: CallerIdentity | None = None, session_id: str | None = None
    ) -> DrivenTurn:
        """One turn with ``texts`` as the caller's messages; ``busy`` refusals retried until the deadline."""
        session = session_id or f"sess_{uuid.uuid4().hex[:16]}"
        history = [MessageItem(id=f"item_{uuid.uuid4().hex[:12]}", role="user", text=t) for t in texts]
        req = TurnRequest(
            session_id=session, turn_id=f"turn_{uuid.uuid4().hex[:12]}", agent=agent, history=list(history),
            caller=caller or CallerIdentity(),
        )  # fmt: skip
        deadline = time.time() + self.timeout_s
        busy = 0

        async def attempt(_n: int) -> TurnResult:
            async with self.client.stream(
                agent_turn(agent), req, turn_reply_adapter, lambda r: isinstance(r, TurnResult),
                deadline=deadline, session_id=session,
            ) as replies:  # fmt: skip
                async for reply in replies:
                    if isinstance(reply, TurnResult):
                        return reply
            raise AssertionError("the reply stream ended without a turn result")

        def on_busy(_n: int, _exc: BaseException) -> None:
            nonlocal busy
            busy += 1

        result = await call_with_retry(attempt, self.busy_retry, deadline=deadline, on_retry=on_busy)
        return DrivenTurn(result, busy)

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
                done = await self.turn(agent, texts)
                figures.latencies_s.append(time.perf_counter() - started)
                figures.replicas.append(done.result.replica or "")
                figures.busy_retries += done.busy_retries

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


@dataclass
class ScalingRun:
    """One specialist under load with one replica, then with two, while another specialist runs alongside."""

    one: TurnFigures
    other_one: TurnFigures
    two: TurnFigures
    other_two: TurnFigures

    @property
    def speedup(self) -> float:
        return self.one.elapsed_s / self.two.elapsed_s if self.two.elapsed_s else 0.0

    def problems(self, *, turns: int, inflight: int, delay_s: float, min_speedup: float = 1.5) -> list[str]:
        """What contradicts "a second replica raises this specialist's throughput and leaves the other alone"."""
        out = []
        if not self.one.turns == self.two.turns == turns:
            out.append(f"turns done {self.one.turns}, {self.two.turns} of {turns}")
        if self.one.elapsed_s < turns / inflight * delay_s * 0.95:  # one replica's in-flight limit is the bound
            out.append(f"one replica did {turns} turns in {self.one.elapsed_s:.2f} s: the load did not saturate it")
        if (len(set(self.one.replicas)), len(set(self.two.replicas))) != (1, 2):
            out.append(f"replicas seen {len(set(self.one.replicas))}, then {len(set(self.two.replicas))}, not 1, 2")
        if self.speedup < min_speedup:  # ~2x expected; the margin is for a shared machine's noise
            out.append(
                f"second replica: x{self.speedup:.2f} ({self.one.elapsed_s:.2f} s -> {self.two.elapsed_s:.2f} s)"
            )
        if len(set(self.other_one.replicas + self.other_two.replicas)) != 1:
            out.append("the other specialist's replicas changed")
        if self.other_one.turns < 5 or self.other_two.turns < 3:
            out.append(f"the other specialist answered only {self.other_one.turns}, {self.other_two.turns} turns")
        if self.other_two.p50_s > 2 * self.other_one.p50_s + 0.05:
            out.append(f"the other specialist slowed: p50 {self.other_one.p50_s:.3f} -> {self.other_two.p50_s:.3f} s")
        return out

    def line(self) -> str:
        return (
            f"{self.one.agent}: {self.one.turns_per_s:.1f} -> {self.two.turns_per_s:.1f} turns/s "
            f"(x{self.speedup:.2f}); "
            f"{self.other_one.agent} p50 {self.other_one.p50_s * 1000:.1f} -> {self.other_two.p50_s * 1000:.1f} ms"
        )


async def second_replica_run(
    driver: AgentDriver, loaded: str, other: str, add_replica: Callable[[], Awaitable[object]], *, callers: int,
    turns: int,
) -> ScalingRun:  # fmt: skip
    """Warm both agents up, load ``loaded`` alongside ``other``, ``add_replica`` of ``loaded``, load it again."""
    for agent in (other, loaded):  # first turns pay for connections and imports
        await driver.turn(agent, ["hi"])
    one, other_one = await alongside(driver, loaded, other, ["hi"], callers=callers, turns=turns)
    await add_replica()
    two, other_two = await alongside(driver, loaded, other, ["hi"], callers=callers, turns=turns)
    return ScalingRun(one, other_one, two, other_two)
