"""Switchboard chaos suite: real processes, really killed (SIGKILL) or stopped (SIGSTOP) mid-turn.

For each fault (``--faults``, default all) the whole system is started as real processes on the
``chaos`` scenario (``chaos/scenarios/chaos``: the model takes 0.2 s per call so faults land inside
turns, and a side-effecting tool records one row per effect in SQLite), ``--sessions`` callers run
closed-loop conversations until ``--turns`` turns were attempted, and the fault is injected while
turns are in flight (``--injections`` times, each followed by the fault's recovery). Then the harness
(``switchboard.testing.chaos``) compares what the callers were told with what the system stored:
turns attempted, completed, completed by the fallback agent, failed (with the error the caller saw),
lost (completed for the caller but missing from the session history in KV: must be 0), duplicated
side effects (more than one effect per asked label in the tool's own store: must be 0), and the
p50/p99 turn latency inside the fault windows and overall.

.venv/bin/python chaos/run.py [--quick] [--turns N] [--sessions S] [--faults a,b,c] [--injections K]
                              [--pace-s P] [--out-dir DIR] [--var-dir DIR]

Results: chaos/results/latest.json, chaos/results/<UTC timestamp>.json, chaos/results/latest.md and
the README block between ``<!-- chaos:start -->`` and ``<!-- chaos:end -->``. Each fault's processes
keep their logs under the var dir (default var/chaos/<timestamp>/<fault>/log), with turns.jsonl
listing every turn. Exits 1 when a fault lost a turn, duplicated or skipped a side effect, or left a
turn unaccounted for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from switchboard.testing.chaos import (
    DEFAULT_FAULTS,
    ChaosConfig,
    FaultReport,
    fault_catalog,
    markdown_table,
    run_fault,
)

CHAOS = Path(__file__).resolve().parent
ROOT = CHAOS.parent
SCENARIOS = CHAOS / "scenarios"
README_START, README_END = "<!-- chaos:start -->", "<!-- chaos:end -->"


def progress(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, help="turns attempted per fault (default 360; quick 48)")
    ap.add_argument("--sessions", type=int, help="concurrent conversations (default 12; quick 8)")
    ap.add_argument("--faults", help=f"comma-separated faults (default all: {','.join(DEFAULT_FAULTS)})")
    ap.add_argument("--injections", type=int, help="injections per fault (default 3; quick 2)")
    ap.add_argument("--pace-s", type=float, default=0.5, help="a caller starts a turn at most this often (0.5)")
    ap.add_argument("--quick", action="store_true", help="short run: fewer turns and sessions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=CHAOS / "results", help="where results are written")
    ap.add_argument("--var-dir", type=Path, help="processes' data and logs (default var/chaos/<timestamp>)")
    return ap.parse_args(argv)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def fmt_s(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def markdown(r: dict[str, Any], reports: list[FaultReport], *, injections: bool = True) -> str:
    """The figures; ``injections=False`` leaves out what each injection hit (pids, ports) for the README."""
    cfg = r["config"]
    out = [
        f"Measured {r['timestamp']} on {r['machine']['cpus']} CPUs, Python {r['machine']['python']}, by "
        f"`make chaos` ({r['wall_s']:.0f} s; {cfg['turns']} turns per fault over {cfg['sessions']} concurrent "
        f"sessions, a turn started at most every {cfg['pace_s']} s per session, model 0.2 s per call; "
        f"all figures in `chaos/results/latest.json`).",
        "",
        markdown_table(reports),
        "",
        "*Completed*: answered by the agent that should answer, naming what the caller asked. *By fallback*: "
        "answered by the `generalist` fallback (or after a failed consult). *Lost*: the caller got "
        "`response.done` but the message or reply is missing from the session in KV. *Duplicated effects*: "
        "effects beyond one per asked label in the tool's own SQLite store. *Reconnects / re-asked*: client "
        "WebSocket reconnects, and turns asked again after one. *Retried by platform*: turns whose edge "
        "record shows a retried agent or supervisor call. Latency is client-side, `response.create` to "
        "`response.done` (re-asks included); a fault window runs from an injection to 3 s after its "
        "recovery finished; *outside* are the turns that overlapped no fault window.",
        "",
    ]
    for rep in reports:
        bits = [f"**{rep.fault}**:"]
        if injections:
            bits.append(
                "; ".join(i["injected"] + (f" → {i['recovered']}" if i["recovered"] else "") for i in rep.injections)
            )
        else:
            victim = all(i["victim_requests"] is not None for i in rep.injections)
            where = "in the victim" if victim else "in the system"
            counts = "/".join(str(i["victim_requests" if victim else "turns_in_flight"]) for i in rep.injections)
            bits.append(f"{len(rep.injections)} injection(s), {counts} turns in flight {where}")
        if rep.fallback_reasons:
            bits.append(
                "fallback because "
                + ", ".join(f"{k} ({v})" for k, v in rep.fallback_reasons.items())
                + f"; the last one ended {rep.fallback_span_s} s after the first injection"
            )
        if rep.failure_reasons:
            bits.append("failed: " + ", ".join(f"{k} ({v})" for k, v in rep.failure_reasons.items()))
        if rep.duplicate_details:
            shown = ", ".join(rep.duplicate_details[:3]) + ("…" if len(rep.duplicate_details) > 3 else "")
            bits.append(
                f"duplicated: {shown} ({rep.duplicated_after_committed_reask} of them re-asks of a turn whose "
                f"first ask had been committed)"
            )
        if rep.re_asked_after_commit:
            bits.append(f"{rep.re_asked_after_commit} re-asked turn(s) had been committed (only response.done lost)")
        if rep.lost_details:
            bits.append("lost: " + "; ".join(rep.lost_details[:3]))
        if rep.orphan_side_effects:
            bits.append(
                f"{rep.orphan_side_effects} effect(s) happened in turns the caller was told fell back or failed"
            )
        if rep.re_executions:
            bits.append(f"{rep.re_executions} tool re-run(s) under the same idempotency key (ledger takeover)")
        if rep.model_calls:
            mc = rep.model_calls
            bits.append(
                f"model: {mc['calls']} calls, {mc['http_500']} × 500, {mc['http_429']} × 429, {mc['slow']} slow"
            )
        bits += rep.notes
        out.append("- " + " ".join([bits[0], "; ".join(bits[1:])]) + ".")
    return "\n".join(out) + "\n"


def write_results(r: dict[str, Any], reports: list[FaultReport], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    body = json.dumps(r, indent=2) + "\n"
    stamp = r["timestamp"].replace(":", "").replace("-", "")
    write_atomic(out_dir / "latest.json", body)
    write_atomic(out_dir / f"{stamp}.json", body)
    md = markdown(r, reports)
    write_atomic(out_dir / "latest.md", md)
    progress(f"results: {out_dir / 'latest.json'}, {out_dir / 'latest.md'}")
    readme = ROOT / "README.md"
    if out_dir.resolve() != (CHAOS / "results").resolve() or not readme.exists():
        return  # runs written elsewhere are experiments: leave the README alone
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start == -1 or end < start:
        progress("README.md has no chaos markers; not updated")
        return
    block = markdown(r, reports, injections=False)
    write_atomic(readme, text[: start + len(README_START)] + "\n" + block + text[end:])
    progress("README.md chaos figures updated")


async def run_all(args: argparse.Namespace) -> int:
    catalog = fault_catalog()
    names = [n.strip() for n in (args.faults or ",".join(DEFAULT_FAULTS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in catalog]
    if unknown:
        progress(f"unknown faults {unknown}; known: {', '.join(catalog)}")
        return 2
    q = args.quick
    config = ChaosConfig(
        turns=args.turns or (48 if q else 360),
        sessions=args.sessions or (8 if q else 12),
        injections=args.injections or (2 if q else 3),
        pace_s=args.pace_s,
        seed=args.seed,
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    var_root = args.var_dir or ROOT / "var" / "chaos" / stamp.replace(":", "")
    progress(f"faults {names}; {config.turns} turns over {config.sessions} sessions each; logs in {var_root}")
    started = time.monotonic()
    reports: list[FaultReport] = []
    for name in names:
        report = await run_fault(
            catalog[name], config, var_dir=var_root / name, scenarios_dir=SCENARIOS, progress=progress
        )
        verdict = "ok" if report.ok else "VIOLATED"
        progress(
            f"{name}: {verdict}: {report.turns_attempted} attempted, {report.completed} completed, "
            f"{report.completed_by_fallback} by fallback, {report.failed} failed, {report.lost} lost, "
            f"{report.duplicated_side_effects} duplicated; p99 in fault window "
            f"{fmt_s(report.fault_latency_ms['p99'])} ({report.wall_s:.0f} s)"
        )
        reports.append(report)
    result = {
        "timestamp": stamp,
        "wall_s": round(time.monotonic() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "config": {
            "turns": config.turns,
            "sessions": config.sessions,
            "injections": config.injections,
            "pace_s": config.pace_s,
            "window_s": config.window_s,
            "turn_timeout_s": config.turn_timeout_s,
            "seed": config.seed,
            "quick": q,
        },  # fmt: skip
        "faults": {r.fault: r.to_dict() for r in reports},
        "descriptions": {n: catalog[n].description for n in names},
    }
    write_results(result, reports, args.out_dir)
    print()
    print(markdown_table(reports))
    bad = [r.fault for r in reports if not r.ok]
    if bad:
        progress(f"invariants violated in: {', '.join(bad)} (see the details above and in latest.md)")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("switchboard").setLevel(logging.ERROR)  # the harness's own NATS clients
    return asyncio.run(run_all(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
