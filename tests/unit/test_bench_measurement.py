"""The benchmark's measurement (``bench/switchboard_bench``), on a scripted WebSocket: what a paced turn's
latency counts."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from switchboard_bench import workload  # noqa: E402
from switchboard_bench.client import Expect, Session  # noqa: E402

REPLY = "We are open from 9 to 5."


class ScriptedWs:
    """Answers each ``response.create`` after the next of ``durations_s``, with one text delta and ``response.done``."""

    def __init__(self, durations_s: list[float]) -> None:
        self.durations_s = iter(durations_s)
        self.events: asyncio.Queue[str] = asyncio.Queue()

    async def send(self, data: str) -> None:
        if json.loads(data)["type"] == "response.create":
            asyncio.get_running_loop().call_later(next(self.durations_s), self.answer)

    def answer(self) -> None:
        self.events.put_nowait(json.dumps({"type": "response.output_text.delta", "delta": REPLY}))
        done = {"status": "completed", "metadata": {"agent": "triage"}}
        self.events.put_nowait(json.dumps({"type": "response.done", "response": done}))

    async def recv(self) -> str:
        return await self.events.get()

    async def close(self) -> None:
        pass


async def test_a_paced_turn_delayed_by_its_sessions_slow_turn_counts_from_when_it_was_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One session at 10 turns/s (a turn due every 100 ms): the first turn takes 250 ms, the others 10 ms.
    Turns 2 and 3 fall due (at 100 and 200 ms) while the slow one runs; the caller waits for them from then,
    so they count 160 and 70 ms, not the 10 ms from their late send (coordinated omission hid that queueing
    and reported the p99 of such a phase too low). Turn 4, due at 300 ms, is sent on time and counts 10 ms."""
    session = Session(ScriptedWs([0.25, 0.01, 0.01, 0.01]), "s1")  # type: ignore[arg-type]

    async def open_sessions(stack: Any, n: int) -> list[Session]:
        return [session]

    async def close_sessions(sessions: list[Session]) -> None:
        pass

    monkeypatch.setattr(workload, "open_sessions", open_sessions)
    monkeypatch.setattr(workload, "close_sessions", close_sessions)
    monkeypatch.setattr(workload.random, "uniform", lambda a, b: a)  # the session's phase: at once
    stack = SimpleNamespace(procs=[], nats=SimpleNamespace(proc=None))  # CPU: the load generator's only

    out = await workload.paced_phase(stack, None, 1, 4, 10.0, expect=Expect("triage", REPLY))  # type: ignore[arg-type]

    expected = [250, 160, 70, 10]
    assert all(abs(got - want) < 30 for got, want in zip(session.latencies_ms, expected, strict=True)), (
        f"latencies {[round(ms) for ms in session.latencies_ms]} ms, expected about {expected}"
    )
    assert out["latency"]["max_ms"] == max(session.latencies_ms)
    assert out["late_turns"] == 2
