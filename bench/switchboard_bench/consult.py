"""Chat-supervisor phases: consult latency (zero-latency models) and supervisor throughput per replica count."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import scripted_model

from switchboard.agents import load_scenario
from switchboard.local.stack import Stack

from .client import Expect, Session, close_sessions, open_sessions
from .common import (
    CONSULT_TEXT,
    CONSULT_TURNS_PER_SESSION,
    DIRECT_TEXT,
    NO_BREAKER,
    OPEN_PARALLEL,
    SCENARIOS,
    SUPERVISOR_SCENARIO,
    BenchError,
    bounded,
    client_gc_paused,
    helper_process,
    progress,
)
from .params import Params
from .stacks import on_stack
from .stats import CpuMeter, summarize
from .workload import converse, filler_stats, paced_phase, plain_phase


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
    key: str
    """The API key the bench's sessions open with: its stats are that key's tenant's (API key callers only)."""

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/switchboard/stats", headers={"Authorization": f"Bearer {self.key}"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
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
    edge_default = EdgeRef("edge", stack.edge_port, stack.api_key)
    edge_open = EdgeRef(edge2_proc.name, edge2_port, stack.api_key)
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
    """bench/scripted_model.py in its own process; yields its base URL and pid (at the end it prints its
    supervisor and other requests)."""
    with helper_process("scripted_model.py", str(delay_ms)) as (url, pid):
        progress(f"scripted model: {url} (pid {pid}), supervisor answers after {delay_ms:.0f} ms")
        yield url, pid


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
