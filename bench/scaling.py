"""Per-specialist scaling: adding replicas of one specialist raises its throughput, the others are untouched.

Starts nats-server and the ``scaling`` scenario's two specialists as real processes: ``slow`` (offline
model with a simulated 0.3 s per call) and ``quick`` (instant), each replica taking at most
--inflight turns at once (``SWITCHBOARD_AGENT_MAX_INFLIGHT``; beyond it a replica answers ``busy`` and
the caller retries). For each replica count N of ``slow`` (quick stays at one replica), --callers
callers do ``slow`` turns back to back (the same offered load for every N) while one caller does
``quick`` turns one at a time for as long as that lasts. Turns go straight to each agent's queue group
over NATS (``switchboard.testing.turns``), as the edge's conductor sends them.

.venv/bin/python bench/scaling.py [--replicas 1,2,3] [--inflight 2] [--callers C] [--turns-per-row T]
                                  [--out-dir bench/results] [--var-dir DIR]

Results: <out-dir>/scaling.json and scaling.md (the Markdown table is also printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from switchboard.agents import load_scenario
from switchboard.bus import Bus
from switchboard.local.stack import Stack
from switchboard.testing.turns import AgentDriver, TurnFigures, alongside

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "bench" / "scenarios"


@dataclass
class Row:
    slow_replicas: int
    slow_turns: int
    slow_turns_per_s: float
    bound_turns_per_s: float
    slow_p50_ms: float
    slow_p99_ms: float
    busy_retries: int
    slow_replicas_seen: int
    quick_replicas_seen: int
    quick_turns: int
    quick_p50_ms: float
    quick_p99_ms: float


def _row(n: int, slow: TurnFigures, quick: TurnFigures, bound: float) -> Row:
    return Row(
        n, slow.turns, round(slow.turns_per_s, 2), round(bound, 2), round(slow.p50_s * 1000, 1),
        round(slow.p(0.99) * 1000, 1), slow.busy_retries, len(set(slow.replicas)), len(set(quick.replicas)),
        quick.turns, round(quick.p50_s * 1000, 2), round(quick.p(0.99) * 1000, 2),
    )  # fmt: skip


def markdown(rows: list[Row], quick_alone: TurnFigures, args: argparse.Namespace, delay_s: float) -> str:
    head = (
        f"| `slow` replicas | `slow` turns/s | Bound N x {args.inflight} / {delay_s:g} s | `slow` p50 / p99 "
        "| Busy retries | `quick` replicas | `quick` p50 / p99 alongside | `quick` turns |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    base = rows[0].slow_turns_per_s if rows else 0.0
    for r in rows:
        gain = f" (x{r.slow_turns_per_s / base:.2f})" if base and r is not rows[0] else ""
        lines.append(
            f"| {r.slow_replicas} | {r.slow_turns_per_s:.1f}{gain} | {r.bound_turns_per_s:.1f} | "
            f"{r.slow_p50_ms:.0f} / {r.slow_p99_ms:.0f} ms | {r.busy_retries} | {r.quick_replicas_seen} | "
            f"{r.quick_p50_ms:.2f} / {r.quick_p99_ms:.2f} ms | {r.quick_turns} |"
        )
    lines.append(
        f"\n`quick` alone (no load on `slow`): p50 {quick_alone.p50_s * 1000:.2f} ms, "
        f"p99 {quick_alone.p(0.99) * 1000:.2f} ms over {quick_alone.turns} turns. "
        f"{args.callers} callers keep `slow` busy ({args.turns_per_row} turns per row); each replica takes "
        f"{args.inflight} turns at once."
    )
    return "\n".join(lines)


async def measure(stack: Stack, args: argparse.Namespace, delay_s: float) -> tuple[list[Row], TurnFigures]:
    rows: list[Row] = []
    async with Bus(stack.nats_urls, name="scaling-bench") as bus:
        driver = AgentDriver(bus.nc)
        try:
            for agent in ("quick", "slow"):
                await driver.turn(agent, ["warm up"])
            quick_alone = await driver.closed_loop("quick", ["hi"], callers=1, turns=200)
            running = 1
            for n in args.replicas:
                while running < n:
                    await asyncio.to_thread(stack.start_agent, "slow", wait=True)
                    running += 1
                slow, quick = await alongside(
                    driver, "slow", "quick", ["hi"], callers=args.callers, turns=args.turns_per_row
                )
                rows.append(_row(n, slow, quick, n * args.inflight / delay_s))
                print(f"  {n} slow replica(s): {slow.turns_per_s:.1f} turns/s", flush=True)
        finally:
            await driver.aclose()
    return rows, quick_alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", default="1,2,3", help="replica counts of `slow`, ascending")
    parser.add_argument("--inflight", type=int, default=2, help="SWITCHBOARD_AGENT_MAX_INFLIGHT per replica")
    parser.add_argument("--callers", type=int, default=0, help="callers on `slow` (default: max replicas x inflight)")
    parser.add_argument("--turns-per-row", type=int, default=36)
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--var-dir", default=None)
    args = parser.parse_args()
    args.replicas = sorted({int(n) for n in args.replicas.split(",")})
    if args.replicas[0] < 1:
        parser.error("--replicas must be >= 1")
    args.callers = args.callers or args.replicas[-1] * args.inflight
    slow = load_scenario("scaling", SCENARIOS).config.agent("slow")
    assert slow is not None
    delay_s = float(slow.model.settings.get("delay_s", 0.0))
    var = Path(args.var_dir or tempfile.mkdtemp(prefix="switchboard-scaling-"))
    env = {"SWITCHBOARD_SCENARIOS_DIR": str(SCENARIOS), "OPENAI_API_KEY": "", "SWITCHBOARD_METRICS_PORT": "-1",
           "SWITCHBOARD_AGENT_MAX_INFLIGHT": str(args.inflight)}  # fmt: skip
    started = time.monotonic()
    stack = Stack(var, scenario="scaling", agents=["quick", "slow"], api_key=secrets.token_hex(8), env=env)
    with stack:
        rows, quick_alone = asyncio.run(measure(stack, args, delay_s))
    table = markdown(rows, quick_alone, args, delay_s)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.monotonic() - started, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "delay_s": delay_s,
        "inflight": args.inflight,
        "callers": args.callers,
        "turns_per_row": args.turns_per_row,
        "quick_alone_p50_ms": round(quick_alone.p50_s * 1000, 2),
        "rows": [asdict(r) for r in rows],
    }
    (out / "scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "scaling.md").write_text(table + "\n")
    print(table)
    if any(r.quick_replicas_seen != 1 for r in rows) or any(r.slow_replicas_seen != r.slow_replicas for r in rows):
        sys.exit("replicas seen differ from replicas started: the measurement is not what it claims")


if __name__ == "__main__":
    main()
