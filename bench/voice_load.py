"""Concurrent voice sessions through one edge: first audio, edge CPU and RSS as callers are added.

Phase 7 of ``bench/voice.py``. A real stack (as phase 6, bench/voice_edge.py); at each level N
(1, 2, 4, 8, 16 by default) N WebSocket sessions with server VAD are open at once, each speaking the
same pre-synthesised espeak-ng utterance in real time, ``turns`` times; session i starts i/N of an
utterance later than session 0, so ends of speech are spread, not simultaneous. Per turn: end of the
caller's last word -> first ``response.output_audio.delta`` (the answer is then cancelled, as in phase
6). Per level: first-audio p50/p99, the edge process's CPU per second of caller audio streamed, its RSS
once the N sessions are open and configured but silent (over the RSS just before), and its peak RSS
(sampled from /proc every 50 ms while the sessions are open): over the RSS with the models loaded and
no session open, per session; and added over the previous level's peak, per added session
(memory freed by one level is reused by the next, so the second is the marginal cost). The levels
stop at the first whose p50 exceeds 1.5 s. Any ``error`` event, a turn without answer audio or a turn
over ``TURN_TIMEOUT_S`` stops the run with a ``LoadFailure`` naming the level, session and turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from voice_edge import connect, cpu_s, machine_busy_s, one_turn, pct, retail_stack, session

from switchboard.local.stack import Stack
from switchboard.voice import PCM_RATE

LIMIT_MS = 1500.0
TURN_TIMEOUT_S = 60.0
RSS_EVERY_S = 0.05


class LoadFailure(RuntimeError):
    """A voice session failed during the load phase (the benchmark must not report over it)."""


def stt_redecodes(stack: Stack) -> int:
    """Turns so far whose greedy Whisper decode looped and was decoded again with beam search (edge log)."""
    return (stack.var_dir / "log" / "edge.log").read_text().count("whisper repetition; decoding again")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LoadFailure(f"no VmRSS for process {pid}")


async def caller(
    stack: Stack, n: int, i: int, turns: int, audio: np.ndarray, speech_s: float, silence_ms: int,
    opened: asyncio.Event, ready: list[int],
) -> tuple[list[float], list[dict[str, float]]]:  # fmt: skip
    """One session: open, configure, wait for the others, then ``turns`` spoken turns; first audio in ms."""
    firsts, stages = [], []
    async with connect(stack) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": session(silence_ms)}))
        while (event := json.loads(await ws.recv()))["type"] != "session.updated":
            if event["type"] == "error":
                raise LoadFailure(f"{n} sessions, session {i}: session.update refused: {event['error']}")
        ready.append(i)
        if len(ready) == n:
            opened.set()
        await opened.wait()
        await asyncio.sleep(i / n * audio.size / PCM_RATE)  # ok-sleep: spread the callers over one utterance
        for turn in range(turns):
            where = f"{n} sessions, session {i}, turn {turn + 1}"
            try:
                marks = await asyncio.wait_for(one_turn(ws, audio, speech_s), TURN_TIMEOUT_S)
            except TimeoutError:
                raise LoadFailure(f"{where}: no response.done within {TURN_TIMEOUT_S:.0f} s") from None
            except RuntimeError as e:
                raise LoadFailure(f"{where}: the edge sent an error: {e}") from e
            if "first_audio" not in marks:
                raise LoadFailure(f"{where}: the response ended without audio ({sorted(marks)})")
            firsts.append(float(marks["first_audio"]) * 1000)
            stages.append(marks)
    return firsts, stages


async def rss_when_open(pid: int, opened: asyncio.Event) -> float:
    await opened.wait()
    return rss_mb(pid)


async def level(stack: Stack, n: int, turns: int, audio: np.ndarray, speech_s: float, silence_ms: int,
                idle_mb: float) -> dict[str, Any]:  # fmt: skip
    edge = stack.proc("edge").pid
    opened = asyncio.Event()
    ready: list[int] = []
    before_mb = rss_mb(edge)
    peak = [before_mb]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], rss_mb(edge))
            await asyncio.sleep(RSS_EVERY_S)  # ok-sleep: RSS sampling period

    sampler = asyncio.create_task(sample())
    open_mb = asyncio.create_task(rss_when_open(edge, opened))
    cpu0, wall0, redecodes0, busy0 = cpu_s(edge), time.perf_counter(), stt_redecodes(stack), machine_busy_s()
    try:
        per_session = await asyncio.gather(
            *(caller(stack, n, i, turns, audio, speech_s, silence_ms, opened, ready) for i in range(n))
        )
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    cpu, wall = cpu_s(edge) - cpu0, time.perf_counter() - wall0
    busy = machine_busy_s() - busy0
    firsts = [ms for s, _ in per_session for ms in s]
    marks = [m for _, s in per_session for m in s]
    audio_s = n * turns * audio.size / PCM_RATE
    return {
        "sessions": n,
        "turns": len(firsts),
        "first_audio_ms_p50": statistics.median(firsts),
        "first_audio_ms_p99": pct(firsts, 99),
        "first_audio_ms_max": max(firsts),
        "vad_stt_response_ms_p50": [
            statistics.median(float(m[k]) * 1000 for m in marks) for k in ("vad", "stt", "response")
        ],
        "stt_redecoded_turns": stt_redecodes(stack) - redecodes0,
        "edge_cores": cpu / wall,
        "machine_cores": busy / wall,
        "edge_cpu_ms_per_audio_s": cpu * 1000 / audio_s,
        "edge_rss_open_silent_mb_per_session": (await open_mb - before_mb) / n,
        "edge_rss_peak_mb": peak[0],
        "edge_rss_growth_mb_per_session": (peak[0] - idle_mb) / n,
        "seconds": wall,
    }


async def bench_load(levels: list[int], turns: int, audio: np.ndarray, speech_s: float,
                     silence_ms: int) -> dict[str, Any]:  # fmt: skip
    rows: list[dict[str, Any]] = []
    with retail_stack() as stack:
        edge = stack.proc("edge").pid
        before_mb = rss_mb(edge)
        async with connect(stack) as ws:  # warm-up: the edge loads its models, not counted
            await ws.send(json.dumps({"type": "session.update", "session": session(silence_ms)}))
            try:
                await asyncio.wait_for(one_turn(ws, audio, speech_s), TURN_TIMEOUT_S)
            except (RuntimeError, TimeoutError) as e:
                raise LoadFailure(f"warm-up turn: {e or 'no response.done'}") from e
        idle_mb = rss_mb(edge)
        for n in levels:
            row = await level(stack, n, turns, audio, speech_s, silence_ms, idle_mb)
            prev = rows[-1] if rows else {"sessions": 0, "edge_rss_peak_mb": idle_mb}
            row["edge_rss_marginal_mb_per_session"] = (row["edge_rss_peak_mb"] - prev["edge_rss_peak_mb"]) / (
                n - prev["sessions"]
            )
            rows.append(row)
            print(
                f"  {n} sessions: first audio p50 {row['first_audio_ms_p50']:.0f} / p99"
                f" {row['first_audio_ms_p99']:.0f} ms; edge {row['edge_cores']:.2f} cores,"
                f" RSS +{row['edge_rss_growth_mb_per_session']:.1f} MB per session",
                flush=True,
            )
            if row["first_audio_ms_p50"] > LIMIT_MS:
                break
    sustained = max((r["sessions"] for r in rows if r["first_audio_ms_p50"] <= LIMIT_MS), default=0)
    return {
        "turns_per_session": turns,
        "silence_duration_ms": silence_ms,
        "caller_audio_s": audio.size / PCM_RATE,
        "caller_speech_s": float(speech_s),
        "edge_rss_before_models_mb": before_mb,
        "edge_rss_idle_mb": idle_mb,
        "sustained_sessions": sustained,
        "stopped_over_limit": rows[-1]["first_audio_ms_p50"] > LIMIT_MS,
        "levels": rows,
    }


def report(r: dict[str, Any]) -> str:
    capped = "" if r["stopped_over_limit"] else f" (no level tried went over; {r['levels'][-1]['sessions']} is the cap)"
    lines = [
        f"Concurrent voice sessions through one edge (phase 7, {r['when']}, 2 shared cores): each session streams a"
        f" {r['caller_audio_s']:.1f} s espeak-ng caller in real time, server VAD ({r['silence_duration_ms']} ms"
        f" silence), {r['turns_per_session']} turns; first audio = end of the caller's last word -> first answer"
        f" audio byte. Edge RSS with the models loaded and no session open: {r['edge_rss_idle_mb']:.0f} MB"
        f" ({r['edge_rss_before_models_mb']:.0f} MB before the first voice session loaded them). Sessions one edge"
        f" sustains with first-audio p50 <= {LIMIT_MS / 1000:.1f} s: **{r['sustained_sessions']}**{capped}.",
        "",
        "| Sessions | Turns (STT re-decoded) | First audio p50 / p99 / max | Edge cores (whole machine)"
        " | Edge CPU per s of caller audio | Edge RSS per open silent session | Edge RSS peak"
        " | RSS over idle, per session | RSS added per session over the previous level |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["levels"]:
        cells = [
            str(row["sessions"]),
            f"{row['turns']} ({row['stt_redecoded_turns']})",
            f"{row['first_audio_ms_p50']:.0f} / {row['first_audio_ms_p99']:.0f} / {row['first_audio_ms_max']:.0f} ms",
            f"{row['edge_cores']:.2f} ({row['machine_cores']:.2f})",
            f"{row['edge_cpu_ms_per_audio_s']:.0f} ms",
            f"{row['edge_rss_open_silent_mb_per_session'] * 1024:.0f} KB",
            f"{row['edge_rss_peak_mb']:.0f} MB",
            f"{row['edge_rss_growth_mb_per_session']:.1f} MB",
            f"{row['edge_rss_marginal_mb_per_session']:.1f} MB",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def measure(levels: list[int], turns: int, audio: np.ndarray, speech_s: float, silence_ms: int = 500) -> dict[str, Any]:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = asyncio.run(bench_load(levels, turns, audio, speech_s, silence_ms))
    result["when"] = started
    return result
