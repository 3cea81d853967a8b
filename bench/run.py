"""Switchboard benchmark: platform overhead, handoff cost, throughput and edge capacity.

Starts the whole system as real processes (nats-server, the edge, one process per agent) with
the zero-latency ``bench`` scenario (offline model, instant replies), drives it over WebSocket
with the Realtime protocol, and compares it with same-run baselines: raw NATS request/reply
between two processes and the OpenAI Agents SDK in-process. Every reply is verified, so a broken
system fails the run instead of producing numbers.

Phases: Agents SDK baseline; warmup; S idle sessions on the edge (RSS per session, then a turn on a
sample of them); N sessions x K back-to-back plain turns (latency and throughput); M handoff turns
on fresh sessions, N at a time; the same N sessions paced to --rate turns/s; plain and handoff
turns one at a time; raw NATS request/reply.

Tracing phases (``--no-tracing`` skips them): two more ``bench`` stacks up side by side, identical but for
tracing: one with ``OTEL_SDK_DISABLED=true``, one exporting every span over OTLP/HTTP to an OTLP receiver
in its own process (bench/otlp_sink.py). The one-at-a-time plain and handoff phases and the paced phase
run on both in alternating blocks (--tracing-blocks per phase and side); the report gives what tracing
adds at p50 and p99, in ms and %, against the target (< 10% at p50), and CPU per turn. The run fails
unless the receiver got ``edge.response`` and ``agent.turn`` spans.

Consult phases (chat-supervisor, ``--no-consult`` skips them), each on a stack of its own with the
``bench_supervisor`` scenario: direct turns (the front agent answers) and consult turns (filler, then
the supervisor's streamed answer) one at a time and paced to --consult-rate, with the time to the
filler and to the first answer token; then supervisor throughput: a scripted model in its own process
answers the supervisor after --model-delay-ms, each replica takes --supervisor-max-inflight consults at
once, and --consult-sessions callers do consult turns for --consult-duration seconds with 1, 2, 3...
supervisor replicas, failed consults counted.

.venv/bin/python bench/run.py [--quick] [--sessions N] [--turns K] [--handoffs M] [--idle-sessions S]
                              [--rate R] [--sdk-runs X] [--out-dir DIR] [--var-dir DIR]
                              [--no-consult] [--consult-rate R] [--consult-replicas 1,2,3]
                              [--consult-sessions C] [--consult-duration S] [--model-delay-ms D]
                              [--supervisor-max-inflight M] [--no-tracing] [--tracing-blocks B]
                              [--tracing-export-delay-ms D]

Results: bench/results/latest.json, bench/results/<UTC timestamp>.json, bench/results/latest.md
and the README table between ``<!-- bench:start -->`` and ``<!-- bench:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import agents_sdk_baseline as sdk
import nats
import scripted_model
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from switchboard.agents import load_scenario
from switchboard.local.stack import Stack
from switchboard.telemetry.names import SPAN_AGENT_TURN, SPAN_EDGE_RESPONSE

try:
    import uvloop
except ImportError:  # the edge uses uvloop when present; the load generator follows suit
    uvloop = None

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCENARIOS = BENCH / "scenarios"
SCENARIO = str(SCENARIOS / "bench")
"""By path: by name, ``bench`` would resolve to this very folder when the cwd is the repo root."""
SUPERVISOR_SCENARIO = str(SCENARIOS / "bench_supervisor")
PLAIN_TEXT = "Hi, what are your opening hours?"
HANDOFF_TEXT = "I want a refund"
DIRECT_TEXT = "hello"
"""bench_supervisor: answered by the front agent itself."""
CONSULT_TEXT = "my account please"
"""bench_supervisor: a must_consult word, so the platform consults without asking the front agent's model."""
CONSULT_TURNS_PER_SESSION = 10
"""Supervisor-throughput callers move to a fresh session after this many turns (the history stays short)."""
NO_BREAKER = 1_000_000
"""SWITCHBOARD_BREAKER_THRESHOLD of the edge whose breaker must not open (supervisor-throughput phase)."""
"""Supervisor-throughput callers move to a fresh session after this many turns (the history stays short)."""
TURN_TIMEOUT_S = 30.0
OPEN_PARALLEL = 50
"""WebSocket handshakes in flight at once while opening many sessions (not timed)."""
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"

T = TypeVar("T")
_t0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - _t0:6.1f}s] {msg}", flush=True)


@contextmanager
def client_gc_paused() -> Iterator[None]:
    """No garbage collection in the load generator while it times: its gen-2 collections (~100 ms with
    the Agents SDK and openai imported) would show up as platform latency. The system's own processes
    collect garbage as usual."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class BenchError(RuntimeError):
    """The system answered wrongly or not at all: no figures are produced."""


# --------------------------------------------------------------------------- statistics


def summarize(samples_ms: Iterable[float]) -> dict[str, float | int]:
    s = sorted(samples_ms)
    if not s:
        raise BenchError("no samples")
    return {
        "p50_ms": sdk.pct(s, 50), "p99_ms": sdk.pct(s, 99), "mean_ms": statistics.fmean(s),
        "max_ms": s[-1], "n": len(s),
    }  # fmt: skip


# --------------------------------------------------------------------------- Realtime client


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

    async def turn(self, text: str, expect: Expect, fallback: Expect | None = None) -> float:
        """One verified caller turn; returns ms from sending ``response.create`` to ``response.done``.

        With ``fallback``, a turn whose consult failed (``metadata.supervisor == "failed"``) is verified
        against it and counted in ``failed_ms`` instead of raising."""
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        await self.ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        marks: list[float] | None = [] if expect.first_delta is not None else None
        t0 = time.perf_counter()
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


async def bounded(factories: Iterable[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run the coroutines at most ``limit`` at a time; the first failure cancels the rest."""
    gate = asyncio.Semaphore(limit)

    async def one(factory: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await factory()

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(f)) for f in factories]
    return [t.result() for t in tasks]


async def open_sessions(stack: Stack, n: int) -> list[Session]:
    return await bounded((lambda: Session.open(stack.ws_base, stack.api_key) for _ in range(n)), OPEN_PARALLEL)


async def close_sessions(sessions: list[Session]) -> None:
    await bounded((s.close for s in sessions), OPEN_PARALLEL * 4)


# --------------------------------------------------------------------------- phases


@dataclass
class Replies:
    plain: Expect
    handoff: Expect

    @classmethod
    def from_scenario(cls) -> Replies:
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
    await bounded((lambda s=s: converse(s, replies.plain, 3) for s in sessions), n)
    await close_sessions(sessions)
    fresh = await open_sessions(stack, n)
    await bounded((lambda s=s: s.turn(HANDOFF_TEXT, replies.handoff) for s in fresh), n)
    await close_sessions(fresh)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_pids(stack: Stack) -> dict[str, int]:
    pids = {p.name: p.pid for p in stack.procs}
    if stack.nats.proc is not None:
        pids["nats-server"] = stack.nats.proc.pid
    return pids | {"bench-client": os.getpid()}


class CpuMeter:
    """CPU milliseconds each process spent per turn over a phase (where the overhead goes)."""

    def __init__(self, stack: Stack, extra: dict[str, int] | None = None) -> None:
        self.pids = process_pids(stack) | (extra or {})
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def per_turn_ms(self, turns: int, wall_s: float) -> dict[str, Any]:
        used = {name: cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}
        total = sum(used.values())
        return {
            "per_turn_ms": {name: round(s * 1000 / turns, 3) for name, s in used.items()},
            "total_per_turn_ms": total * 1000 / turns,
            "cores_busy": total / wall_s,
        }


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
    with client_gc_paused():
        cpu = CpuMeter(stack)
        t0 = time.perf_counter()
        await bounded((lambda s=s: converse(s, expect, k, text) for s in sessions), parallel)
        wall = time.perf_counter() - t0
    samples = [ms for s in sessions for ms in s.latencies_ms]
    used = cpu.per_turn_ms(len(samples), wall)
    await close_sessions(sessions)
    stats = summarize(samples)
    if samples_out is not None:
        samples_out.extend(samples)
    progress(
        f"{label}: {len(samples)} turns in {wall:.2f}s -> {len(samples) / wall:.0f} turns/s, "
        f"p50 {stats['p50_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms, "
        f"CPU {used['total_per_turn_ms']:.2f} ms/turn ({used['cores_busy']:.2f} cores busy)"
    )
    out = {"latency": stats, "wall_s": wall, "turns": len(samples), "turns_per_s": len(samples) / wall, "cpu": used}
    return out | filler_stats(label, sessions)


async def paced_phase(
    stack: Stack, replies: Replies | None, n: int, k: int, rate: float, *, kind: str = "plain",
    text: str = PLAIN_TEXT, expect: Expect | None = None, samples_out: list[float] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``n`` sessions of ``k`` turns offering ``rate`` turns/s in total: each session starts a turn every
    ``n / rate`` seconds (at a random phase), or at once if its previous turn ran late. The latencies are
    also appended to ``samples_out`` when given."""
    expect = expect or (replies.plain if replies else None)
    assert expect is not None
    interval = n / rate
    label = "paced" if kind == "plain" else f"{kind} (paced)"
    progress(f"{label}: opening {n} sessions")
    sessions = await open_sessions(stack, n)
    progress(f"{label}: {n} sessions x {k} turns, one turn per session every {interval * 1000:.0f} ms ({rate:.0f}/s)")
    loop = asyncio.get_running_loop()

    async def paced(s: Session, start: float) -> None:
        for i in range(k):
            await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
            await s.turn(text, expect)

    with client_gc_paused():
        cpu = CpuMeter(stack)
        t0 = time.perf_counter()
        begin = loop.time()
        await bounded((lambda s=s: paced(s, begin + random.uniform(0, interval)) for s in sessions), n)
        wall = time.perf_counter() - t0
    await close_sessions(sessions)
    samples = [ms for s in sessions for ms in s.latencies_ms]
    used = cpu.per_turn_ms(len(samples), wall)
    stats = summarize(samples)
    if samples_out is not None:
        samples_out.extend(samples)
    progress(
        f"{label}: {len(samples)} turns in {wall:.2f}s ({len(samples) / wall:.0f}/s achieved), "
        f"p50 {stats['p50_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms, "
        f"CPU {used['total_per_turn_ms']:.2f} ms/turn ({used['cores_busy']:.2f} cores busy)"
    )
    out = {"latency": stats, "offered_turns_per_s": rate, "achieved_turns_per_s": len(samples) / wall, "cpu": used}
    return out | filler_stats(label, sessions)


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
    with client_gc_paused():
        cpu = CpuMeter(stack)
        t0 = time.perf_counter()
        latencies = await bounded((lambda s=s: s.turn(HANDOFF_TEXT, replies.handoff) for s in sessions), parallel)
        wall = time.perf_counter() - t0
    used = cpu.per_turn_ms(m, wall)
    await close_sessions(sessions)
    stats = summarize(latencies)
    if samples_out is not None:
        samples_out.extend(latencies)
    progress(
        f"{label}: {m} turns in {wall:.2f}s, p50 {stats['p50_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms, "
        f"CPU {used['total_per_turn_ms']:.2f} ms/turn"
    )
    return {"latency": stats, "wall_s": wall, "turns_per_s": m / wall, "cpu": used}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def edge_info(stack: Stack) -> dict[str, Any]:
    with urllib.request.urlopen(f"{stack.edge_url}/v1/switchboard/info", timeout=10) as resp:
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
    latencies = await bounded((lambda x=x: x.turn(PLAIN_TEXT, replies.plain) for x in picked), len(picked))
    progress(f"idle: {len(picked)} sampled sessions answered a turn (max {max(latencies):.1f} ms); closing")
    await close_sessions(sessions)
    return {
        "sessions": s, "open_s": open_s, "edge_active_sessions": active, "rss_before_kib": before,
        "rss_after_kib": after, "kib_per_session": (after - before) / s, "sampled_turns_ok": len(picked),
        "sampled_turn_max_ms": max(latencies),
    }  # fmt: skip


async def nats_baseline(nats_url: str, requests: int, warmup_n: int = 200) -> dict[str, Any]:
    """Sequential request/reply to an echo responder in another process, on the stack's nats-server."""
    subject = "bench.echo"
    responder = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH / "nats_echo.py"), nats_url, subject, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert responder.stdout is not None
        line = await asyncio.wait_for(responder.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise BenchError(f"NATS echo responder did not start: {line!r}")
        nc = await nats.connect(nats_url, name="bench-requester")
        try:
            payload = secrets.token_bytes(96)
            samples = []
            with client_gc_paused():
                for i in range(warmup_n + requests):
                    t0 = time.perf_counter()
                    reply = await nc.request(subject, payload, timeout=5)
                    ms = (time.perf_counter() - t0) * 1000
                    if reply.data != payload:
                        raise BenchError("NATS echo returned a different payload")
                    if i >= warmup_n:
                        samples.append(ms)
        finally:
            await nc.close()
    finally:
        responder.terminate()
        await responder.wait()
    stats = summarize(samples)
    progress(f"nats: {requests} sequential requests, p50 {stats['p50_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms")
    return {"latency": stats, "payload_bytes": len(payload)}


async def sdk_baseline(runs: int) -> dict[str, Any]:
    progress(f"agents-sdk: {runs} plain + {runs} handoff runs in-process (fake zero-latency model)")
    res = await sdk.measure(runs=runs, concurrency=200, warmup=min(200, runs))
    p, h = res["plain"], res["handoff"]
    progress(
        f"agents-sdk {res['sdk_version']}: plain p50 {p['p50_ms']:.3f} ms, handoff p50 {h['p50_ms']:.3f} ms, "
        f"adds {res['handoff_added_ms_p50']:.3f} ms"
    )
    return res


# --------------------------------------------------------------------------- chat-supervisor (consult) phases


@dataclass
class ConsultReplies:
    """The bench_supervisor scenario's exact replies, read from its YAML."""

    direct: Expect
    """``hello``: the front agent answers itself, no consult."""
    consult: Expect
    """An account question: filler, then the offline expert's answer, spoken as ``front``."""
    scripted: Expect
    """The same with the scripted model's answer (supervisor-throughput phase)."""
    failed: Expect
    """A failed consult: filler, the fallback line, then the fallback agent after a transfer."""

    @classmethod
    def from_scenario(cls) -> ConsultReplies:
        config = load_scenario(SUPERVISOR_SCENARIO, SCENARIOS).config
        front, expert, general = (config.agent(n) for n in ("front", "expert", "generalist"))
        assert front is not None and front.consult is not None and expert is not None and general is not None
        if len(front.consult.fillers) != 1:
            raise BenchError("bench_supervisor: the front agent needs exactly one filler (the replies are checked)")
        hello = next(r.say for r in front.offline.rules if DIRECT_TEXT in r.when_user_says and r.say)
        filler = front.consult.fillers[0] + " "
        fallback = front.consult.fallback
        return cls(
            direct=Expect("front", hello, supervisor="no"),
            consult=Expect("front", filler + expert.offline.default, supervisor="consulted", first_delta=filler),
            scripted=Expect("front", filler + scripted_model.ANSWER, supervisor="consulted", first_delta=filler),
            failed=Expect(fallback.target or config.fallback_agent, filler + fallback.say + general.offline.default,
                          handoff_to=fallback.target or config.fallback_agent, supervisor="failed"),
        )  # fmt: skip


async def consult_latency_phases(stack: Stack, p: Params) -> dict[str, Any]:
    """Zero-latency models: what a consult costs the platform, one at a time and at the paced rate."""
    cr = ConsultReplies.from_scenario()
    n_warm = min(p.sessions, 20)
    progress(f"consult warmup: {n_warm} sessions x 3 direct + 3 consult turns")
    warm = await open_sessions(stack, n_warm)
    await bounded((lambda s=s: converse(s, cr.direct, 3, DIRECT_TEXT) for s in warm), n_warm)
    await bounded((lambda s=s: converse(s, cr.consult, 3, CONSULT_TEXT) for s in warm), n_warm)
    await close_sessions(warm)
    direct_kw: dict[str, Any] = {"kind": "direct", "text": DIRECT_TEXT, "expect": cr.direct}
    consult_kw: dict[str, Any] = {"kind": "consult", "text": CONSULT_TEXT, "expect": cr.consult}
    direct_1 = await plain_phase(stack, None, p.unloaded_sessions, p.turns, parallel=1, **direct_kw)
    consult_1 = await plain_phase(stack, None, p.unloaded_sessions, p.turns, parallel=1, **consult_kw)
    direct_paced = await paced_phase(stack, None, p.sessions, p.turns, p.consult_rate, **direct_kw)
    consult_paced = await paced_phase(stack, None, p.sessions, p.turns, p.consult_rate, **consult_kw)
    added_1 = consult_1["latency"]["p50_ms"] - direct_1["latency"]["p50_ms"]
    added_paced = consult_paced["latency"]["p50_ms"] - direct_paced["latency"]["p50_ms"]
    progress(f"consult adds (p50): {added_1:.2f} ms one at a time, {added_paced:.2f} ms at {p.consult_rate:.0f}/s")
    return {
        "direct_unloaded": direct_1, "consult_unloaded": consult_1,
        "direct_paced": direct_paced, "consult_paced": consult_paced,
        "consult_added_p50_ms_unloaded": added_1, "consult_added_p50_ms_paced": added_paced,
    }  # fmt: skip


@dataclass
class EdgeRef:
    """One edge process of a stack: the consult throughput phase runs two, with different breaker settings."""

    name: str
    port: int

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/switchboard/stats", timeout=10) as resp:
            stats: dict[str, Any] = json.load(resp)
        return stats


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the edge counted during one run: consults, retries (mostly ``busy``), outcomes."""
    outcomes = {
        k: v - before["consult_outcomes"].get(k, 0)
        for k, v in after["consult_outcomes"].items()
        if v - before["consult_outcomes"].get(k, 0)
    }
    keys = ("consulted_responses", "consult_failures", "consult_retries")
    return {k: after[k] - before[k] for k in keys} | {"consult_outcomes": outcomes}


def busy_refusals(stack: Stack, edge: EdgeRef) -> int:
    """Consult attempts a supervisor refused as ``busy``, from the edge's log (``consult retry`` and ``consult
    failed`` lines with the refusal's message)."""
    return sum(
        "concurrency limit" in ln and ('"msg": "consult retry"' in ln or '"msg": "consult failed"' in ln)
        for ln in stack.proc(edge.name).lines
    )


async def consult_load(
    stack: Stack, edge: EdgeRef, p: Params, replicas: int, model_pid: int, *, breaker: str, callers: int | None = None
) -> dict[str, Any]:
    """``consult_sessions`` callers doing consult turns back to back for ``consult_duration_s`` (closed loop).

    Each caller moves to a fresh, pre-opened session every ``CONSULT_TURNS_PER_SESSION`` turns, so the
    history a consult carries stays short. A failed consult is counted, not fatal; the session is then with
    the fallback agent, so the caller hangs up and comes back on a fresh session."""
    cr = ConsultReplies.from_scenario()
    c, duration = callers or p.consult_sessions, p.consult_duration_s
    bound = replicas * p.supervisor_max_inflight / (p.model_delay_ms / 1000)
    label = f"replicas={replicas}, {c} callers, breaker {breaker}"

    async def sessions(n: int) -> list[Session]:
        return await bounded((lambda: Session.open(edge.ws_base, stack.api_key) for _ in range(n)), OPEN_PARALLEL)

    pool = await sessions(c + math.ceil(bound * duration * 1.2 / CONSULT_TURNS_PER_SESSION))
    progress(f"{label}: consult turns back to back for {duration:.0f}s via {edge.name} ({len(pool)} sessions ready)")
    used: list[Session] = []
    opened_inline = 0
    loop = asyncio.get_running_loop()

    async def caller(end: float) -> None:
        nonlocal opened_inline
        while loop.time() < end:
            if not pool:
                opened_inline += 1
            s = pool.pop() if pool else await Session.open(edge.ws_base, stack.api_key)
            used.append(s)
            for _ in range(CONSULT_TURNS_PER_SESSION):
                if loop.time() >= end or not await consult_turn(s, cr):
                    break

    before, busy_before = await asyncio.to_thread(edge.stats), busy_refusals(stack, edge)
    with client_gc_paused():
        cpu = CpuMeter(stack, extra={"scripted-model": model_pid})
        t0 = time.perf_counter()
        end = loop.time() + duration
        await bounded((lambda: caller(end) for _ in range(c)), c)
        wall = time.perf_counter() - t0
    counted = stats_delta(before, await asyncio.to_thread(edge.stats))
    counted["busy_refusals"] = busy_refusals(stack, edge) - busy_before
    ok = [ms for s in used for ms in s.latencies_ms]
    failed = [ms for s in used for ms in s.failed_ms]
    cpu_used = cpu.per_turn_ms(max(len(ok) + len(failed), 1), wall)
    await close_sessions(used + pool)
    out: dict[str, Any] = {
        "replicas": replicas, "breaker": breaker, "callers": c, "wall_s": wall,
        "consults_ok": len(ok), "consults_failed": len(failed), "consults_per_s": len(ok) / wall,
        "failed_per_s": len(failed) / wall, "failed_share": len(failed) / max(len(ok) + len(failed), 1),
        "bound_consults_per_s": bound, "of_bound": len(ok) / wall / bound,
        "latency": summarize(ok) if ok else None, "failed_latency": summarize(failed) if failed else None,
        "consult_ms": summarize(ms for s in used for ms in s.consult_ms) if ok else None,
        "sessions_opened_during_run": opened_inline, "edge": counted, "cpu": cpu_used,
    }  # fmt: skip
    out |= filler_stats(label, used)
    lat = out["latency"] or {"p50_ms": math.nan, "p99_ms": math.nan}
    progress(
        f"{label}: {len(ok)} consults in {wall:.2f}s -> {out['consults_per_s']:.0f}/s (bound {bound:.0f}/s, "
        f"{out['of_bound']:.0%}), p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms; {len(failed)} failed "
        f"({out['failed_share']:.1%}); consult_ms p50 {(out['consult_ms'] or lat)['p50_ms']:.1f}; "
        f"edge: {counted['consult_retries']} retries, {counted['busy_refusals']} busy "
        f"refusals, outcomes {counted['consult_outcomes']}; CPU {cpu_used['cores_busy']:.2f} cores busy"
    )
    return out


async def consult_turn(session: Session, cr: ConsultReplies) -> bool:
    """One consult turn answered by the scripted model; False if the consult failed (and fell back)."""
    failed = len(session.failed_ms)
    await session.turn(CONSULT_TEXT, cr.scripted, fallback=cr.failed)
    return len(session.failed_ms) == failed


async def replicas_phases(stack: Stack, p: Params, model_pid: int) -> dict[str, Any]:
    """Latency-bound supervisor (scripted model, ``model_delay_ms``), ``supervisor_max_inflight`` per replica.

    Two edges on the same agents: ``edge`` with the platform's default breaker, ``edge#2`` whose breaker
    never opens. The scaling series (1, 2, 3... replicas, added one by one) runs through ``edge#2``. One
    run at the largest replica count goes through ``edge`` (never used before, so its breaker starts
    closed) to show that the defaults behave the same (``busy`` never opens a breaker)."""
    stack.extra_env["SWITCHBOARD_BREAKER_THRESHOLD"] = str(NO_BREAKER)
    edge2_proc, edge2_port = await asyncio.to_thread(stack.start_edge)
    del stack.extra_env["SWITCHBOARD_BREAKER_THRESHOLD"]
    edge_default, edge_open = EdgeRef("edge", stack.edge_port), EdgeRef(edge2_proc.name, edge2_port)
    # Only the supervisor replicas get the small concurrency cap (started after the others).
    stack.extra_env["SWITCHBOARD_AGENT_MAX_INFLIGHT"] = str(p.supervisor_max_inflight)
    cr = ConsultReplies.from_scenario()
    runs: list[dict[str, Any]] = []
    calibration: dict[str, Any] | None = None
    running = 0
    for n in sorted(set(p.consult_replicas)):
        while running < n:
            await asyncio.to_thread(stack.start_agent, "expert", wait=True)
            running += 1
        progress(f"replicas={n}: {n} supervisor replica(s) up, at most {p.supervisor_max_inflight} consults each")
        for _ in range(3):  # warm new replicas up (their first model calls open HTTP connections)
            warm = await bounded(
                (lambda: Session.open(edge_open.ws_base, stack.api_key) for _ in range(n * p.supervisor_max_inflight)),
                OPEN_PARALLEL,
            )  # fmt: skip
            await bounded((lambda s=s: consult_turn(s, cr) for s in warm), len(warm))
            await close_sessions(warm)
        if n == 1:  # as many callers as one replica has slots: no busy; how long one consult holds a slot
            calibration = await consult_load(
                stack, edge_open, p, n, model_pid, breaker="off", callers=p.supervisor_max_inflight
            )
        runs.append(await consult_load(stack, edge_open, p, n, model_pid, breaker="off"))
    defaults = await consult_load(stack, edge_default, p, running, model_pid, breaker="default")
    slot_ms = calibration["consult_ms"]["p50_ms"] if calibration and calibration["consult_ms"] else None
    return {
        "model_delay_ms": p.model_delay_ms, "supervisor_max_inflight": p.supervisor_max_inflight,
        "callers": p.consult_sessions, "duration_s": p.consult_duration_s, "consult_attempts": consult_attempts(),
        "no_breaker_threshold": NO_BREAKER, "unqueued": calibration, "slot_ms": slot_ms,
        "runs": runs, "default_breaker_run": defaults,
    }  # fmt: skip


def consult_attempts() -> int:
    front = load_scenario(SUPERVISOR_SCENARIO, SCENARIOS).config.agent("front")
    assert front is not None and front.consult is not None
    return front.consult.attempts


@contextmanager
def scripted_model_server(delay_ms: float) -> Iterator[tuple[str, int]]:
    """bench/scripted_model.py in its own process; yields its base URL and pid."""
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "scripted_model.py"), str(delay_ms)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "ready":
            raise BenchError(f"scripted model server did not start: {line!r}")
        progress(f"scripted model: {line[1]} (pid {proc.pid}), supervisor answers after {delay_ms:.0f} ms")
        yield line[1], proc.pid
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
        if out.strip():
            progress(f"scripted model: {out.strip()} (supervisor requests, other requests)")


def consult_stacks(runner: asyncio.Runner, p: Params, var_dir: Path) -> dict[str, Any]:
    """The consult phase group, on two stacks of its own (after the main stack has stopped)."""
    env = {"SWITCHBOARD_SCENARIOS_DIR": str(SCENARIOS), "OPENAI_API_KEY": ""}
    key = f"bench-{secrets.token_hex(8)}"
    latency_stack = Stack(var_dir / "supervisor", scenario=SUPERVISOR_SCENARIO, api_key=key, env=env)
    latency = on_stack(
        runner, latency_stack, "bench_supervisor, zero latency", lambda st: consult_latency_phases(st, p)
    )
    with scripted_model_server(p.model_delay_ms) as (url, pid):
        model_env = env | {"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": url}
        stack = Stack(
            var_dir / "supervisor-replicas", scenario=SUPERVISOR_SCENARIO, agents=["front", "generalist"],
            api_key=key, env=model_env,
        )  # fmt: skip

        replicas = on_stack(
            runner, stack, "bench_supervisor, scripted supervisor model", lambda st: replicas_phases(st, p, pid)
        )
    return {"latency": latency, "replicas": replicas}


# --------------------------------------------------------------------------- tracing overhead phases

TRACING_PHASES = {
    "plain_unloaded": "Plain turn, one at a time",
    "handoff_unloaded": "Handoff turn, one at a time",
    "plain_paced": "Plain turn, paced",
}
"""The phases measured with tracing off and on (keys as in the main stack's results), and their names."""
TRACING_TARGET_PCT = 10.0
"""The observability issue's target: tracing adds less than this to turn latency at p50."""
REQUIRED_SPANS = (SPAN_EDGE_RESPONSE, SPAN_AGENT_TURN)
"""The traced stack fails the run unless the receiver got spans of each of these names."""
EXPORT_MARGIN_S = 0.5
"""Added to the batch processor's schedule delay when waiting for the traced stack's last spans."""


def tracing_env(endpoint: str | None, export_delay_ms: float) -> dict[str, str]:
    """The ``OTEL_*`` settings of the tracing-off (no endpoint) or tracing-on stack, set explicitly so the
    environment the benchmark runs in cannot turn tracing on, off, down-sampled or elsewhere."""
    if endpoint is None:
        return {"OTEL_SDK_DISABLED": "true", "SWITCHBOARD_TRACE_CONTENT": "0"}
    return {
        "OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{endpoint}/v1/traces", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on", "OTEL_BSP_SCHEDULE_DELAY": str(round(export_delay_ms)),
        "SWITCHBOARD_TRACE_CONTENT": "0",
    }  # fmt: skip


@contextmanager
def otlp_sink() -> Iterator[tuple[str, int]]:
    """bench/otlp_sink.py (Switchboard's OTLP receiver test double, counting spans) in its own process, so
    decoding spans does not take the load generator's event loop; yields its endpoint and pid."""
    proc = subprocess.Popen([sys.executable, str(BENCH / "otlp_sink.py")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "ready":
            raise BenchError(f"OTLP receiver did not start: {line!r}")
        progress(f"otlp receiver: {line[1]} (pid {proc.pid})")
        yield line[1], proc.pid
    finally:
        proc.terminate()
        proc.wait(15)


def sink_counts(endpoint: str) -> dict[str, Any]:
    """What the receiver got so far: ``{"spans": n, "requests": r, "by_name": {name: n}}``."""
    with urllib.request.urlopen(f"{endpoint}/counts", timeout=10) as resp:
        counts: dict[str, Any] = json.load(resp)
    return counts


@dataclass
class TracingArm:
    """One side of the comparison: its stack and the results of its measurement blocks, by phase."""

    name: str
    stack: Stack
    blocks: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {k: [] for k in TRACING_PHASES})
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in TRACING_PHASES})
    turns: int = 0
    """Turns the stack answered, warmup included (each should yield one ``edge.response`` span)."""


class ExportDrain:
    """Keeps the traced stack's span export out of the untraced stack's blocks: after a traced block, the
    next untraced block waits until every process's batch processor has exported what it held (it exports
    at least every schedule delay)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.since: float | None = None

    def traced(self) -> None:
        self.since = time.monotonic()

    async def wait(self) -> None:
        if self.since is not None:
            await asyncio.sleep(max(0.0, self.since + self.delay_s - time.monotonic()))
        self.since = None


async def tracing_block(phase: str, arm: TracingArm, replies: Replies, p: Params, label: str) -> None:
    """One measurement block of ``phase`` on one arm: the same turns as the main stack's phase of that name."""
    out, st = arm.samples[phase], arm.stack
    if phase == "plain_unloaded":
        res = await plain_phase(
            st, replies, p.unloaded_sessions, p.turns, parallel=1, kind=f"{label}, plain", samples_out=out
        )
    elif phase == "handoff_unloaded":
        res = await handoff_phase(
            st, replies, p.unloaded_handoffs, parallel=1, kind=f"{label}, handoff", samples_out=out
        )
    else:
        res = await paced_phase(st, replies, p.sessions, p.turns, p.rate, kind=f"{label}, plain", samples_out=out)
    n = res["latency"]["n"]
    arm.turns += n
    cpu = res["cpu"]["per_turn_ms"]
    block = {
        "p50_ms": res["latency"]["p50_ms"], "p99_ms": res["latency"]["p99_ms"], "n": n,
        "cpu_per_turn_ms": cpu, "system_cpu_per_turn_ms": sum(v for k, v in cpu.items() if k != "bench-client"),
    }  # fmt: skip
    if "achieved_turns_per_s" in res:
        block["achieved_turns_per_s"] = res["achieved_turns_per_s"]
    arm.blocks[phase].append(block)


def arm_summary(arm: TracingArm, phase: str) -> dict[str, Any]:
    """One arm's figures for one phase: latency over all its blocks pooled, CPU per turn over all its turns."""
    blocks = arm.blocks[phase]
    turns = sum(b["n"] for b in blocks)
    per_process: dict[str, float] = {}
    for b in blocks:
        for name, ms in b["cpu_per_turn_ms"].items():
            per_process[name] = per_process.get(name, 0.0) + ms * b["n"] / turns
    out = {
        "latency": summarize(arm.samples[phase]),
        "block_p50_ms": [b["p50_ms"] for b in blocks], "block_p99_ms": [b["p99_ms"] for b in blocks],
        "cpu_per_turn_ms": {k: round(v, 3) for k, v in per_process.items()},
        "system_cpu_per_turn_ms": sum(v for k, v in per_process.items() if k != "bench-client"),
    }  # fmt: skip
    if all("achieved_turns_per_s" in b for b in blocks):
        out["achieved_turns_per_s"] = statistics.fmean(b["achieved_turns_per_s"] for b in blocks)
    return out


def added(off: float, on: float) -> tuple[float, float | None]:
    """What tracing adds, in ms and in % of the untraced figure."""
    return on - off, (on - off) / off * 100 if off > 0 else None


def tracing_verdict(
    arms: dict[str, TracingArm], counts: dict[str, Any], sink_cpu_s: float, measured_turns: int
) -> dict[str, Any]:
    """Checks the traced stack really traced (and the other did not), then compares the arms phase by phase."""
    by_name: dict[str, int] = counts["by_name"]
    missing = [name for name in REQUIRED_SPANS if not by_name.get(name)]
    if missing:
        raise BenchError(f"tracing on: the receiver got no {missing} spans (got {by_name}): tracing is not exporting")
    for arm, want in ((arms["on"], True), (arms["off"], False)):
        wrong = [pr.name for pr in arm.stack.procs if any('"tracing enabled"' in ln for ln in pr.lines) != want]
        if wrong:
            raise BenchError(f"tracing {arm.name}: tracing is {'off' if want else 'on'} in {wrong}")
    edge_spans, traced_turns = by_name[SPAN_EDGE_RESPONSE], arms["on"].turns
    if edge_spans != traced_turns:
        progress(f"tracing: WARNING {edge_spans} {SPAN_EDGE_RESPONSE} spans for {traced_turns} turns (spans lost?)")
    phases: dict[str, Any] = {}
    for phase in TRACING_PHASES:
        off, on = arm_summary(arms["off"], phase), arm_summary(arms["on"], phase)
        row: dict[str, Any] = {"off": off, "on": on}
        for q in ("p50", "p99"):
            row[f"added_{q}_ms"], row[f"added_{q}_pct"] = added(off["latency"][f"{q}_ms"], on["latency"][f"{q}_ms"])
        row["cpu_added_ms"], row["cpu_added_pct"] = added(off["system_cpu_per_turn_ms"], on["system_cpu_per_turn_ms"])
        # Robustness checks against one noisy block: in how many block pairs (the n-th off and on blocks) the
        # traced one was slower, and what the medians of the blocks' own percentiles say.
        pairs = list(zip(off["block_p50_ms"], on["block_p50_ms"], strict=True))
        row["pairs_on_slower_p50"] = sum(b > a for a, b in pairs)
        row["pairs"] = len(pairs)
        for q in ("p50", "p99"):
            a, b = statistics.median(off[f"block_{q}_ms"]), statistics.median(on[f"block_{q}_ms"])
            row[f"added_{q}_pct_block_median"] = added(a, b)[1]
        pct = row["added_p50_pct"]
        row["target_met"] = pct is not None and pct < TRACING_TARGET_PCT
        phases[phase] = row
    worst = max(row["added_p50_pct"] or 0.0 for row in phases.values())
    return {
        "phases": phases,
        "target": {"added_p50_pct_below": TRACING_TARGET_PCT, "worst_added_p50_pct": worst,
                   "ok": all(row["target_met"] for row in phases.values())},
        "spans": {"received": counts["spans"], "export_requests": counts["requests"], "by_name": by_name,
                  "traced_turns": traced_turns, "edge_response_spans": edge_spans,
                  "every_turn_traced": edge_spans == traced_turns, "per_turn": counts["spans"] / traced_turns},
        "receiver_cpu_per_measured_turn_ms": sink_cpu_s * 1000 / measured_turns,
    }  # fmt: skip


async def tracing_phases(off: Stack, on: Stack, p: Params, endpoint: str, sink_pid: int) -> dict[str, Any]:
    """The main stack's one-at-a-time and paced phases on a tracing-off and a tracing-on stack, both up at once,
    measured in alternating blocks (off/on, on/off, off/on, ...: neither side always goes first), so machine
    noise and drift fall on both alike."""
    replies = Replies.from_scenario()
    arms = {"off": TracingArm("off", off), "on": TracingArm("on", on)}
    drain = ExportDrain(p.tracing_export_delay_ms / 1000 + EXPORT_MARGIN_S)
    n_warm = min(p.sessions, 20)
    for arm in arms.values():
        progress(f"tracing {arm.name}: warmup, {n_warm} sessions x 3 plain turns + {n_warm} handoffs")
        await warmup(arm.stack, replies, n_warm)
        arm.turns += 4 * n_warm
    drain.traced()
    await drain.wait()
    sink_cpu = cpu_seconds(sink_pid)
    blocks = p.tracing_blocks
    for phase in TRACING_PHASES:
        for b in range(blocks):
            for name in ("off", "on") if b % 2 == 0 else ("on", "off"):
                if name == "off":
                    await drain.wait()
                await tracing_block(phase, arms[name], replies, p, f"tracing {name} {b + 1}/{blocks}")
                if name == "on":
                    drain.traced()
    await drain.wait()
    sink_cpu = cpu_seconds(sink_pid) - sink_cpu
    counts = await asyncio.to_thread(sink_counts, endpoint)
    measured = arms["on"].turns - 4 * n_warm
    res = tracing_verdict(arms, counts, sink_cpu, measured)
    for phase, row in res["phases"].items():
        progress(
            f"tracing adds ({phase}): p50 {fmt_added(row, 'p50')}, p99 {fmt_added(row, 'p99')}; system CPU "
            f"{row['off']['system_cpu_per_turn_ms']:.2f} -> {row['on']['system_cpu_per_turn_ms']:.2f} ms/turn"
        )
    spans = res["spans"]
    progress(
        f"tracing: receiver got {spans['received']} spans ({spans['per_turn']:.1f}/turn) in "
        f"{spans['export_requests']} exports; {spans['edge_response_spans']} {SPAN_EDGE_RESPONSE} for "
        f"{spans['traced_turns']} traced turns; receiver CPU {res['receiver_cpu_per_measured_turn_ms']:.2f} ms/turn"
    )
    return res | {
        "blocks": blocks,
        "measured_turns_per_arm": measured,
        "env": {"off": tracing_env(None, 0), "on": tracing_env(endpoint, p.tracing_export_delay_ms)},
    }


def fmt_added(row: dict[str, Any], q: str) -> str:
    """``+0.14 ms (+7.3%)``: what tracing added at ``q`` (p50 or p99)."""
    pct = row[f"added_{q}_pct"]
    return f"{row[f'added_{q}_ms']:+.2f} ms" + (f" ({pct:+.1f}%)" if pct is not None else "")


def tracing_stacks(runner: asyncio.Runner, p: Params, var_dir: Path) -> dict[str, Any]:
    """The tracing phase group: two ``bench`` stacks up at once, identical but for tracing, and the receiver."""
    key = f"bench-{secrets.token_hex(8)}"
    env = {"SWITCHBOARD_SCENARIOS_DIR": str(SCENARIOS), "OPENAI_API_KEY": ""}
    with otlp_sink() as (endpoint, pid):
        off = Stack(var_dir / "tracing-off", scenario=SCENARIO, api_key=key, env=env | tracing_env(None, 0))
        on_env = env | tracing_env(endpoint, p.tracing_export_delay_ms)
        on = Stack(var_dir / "tracing-on", scenario=SCENARIO, api_key=key, env=on_env)
        return on_stacks(
            runner, [off, on], "bench, tracing off and on", lambda st: tracing_phases(st[0], st[1], p, endpoint, pid)
        )


# --------------------------------------------------------------------------- the run


@dataclass
class Params:
    sessions: int
    turns: int
    handoffs: int
    idle_sessions: int
    idle_sample: int
    sdk_runs: int
    nats_requests: int
    unloaded_sessions: int
    unloaded_handoffs: int
    rate: float
    quick: bool
    consult: bool = True
    """The chat-supervisor phase group (``--no-consult`` skips it)."""
    consult_rate: float = 500.0
    """Turns/s of the paced direct and consult phases (default: ``rate``)."""
    consult_replicas: tuple[int, ...] = (1, 2, 3)
    consult_sessions: int = 24
    """Concurrent callers of the supervisor-throughput phase."""
    consult_duration_s: float = 5.0
    model_delay_ms: float = 50.0
    """The scripted supervisor model's latency in the throughput phase."""
    supervisor_max_inflight: int = 4
    """SWITCHBOARD_AGENT_MAX_INFLIGHT of each supervisor replica in the throughput phase."""
    tracing: bool = True
    """The tracing-overhead phase group (``--no-tracing`` skips it)."""
    tracing_blocks: int = 4
    """Measurement blocks per phase on each of the tracing-off and tracing-on stacks, alternating."""
    tracing_export_delay_ms: float = 200.0
    """OTEL_BSP_SCHEDULE_DELAY of the traced stack: short, so a block's spans are exported during the block."""


async def bench_stack(stack: Stack, p: Params) -> dict[str, Any]:
    replies = Replies.from_scenario()
    n_warm = min(p.sessions, 20)
    progress(f"warmup: {n_warm} sessions x 3 plain turns + {n_warm} handoffs")
    await warmup(stack, replies, n_warm)
    idle = await idle_phase(stack, replies, p.idle_sessions, p.idle_sample)
    plain = await plain_phase(stack, replies, p.sessions, p.turns, parallel=p.sessions)
    handoff = await handoff_phase(stack, replies, p.handoffs, parallel=p.sessions)
    # The same turns one at a time: the platform's own latency, without queueing behind other sessions.
    paced = await paced_phase(stack, replies, p.sessions, p.turns, p.rate)
    plain_1 = await plain_phase(stack, replies, p.unloaded_sessions, p.turns, parallel=1)
    handoff_1 = await handoff_phase(stack, replies, p.unloaded_handoffs, parallel=1)
    progress(f"nats: echo responder process + {p.nats_requests} sequential requests")
    raw_nats = await nats_baseline(stack.nats.url, p.nats_requests)
    return {
        "plain": plain, "handoff": handoff, "plain_unloaded": plain_1, "handoff_unloaded": handoff_1,
        "plain_paced": paced,
        "idle": idle, "nats": raw_nats,
    }  # fmt: skip


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def assemble(p: Params, sw: dict[str, Any], sdk_res: dict[str, Any], wall_s: float) -> dict[str, Any]:
    plain, handoff = sw["plain"]["latency"], sw["handoff"]["latency"]
    added = handoff["p50_ms"] - plain["p50_ms"]
    added_1 = sw["handoff_unloaded"]["latency"]["p50_ms"] - sw["plain_unloaded"]["latency"]["p50_ms"]
    sdk_plain, sdk_added = sdk_res["plain"]["p50_ms"], sdk_res["handoff_added_ms_p50"]
    idle, tput = sw["idle"], sw["plain"]["turns_per_s"]

    def target(limit: float, value: float, higher_is_better: bool = False) -> dict[str, Any]:
        return {"target": limit, "value": value, "ok": value >= limit if higher_is_better else value <= limit}

    consult_scenario = "bench_supervisor" if p.consult else None
    run_info = {"scenario": "bench", "consult_scenario": consult_scenario, "ws_compression": None}
    run_info["client_loop"] = loop_name()

    return {
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": wall_s,
        "machine": machine_info(),
        "params": vars(p) | run_info,
        "switchboard": {
            "plain": sw["plain"],
            "handoff": sw["handoff"],
            "handoff_added_p50_ms": added,
            "throughput_turns_per_s": tput,
            "plain_paced": sw["plain_paced"],
            "plain_unloaded": sw["plain_unloaded"],
            "handoff_unloaded": sw["handoff_unloaded"],
            "handoff_added_p50_ms_unloaded": added_1,
            "edge_idle": idle,
            "log_problems": sw["log_problems"],
            "consult": sw.get("consult"),
            "tracing": sw.get("tracing"),
        },
        "baselines": {"nats_request_reply": sw["nats"], "agents_sdk": sdk_res},
        "ratios": {
            "handoff_added_p50_vs_sdk": ratio(added, sdk_added),
            "plain_p50_vs_sdk": ratio(plain["p50_ms"], sdk_plain),
            "handoff_added_p50_vs_sdk_unloaded": ratio(added_1, sdk_added),
            "plain_p50_vs_sdk_unloaded": ratio(sw["plain_unloaded"]["latency"]["p50_ms"], sdk_plain),
            "plain_p50_unloaded_vs_nats_rtt": ratio(
                sw["plain_unloaded"]["latency"]["p50_ms"], sw["nats"]["latency"]["p50_ms"]
            ),
        },
        # The product brief's targets. Latency is judged at `sessions` concurrent sessions under the paced
        # load (an overhead measurement); the flat-out closed loop measures saturation, where by Little's law
        # latency is sessions / throughput whatever the platform does. A handoff's added cost is judged one
        # at a time (the flat-out figure is queueing behind the extra hop).
        "targets": {
            "plain_p50_ms": target(3.0, sw["plain_paced"]["latency"]["p50_ms"]),
            "plain_p99_ms": target(15.0, sw["plain_paced"]["latency"]["p99_ms"]),
            "handoff_added_p50_ms": target(2.0, added_1),
            "sessions_per_edge": target(1000, idle["sessions"], higher_is_better=True),
            "turns_per_s": target(500, tput, higher_is_better=True),
        }
        | tracing_target(sw.get("tracing")),
    }


def tracing_target(tracing: dict[str, Any] | None) -> dict[str, Any]:
    """The observability issue's target (tracing adds < 10% at p50), judged on the worst phase."""
    if not tracing:
        return {}
    t = tracing["target"]
    return {"tracing_added_p50_pct": {"target": t["added_p50_pct_below"], "value": t["worst_added_p50_pct"],
                                      "ok": t["ok"]}}  # fmt: skip


def machine_info() -> dict[str, Any]:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), platform.processor(),
    )  # fmt: skip
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu, "python": platform.python_version(),
        "platform": platform.platform(), "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }  # fmt: skip


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy so far (all processes, from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have exited (every stack process is one)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def loop_name() -> str:
    return "uvloop" if uvloop is not None else "asyncio"


# --------------------------------------------------------------------------- reporting


def fmt_ms(v: float) -> str:
    return f"{v:.2f} ms" if abs(v) >= 0.1 else f"{v:.3f} ms"


def fmt_ratio(v: float | None) -> str:
    return f"{v:.1f}x" if v is not None else "n/a"


def markdown(r: dict[str, Any]) -> str:
    sw, sdk_res, t, p, m = r["switchboard"], r["baselines"]["agents_sdk"], r["targets"], r["params"], r["machine"]
    nats_lat = r["baselines"]["nats_request_reply"]["latency"]
    plain, handoff, idle = sw["plain"]["latency"], sw["handoff"]["latency"], sw["edge_idle"]
    paced, plain_1, handoff_1 = sw["plain_paced"], sw["plain_unloaded"]["latency"], sw["handoff_unloaded"]["latency"]
    sdk_tput = sdk_res["concurrent"]["plain_runs_per_s"]

    def met(key: str) -> str:
        return "yes" if t[key]["ok"] else "**no**"

    other = m.get("other_processes_cores_busy")
    meanwhile = f"; other processes on the machine kept {other:.2f} cores busy meanwhile" if other is not None else ""

    def ms(stats: dict[str, Any], key: str) -> str:
        return fmt_ms(stats[key])

    c, rate = p["sessions"], p["rate"]
    rows = [
        ("Plain turn p50", ms(plain, "p50_ms"), ms(paced["latency"], "p50_ms"), ms(plain_1, "p50_ms"),
         ms(sdk_res["plain"], "p50_ms"), ms(nats_lat, "p50_ms"), "<= 3 ms", met("plain_p50_ms")),
        ("Plain turn p99", ms(plain, "p99_ms"), ms(paced["latency"], "p99_ms"), ms(plain_1, "p99_ms"),
         ms(sdk_res["plain"], "p99_ms"), ms(nats_lat, "p99_ms"), "<= 15 ms", met("plain_p99_ms")),
        ("Handoff turn p50", ms(handoff, "p50_ms"), "", ms(handoff_1, "p50_ms"), ms(sdk_res["handoff"], "p50_ms"),
         "", "", ""),
        ("Handoff turn p99", ms(handoff, "p99_ms"), "", ms(handoff_1, "p99_ms"), ms(sdk_res["handoff"], "p99_ms"),
         "", "", ""),
        ("One handoff adds (p50)", fmt_ms(sw["handoff_added_p50_ms"]), "",
         fmt_ms(sw["handoff_added_p50_ms_unloaded"]), fmt_ms(sdk_res["handoff_added_ms_p50"]), "", "<= 2 ms",
         met("handoff_added_p50_ms")),
        ("Throughput", f"{sw['throughput_turns_per_s']:.0f} turns/s", f"{paced['achieved_turns_per_s']:.0f} turns/s",
         "", f"{sdk_tput:.0f} runs/s", "", ">= 500 turns/s", met("turns_per_s")),
        ("Idle sessions on one edge", f"{idle['sessions']} open, {idle['kib_per_session']:.0f} KiB each", "", "", "",
         "", ">= 1000", met("sessions_per_edge")),
    ]  # fmt: skip
    lines = [
        f"Measured {r['timestamp']} on {m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}, by "
        f"`make bench` ({r['duration_s']:.0f} s; all figures in `bench/results/latest.json`){meanwhile}.",
        "",
        f"| Metric | Switchboard, {c} sessions flat out | Switchboard, {c} sessions at {rate:.0f} turns/s "
        "| Switchboard, one at a time | Agents SDK in-process | Raw NATS req/reply | Target | Met |",
        "|---|---|---|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"Switchboard latency is client-side, `response.create` -> `response.done`, over WebSocket through the edge, "
        "NATS, one process per agent and the session KV, with a zero-latency offline model. *Flat out*: "
        f"{c} sessions x {p['turns']} back-to-back turns (closed loop, no think time), and {p['handoffs']} handoff "
        f"turns on fresh sessions, {c} at a time (saturation: latency there is sessions / throughput). *At "
        f"{rate:.0f} turns/s*: the same "
        f"sessions, each starting a turn every {c / rate * 1000:.0f} ms. *One at a time*: no other traffic. "
        f"Agents SDK: `Runner.run` with a zero-latency fake model, one at a time (throughput at concurrency "
        f"{sdk_res['concurrent']['concurrency']}). Raw NATS: one-at-a-time request/reply between two processes. "
        f"Everything, load generator included, shares the same {m['nproc']} CPUs. *Met*: plain-turn latency is "
        f"judged at {c} sessions at {rate:.0f} turns/s, the handoff's added cost one at a time, throughput flat out.",
    ]
    if sw.get("tracing"):
        lines += ["", *tracing_markdown(sw["tracing"], p)]
    if sw.get("consult"):
        lines += ["", *consult_markdown(sw["consult"], p)]
    return "\n".join(lines) + "\n"


def p50_p99(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "n/a"
    return f"{stats['p50_ms']:.2f} / {stats['p99_ms']:.2f} ms" if stats["p99_ms"] < 100 else (
        f"{stats['p50_ms']:.0f} / {stats['p99_ms']:.0f} ms"
    )  # fmt: skip


def tracing_markdown(tr: dict[str, Any], p: dict[str, Any]) -> list[str]:
    """The "Tracing overhead" section: turn latency and CPU with tracing off and on, measured in the same run."""
    names = dict(TRACING_PHASES, plain_paced=f"Plain turn, {p['sessions']} sessions at {p['rate']:.0f} turns/s")
    rows = []
    for phase, row in tr["phases"].items():
        off, on = row["off"], row["on"]
        cpu_pct = row["cpu_added_pct"]
        rows.append(" | ".join([
            names[phase], f"{fmt_ms(off['latency']['p50_ms'])} / {fmt_ms(on['latency']['p50_ms'])}",
            f"{fmt_added(row, 'p50')}; block median {row['added_p50_pct_block_median']:+.1f}%",
            f"{fmt_ms(off['latency']['p99_ms'])} / {fmt_ms(on['latency']['p99_ms'])}",
            f"{fmt_added(row, 'p99')}; block median {row['added_p99_pct_block_median']:+.1f}%",
            f"{off['system_cpu_per_turn_ms']:.2f} / {on['system_cpu_per_turn_ms']:.2f} ms"
            + (f" ({cpu_pct:+.0f}%)" if cpu_pct is not None else ""),
            f"{row['pairs_on_slower_p50']} of {row['pairs']}",
            f"< {tr['target']['added_p50_pct_below']:.0f}%", "yes" if row["target_met"] else "**no**",
        ]))  # fmt: skip
    spans, blocks, env = tr["spans"], tr["blocks"], tr["env"]["on"]
    by_name = ", ".join(f"`{k}` {v}" for k, v in sorted(spans["by_name"].items(), key=lambda kv: -kv[1]))
    complete = (
        f"one `{SPAN_EDGE_RESPONSE}` per turn"
        if spans["every_turn_traced"]
        else f"**{spans['edge_response_spans']} `{SPAN_EDGE_RESPONSE}` for {spans['traced_turns']} turns**"
    )
    return [
        "### Tracing overhead",
        "",
        f"| Tracing off vs on ({blocks} alternating blocks each) | p50 off / on | Tracing adds (p50) | p99 off / on "
        "| Tracing adds (p99) | CPU per turn off / on | Block pairs with on slower (p50) | Target (p50) | Met |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {row} |" for row in rows),
        "",
        "Two stacks of the `bench` scenario up at once, identical but for tracing: *on* exports every span over "
        "OTLP/HTTP (protobuf, batch span processor, sampler `parentbased_always_on`, "
        f"`OTEL_BSP_SCHEDULE_DELAY={env['OTEL_BSP_SCHEDULE_DELAY']}` so a block's spans are exported during the "
        "block) to Switchboard's OTLP receiver test double in a process of its own; *off* has "
        f"`OTEL_SDK_DISABLED=true`. Measurement alternates between them in blocks (off/on, on/off, ...) of the "
        f"main stack's phases: {p['unloaded_sessions']} sessions x {p['turns']} plain turns one at a time, "
        f"{p['unloaded_handoffs']} handoff turns one at a time, {p['sessions']} sessions x {p['turns']} turns at "
        f"{p['rate']:.0f} turns/s; a block after a traced one waits until the traced stack has exported its "
        "spans. Latency pooled over the blocks; *block median*: the same comparison on the median of each side's "
        "per-block p50 (or p99), which one stalled block cannot sway; *block pairs*: the n-th off and on blocks, how "
        "often the traced one had the higher p50. *Met* is judged on the pooled p50. CPU: the system's processes "
        "(edge, agents, nats-server) per turn, "
        f"not the load generator nor the receiver (which used {tr['receiver_cpu_per_measured_turn_ms']:.2f} ms "
        f"per traced turn decoding spans). The receiver got {spans['received']} spans "
        f"({spans['per_turn']:.1f} per turn, {complete}): {by_name}.",
    ]


def consult_markdown(c: dict[str, Any], p: dict[str, Any]) -> list[str]:
    """The "Chat-supervisor" section: what a consult costs, and supervisor throughput per replica count."""
    lat, rep = c["latency"], c["replicas"]
    one, paced = (lat["direct_unloaded"], lat["consult_unloaded"]), (lat["direct_paced"], lat["consult_paced"])
    rows = [
        ("Direct turn (front answers) p50 / p99", p50_p99(one[0]["latency"]), p50_p99(paced[0]["latency"])),
        ("Consult turn p50 / p99", p50_p99(one[1]["latency"]), p50_p99(paced[1]["latency"])),
        ("Consult adds (p50)", fmt_ms(lat["consult_added_p50_ms_unloaded"]), fmt_ms(lat["consult_added_p50_ms_paced"])),
        ("Time to filler p50 / p99", p50_p99(one[1]["time_to_filler"]), p50_p99(paced[1]["time_to_filler"])),
        ("Time to first answer token p50 / p99", p50_p99(one[1]["time_to_first_answer_token"]),
         p50_p99(paced[1]["time_to_first_answer_token"])),
        ("Achieved rate, direct / consult", "", f"{paced[0]['achieved_turns_per_s']:.0f} / "
         f"{paced[1]['achieved_turns_per_s']:.0f} turns/s"),
        ("CPU per turn (all processes), direct / consult",
         f"{one[0]['cpu']['total_per_turn_ms']:.2f} / {one[1]['cpu']['total_per_turn_ms']:.2f} ms",
         f"{paced[0]['cpu']['total_per_turn_ms']:.2f} / {paced[1]['cpu']['total_per_turn_ms']:.2f} ms"),
    ]  # fmt: skip
    inflight, delay, slot = rep["supervisor_max_inflight"], rep["model_delay_ms"], rep["slot_ms"]

    def tput_row(r: dict[str, Any], name: str) -> str:
        slot_bound = r["replicas"] * inflight / (slot / 1000) if slot else None
        failed = r["consults_failed"]
        return " | ".join([
            name, f"{r['consults_per_s']:.0f}/s", f"{r['bound_consults_per_s']:.0f}/s",
            f"{slot_bound:.0f}/s" if slot_bound else "n/a", p50_p99(r["latency"]),
            f"{failed} of {failed + r['consults_ok']} ({r['failed_share']:.0%})", str(r["edge"]["busy_refusals"]),
        ])  # fmt: skip

    d, cal = rep["default_breaker_run"], rep["unqueued"]
    tput = [tput_row(cal, f"1, {cal['callers']} callers (no queueing)")] if cal else []
    tput += [tput_row(r, str(r["replicas"])) for r in rep["runs"]]
    tput.append(tput_row(d, f"{d['replicas']}, default breaker"))
    callers, attempts = rep["callers"], rep["consult_attempts"]
    return [
        "### Chat-supervisor",
        "",
        f"| Chat-supervisor (zero-latency models) | One at a time | {p['sessions']} sessions at "
        f"{p['consult_rate']:.0f} turns/s |",
        "|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"| Supervisor replicas N ({callers} callers unless noted) | Consults/s answered | "
        f"Bound N x {inflight} / {delay:.0f} ms model | Bound N x {inflight} / {slot or 0:.0f} ms measured slot time | "
        "Answered consult turn p50 / p99 | Failed consults | Busy refusals |",
        "|---|---|---|---|---|---|---|",
        *(f"| {row} |" for row in tput),
        "",
        "Scenario `bench/scenarios/bench_supervisor`: `front` answers `hello` itself (*direct*) and consults `expert` "
        "(`role: supervisor`) on `my account please` (`must_consult`, so no front-model call): filler first, then "
        "the expert's 20-word answer, streamed. Every reply is checked (text, `agent` = `front`, `metadata.supervisor`)"
        ". *Time to filler*: `response.create` -> first `response.output_text.delta`; *first answer token*: -> the "
        f"first delta after the filler. Throughput: callers doing consult turns back to back for "
        f"{rep['duration_s']:.0f} s per row, the expert on a scripted OpenAI-compatible model (own process) that "
        f"answers after {delay:.0f} ms, `SWITCHBOARD_AGENT_MAX_INFLIGHT={inflight}` on each supervisor replica, "
        f"consult `attempts: {attempts}`. A replica holds at most {inflight} consults at once, each for at least the "
        f"model's {delay:.0f} ms, so N replicas answer at most N x {inflight} / {delay:.0f} ms; in fact a consult "
        f"holds its slot for the edge's whole `consult_ms` ({slot or 0:.0f} ms p50 with {inflight} callers on one "
        "replica, the first row), the tighter bound. Beyond its slots a replica answers `busy`; the edge retries "
        "with jitter, and a consult whose attempts are all refused fails: the caller hears the fallback line and "
        "goes to `generalist` (counted as failed, never hidden; the caller then starts over on a fresh session). "
        "The scaling rows go through an edge whose breaker cannot open "
        f"(`SWITCHBOARD_BREAKER_THRESHOLD={rep['no_breaker_threshold']}`); the *default breaker* row goes through "
        "an edge with the default settings (`busy` is backpressure, not failure: it never opens a breaker).",
    ]


def summary_table(r: dict[str, Any]) -> str:
    sw, sdk_res, t, p = r["switchboard"], r["baselines"]["agents_sdk"], r["targets"], r["params"]
    named = [
        (f"switchboard plain, {p['sessions']} sessions", sw["plain"]["latency"]),
        (f"switchboard handoff, {p['sessions']} at a time", sw["handoff"]["latency"]),
        (f"switchboard plain, {p['sessions']} at {p['rate']:.0f}/s", sw["plain_paced"]["latency"]),
        ("switchboard plain, one at a time", sw["plain_unloaded"]["latency"]),
        ("switchboard handoff, one at a time", sw["handoff_unloaded"]["latency"]),
        ("agents-sdk plain run", sdk_res["plain"]),
        ("agents-sdk handoff run", sdk_res["handoff"]),
        ("raw NATS request/reply", r["baselines"]["nats_request_reply"]["latency"]),
    ]
    tracing = sw.get("tracing")
    if tracing:
        for phase, row in tracing["phases"].items():
            what = f"{p['sessions']} at {p['rate']:.0f}/s" if phase == "plain_paced" else "one at a time"
            kind = phase.split("_")[0]
            named += [(f"tracing {side}, {kind} {what}", row[side]["latency"]) for side in ("off", "on")]
    consult = sw.get("consult")
    if consult:
        lat = consult["latency"]
        for key, when in (("unloaded", "one at a time"), ("paced", f"{p['sessions']} at {p['consult_rate']:.0f}/s")):
            named += [
                (f"supervisor direct turn, {when}", lat[f"direct_{key}"]["latency"]),
                (f"supervisor consult turn, {when}", lat[f"consult_{key}"]["latency"]),
                (f"  time to filler, {when}", lat[f"consult_{key}"]["time_to_filler"]),
                (f"  to first answer token, {when}", lat[f"consult_{key}"]["time_to_first_answer_token"]),
            ]
    rows = [("", "p50", "p99", "mean", "max", "n")] + [
        (
            name,
            fmt_ms(s["p50_ms"]),
            fmt_ms(s["p99_ms"]),
            fmt_ms(s["mean_ms"]),
            fmt_ms(s["max_ms"]) if "max_ms" in s else "",
            str(s["n"]),
        )
        for name, s in named
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
           for row in rows]  # fmt: skip
    ok = {k: "ok" if v["ok"] else "MISSED" for k, v in t.items()}
    idle, ratios = sw["edge_idle"], r["ratios"]
    cpu = sw["plain"]["cpu"]
    where = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu["per_turn_ms"].items(), key=lambda kv: -kv[1]))
    out += [
        "",
        f"handoff adds (p50)   {fmt_ms(sw['handoff_added_p50_ms'])} at {p['sessions']} sessions, "
        f"{fmt_ms(sw['handoff_added_p50_ms_unloaded'])} one at a time; sdk {fmt_ms(sdk_res['handoff_added_ms_p50'])}"
        f" -> ratio {fmt_ratio(ratios['handoff_added_p50_vs_sdk'])} "
        f"({fmt_ratio(ratios['handoff_added_p50_vs_sdk_unloaded'])} one at a time)",
        f"plain p50 vs sdk     {fmt_ratio(ratios['plain_p50_vs_sdk'])} at {p['sessions']} sessions, "
        f"{fmt_ratio(ratios['plain_p50_vs_sdk_unloaded'])} one at a time "
        f"(one at a time = {fmt_ratio(ratios['plain_p50_unloaded_vs_nats_rtt'])} a raw NATS round trip)",
        f"throughput           {sw['throughput_turns_per_s']:.0f} turns/s; CPU {cpu['total_per_turn_ms']:.2f} ms/turn "
        f"({cpu['cores_busy']:.2f} cores busy): {where}",
        f"idle sessions        {idle['sessions']} open, {idle['kib_per_session']:.1f} KiB/session "
        f"(edge RSS {idle['rss_before_kib'] / 1024:.1f} -> {idle['rss_after_kib'] / 1024:.1f} MiB)",
        f"targets              plain p50 <= 3 ms: {ok['plain_p50_ms']}; plain p99 <= 15 ms: {ok['plain_p99_ms']}; "
        f"handoff adds <= 2 ms: {ok['handoff_added_p50_ms']}; >= 1000 sessions: {ok['sessions_per_edge']}; "
        f">= 500 turns/s: {ok['turns_per_s']}",
    ]
    if tracing:
        rows = tracing["phases"].items()
        short = {"plain_unloaded": "plain", "handoff_unloaded": "handoff", "plain_paced": "paced"}
        target = tracing["target"]
        spans = tracing["spans"]
        out += [
            "tracing adds (p50)   " + ", ".join(f"{short[k]} {fmt_added(v, 'p50')}" for k, v in rows)
            + f"; target < {target['added_p50_pct_below']:.0f}%: {'ok' if target['ok'] else 'MISSED'}",
            "tracing adds (p99)   " + ", ".join(f"{short[k]} {fmt_added(v, 'p99')}" for k, v in rows),
            "  median of blocks   " + ", ".join(
                f"{short[k]} p50 {v['added_p50_pct_block_median']:+.1f}% p99 {v['added_p99_pct_block_median']:+.1f}%, "
                f"on slower in {v['pairs_on_slower_p50']} of {v['pairs']} block pairs"
                for k, v in rows
            ),
            "tracing CPU/turn     " + ", ".join(
                f"{short[k]} {v['off']['system_cpu_per_turn_ms']:.2f} -> {v['on']['system_cpu_per_turn_ms']:.2f} ms"
                for k, v in rows
            ) + f" (system processes; receiver {tracing['receiver_cpu_per_measured_turn_ms']:.2f} ms/turn)",
            f"tracing spans        {spans['received']} received ({spans['per_turn']:.1f}/turn), "
            f"{spans['edge_response_spans']} {SPAN_EDGE_RESPONSE} for {spans['traced_turns']} traced turns; "
            f"{tracing['blocks']} alternating blocks per phase and side",
        ]  # fmt: skip
    if consult:
        lat, rep = consult["latency"], consult["replicas"]
        direct, consult_p = lat["direct_paced"], lat["consult_paced"]
        out.append(
            f"consult adds (p50)   {fmt_ms(lat['consult_added_p50_ms_unloaded'])} one at a time, "
            f"{fmt_ms(lat['consult_added_p50_ms_paced'])} at {p['consult_rate']:.0f}/s (achieved: direct "
            f"{direct['achieved_turns_per_s']:.0f}/s, consult {consult_p['achieved_turns_per_s']:.0f}/s; CPU "
            f"{direct['cpu']['total_per_turn_ms']:.2f} and {consult_p['cpu']['total_per_turn_ms']:.2f} ms/turn)"
        )
        slot, inflight, delay = rep["slot_ms"], rep["supervisor_max_inflight"], rep["model_delay_ms"]
        out.append(
            f"supervisor replicas  {rep['callers']} callers, {inflight} consults/replica, {delay:.0f} ms model; "
            f"bound N x {inflight}/{delay:.0f} ms, or N x {inflight}/{slot or 0:.0f} ms slot time"
        )
        cal = [rep["unqueued"]] if rep["unqueued"] else []
        for run in [*cal, *rep["runs"], rep["default_breaker_run"]]:
            name = f"N={run['replicas']}" + (", default breaker" if run["breaker"] == "default" else "")
            name += f", {run['callers']} callers" if run["callers"] != rep["callers"] else ""
            lat_ok = run["latency"] or {"p50_ms": math.nan, "p99_ms": math.nan}
            slot_bound = run["replicas"] * inflight / (slot / 1000) if slot else math.nan
            out.append(
                f"  {name:<22} {run['consults_per_s']:.0f} consults/s (bound {run['bound_consults_per_s']:.0f}, "
                f"slot bound {slot_bound:.0f}), p50 {lat_ok['p50_ms']:.0f} ms, p99 {lat_ok['p99_ms']:.0f} ms; failed "
                f"{run['consults_failed']} of {run['consults_failed'] + run['consults_ok']} ({run['failed_share']:.0%})"
                f", {run['edge']['busy_refusals']} busy refusals, outcomes {run['edge']['consult_outcomes']}"
            )
    other = r["machine"].get("other_processes_cores_busy")
    meanwhile = f"; other processes kept {other:.2f} cores busy meanwhile" if other is not None else ""
    out.append(f"total run time       {r['duration_s']:.0f} s{meanwhile}")
    return "\n".join(out)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(r: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    body = json.dumps(r, indent=2) + "\n"
    stamp = r["timestamp"].replace(":", "").replace("-", "")
    write_atomic(out_dir / "latest.json", body)
    write_atomic(out_dir / f"{stamp}.json", body)
    md = markdown(r)
    write_atomic(out_dir / "latest.md", md)
    progress(f"results: {out_dir / 'latest.json'}, {out_dir / f'{stamp}.json'}, {out_dir / 'latest.md'}")
    readme = ROOT / "README.md"
    if out_dir.resolve() != (BENCH / "results").resolve() or not readme.exists():
        return  # runs written elsewhere are experiments: leave the README alone
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start == -1 or end < start:
        return
    write_atomic(readme, text[: start + len(README_START)] + "\n" + md + text[end:])
    progress("README.md benchmark table updated")


# --------------------------------------------------------------------------- main


def check_processes(stack: Stack, label: str = "logs") -> dict[str, Any]:
    """Every process still up, and the warnings/errors they logged during the run (reported, not fatal)."""
    dead = [f"{p.name} (exit {p.popen.returncode})" for p in stack.procs if not p.alive()]
    if dead:
        raise BenchError(f"processes died during the run: {dead}")
    counts: dict[str, int] = {}
    samples: list[str] = []
    for proc in stack.procs:
        bad = [ln for ln in proc.lines if '"level": "warning"' in ln or '"level": "error"' in ln]
        if bad:
            counts[proc.name] = len(bad)
            samples += [f"{proc.name}: {ln}" for ln in bad[:3]]
    progress(f"{label}: {sum(counts.values())} warning/error lines {counts or ''}".rstrip())
    for line in samples:
        progress(f"  {line[:300]}")
    return {"counts": counts, "samples": samples}


def raise_nofile_limit() -> None:
    """1000+ sockets need more than the usual 1024 descriptors; children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def parse_args(argv: list[str] | None = None) -> tuple[Params, Path, Path | None]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, help="concurrent sessions (default 100; quick 20)")
    ap.add_argument("--turns", type=int, help="plain turns per session (default 20; quick 5)")
    ap.add_argument("--handoffs", type=int, help="measured handoff turns (default 500; quick 50)")
    ap.add_argument("--idle-sessions", type=int, help="idle sessions held open at once (default 1000; quick 100)")
    ap.add_argument("--rate", type=float, help="turns/s the paced phase offers (default 500; quick 100)")
    ap.add_argument("--sdk-runs", type=int, help="Agents SDK runs per measurement (default 2000; quick 300)")
    ap.add_argument("--no-consult", action="store_true", help="skip the chat-supervisor (consult) phases")
    ap.add_argument("--consult-rate", type=float, help="turns/s of the paced consult phases (default: --rate)")
    ap.add_argument("--consult-replicas", help="supervisor replica counts, comma-separated (default 1,2,3; quick 1,2)")
    ap.add_argument("--consult-sessions", type=int, help="callers in the supervisor-throughput phase (default 24)")
    ap.add_argument("--consult-duration", type=float, help="seconds per replica count (default 5; quick 2)")
    ap.add_argument("--model-delay-ms", type=float, default=50.0, help="scripted supervisor latency (default 50)")
    ap.add_argument("--supervisor-max-inflight", type=int, default=4, help="consults per replica at once (default 4)")
    ap.add_argument("--no-tracing", action="store_true", help="skip the tracing-overhead phases")
    ap.add_argument("--tracing-blocks", type=int, help="alternating blocks per phase and side (default 4; quick 2)")
    ap.add_argument(
        "--tracing-export-delay-ms", type=float, default=200.0, help="OTEL_BSP_SCHEDULE_DELAY when traced (default 200)"
    )
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--out-dir", type=Path, default=BENCH / "results", help="where results are written")
    ap.add_argument("--var-dir", type=Path, help="runtime data and logs (default: a temporary directory)")
    a = ap.parse_args(argv)
    q = a.quick
    if a.tracing_blocks is not None and a.tracing_blocks < 1:
        ap.error("--tracing-blocks must be at least 1")

    def pick(value: int | None, default: int, quick: int) -> int:
        return value if value is not None else (quick if q else default)

    rate = a.rate if a.rate is not None else (100 if q else 500)
    params = Params(
        sessions=pick(a.sessions, 100, 20), turns=pick(a.turns, 20, 5), handoffs=pick(a.handoffs, 500, 50),
        idle_sessions=pick(a.idle_sessions, 1000, 100), idle_sample=20, sdk_runs=pick(a.sdk_runs, 2000, 300),
        nats_requests=pick(None, 2000, 500), unloaded_sessions=pick(None, 10, 3),
        unloaded_handoffs=pick(None, 200, 30), rate=rate, quick=q,
        consult=not a.no_consult, consult_rate=a.consult_rate or rate,
        consult_replicas=tuple(int(x) for x in (a.consult_replicas or ("1,2" if q else "1,2,3")).split(",")),
        consult_sessions=pick(a.consult_sessions, 24, 24),
        consult_duration_s=a.consult_duration if a.consult_duration is not None else (2.0 if q else 5.0),
        model_delay_ms=a.model_delay_ms, supervisor_max_inflight=a.supervisor_max_inflight,
        tracing=not a.no_tracing, tracing_blocks=pick(a.tracing_blocks, 4, 2),
        tracing_export_delay_ms=a.tracing_export_delay_ms,
    )  # fmt: skip
    return params, a.out_dir, a.var_dir


def on_stack(
    runner: asyncio.Runner, stack: Stack, what: str, phases: Callable[[Stack], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """Start ``stack``, run ``phases`` on it, check its processes and logs, stop it (last log lines on failure)."""
    return on_stacks(runner, [stack], what, lambda stacks: phases(stacks[0]))


def on_stacks(
    runner: asyncio.Runner, stacks: list[Stack], what: str,
    phases: Callable[[list[Stack]], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:  # fmt: skip
    """``on_stack`` for stacks that run side by side: all are up while ``phases`` runs. With more than one,
    ``log_problems`` has an entry per stack, named after its var dir."""
    try:
        for stack in stacks:
            progress(f"stack: starting nats-server, agents and the edge ({what}; logs in {stack.var_dir / 'log'})")
            stack.start()
            progress("stack: up: " + ", ".join(f"{p.name}={p.pid}" for p in stack.procs))
        res = runner.run(phases(stacks))
        if len(stacks) == 1:
            res["log_problems"] = check_processes(stacks[0])
        else:
            res["log_problems"] = {st.var_dir.name: check_processes(st, f"logs ({st.var_dir.name})") for st in stacks}
        return res
    except BaseException:
        for stack in stacks:
            for proc in stack.procs:
                tail = [ln for ln in proc.lines[-5:] if ln]
                if tail or not proc.alive():
                    alive = "alive" if proc.alive() else f"exited {proc.popen.returncode}"
                    print(f"--- {proc.name} ({alive}), last log lines:\n" + "\n".join(tail), file=sys.stderr)
        raise
    finally:
        for stack in reversed(stacks):
            progress("stack: stopping")
            stack.stop()


def main(argv: list[str] | None = None) -> int:
    params, out_dir, var_arg = parse_args(argv)
    raise_nofile_limit()
    started = time.perf_counter()
    progress(f"switchboard bench: {params}")
    var_dir = var_arg or Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    stack = Stack(
        var_dir, scenario=SCENARIO, api_key=f"bench-{secrets.token_hex(8)}",
        env={"SWITCHBOARD_SCENARIOS_DIR": str(SCENARIOS), "OPENAI_API_KEY": ""},
    )  # fmt: skip
    ok = False
    machine_before, own_before = machine_cpu_s(), own_cpu_s()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
        sdk_res = runner.run(sdk_baseline(params.sdk_runs))
        try:
            sw = on_stack(runner, stack, "bench", lambda st: bench_stack(st, params))
            if params.tracing:
                sw["tracing"] = tracing_stacks(runner, params, var_dir)
            if params.consult:
                sw["consult"] = consult_stacks(runner, params, var_dir)
            ok = True
        finally:
            if ok and var_arg is None:
                shutil.rmtree(var_dir, ignore_errors=True)
            elif not ok:
                print(f"run failed; logs kept in {var_dir}", file=sys.stderr)
    wall = time.perf_counter() - started
    foreign = max(0.0, (machine_cpu_s() - machine_before) - (own_cpu_s() - own_before))
    result = assemble(params, sw, sdk_res, wall)
    result["machine"]["other_processes_cores_busy"] = foreign / wall  # figures are noisy when this is high
    write_results(result, out_dir)
    print("\n" + summary_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
