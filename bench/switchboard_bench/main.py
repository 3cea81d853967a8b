"""Switchboard benchmark (``make bench``): platform overhead, handoff cost, throughput and edge capacity.

Headline (``--no-retail`` skips it): the shipped default scenario, ``retail``, started the way ``make run``
starts it, tracing as shipped; see ``retail``. Beside it, the minimal best case: the whole system as real
processes (nats-server, the edge, one process per agent) with the zero-latency ``bench`` scenario
(offline model, instant replies), driven over WebSocket
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

.venv/bin/python bench/run.py [--quick] [--no-retail] [--retail-sessions N]
                              [--sessions N] [--turns K] [--handoffs M] [--idle-sessions S]
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
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from switchboard.local.stack import Stack

from .baselines import nats_baseline, sdk_baseline
from .common import BENCH, SCENARIO, SCENARIOS, progress
from .consult import consult_stacks
from .params import Params
from .report import summary_table, write_results
from .results import assemble
from .retail import retail_phases, retail_stack
from .stacks import on_stack, raise_nofile_limit
from .stats import machine_cpu_s, own_cpu_s
from .tracing import tracing_stacks
from .workload import Replies, handoff_phase, idle_phase, paced_phase, plain_phase, warmup

try:
    import uvloop
except ImportError:  # the edge uses uvloop when present; the load generator follows suit
    uvloop = None


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


def parse_args(argv: list[str] | None = None) -> tuple[Params, Path, Path | None]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, help="concurrent sessions (default 100; quick 20)")
    ap.add_argument("--turns", type=int, help="plain turns per session (default 20; quick 5)")
    ap.add_argument("--handoffs", type=int, help="measured handoff turns (default 500; quick 50)")
    ap.add_argument("--idle-sessions", type=int, help="idle sessions held open at once (default 1000; quick 100)")
    ap.add_argument("--rate", type=float, help="turns/s the paced phase offers (default 500; quick 100)")
    ap.add_argument("--sdk-runs", type=int, help="Agents SDK runs per measurement (default 2000; quick 300)")
    ap.add_argument("--no-retail", action="store_true", help="skip the headline phases on the retail scenario")
    ap.add_argument("--retail-sessions", type=int, help="sessions of the retail closed loop (default 50; quick 10)")
    ap.add_argument(
        "--load-sweep", help="retail offered rates for latency vs load, comma-separated (default 100,200,300,400; "
        "quick 50; empty: none)",
    )  # fmt: skip
    ap.add_argument("--profile", type=Path, help="py-spy flame graphs of the edge and agents in the retail phases")
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
    ap.add_argument(
        "--tracer",
        choices=("light", "sdk"),
        default="light",
        help="the traced stack's tracer (default light, as shipped)",
    )
    ap.add_argument(
        "--tracing-sample-ratio", type=float, default=1.0,
        help="share of turns the traced stack samples (default 1: every span; e.g. 0.1 as under load)",
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--out-dir", type=Path, default=BENCH / "results", help="where results are written")
    ap.add_argument("--var-dir", type=Path, help="runtime data and logs (default: a temporary directory)")
    a = ap.parse_args(argv)
    q = a.quick
    if not 0 < a.tracing_sample_ratio <= 1:
        ap.error("--tracing-sample-ratio must be in (0, 1]")
    if a.tracing_blocks is not None and a.tracing_blocks < 1:
        ap.error("--tracing-blocks must be at least 1")

    def pick(value: int | None, default: int, quick: int) -> int:
        return value if value is not None else (quick if q else default)

    rate = a.rate if a.rate is not None else (100 if q else 500)

    def rates(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(x) for x in text.split(",") if x.strip())
        except ValueError:
            ap.error(f"--load-sweep: not a comma-separated list of rates: {text!r}")
        if any(v <= 0 for v in values):
            ap.error("--load-sweep: rates must be positive")
        return values

    params = Params(
        sessions=pick(a.sessions, 100, 20), turns=pick(a.turns, 20, 5), handoffs=pick(a.handoffs, 500, 50),
        idle_sessions=pick(a.idle_sessions, 1000, 100), idle_sample=20, sdk_runs=pick(a.sdk_runs, 2000, 300),
        nats_requests=pick(None, 2000, 500), unloaded_sessions=pick(None, 10, 3),
        unloaded_handoffs=pick(None, 200, 30), rate=rate, quick=q,
        retail=not a.no_retail, retail_sessions=pick(a.retail_sessions, 50, 10),
        load_sweep=rates(a.load_sweep if a.load_sweep is not None else ("50" if q else "100,200,300,400")),
        sweep_s=2.0 if q else 5.0,
        profile_dir=str(a.profile) if a.profile else None,
        consult=not a.no_consult, consult_rate=a.consult_rate or rate,
        consult_replicas=tuple(int(x) for x in (a.consult_replicas or ("1,2" if q else "1,2,3")).split(",")),
        consult_sessions=pick(a.consult_sessions, 24, 24),
        consult_duration_s=a.consult_duration if a.consult_duration is not None else (2.0 if q else 5.0),
        model_delay_ms=a.model_delay_ms, supervisor_max_inflight=a.supervisor_max_inflight,
        tracing=not a.no_tracing, tracing_blocks=pick(a.tracing_blocks, 4, 2),
        tracing_export_delay_ms=a.tracing_export_delay_ms, tracing_tracer=a.tracer,
        tracing_sample_ratio=a.tracing_sample_ratio,
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
    machine_before, own_before = machine_cpu_s(), own_cpu_s()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
        sdk_res = runner.run(sdk_baseline(params.sdk_runs))
        try:
            retail = None
            if params.retail:
                retail = on_stack(
                    runner, retail_stack(var_dir), "retail, as make run starts it", lambda st: retail_phases(st, params)
                )
            sw = on_stack(runner, stack, "bench", lambda st: bench_stack(st, params))
            sw["retail"] = retail
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
