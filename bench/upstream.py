"""Upstream speech-to-speech mode: what the edge adds between the Realtime API and the caller.

A real stack (nats-server, the edge, the ``upstream`` test scenario's agent processes) whose front agent runs
on ``switchboard.testing.ScriptedRealtimeServer`` in this process; one caller on a WebSocket. Measured:

- **relay latency per audio chunk**: ``response.output_audio.delta`` sent by the scripted upstream -> received
  by the caller through the edge, against the same chunks received by a client connected to the scripted
  server directly (the baseline: the same loopback, JSON and event loop, no edge). The upstream sends in real
  time (100 ms chunks every 100 ms), so the edge's playback pacing never holds a chunk back.
- **first audio**: the caller receives ``input_audio_buffer.speech_stopped`` -> its first answer audio byte
  (the edge commits the caller's item, waits for the upstream transcript, screens it, stores it, runs the
  conductor's hop, syncs and asks the upstream for a response); beside it the direct ``response.create`` ->
  first audio.

    python bench/upstream.py [--turns 20]   # -> bench/results/upstream.{json,md}
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from switchboard.local.stack import Stack
from switchboard.testing import ScriptedRealtimeServer, ScriptedResponse
from switchboard.testing.scripted_realtime import tone

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench"
ANSWER = "Sure thing, I can help with that today."  # 8 words: 16 chunks of 100 ms
SESSION = {
    "type": "realtime", "output_modalities": ["audio"],
    "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}},
}  # fmt: skip


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(statistics.median(values), 3), "p99": round(pct(values, 99), 3),
            "max": round(max(values), 3)}  # fmt: skip


async def next_of(ws: Any, kind: str, seen: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            event = json.loads(await ws.recv())
            seen.append((time.monotonic(), event))
            if event["type"] == kind:
                return dict(event)


def chunk_latencies(server: ScriptedRealtimeServer, seen: list[tuple[float, dict[str, Any]]]) -> list[float]:
    received = [at for at, e in seen if e["type"] == "response.output_audio.delta"]
    assert len(received) == len(server.audio_sent), (len(received), len(server.audio_sent))
    return [(r - s) * 1000 for r, s in zip(received, server.audio_sent, strict=True)]


async def direct(server: ScriptedRealtimeServer, turns: int) -> tuple[list[float], list[float]]:
    relay: list[float] = []
    first: list[float] = []
    headers = {"Authorization": f"Bearer {KEY}"}
    async with websockets.connect(f"{server.url}/realtime?model=m", additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": SESSION}))
        await next_of(ws, "session.updated", [])
        for n in range(turns + 1):
            server.script(ScriptedResponse(text=ANSWER, pace_s=0.1))
            server.audio_sent.clear()
            seen: list[tuple[float, dict[str, Any]]] = []
            asked = time.monotonic()
            await ws.send(json.dumps({"type": "response.create"}))
            await next_of(ws, "response.done", seen)
            if n:  # the first is a warm-up
                relay += chunk_latencies(server, seen)
                first.append((next(at for at, e in seen if e["type"] == "response.output_audio.delta") - asked) * 1000)
    return relay, first


async def through_edge(server: ScriptedRealtimeServer, stack: Stack, turns: int) -> tuple[list[float], list[float]]:
    relay: list[float] = []
    first: list[float] = []
    speech = base64.b64encode(tone(100)).decode()
    quiet = base64.b64encode(bytes(4800)).decode()
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with websockets.connect(f"{stack.ws_base}/realtime?model=switchboard", additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": SESSION}))
        await next_of(ws, "session.updated", [])
        for n in range(turns + 1):  # the first turn loads the edge's speech engines: a warm-up
            server.script_transcripts("Can you help me?")
            server.script(ScriptedResponse(text=ANSWER, pace_s=0.1))
            seen: list[tuple[float, dict[str, Any]]] = []
            for payload in [speech] * 3 + [quiet] * 4:
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": payload}))
            stopped = await next_of(ws, "input_audio_buffer.speech_stopped", seen)
            assert stopped
            stopped_at = seen[-1][0]
            server.audio_sent.clear()
            done = await next_of(ws, "response.done", seen)
            assert done["response"]["status"] == "completed", done
            if n:
                relay += chunk_latencies(server, seen)
                first.append(
                    (next(at for at, e in seen if e["type"] == "response.output_audio.delta") - stopped_at) * 1000
                )
    return relay, first


async def run(turns: int) -> dict[str, Any]:
    async with ScriptedRealtimeServer(api_key=KEY) as server:
        direct_relay, direct_first = await direct(server, turns)
        with tempfile.TemporaryDirectory() as tmp:
            key = f"bench-{secrets.token_hex(8)}"
            env = {
                "SWITCHBOARD_SCENARIOS_DIR": str(ROOT / "tests" / "system" / "scenarios"), "OPENAI_API_KEY": KEY,
                "SWITCHBOARD_REALTIME_URL": server.url, "SWITCHBOARD_API_KEYS": key,
            }  # fmt: skip
            with Stack(Path(tmp), scenario="upstream", api_key=key, env=env) as stack:
                edge_relay, edge_first = await through_edge(server, stack, turns)
    added = [e - d for e, d in zip(sorted(edge_relay), sorted(direct_relay), strict=False)]
    return {
        "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "turns": turns,
        "relay_ms": {"through_edge": summary(edge_relay), "direct": summary(direct_relay),
                     "added_by_edge_p50": round(statistics.median(edge_relay) - statistics.median(direct_relay), 3),
                     "added_by_edge_p99": round(pct(edge_relay, 99) - pct(direct_relay, 99), 3),
                     "added_quantile_pairs_p50": round(statistics.median(added), 3)},
        "first_audio_ms": {"speech_stopped_to_first_audio_through_edge": summary(edge_first),
                           "response_create_to_first_audio_direct": summary(direct_first)},
    }  # fmt: skip


def row(label: str, s: dict[str, float]) -> str:
    return f"| {label} | {s['p50']} | {s['p99']} | {s['max']} | {s['n']} |"


def markdown(r: dict[str, Any]) -> str:
    relay, first = r["relay_ms"], r["first_audio_ms"]
    added = f"| **Added by the edge per relayed chunk (ms)** | **{relay['added_by_edge_p50']}** | "
    return "\n".join([
        f"# Upstream speech-to-speech mode ({r['date']}, {r['turns']} turns, `python bench/upstream.py`)", "",
        "| | p50 | p99 | max | n |", "|---|---|---|---|---|",
        row("Audio chunk, scripted upstream -> caller, through the edge (ms)", relay["through_edge"]),
        row("Audio chunk, scripted upstream -> a direct client (ms)", relay["direct"]),
        added + f"**{relay['added_by_edge_p99']}** | | |",
        row("First audio: `speech_stopped` -> first answer audio at the caller, through the edge (ms)",
            first["speech_stopped_to_first_audio_through_edge"]),
        row("First audio direct: `response.create` -> first audio (ms)",
            first["response_create_to_first_audio_direct"]),
        "",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    result = asyncio.run(run(args.turns))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "upstream.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "upstream.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
