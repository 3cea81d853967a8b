"""Tracing overhead: two identical stacks, tracing off and on, measured in alternating blocks."""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from switchboard.local.stack import Stack
from switchboard.telemetry.names import SPAN_AGENT_TURN, SPAN_EDGE_RESPONSE

from .common import SCENARIO, SCENARIOS, BenchError, helper_process, progress
from .params import Params
from .stacks import on_stacks
from .stats import cpu_seconds, summarize
from .workload import Replies, handoff_phase, paced_phase, plain_phase, warmup

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


def tracing_env(
    endpoint: str | None, export_delay_ms: float, tracer: str = "light", sample_ratio: float = 1.0
) -> dict[str, str]:
    """The ``OTEL_*`` settings of the tracing-off (no endpoint) or tracing-on stack, set explicitly so the
    environment the benchmark runs in cannot turn tracing on, off, down-sampled or elsewhere."""
    if endpoint is None:
        return {"OTEL_SDK_DISABLED": "true", "SWITCHBOARD_TRACE_CONTENT": "0"}
    sampler = {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}
    if sample_ratio < 1:
        sampler = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(sample_ratio)}
    return sampler | {
        "OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{endpoint}/v1/traces", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": str(round(export_delay_ms)),
        "SWITCHBOARD_TRACE_CONTENT": "0", "SWITCHBOARD_TRACER": tracer,
    }  # fmt: skip


@contextmanager
def otlp_sink() -> Iterator[tuple[str, int]]:
    """bench/otlp_sink.py (Switchboard's OTLP receiver test double, counting spans) in its own process, so
    decoding spans does not take the load generator's event loop; yields its endpoint and pid."""
    with helper_process("otlp_sink.py") as (endpoint, pid):
        progress(f"otlp receiver: {endpoint} (pid {pid})")
        yield endpoint, pid


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
    arms: dict[str, TracingArm], counts: dict[str, Any], sink_cpu_s: float, measured_turns: int, sample_ratio: float
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
    if sample_ratio == 1 and edge_spans != traced_turns:
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
                  "every_turn_traced": edge_spans == traced_turns, "per_turn": counts["spans"] / traced_turns,
                  "sample_ratio": sample_ratio, "sampled_share": edge_spans / traced_turns},
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
    res = tracing_verdict(arms, counts, sink_cpu, measured, p.tracing_sample_ratio)
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
        "env": {
            "off": tracing_env(None, 0),
            "on": tracing_env(endpoint, p.tracing_export_delay_ms, p.tracing_tracer, p.tracing_sample_ratio),
        },
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
        on_env = env | tracing_env(endpoint, p.tracing_export_delay_ms, p.tracing_tracer, p.tracing_sample_ratio)
        on = Stack(var_dir / "tracing-on", scenario=SCENARIO, api_key=key, env=on_env)
        return on_stacks(
            runner, [off, on], "bench, tracing off and on", lambda st: tracing_phases(st[0], st[1], p, endpoint, pid)
        )
