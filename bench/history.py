"""Does a turn cost more late in a long call? Turn latency and edge CPU at 10 and at 2,000 history items.

Two stacks of the shipped `retail` scenario run side by side: one as shipped (hot window of 64 items,
older items in the history stream) and one whose window is widened so the whole history stays in the
session's KV value and travels with every agent request (what Switchboard did before the window).
In each, a fresh session (10 items) and a session pre-filled with 2,000 items take the same plain
turns, interleaved, over real WebSockets. Run: `make bench-history` (writes bench/results/history.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from switchboard.local.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WIDE = {"SWITCHBOARD_HISTORY_MAX_ITEMS": "10000", "SWITCHBOARD_HISTORY_KEEP_ITEMS": "10000",
        "SWITCHBOARD_HISTORY_MAX_BYTES": str(900 * 1024)}  # fmt: skip


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _recv_until(conn: Any, kind: str) -> Any:
    while True:
        event = await conn.recv()
        if event.type == kind:
            return event
        if event.type == "error":
            raise RuntimeError(event.error.message)


async def _fill(conn: Any, items: int) -> None:
    """Commit ``items`` user messages (each one a session commit, as a client would)."""
    for n in range(items):
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": f"note {n}: fine"}]}
        await conn.conversation.item.create(item=item)
        await _recv_until(conn, "conversation.item.done")


async def _turn(conn: Any) -> float:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
    await conn.conversation.item.create(item=item)
    await _recv_until(conn, "conversation.item.done")
    started = time.perf_counter()
    await conn.response.create()
    await _recv_until(conn, "response.done")
    return (time.perf_counter() - started) * 1000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both stacks up at once; the four (variant, history) sessions take turns round-robin, so machine
    noise falls on all of them alike."""
    out: dict[str, Any] = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": []}
    env = {"SWITCHBOARD_SCENARIOS_DIR": str(ROOT / "scenarios"), "OPENAI_API_KEY": ""}
    variants = (("as shipped (window 64)", {}), ("whole history in KV (no window)", WIDE))
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stacks:
        sessions: list[tuple[str, int, Stack, Any]] = []
        async with contextlib.AsyncExitStack() as conns:
            for n, (label, extra) in enumerate(variants):
                stack = stacks.enter_context(
                    Stack(Path(tmp) / str(n), api_key=f"bench-{secrets.token_hex(6)}", env=env | extra)
                )
                client = AsyncOpenAI(api_key=stack.api_key, websocket_base_url=stack.ws_base)
                for fill in (10, args.long_items):
                    conn = await conns.enter_async_context(client.realtime.connect(model="switchboard"))
                    await _recv_until(conn, "session.created")
                    await _fill(conn, fill - 2)
                    await _turn(conn)  # warm: the session now holds `fill` items
                    sessions.append((label, fill, stack, conn))
                    print(f"{label}: session with {fill} items ready", file=sys.stderr)
            latencies: dict[int, list[float]] = {n: [] for n in range(len(sessions))}
            cpu: dict[int, float] = dict.fromkeys(range(len(sessions)), 0.0)
            for _ in range(args.turns):
                for n, (_, _, stack, conn) in enumerate(sessions):
                    edge = stack.proc("edge").pid
                    before = _cpu_s(edge)
                    latencies[n].append(await _turn(conn))
                    cpu[n] += _cpu_s(edge) - before
    for n, (label, fill, _, _) in enumerate(sessions):
        lat = sorted(latencies[n])
        out["rows"].append({
            "variant": label, "history_items": fill, "turn_p50_ms": round(statistics.median(lat), 2),
            "turn_p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2),
            "edge_cpu_ms_per_turn": round(cpu[n] / len(lat) * 1000, 2),
        })  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--long-items", type=int, default=2000)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "history.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| History at start | Variant | Turn p50 | Turn p99 | Edge CPU per turn |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['history_items']} items | {r['variant']} | {r['turn_p50_ms']} ms | {r['turn_p99_ms']} ms "
            f"| {r['edge_cpu_ms_per_turn']} ms |"
        )
    (RESULTS / "history.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
