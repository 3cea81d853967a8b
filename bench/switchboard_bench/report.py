"""Reporting: the markdown for ``bench/results/latest.md`` and the README, and the console summary."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from switchboard.telemetry.names import SPAN_EDGE_RESPONSE

from .common import BENCH, README_END, README_START, ROOT, progress
from .tracing import TRACING_PHASES, fmt_added


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
        *(retail_markdown(r["retail"], sdk_res, p, m) if r.get("retail") else []),
        "### The minimal `bench` scenario (best case, beside the headline)",
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
        f"sessions, each starting a turn every {c / rate * 1000:.0f} ms; a turn due while its session's previous "
        f"turn still ran is sent when that one ends and counts from when it was due{late(paced)}. *One at a time*: "
        "no other traffic. "
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


def late(paced: dict[str, Any]) -> str:
    """How many turns of a paced phase were sent late (after their session's previous, slow turn)."""
    n = paced.get("late_turns")
    return f" ({n} of {paced['latency']['n']} turns)" if n is not None else ""


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
    ratio = spans.get("sample_ratio", 1.0)
    if ratio < 1:
        complete = f"{spans['sampled_share']:.1%} of turns sampled, {ratio:g} asked"
    elif spans["every_turn_traced"]:
        complete = f"one `{SPAN_EDGE_RESPONSE}` per turn"
    else:
        complete = f"**{spans['edge_response_spans']} `{SPAN_EDGE_RESPONSE}` for {spans['traced_turns']} turns**"
    return [
        "### Tracing overhead",
        "",
        f"| Tracing off vs on ({blocks} alternating blocks each) | p50 off / on | Tracing adds (p50) | p99 off / on "
        "| Tracing adds (p99) | CPU per turn off / on | Block pairs with on slower (p50) | Target (p50) | Met |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {row} |" for row in rows),
        "",
        "Two stacks of the `bench` scenario up at once, identical but for tracing: *on* exports spans over "
        f"OTLP/HTTP with {'the OpenTelemetry SDK' if env.get('SWITCHBOARD_TRACER') == 'sdk' else 'the light'} "
        f"tracer (`SWITCHBOARD_TRACER={env.get('SWITCHBOARD_TRACER', 'light')}`; protobuf, batches, sampler "
        f"`{env['OTEL_TRACES_SAMPLER']}`"
        + (f" at {env['OTEL_TRACES_SAMPLER_ARG']}" if "OTEL_TRACES_SAMPLER_ARG" in env else " (every span)")
        + ", "
        f"`OTEL_BSP_SCHEDULE_DELAY={env['OTEL_BSP_SCHEDULE_DELAY']}` so a block's spans are exported during the "
        "block) to a counting OTLP receiver in a process of its own (`bench/otlp_sink.py`); *off* has "
        f"`OTEL_SDK_DISABLED=true`. Measurement alternates between them in blocks (off/on, on/off, ...) of the "
        f"main stack's phases: {p['unloaded_sessions']} sessions x {p['turns']} plain turns one at a time, "
        f"{p['unloaded_handoffs']} handoff turns one at a time, {p['sessions']} sessions x {p['turns']} turns at "
        f"{p['rate']:.0f} turns/s; an untraced block after a traced one waits until the traced stack has exported its "
        "spans. Latency pooled over the blocks; *block median*: the same comparison on the median of each side's "
        "per-block p50 (or p99), which one stalled block cannot sway; *block pairs*: the n-th off and on blocks, how "
        "often the traced one had the higher p50. *Met* is judged on the pooled p50. CPU: the system's processes "
        "(edge, agents, nats-server) per turn, "
        f"not the load generator nor the receiver (which used {tr['receiver_cpu_per_measured_turn_ms']:.2f} ms "
        f"per traced turn counting spans). The receiver got {spans['received']} spans "
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
    retail = r.get("retail")
    if retail:
        rt, cpu_rt = retail["targets"], retail["cpu"]
        out += [
            f"retail (headline)    {retail['closed']['turns_per_s']:.0f} turns/s closed loop; paced p50 "
            f"{fmt_ms(retail['paced']['latency']['p50_ms'])}, p99 {fmt_ms(retail['paced']['latency']['p99_ms'])}; "
            f"first-turn handoff p50 {fmt_ms(retail['handoff_unloaded']['latency']['p50_ms'])} = "
            f"{fmt_ratio(retail['handoff_vs_sdk'])} the sdk handoff",
            f"retail CPU/turn      edge {cpu_rt['paced']['edge']:.2f} ms, agents {cpu_rt['paced']['agents']:.2f} ms, "
            f"nats {cpu_rt['paced']['nats']:.2f} ms (paced); plain turn {retail['wire']['plain']['events']} events, "
            f"{retail['wire']['plain']['bytes']} bytes",
            "retail vs load       "
            + (
                "; ".join(
                    f"{pt['offered_turns_per_s']:.0f}/s p50 {fmt_ms(pt['latency']['p50_ms'])} p99 "
                    f"{fmt_ms(pt['latency']['p99_ms'])}"
                    for pt in retail.get("load_sweep", [])
                )
                or "no sweep"
            ),
            "retail targets       " + "; ".join(f"{k}: {'ok' if v['ok'] else 'MISSED'}" for k, v in rt.items()),
        ]
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


def retail_markdown(
    rt: dict[str, Any], sdk_res: dict[str, Any], p: dict[str, Any], machine: dict[str, Any]
) -> list[str]:
    """The headline section: the shipped ``retail`` scenario as ``make run`` starts it, tracing as shipped."""
    t = rt["targets"]

    def met(key: str) -> str:
        return "yes" if t[key]["ok"] else "**no**"

    closed, paced, plain_1, handoff_1 = rt["closed"], rt["paced"], rt["plain_unloaded"], rt["handoff_unloaded"]
    wire, cpu = rt["wire"]["plain"], rt["cpu"]
    c, rate = p["sessions"], p["rate"]
    ratio = rt["handoff_vs_sdk"]

    def split(key: str) -> str:
        x = cpu[key]
        return f"{x['edge']:.2f} / {x['agents']:.2f} / {x['nats']:.2f} ms"

    rows = [
        (f"Closed loop, {p['retail_sessions']} sessions x {p['turns']} turns", f"{closed['turns_per_s']:.0f} turns/s",
         ">= 500 turns/s", met("turns_per_s")),
        (f"{c} sessions, one turn each every {c / rate * 1000:.0f} ms ({rate:.0f} turns/s offered)",
         f"p50 {fmt_ms(paced['latency']['p50_ms'])}, p99 {fmt_ms(paced['latency']['p99_ms'])} "
         f"({paced['achieved_turns_per_s']:.0f} turns/s achieved)", "p50 <= 3 ms, p99 <= 15 ms",
         "yes" if t["plain_p50_ms"]["ok"] and t["plain_p99_ms"]["ok"] else "**no**"),
        (f"Edge CPU per plain text turn ({wire['events']} events, {wire['bytes'] / 1000:.1f} KB)",
         f"{cpu['paced']['edge']:.2f} ms at {rate:.0f} turns/s ({cpu['closed']['edge']:.2f} ms closed loop)", "<= 1 ms",
         met("edge_cpu_per_plain_turn_ms")),
        ("First turn of a fresh session that hands off, p50",
         f"{fmt_ms(handoff_1['latency']['p50_ms'])} = {fmt_ratio(ratio)} the in-process Agents SDK handoff "
         f"({fmt_ms(rt['sdk_handoff_beside']['p50_ms'])}, measured in alternating blocks)", "<= 1.0x",
         met("handoff_vs_sdk")),
        ("CPU per turn: edge / agents / nats-server", f"plain {split('paced')} at {rate:.0f} turns/s; "
         f"handoff {split('handoff_unloaded')} one at a time", "", ""),
        ("Plain turn one at a time, p50 / p99", p50_p99(plain_1["latency"]), "", ""),
    ]  # fmt: skip
    return [
        "### Headline: the shipped `retail` scenario, as `make run` starts it",
        "",
        "| Measured under `make run` (retail) | Figure | Target | Met |",
        "|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "Every agent of `scenarios/retail` in its own process, the edge and nats-server, started by the same code "
        "as `make run`, with its settings and tracing as shipped (no trace exporter configured: spans are not "
        "recorded; the tracing section below measures turning them on). The offline model answers at once. A "
        f'plain turn is "{rt["plain_text"]}" (triage answers); the handoff turn is "{rt["handoff_text"]}" on '
        f"a fresh session (triage -> returns, redirected by the guardrails to {rt['handoff_reply']['agent']}: the "
        "caller is not verified), its p50 compared with the Agents SDK's in-process handoff run, measured in this "
        "run in alternating blocks (SDK, retail, retail, SDK, ...: machine load falls on both sides alike). CPU: "
        "each process's user + system time over the phase, per turn. The load generator shares the same CPUs."
        + halt_polling_note(machine),
        "",
        *load_sweep_markdown(rt, p),
    ]


def halt_polling_note(machine: dict[str, Any]) -> str:
    """A sentence for a machine whose idle vCPUs halt without polling first; nothing otherwise."""
    if machine.get("cpu_idle", {}).get("guest_halt_poll_ns") != 0:
        return ""
    return (
        " This VM's idle CPUs halt without polling first (`guest_halt_poll_ns` 0): every wake of an idle "
        "process is a round trip through the hypervisor, a large share of a turn's latency below saturation "
        '(see docs/performance.md, "the machine\'s idle CPUs").'
    )


def load_sweep_markdown(rt: dict[str, Any], p: dict[str, Any]) -> list[str]:
    """Latency against offered load: the sweep's points and the paced phase's, by rate."""
    paced = rt["paced"]
    points = [*rt.get("load_sweep", []), {
        "offered_turns_per_s": p["rate"], "achieved_turns_per_s": paced["achieved_turns_per_s"],
        "latency": paced["latency"], "cpu": rt["cpu"]["paced"], "cores_busy": paced["cpu"]["cores_busy"],
    }]  # fmt: skip
    if len(points) < 2:
        return []
    rows = [
        f"| {pt['offered_turns_per_s']:.0f} ({pt['achieved_turns_per_s']:.0f}) | {fmt_ms(pt['latency']['p50_ms'])} | "
        f"{fmt_ms(pt['latency']['p99_ms'])} | {pt['cpu']['edge']:.2f} / {pt['cpu']['agents']:.2f} / "
        f"{pt['cpu']['nats']:.2f} ms | {pt['cores_busy']:.2f} |"
        for pt in sorted(points, key=lambda pt: pt["offered_turns_per_s"])
    ]
    return [
        f"| `retail`, {p['sessions']} sessions: turns/s offered (achieved) | Plain turn p50 | p99 | "
        "CPU per turn: edge / agents / nats-server | Cores busy (all processes, load generator included) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Latency against offered load: the same sessions, each starting a turn every sessions / rate seconds at a "
        f"random phase, {p.get('sweep_s', 5.0):.0f} s of traffic per rate below the paced phase's (whose row is "
        "the last); a turn due while its session's previous turn still ran counts from when it was due. The "
        f"targets (p50 <= 3 ms, p99 <= 15 ms) are judged at {p['rate']:.0f} turns/s; the rows "
        "below it show where they hold on this machine.",
        "",
    ]
