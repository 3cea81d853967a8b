"""Workloads on a running stack: closed-loop, paced and handoff phases, idle sessions, warmup."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from websockets.protocol import State

from switchboard.agents import load_scenario
from switchboard.local.stack import Stack

from .client import Expect, Session, close_sessions, open_sessions
from .common import HANDOFF_TEXT, PLAIN_TEXT, SCENARIO, SCENARIOS, BenchError, T, bounded, client_gc_paused, progress
from .stats import CpuMeter, rss_kib, summarize


@dataclass
class Replies:
    """What the caller says in a scenario's plain and handoff turns, and the verified replies."""

    plain: Expect
    handoff: Expect
    plain_text: str = PLAIN_TEXT
    handoff_text: str = HANDOFF_TEXT

    @classmethod
    def from_scenario(cls) -> Replies:
        """The minimal ``bench`` scenario's replies, read from its YAML."""
        config = load_scenario(SCENARIO, SCENARIOS).config
        triage, returns = config.agent("triage"), config.agent("returns")
        assert triage is not None and returns is not None
        return cls(Expect("triage", triage.offline.default), Expect("returns", returns.offline.default, "returns"))


async def converse(session: Session, expect: Expect, turns: int, text: str = PLAIN_TEXT) -> None:
    """``turns`` turns (plain ones unless told), one after the other, on one session."""
    for _ in range(turns):
        await session.turn(text, expect)


async def warmup(stack: Stack, replies: Replies, n: int) -> None:
    sessions = await open_sessions(stack, n)
    await bounded((lambda s=s: converse(s, replies.plain, 3, replies.plain_text) for s in sessions), n)
    await close_sessions(sessions)
    fresh = await open_sessions(stack, n)
    await bounded((lambda s=s: s.turn(replies.handoff_text, replies.handoff) for s in fresh), n)
    await close_sessions(fresh)


async def timed(stack: Stack, run: Callable[[], Awaitable[T]]) -> tuple[T, float, CpuMeter]:
    """The measured part of a phase, with the load generator's garbage collection paused: its result,
    the wall seconds it took and the meter of the stack's CPU over it."""
    with client_gc_paused():
        cpu = CpuMeter(stack)
        t0 = time.perf_counter()
        result = await run()
        wall = time.perf_counter() - t0
    return result, wall, cpu


def settle(
    label: str, samples: list[float], wall: float, cpu: CpuMeter, samples_out: list[float] | None, rate: str = ""
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A phase's latency statistics and CPU per turn, reported on the console; the latencies are also
    appended to ``samples_out`` when given (the tracing phases pool several runs)."""
    used = cpu.per_turn_ms(len(samples), wall)
    stats = summarize(samples)
    if samples_out is not None:
        samples_out.extend(samples)
    progress(
        f"{label}: {len(samples)} turns in {wall:.2f}s{' ' + rate if rate else ''}, p50 {stats['p50_ms']:.2f} ms, p99 "
        f"{stats['p99_ms']:.2f} ms, CPU {used['total_per_turn_ms']:.2f} ms/turn ({used['cores_busy']:.2f} cores busy)"
    )
    return stats, used


async def plain_phase(
    stack: Stack, replies: Replies | None, n: int, k: int, *, parallel: int, kind: str = "plain",
    text: str = PLAIN_TEXT, expect: Expect | None = None, samples_out: list[float] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``n`` sessions of ``k`` back-to-back turns, ``parallel`` sessions at a time (closed loop, no think time).

    Plain turns unless ``text``/``expect`` say otherwise (``kind`` names them in the progress lines). The
    latencies are also appended to ``samples_out`` when given (the tracing phases pool several runs)."""
    expect = expect or (replies.plain if replies else None)
    assert expect is not None
    label = kind if parallel > 1 else f"{kind} (one at a time)"
    progress(f"{label}: opening {n} sessions")
    sessions = await open_sessions(stack, n)
    progress(f"{label}: {n} sessions x {k} turns, {parallel} session(s) at a time")
    _, wall, cpu = await timed(
        stack, lambda: bounded((lambda s=s: converse(s, expect, k, text) for s in sessions), parallel)
    )
    samples = [ms for s in sessions for ms in s.latencies_ms]
    await close_sessions(sessions)
    stats, used = settle(label, samples, wall, cpu, samples_out, f"-> {len(samples) / wall:.0f} turns/s")
    out = {"latency": stats, "wall_s": wall, "turns": len(samples), "turns_per_s": len(samples) / wall, "cpu": used}
    return out | filler_stats(label, sessions)


async def paced_phase(
    stack: Stack, replies: Replies | None, n: int, k: int, rate: float, *, kind: str = "plain",
    text: str = PLAIN_TEXT, expect: Expect | None = None, samples_out: list[float] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``n`` sessions of ``k`` turns offering ``rate`` turns/s in total: each session starts a turn every
    ``n / rate`` seconds (at a random phase), or at once if its previous turn ran late, and then that turn's
    latency counts from when it was due (``paced_turns``). The latencies are also appended to ``samples_out``
    when given."""
    expect = expect or (replies.plain if replies else None)
    assert expect is not None
    interval = n / rate
    label = "paced" if kind == "plain" else f"{kind} (paced)"
    progress(f"{label}: opening {n} sessions")
    sessions = await open_sessions(stack, n)
    progress(f"{label}: {n} sessions x {k} turns, one turn per session every {interval * 1000:.0f} ms ({rate:.0f}/s)")

    async def offered() -> list[None]:
        begin = time.perf_counter()  # taken here, after the load generator's garbage collection (see ``timed``):
        # taken before it, the sessions whose phase fell within that pause (~100 ms) would all start at once
        return await bounded(
            (lambda s=s: paced_turns(s, k, interval, begin + random.uniform(0, interval), text, expect)
             for s in sessions), n,
        )  # fmt: skip

    _, wall, cpu = await timed(stack, offered)
    await close_sessions(sessions)
    samples = [ms for s in sessions for ms in s.latencies_ms]
    stats, used = settle(label, samples, wall, cpu, samples_out, f"({len(samples) / wall:.0f}/s achieved)")
    out = {"latency": stats, "offered_turns_per_s": rate, "achieved_turns_per_s": len(samples) / wall, "cpu": used,
           "late_turns": sum(s.late_turns for s in sessions)}  # fmt: skip
    return out | filler_stats(label, sessions)


async def paced_turns(session: Session, k: int, interval: float, start: float, text: str, expect: Expect) -> None:
    """``k`` turns on ``session``, the i-th due at ``start + i * interval`` (``time.perf_counter()`` clock).

    A session has one response at a time, so a turn that falls due while the previous one still runs is sent
    when that one ends, and its latency counts from when it was due: the caller waited all that time for the
    system. Timed from its own send, a slow turn would hide the delay it imposed on the turns after it
    (coordinated omission), and the p99 would leave out the queueing it is there to show. A turn sent on
    time counts from its send: the load generator's own timer lateness is not the system's."""
    previous_end = -math.inf
    for i in range(k):
        due = start + i * interval
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        await session.turn(text, expect, since=due if previous_end > due else None)
        previous_end = time.perf_counter()


def filler_stats(label: str, sessions: list[Session]) -> dict[str, Any]:
    """Consult turns only: time to the filler (first text delta) and to the supervisor's first answer token."""
    marks = [m for s in sessions for m in s.deltas_ms]
    if not marks:
        return {}
    filler, answer = summarize(m[0] for m in marks), summarize(m[1] for m in marks)
    progress(
        f"{label}: time to filler p50 {filler['p50_ms']:.2f} ms, p99 {filler['p99_ms']:.2f} ms; "
        f"to first answer token p50 {answer['p50_ms']:.2f} ms, p99 {answer['p99_ms']:.2f} ms"
    )
    return {"time_to_filler": filler, "time_to_first_answer_token": answer}


async def handoff_phase(
    stack: Stack, replies: Replies, m: int, *, parallel: int, kind: str = "handoff",
    samples_out: list[float] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``m`` handoff turns, each on a fresh session opened beforehand, ``parallel`` at a time (``kind`` names
    them in the progress lines; the latencies are also appended to ``samples_out`` when given)."""
    label = kind if parallel > 1 else f"{kind} (one at a time)"
    progress(f"{label}: opening {m} fresh sessions (not timed)")
    sessions = await open_sessions(stack, m)
    progress(f"{label}: {m} handoff turns, {parallel} at a time")
    latencies, wall, cpu = await timed(
        stack, lambda: bounded((lambda s=s: s.turn(replies.handoff_text, replies.handoff) for s in sessions), parallel)
    )
    await close_sessions(sessions)
    stats, used = settle(label, latencies, wall, cpu, samples_out)
    return {"latency": stats, "wall_s": wall, "turns_per_s": m / wall, "cpu": used}


def edge_info(stack: Stack) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{stack.edge_url}/v1/switchboard/info", headers={"Authorization": f"Bearer {stack.api_key}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        info: dict[str, Any] = json.load(resp)
    return info


async def idle_phase(stack: Stack, replies: Replies, s: int, sample: int) -> dict[str, Any]:
    edge_pid = stack.proc("edge").pid
    before = rss_kib(edge_pid)
    progress(f"idle: edge RSS {before / 1024:.1f} MiB; opening {s} idle sessions")
    t0 = time.perf_counter()
    sessions = await open_sessions(stack, s)
    open_s = time.perf_counter() - t0
    await asyncio.sleep(1.0)  # let the edge settle after the burst of handshakes
    after = rss_kib(edge_pid)
    active = (await asyncio.to_thread(edge_info, stack))["active_sessions"]
    progress(f"idle: {s} open in {open_s:.1f}s; edge RSS {after / 1024:.1f} MiB; edge reports {active} active")
    if active < s:
        raise BenchError(f"edge reports {active} active sessions, {s} were opened")
    closed = [x.session_id for x in sessions if x.ws.state is not State.OPEN]
    if closed:
        raise BenchError(f"{len(closed)} idle sessions were closed by the edge, e.g. {closed[:3]}")
    picked = random.sample(sessions, min(sample, s))
    latencies = await bounded((lambda x=x: x.turn(replies.plain_text, replies.plain) for x in picked), len(picked))
    progress(f"idle: {len(picked)} sampled sessions answered a turn (max {max(latencies):.1f} ms); closing")
    await close_sessions(sessions)
    return {
        "sessions": s, "open_s": open_s, "edge_active_sessions": active, "rss_before_kib": before,
        "rss_after_kib": after, "kib_per_session": (after - before) / s, "sampled_turns_ok": len(picked),
        "sampled_turn_max_ms": max(latencies),
    }  # fmt: skip
