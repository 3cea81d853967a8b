"""The load generator's Realtime client: one WebSocket session, raw JSON events, every reply verified."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from switchboard.local.stack import Stack

from .common import OPEN_PARALLEL, TURN_TIMEOUT_S, BenchError, bounded


@dataclass
class Expect:
    agent: str
    text: str
    handoff_to: str | None = None
    supervisor: str | None = None
    """``response.metadata.supervisor`` (``no``, ``consulted``, ``failed``), when the scenario has one."""
    first_delta: str | None = None
    """The first ``response.output_text.delta`` (a consult's filler), checked when set."""


@dataclass
class Session:
    """One Realtime WebSocket session on the edge, driven with raw JSON events."""

    ws: ClientConnection
    session_id: str
    turns: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    deltas_ms: list[tuple[float, float]] = field(default_factory=list)
    """Per turn with an expected ``first_delta``: ms from ``response.create`` to the first text delta (the
    filler) and to the second (the first token of the supervisor's answer)."""
    failed_ms: list[float] = field(default_factory=list)
    """Turns that ended in the ``fallback`` expectation (a failed consult), kept apart from ``latencies_ms``."""
    consult_ms: list[float] = field(default_factory=list)
    """``response.metadata.consult_ms`` of answered consults: the edge's time from the filler to the
    supervisor's result, retries included."""
    late_turns: int = 0
    """Turns timed from when they were due (``since``) because they were sent later than that."""

    @classmethod
    async def open(cls, ws_base: str, api_key: str) -> Session:
        ws = await connect(
            f"{ws_base}/realtime?switchboard_events=1", additional_headers={"Authorization": f"Bearer {api_key}"},
            compression=None, ping_interval=None, open_timeout=TURN_TIMEOUT_S, max_queue=None,
        )  # fmt: skip
        created = json.loads(await ws.recv())
        info = json.loads(await ws.recv())
        if created.get("type") != "session.created" or info.get("type") != "switchboard.session":
            await ws.close()
            raise BenchError(f"bad handshake: {created.get('type')!r}, {info.get('type')!r}")
        return cls(ws, info["session_id"])

    async def turn(
        self, text: str, expect: Expect, fallback: Expect | None = None, *, since: float | None = None
    ) -> float:
        """One verified caller turn; returns ms from sending ``response.create`` to ``response.done``, or from
        ``since`` (a ``time.perf_counter()`` reading) if that is earlier: a paced turn that was due before
        its session's previous turn ended counts from when it was due (see ``workload.paced_turns``). The
        time to the filler and to the first answer token count from the same moment.

        With ``fallback``, a turn whose consult failed (``metadata.supervisor == "failed"``) is verified
        against it and counted in ``failed_ms`` instead of raising."""
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        await self.ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        marks: list[float] | None = [] if expect.first_delta is not None else None
        t0 = time.perf_counter()
        if since is not None and since < t0:
            t0 = since
            self.late_turns += 1
        await self.ws.send('{"type": "response.create"}')
        try:
            async with asyncio.timeout(TURN_TIMEOUT_S):
                done, seen = await self._until_done(marks)
        except TimeoutError:
            raise BenchError(f"{self.session_id}: no response.done within {TURN_TIMEOUT_S:.0f}s") from None
        ms = (time.perf_counter() - t0) * 1000
        if fallback is not None and (done.get("response", {}).get("metadata") or {}).get("supervisor") == "failed":
            self._verify(done, seen, fallback)
            self.turns += 1
            self.failed_ms.append(ms)
            return ms
        self._verify(done, seen, expect)
        self.turns += 1
        self.latencies_ms.append(ms)
        if expect.supervisor == "consulted":
            self.consult_ms.append(float(done["response"]["metadata"]["consult_ms"]))
        if marks is not None:
            if len(marks) < 2:
                raise BenchError(f"{self.session_id} turn {self.turns}: {len(marks)} text deltas, expected 2 or more")
            self.deltas_ms.append(((marks[0] - t0) * 1000, (marks[1] - t0) * 1000))
        return ms

    async def _until_done(self, marks: list[float] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Events up to ``response.done``; with ``marks``, the arrival time of each text delta is appended."""
        seen: list[dict[str, Any]] = []
        while True:
            event = json.loads(await self.ws.recv())
            if marks is not None and event.get("type") == "response.output_text.delta":
                marks.append(time.perf_counter())
            if event.get("type") == "response.done":
                return event, seen
            seen.append(event)

    def _verify(self, done: dict[str, Any], seen: list[dict[str, Any]], expect: Expect) -> None:
        response = done.get("response", {})
        agent = (response.get("metadata") or {}).get("agent")
        text = "".join(e.get("delta", "") for e in seen if e.get("type") == "response.output_text.delta")
        errors = [e.get("error") for e in seen if e.get("type") == "error"]
        handoffs = [e.get("to") for e in seen if e.get("type") == "switchboard.handoff"]
        wanted_handoffs = [expect.handoff_to] if expect.handoff_to else []
        problems = []
        if response.get("status") != "completed":
            problems.append(f"status={response.get('status')!r} details={response.get('status_details')}")
        if agent != expect.agent:
            problems.append(f"agent={agent!r}, expected {expect.agent!r}")
        if text != expect.text:
            problems.append(f"text={text!r}, expected {expect.text!r}")
        if handoffs != wanted_handoffs:
            problems.append(f"handoffs={handoffs}, expected {wanted_handoffs}")
        if errors:
            problems.append(f"errors={errors}")
        supervisor = (response.get("metadata") or {}).get("supervisor")
        if expect.supervisor is not None and supervisor != expect.supervisor:
            problems.append(f"supervisor={supervisor!r}, expected {expect.supervisor!r}")
        first = next((e.get("delta") for e in seen if e.get("type") == "response.output_text.delta"), None)
        if expect.first_delta is not None and first != expect.first_delta:
            problems.append(f"first delta={first!r}, expected the filler {expect.first_delta!r}")
        if problems:
            raise BenchError(f"{self.session_id} turn {self.turns + 1}: " + "; ".join(problems))

    async def close(self) -> None:
        await self.ws.close()


async def open_sessions(stack: Stack, n: int) -> list[Session]:
    return await bounded((lambda: Session.open(stack.ws_base, stack.api_key) for _ in range(n)), OPEN_PARALLEL)


async def close_sessions(sessions: list[Session]) -> None:
    await bounded((s.close for s in sessions), OPEN_PARALLEL * 4)
