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

.venv/bin/python bench/run.py [--quick] [--sessions N] [--turns K] [--handoffs M] [--idle-sessions S]
                              [--rate R] [--sdk-runs X] [--out-dir DIR] [--var-dir DIR]

Results: bench/results/latest.json, bench/results/<UTC timestamp>.json, bench/results/latest.md
and the README table between ``<!-- bench:start -->`` and ``<!-- bench:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import resource
import secrets
import shutil
import statistics
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
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from switchboard.agents import load_scenario
from switchboard.local.stack import Stack

try:
    import uvloop
except ImportError:  # the edge uses uvloop when present; the load generator follows suit
    uvloop = None

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCENARIOS = BENCH / "scenarios"
SCENARIO = str(SCENARIOS / "bench")
"""By path: by name, ``bench`` would resolve to this very folder when the cwd is the repo root."""
PLAIN_TEXT = "Hi, what are your opening hours?"
HANDOFF_TEXT = "I want a refund"
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


@dataclass
class Session:
    """One Realtime WebSocket session on the edge, driven with raw JSON events."""

    ws: ClientConnection
    session_id: str
    turns: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @classmethod
    async def open(cls, ws_base: str, api_key: str) -> Session:
        ws = await connect(
            f"{ws_base}/realtime", additional_headers={"Authorization": f"Bearer {api_key}"},
            compression=None, ping_interval=None, open_timeout=TURN_TIMEOUT_S, max_queue=None,
        )  # fmt: skip
        created = json.loads(await ws.recv())
        info = json.loads(await ws.recv())
        if created.get("type") != "session.created" or info.get("type") != "switchboard.session":
            await ws.close()
            raise BenchError(f"bad handshake: {created.get('type')!r}, {info.get('type')!r}")
        return cls(ws, info["session_id"])

    async def turn(self, text: str, expect: Expect) -> float:
        """One verified caller turn; returns ms from sending ``response.create`` to ``response.done``."""
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        await self.ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        t0 = time.perf_counter()
        await self.ws.send('{"type": "response.create"}')
        try:
            async with asyncio.timeout(TURN_TIMEOUT_S):
                done, seen = await self._until_done()
        except TimeoutError:
            raise BenchError(f"{self.session_id}: no response.done within {TURN_TIMEOUT_S:.0f}s") from None
        ms = (time.perf_counter() - t0) * 1000
        self._verify(done, seen, expect)
        self.turns += 1
        self.latencies_ms.append(ms)
        return ms

    async def _until_done(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        seen: list[dict[str, Any]] = []
        while True:
            event = json.loads(await self.ws.recv())
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


async def converse(session: Session, expect: Expect, turns: int) -> None:
    """``turns`` plain turns, one after the other, on one session."""
    for _ in range(turns):
        await session.turn(PLAIN_TEXT, expect)


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

    def __init__(self, stack: Stack) -> None:
        self.pids = process_pids(stack)
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def per_turn_ms(self, turns: int, wall_s: float) -> dict[str, Any]:
        used = {name: cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}
        total = sum(used.values())
        return {
            "per_turn_ms": {name: round(s * 1000 / turns, 3) for name, s in used.items()},
            "total_per_turn_ms": total * 1000 / turns,
            "cores_busy": total / wall_s,
        }


async def plain_phase(stack: Stack, replies: Replies, n: int, k: int, *, parallel: int) -> dict[str, Any]:
    """``n`` sessions of ``k`` back-to-back turns, ``parallel`` sessions at a time (closed loop, no think time)."""
    label = "plain" if parallel > 1 else "plain (one at a time)"
    progress(f"{label}: opening {n} sessions")
    sessions = await open_sessions(stack, n)
    progress(f"{label}: {n} sessions x {k} turns, {parallel} session(s) at a time")
    with client_gc_paused():
        cpu = CpuMeter(stack)
        t0 = time.perf_counter()
        await bounded((lambda s=s: converse(s, replies.plain, k) for s in sessions), parallel)
        wall = time.perf_counter() - t0
    samples = [ms for s in sessions for ms in s.latencies_ms]
    used = cpu.per_turn_ms(len(samples), wall)
    await close_sessions(sessions)
    stats = summarize(samples)
    progress(
        f"{label}: {len(samples)} turns in {wall:.2f}s -> {len(samples) / wall:.0f} turns/s, "
        f"p50 {stats['p50_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms, "
        f"CPU {used['total_per_turn_ms']:.2f} ms/turn ({used['cores_busy']:.2f} cores busy)"
    )
    return {"latency": stats, "wall_s": wall, "turns": len(samples), "turns_per_s": len(samples) / wall, "cpu": used}


async def paced_phase(stack: Stack, replies: Replies, n: int, k: int, rate: float) -> dict[str, Any]:
    """``n`` sessions of ``k`` turns offering ``rate`` turns/s in total: each session starts a turn every
    ``n / rate`` seconds (at a random phase), or at once if its previous turn ran late."""
    interval = n / rate
    progress(f"paced: opening {n} sessions")
    sessions = await open_sessions(stack, n)
    progress(f"paced: {n} sessions x {k} turns, one turn per session every {interval * 1000:.0f} ms ({rate:.0f}/s)")
    loop = asyncio.get_running_loop()

    async def paced(s: Session, start: float) -> None:
        for i in range(k):
            await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
            await s.turn(PLAIN_TEXT, replies.plain)

    with client_gc_paused():
        t0 = time.perf_counter()
        begin = loop.time()
        await bounded((lambda s=s: paced(s, begin + random.uniform(0, interval)) for s in sessions), n)
        wall = time.perf_counter() - t0
    await close_sessions(sessions)
    samples = [ms for s in sessions for ms in s.latencies_ms]
    stats = summarize(samples)
    progress(
        f"paced: {len(samples)} turns in {wall:.2f}s ({len(samples) / wall:.0f}/s achieved), "
        f"p50 {stats['p50_ms']:.2f} ms, p99 {stats['p99_ms']:.2f} ms"
    )
    return {"latency": stats, "offered_turns_per_s": rate, "achieved_turns_per_s": len(samples) / wall}


async def handoff_phase(stack: Stack, replies: Replies, m: int, *, parallel: int) -> dict[str, Any]:
    """``m`` handoff turns, each on a fresh session opened beforehand, ``parallel`` at a time."""
    label = "handoff" if parallel > 1 else "handoff (one at a time)"
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

    return {
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": wall_s,
        "machine": machine_info(),
        "params": vars(p) | {"scenario": "bench", "ws_compression": None, "client_loop": loop_name()},
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
        "targets": {  # the product brief's, measured at `sessions` concurrent sessions
            "plain_p50_ms": target(3.0, plain["p50_ms"]),
            "plain_p99_ms": target(15.0, plain["p99_ms"]),
            "handoff_added_p50_ms": target(2.0, added),
            "sessions_per_edge": target(1000, idle["sessions"], higher_is_better=True),
            "turns_per_s": target(500, tput, higher_is_better=True),
        },
    }


def machine_info() -> dict[str, Any]:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), platform.processor(),
    )  # fmt: skip
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu, "python": platform.python_version(),
        "platform": platform.platform(), "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }  # fmt: skip


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
        f"`make bench` ({r['duration_s']:.0f} s; all figures in `bench/results/latest.json`).",
        "",
        f"| Metric | Switchboard, {c} sessions flat out | Switchboard, {c} sessions at {rate:.0f} turns/s "
        "| Switchboard, one at a time | Agents SDK in-process | Raw NATS req/reply | Target | Met |",
        "|---|---|---|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"Switchboard latency is client-side, `response.create` -> `response.done`, over WebSocket through the edge, "
        "NATS, one process per agent and the session KV, with a zero-latency offline model. *Flat out*: "
        f"{c} sessions x {p['turns']} back-to-back turns (closed loop, no think time), and {p['handoffs']} handoff "
        f"turns on fresh sessions, {c} at a time; *Met* is judged on these. *At {rate:.0f} turns/s*: the same "
        f"sessions, each starting a turn every {c / rate * 1000:.0f} ms. *One at a time*: no other traffic. "
        f"Agents SDK: `Runner.run` with a zero-latency fake model, one at a time (throughput at concurrency "
        f"{sdk_res['concurrent']['concurrency']}). Raw NATS: one-at-a-time request/reply between two processes. "
        f"Everything, load generator included, shares the same {m['nproc']} CPUs.",
    ]
    return "\n".join(lines) + "\n"


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
        f"total run time       {r['duration_s']:.0f} s",
    ]
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


def check_processes(stack: Stack) -> dict[str, Any]:
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
    progress(f"logs: {sum(counts.values())} warning/error lines {counts or ''}".rstrip())
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
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--out-dir", type=Path, default=BENCH / "results", help="where results are written")
    ap.add_argument("--var-dir", type=Path, help="runtime data and logs (default: a temporary directory)")
    a = ap.parse_args(argv)
    q = a.quick

    def pick(value: int | None, default: int, quick: int) -> int:
        return value if value is not None else (quick if q else default)

    params = Params(
        sessions=pick(a.sessions, 100, 20), turns=pick(a.turns, 20, 5), handoffs=pick(a.handoffs, 500, 50),
        idle_sessions=pick(a.idle_sessions, 1000, 100), idle_sample=20, sdk_runs=pick(a.sdk_runs, 2000, 300),
        nats_requests=pick(None, 2000, 500), unloaded_sessions=pick(None, 10, 3),
        unloaded_handoffs=pick(None, 200, 30), rate=a.rate if a.rate is not None else (100 if q else 500), quick=q,
    )  # fmt: skip
    return params, a.out_dir, a.var_dir


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
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
        sdk_res = runner.run(sdk_baseline(params.sdk_runs))
        try:
            progress(f"stack: starting nats-server, agents and the edge (logs in {var_dir / 'log'})")
            stack.start()
            progress("stack: up: " + ", ".join(f"{p.name}={p.pid}" for p in stack.procs))
            sw = runner.run(bench_stack(stack, params))
            sw["log_problems"] = check_processes(stack)
            ok = True
        except BaseException:
            for proc in stack.procs:
                tail = [ln for ln in proc.lines[-5:] if ln]
                if tail or not proc.alive():
                    alive = "alive" if proc.alive() else f"exited {proc.popen.returncode}"
                    print(f"--- {proc.name} ({alive}), last log lines:\n" + "\n".join(tail), file=sys.stderr)
            raise
        finally:
            progress("stack: stopping")
            stack.stop()
            if ok and var_arg is None:
                shutil.rmtree(var_dir, ignore_errors=True)
            elif not ok:
                print(f"run failed; logs kept in {var_dir / 'log'}", file=sys.stderr)
    result = assemble(params, sw, sdk_res, time.perf_counter() - started)
    write_results(result, out_dir)
    print("\n" + summary_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
