"""The headline: the shipped default scenario (``retail``), started the way ``make run`` starts it.

Same processes, same settings, tracing as shipped (``make run`` configures no trace exporter, so tracing
is off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; the tracing phase group measures what turning it on
costs). The offline model answers at once, so what a turn costs is the platform's own work.

Phases: closed loop (sessions x turns back to back), paced (sessions each starting a turn every
sessions / rate seconds), plain turns one at a time, and the first turn of fresh sessions that hands
off (triage -> returns, redirected to auth: the caller is not verified), one at a time, beside the
Agents SDK's in-process handoff measured in the same run.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from pathlib import Path
from typing import Any

import agents_sdk_baseline as sdk

from switchboard.agents import load_scenario
from switchboard.local.stack import Stack

from .client import Expect, Session
from .common import PLAIN_TEXT, ROOT, TURN_TIMEOUT_S, BenchError, client_gc_paused, progress
from .params import Params
from .profiling import profiled
from .stats import summarize
from .workload import Replies, handoff_phase, paced_phase, plain_phase, warmup

SCENARIO = "retail"
SCENARIOS = ROOT / "scenarios"
HANDOFF_TEXT = "I want a refund for order A1001"
"""triage hands off to returns, which needs a verified caller: the guardrails redirect to auth, which answers."""
SDK_BLOCKS = 4
"""Alternating blocks of the retail handoff turns and of the Agents SDK's in-process handoffs."""
EDGE_CPU_TARGET_MS = 1.0
"""The performance issue's target: edge CPU per plain text turn."""


def retail_stack(var_dir: Path) -> Stack:
    """The stack ``make run`` starts (``switchboard run``): every agent of ``retail``, its tools' data in var."""
    return Stack(
        var_dir / "retail", scenario=SCENARIO, api_key=f"bench-{secrets.token_hex(8)}",
        env={"SWITCHBOARD_SCENARIOS_DIR": str(SCENARIOS), "OPENAI_API_KEY": ""},
    )  # fmt: skip


async def learn_replies(stack: Stack) -> Replies:
    """The plain reply is the triage agent's default line (from the YAML); the handoff reply is taken from a
    first handoff turn, after checking where it went, and every later turn must repeat it word for word."""
    config = load_scenario(SCENARIO, SCENARIOS).config
    triage = config.agent("triage")
    auth = config.auth_agent
    assert triage is not None and auth is not None
    plain = Expect("triage", triage.offline.default)
    session = await Session.open(stack.ws_base, stack.api_key)
    try:
        events = await raw_turn(session, HANDOFF_TEXT)
    finally:
        await session.close()
    done = json.loads(events[-1])
    handoffs = [e["to"] for e in map(json.loads, events) if e["type"] == "switchboard.handoff"]
    text = "".join(e.get("delta", "") for e in map(json.loads, events) if e["type"] == "response.output_text.delta")
    if done["response"]["metadata"].get("agent") != auth or handoffs != [auth] or not text:
        raise BenchError(f"retail handoff turn went elsewhere: handoffs {handoffs}, metadata {done['response']}")
    return Replies(plain, Expect(auth, text, auth), PLAIN_TEXT, HANDOFF_TEXT)


async def raw_turn(session: Session, text: str) -> list[str]:
    """One turn's server events as sent (JSON text), up to and including ``response.done``."""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await session.ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await session.ws.send('{"type": "response.create"}')
    events: list[str] = []
    async with asyncio.timeout(TURN_TIMEOUT_S):
        while True:
            raw = await session.ws.recv()
            events.append(raw if isinstance(raw, str) else raw.decode())
            if '"response.done"' in events[-1] and json.loads(events[-1])["type"] == "response.done":
                return events


async def wire_cost(stack: Stack, replies: Replies) -> dict[str, Any]:
    """Events and bytes the client receives for one turn of each kind (item creation included)."""
    out: dict[str, Any] = {}
    for kind, text in (("plain", replies.plain_text), ("handoff", replies.handoff_text)):
        session = await Session.open(stack.ws_base, stack.api_key)
        try:
            events = await raw_turn(session, text)
        finally:
            await session.close()
        out[kind] = {"events": len(events), "bytes": sum(len(e.encode()) for e in events)}
    return out


async def sdk_handoffs(n: int) -> list[float]:
    """``n`` Agents SDK handoff runs in this process, one at a time (ms each), as ``agents_sdk_baseline``
    measures them: zero-latency fake model, tracing off, every result checked."""
    sdk.set_tracing_disabled(True)
    _, triage = sdk.build_agents()
    samples = []
    with client_gc_paused():
        for _ in range(n):
            t0 = time.perf_counter()
            await sdk.run_checked(triage, True)
            samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def handoff_beside_sdk(stack: Stack, replies: Replies, turns: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """First turns of fresh sessions that hand off, one at a time, in ``SDK_BLOCKS`` blocks alternating with
    blocks of as many in-process Agents SDK handoffs (sdk/retail, retail/sdk, ...), so that the load the
    machine is under falls on both sides of the ratio alike. Latency pooled over the blocks; CPU per turn
    averaged over them."""
    await sdk_handoffs(50)  # warm the SDK's code paths
    n = max(1, turns // SDK_BLOCKS)
    ours: list[float] = []
    theirs: list[float] = []
    blocks: list[dict[str, Any]] = []
    for b in range(SDK_BLOCKS):
        for side in ("sdk", "retail") if b % 2 == 0 else ("retail", "sdk"):
            if side == "sdk":
                theirs += await sdk_handoffs(n)
            else:
                label = f"retail handoff {b + 1}/{SDK_BLOCKS}"
                blocks.append(await handoff_phase(stack, replies, n, parallel=1, kind=label, samples_out=ours))
    per_process: dict[str, float] = {}
    for block in blocks:
        for name, ms in block["cpu"]["per_turn_ms"].items():
            per_process[name] = per_process.get(name, 0.0) + ms / len(blocks)
    cpu = {"per_turn_ms": {k: round(v, 3) for k, v in per_process.items()},
           "total_per_turn_ms": sum(per_process.values())}  # fmt: skip
    return {"latency": summarize(ours), "cpu": cpu, "blocks": SDK_BLOCKS}, summarize(theirs)


async def load_sweep(stack: Stack, replies: Replies, p: Params) -> list[dict[str, Any]]:
    """Plain turns of ``p.sessions`` sessions at each offered rate of ``p.load_sweep`` (``p.sweep_s`` of traffic
    each): where the latency targets hold on this machine, below the paced phase's rate."""
    points = []
    for rate in p.load_sweep:
        turns = max(2, math.ceil(rate * p.sweep_s / p.sessions))
        phase = await paced_phase(stack, replies, p.sessions, turns, rate, kind=f"retail at {rate:.0f}/s")
        points.append({"offered_turns_per_s": rate, "achieved_turns_per_s": phase["achieved_turns_per_s"],
                       "latency": phase["latency"], "cpu": cpu_split(phase),
                       "cores_busy": phase["cpu"]["cores_busy"]})  # fmt: skip
    return points


def cpu_split(phase: dict[str, Any]) -> dict[str, float]:
    """CPU ms per turn of the edge, all agent processes together, and nats-server."""
    per = phase["cpu"]["per_turn_ms"]
    return {
        "edge": per.get("edge", 0.0),
        "agents": round(sum(v for k, v in per.items() if k.startswith(("agent:", "supervisor:"))), 3),
        "nats": per.get("nats-server", 0.0),
        "system": round(sum(v for k, v in per.items() if k != "bench-client"), 3),
    }


async def retail_phases(stack: Stack, p: Params) -> dict[str, Any]:
    started = time.perf_counter()
    replies = await learn_replies(stack)
    n_warm = min(p.retail_sessions, 20)
    progress(f"retail warmup: {n_warm} sessions x 3 plain turns + {n_warm} handoffs")
    await warmup(stack, replies, n_warm)
    wire = await wire_cost(stack, replies)
    progress(
        f"retail wire: plain turn {wire['plain']['events']} events, {wire['plain']['bytes']} bytes; "
        f"handoff turn {wire['handoff']['events']} events, {wire['handoff']['bytes']} bytes"
    )
    profile = Path(p.profile_dir) if p.profile_dir else None
    with profiled(stack, profile, "retail-closed", ("edge", "agent:triage")):
        closed = await plain_phase(
            stack, replies, p.retail_sessions, p.turns, parallel=p.retail_sessions, kind="retail"
        )
    paced = await paced_phase(stack, replies, p.sessions, p.turns, p.rate, kind="retail")
    sweep = await load_sweep(stack, replies, p)
    plain_1 = await plain_phase(stack, replies, p.unloaded_sessions, p.turns, parallel=1, kind="retail")
    with profiled(stack, profile, "retail-handoff", ("edge", "agent:triage", "agent:auth")):
        handoff_1, sdk_block = await handoff_beside_sdk(stack, replies, p.unloaded_handoffs)
    ratio = handoff_1["latency"]["p50_ms"] / sdk_block["p50_ms"] if sdk_block["p50_ms"] > 0 else None
    cpu = {"closed": cpu_split(closed), "paced": cpu_split(paced), "handoff_unloaded": cpu_split(handoff_1)}
    progress(
        f"retail: {closed['turns_per_s']:.0f} turns/s closed loop; paced p50 {paced['latency']['p50_ms']:.2f} ms, "
        f"p99 {paced['latency']['p99_ms']:.2f} ms; edge CPU/plain turn {cpu['paced']['edge']:.2f} ms paced, "
        f"{cpu['closed']['edge']:.2f} ms closed; first-turn handoff p50 {handoff_1['latency']['p50_ms']:.2f} ms "
        f"= {ratio or 0:.2f}x the Agents SDK handoff measured beside it ({sdk_block['p50_ms']:.2f} ms)"
    )

    def target(limit: float, value: float | None, higher_is_better: bool = False) -> dict[str, Any]:
        ok = value is not None and (value >= limit if higher_is_better else value <= limit)
        return {"target": limit, "value": value, "ok": ok}

    return {
        "scenario": SCENARIO, "handoff_text": HANDOFF_TEXT, "plain_text": replies.plain_text,
        "handoff_reply": {"agent": replies.handoff.agent, "text": replies.handoff.text},
        "wire": wire, "closed": closed, "paced": paced, "load_sweep": sweep, "plain_unloaded": plain_1,
        "handoff_unloaded": handoff_1,
        "cpu": cpu, "handoff_vs_sdk": ratio, "sdk_handoff_beside": sdk_block,
        "duration_s": time.perf_counter() - started,
        "targets": {
            "turns_per_s": target(500, closed["turns_per_s"], higher_is_better=True),
            "plain_p50_ms": target(3.0, paced["latency"]["p50_ms"]),
            "plain_p99_ms": target(15.0, paced["latency"]["p99_ms"]),
            "edge_cpu_per_plain_turn_ms": target(EDGE_CPU_TARGET_MS, cpu["paced"]["edge"]),
            "handoff_vs_sdk": target(1.0, ratio),
        },
    }  # fmt: skip
