"""First audio through the running system: end of the caller's speech -> first byte of answer audio.

A real stack (nats-server, the edge, the retail agents as processes); one caller on a WebSocket
streams an espeak-ng utterance in 100 ms chunks in real time with server VAD; the edge detects the
end of speech (``silence_duration_ms``), transcribes it, runs the agents' turn, and speaks. Measured
per turn from the moment the last sample of speech was sent (known from the WAV: espeak's words end
there) to the first ``response.output_audio.delta``; the answer is then cancelled (the caller does
not need to hear it all) and the next turn starts. The first turn loads the models and is not counted.
Run by ``bench/voice.py`` (``--edge-turns``; ``--edge-only`` for this phase alone).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from switchboard.local.stack import Stack
from switchboard.voice import PCM_RATE

ROOT = Path(__file__).resolve().parents[1]
CHUNK_MS = 100


def session(silence_ms: int) -> dict[str, Any]:
    vad = {"type": "server_vad", "silence_duration_ms": silence_ms}
    return {"type": "realtime", "output_modalities": ["audio"], "audio": {"input": {"turn_detection": vad}}}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def one_turn(ws: Any, caller: np.ndarray, speech_end_s: float) -> dict[str, float]:
    """Stream the caller in real time; times (s, from the end of speech) of the edge's milestones."""
    loop = asyncio.get_running_loop()
    marks: dict[str, float] = {}
    step = PCM_RATE * CHUNK_MS // 1000
    start = loop.time()

    async def talk() -> None:
        for n, i in enumerate(range(0, caller.size, step)):
            await asyncio.sleep(max(0.0, start + n * CHUNK_MS / 1000 - loop.time()))  # ok-sleep: real-time caller
            chunk = base64.b64encode(caller[i : i + step].astype("<i2").tobytes()).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))

    talking = asyncio.create_task(talk())
    end = start + speech_end_s  # the caller's last word leaves the client then (chunks go out on schedule)
    milestones = {
        "input_audio_buffer.speech_stopped": "vad", "conversation.item.input_audio_transcription.completed": "stt",
        "response.created": "response", "response.output_audio.delta": "first_audio",
    }  # fmt: skip
    while True:
        event = json.loads(await ws.recv())
        kind = event["type"]
        if kind in milestones and milestones[kind] not in marks:
            marks[milestones[kind]] = loop.time() - end
            if kind == "response.output_audio.delta":
                await ws.send(json.dumps({"type": "response.cancel"}))
        if kind == "error":
            raise RuntimeError(event["error"])
        if kind == "response.done":
            break
    await talking
    return marks


def retail_stack() -> Stack:
    """A real retail stack (offline model) whose API key is ``stack.api_key``."""
    key = f"bench-{secrets.token_hex(8)}"
    env = {"SWITCHBOARD_SCENARIOS_DIR": str(ROOT / "scenarios"), "OPENAI_API_KEY": "", "SWITCHBOARD_API_KEYS": key}
    return Stack(Path(tempfile.mkdtemp(prefix="bench-voice-edge-")), scenario="retail", api_key=key, env=env)


def connect(stack: Stack) -> Any:
    url = f"{stack.ws_base}/realtime?model=switchboard"
    return websockets.connect(url, additional_headers={"Authorization": f"Bearer {stack.api_key}"})


async def bench_edge(turns: int, caller: np.ndarray, speech_end_s: float, silence_ms: int) -> dict[str, Any]:
    with retail_stack() as stack:
        async with connect(stack) as ws:
            await ws.send(json.dumps({"type": "session.update", "session": session(silence_ms)}))
            await one_turn(ws, caller, speech_end_s)  # warm-up: the edge loads its models
            edge = stack.proc("edge").pid
            cpu0 = cpu_s(edge)
            rows = [await one_turn(ws, caller, speech_end_s) for _ in range(turns)]
            cpu = cpu_s(edge) - cpu0
    first = [r["first_audio"] * 1000 for r in rows]
    return {
        "turns": turns,
        "silence_duration_ms": silence_ms,
        "caller_speech_s": speech_end_s,
        "first_audio_ms_p50": statistics.median(first),
        "first_audio_ms_p99": pct(first, 99),
        "first_audio_ms_max": max(first),
        "vad_ms_p50": statistics.median(r["vad"] * 1000 for r in rows),
        "stt_ms_p50": statistics.median(r["stt"] * 1000 for r in rows),
        "response_ms_p50": statistics.median(r["response"] * 1000 for r in rows),
        "edge_cpu_ms_per_turn": cpu * 1000 / turns,
    }


def report(r: dict[str, Any]) -> str:
    return (
        f"| First audio through the stack (end of caller speech -> first answer audio byte; {r['turns']} turns,"
        f" server VAD with {r['silence_duration_ms']} ms silence) p50 / p99 / max | {r['first_audio_ms_p50']:.0f} /"
        f" {r['first_audio_ms_p99']:.0f} / {r['first_audio_ms_max']:.0f} ms |\n"
        f"| ... of which: `speech_stopped` / transcript / `response.created` (p50, from the end of speech) |"
        f" {r['vad_ms_p50']:.0f} / {r['stt_ms_p50']:.0f} / {r['response_ms_p50']:.0f} ms |\n"
        f"| Edge CPU per voice turn (VAD, STT, the answer's first sentences synthesised) |"
        f" {r['edge_cpu_ms_per_turn']:.0f} ms |\n"
    )


def measure(turns: int, caller: np.ndarray, speech_s: float, silence_ms: int = 500) -> dict[str, Any]:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = asyncio.run(bench_edge(turns, caller, speech_s, silence_ms))
    result["when"] = started
    return result
