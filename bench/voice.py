"""Offline speech on 2 cores: what it costs and how many voice sessions one process carries.

Self-contained (no stack, no bus): the engines of `switchboard.voice` in this process, callers
spoken by espeak-ng (a voice unlike Piper's), sox for conversion. Phases:

1. STT one at a time: Whisper tiny.en with the fitted encoder window (shipped) and the 30 s window,
   real-time factor (wall and CPU) and the time from the end of the audio stream to the final
   transcript for 2-4 s utterances.
2. TTS one at a time: Piper time to the first audio chunk of a first sentence, real-time factor.
3. VAD: Silero CPU per second of audio.
4. Memory: RSS of a fresh process before and after loading the engines, and per extra VAD stream.
5. Concurrency: N simulated voice sessions in one process, each in a loop: the caller's utterance
   streams in real time through the VAD; at `speech_stopped` the buffer is committed, transcribed, and
   a canned two-sentence answer is synthesised; first-audio latency = `speech_stopped` -> first TTS
   chunk; the answer then plays out in real time before the next turn. N grows until p95 > 1.5 s.
6. Through the running system (bench/voice_edge.py): a real stack, a caller streaming in real time with
   server VAD; end of caller speech -> first answer audio byte at the client, p50/p99; edge CPU per turn.
7. Concurrent sessions through one edge (bench/voice_load.py): N = 1, 2, 4, 8, 16 callers at once on
   the stack, until first-audio p50 > 1.5 s; per N first audio p50/p99, edge CPU per second of caller
   audio, edge RSS growth per open session. A session error fails the run (exit status 1).

Wall times on a shared machine are inflated by other processes: the report gives the CPU each
step uses (robust to that) and how busy the rest of the machine was. Run: `make bench-voice`
(VOICE_ARGS="--levels 1,2,4 --turns 2" for a quick run). Writes bench/results/voice.json and voice.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from switchboard.voice import (  # noqa: E402
    PCM_RATE,
    InputAudioBuffer,
    SpeechStopped,
    Transcript,
    read_wav,
)
from switchboard.voice.piper_tts import PiperTts  # noqa: E402
from switchboard.voice.silero import SileroVad  # noqa: E402
from switchboard.voice.whisper import WhisperStt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import voice_edge  # noqa: E402
import voice_load  # noqa: E402
from voice_edge import machine_busy_s  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
UTTERANCES = [
    "I want to return order A one zero zero one",
    "What is the balance on my account",
    "Can you tell me when my package will arrive",
]
FIRST_SENTENCE = "Sure, I can help with that."
ANSWER = "Sure, I can help with that. Let me look up that order for you right now."
EDGE_CALLER = "Hello, can you help me please?"
"""Said to the retail front desk every turn of phase 6 (it answers with its greeting, no handoff)."""
LIMIT_S = 1.5
CHUNK_MS = 100


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class Meter:
    """Wall, own CPU and the other processes' CPU over a block."""

    def __enter__(self) -> Meter:
        self.wall0, self.cpu0, self.busy0 = time.perf_counter(), cpu_s(), machine_busy_s()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = cpu_s() - self.cpu0
        self.others_cores = max(0.0, (machine_busy_s() - self.busy0 - self.cpu) / self.wall)


def espeak(text: str, path: Path, pad: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(PCM_RATE), "-c", "1", "-b", "16", str(path), "pad", *map(str, pad)],
                   check=True)  # fmt: skip
    return read_wav(path)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one_chunk(samples: np.ndarray) -> AsyncIterator[np.ndarray]:
    yield samples


async def words(text: str) -> AsyncIterator[str]:
    for word in text.split():
        yield word + " "


def bench_stt(stt: WhisperStt, utterances: list[np.ndarray], reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for window in ("fit", "full"):
        stt.window = window  # type: ignore[assignment]
        walls, cpus, audio, texts = [], [], [], []
        for _ in range(reps):
            for samples in utterances:
                with Meter() as m:
                    texts.append(stt.recognize(samples))
                walls.append(m.wall)
                cpus.append(m.cpu)
                audio.append(samples.size / PCM_RATE)
        out[window] = {
            "final_after_end_ms_p50": statistics.median(walls) * 1000,
            "final_after_end_ms_max": max(walls) * 1000,
            "cpu_ms_p50": statistics.median(cpus) * 1000,
            "rtf_wall": sum(walls) / sum(audio),
            "rtf_cpu": sum(cpus) / sum(audio),
            "audio_s_mean": statistics.mean(audio),
            "transcripts": sorted(set(texts)),
        }
    stt.window = "fit"
    return out


async def bench_tts(tts: PiperTts, reps: int) -> dict[str, Any]:
    firsts, first_cpus, walls, cpus, audio = [], [], [], [], []
    for _ in range(reps):
        with Meter() as m:
            stream = tts.synthesize(words(FIRST_SENTENCE + " " + ANSWER))
            await stream.__anext__()
        firsts.append(m.wall)
        first_cpus.append(m.cpu)
        await stream.aclose()
        with Meter() as m:
            chunks = [c async for c in tts.synthesize(words(ANSWER))]
        walls.append(m.wall)
        cpus.append(m.cpu)
        audio.append(sum(c.samples.size for c in chunks) / PCM_RATE)
    return {
        "first_chunk_ms_p50": statistics.median(firsts) * 1000,
        "first_chunk_cpu_ms_p50": statistics.median(first_cpus) * 1000,
        "rtf_wall": sum(walls) / sum(audio),
        "rtf_cpu": sum(cpus) / sum(audio),
        "answer_audio_s": statistics.mean(audio),
    }


def bench_vad(audio: np.ndarray) -> dict[str, Any]:
    vad = SileroVad()
    step = PCM_RATE * CHUNK_MS // 1000
    with Meter() as m:
        for i in range(0, audio.size, step):
            vad.process(audio[i : i + step])
    return {"cpu_ms_per_audio_s": m.cpu / (audio.size / PCM_RATE) * 1000}


def memory_probe() -> None:
    """Run in a fresh process: RSS after imports, after loading the engines, per extra VAD stream."""

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    base = rss_mb()
    stt, tts = WhisperStt(), PiperTts()
    tts.speak("Warm up.")
    stt.recognize(np.zeros(PCM_RATE, np.int16) + 1)
    loaded = rss_mb()
    vads = [SileroVad() for _ in range(100)]
    for vad in vads:
        vad.process(np.zeros(PCM_RATE // 10, np.int16))
    per_vad = (rss_mb() - loaded) / 100 * 1024
    print(json.dumps({"rss_before_mb": base, "rss_engines_mb": loaded - base, "per_vad_stream_kb": per_vad}))


async def session(
    sid: int, stt: WhisperStt, tts: PiperTts, callers: list[np.ndarray], turns: int, latencies: list[float],
    counters: dict[str, float],
) -> None:  # fmt: skip
    rng = random.Random(sid)
    await asyncio.sleep(rng.uniform(0, 2.0))  # ok-sleep: stagger the callers
    step = PCM_RATE * CHUNK_MS // 1000
    vad = SileroVad()
    buffer = InputAudioBuffer()
    loop = asyncio.get_running_loop()
    for turn in range(turns):
        caller = callers[(sid + turn) % len(callers)]
        stopped: SpeechStopped | None = None
        next_at = loop.time()
        for i in range(0, caller.size, step):
            chunk = caller[i : i + step]
            buffer.append(chunk.tobytes())
            counters["audio_in_s"] += chunk.size / PCM_RATE
            events = vad.process(chunk)
            stopped = next((e for e in events if isinstance(e, SpeechStopped)), None)
            if stopped is not None:
                break
            next_at += CHUNK_MS / 1000
            await asyncio.sleep(max(0.0, next_at - loop.time()))  # ok-sleep: the caller talks in real time
        if stopped is None:
            raise RuntimeError("the VAD never heard the caller stop")
        t0 = time.perf_counter()
        heard = buffer.commit_until(stopped.audio_end_ms)
        buffer.clear()
        final = [e async for e in stt.transcribe(one_chunk(heard)) if isinstance(e, Transcript)][0]
        counters["empty_transcripts"] += not final.text
        stream = tts.synthesize(words(ANSWER))
        first = await stream.__anext__()
        latencies.append(time.perf_counter() - t0)
        played = first.duration_ms / 1000
        async for chunk in stream:
            played += chunk.duration_ms / 1000
        counters["audio_out_s"] += played
        vad.reset()
        await asyncio.sleep(played)  # ok-sleep: the caller listens to the answer before talking again


async def bench_concurrency(stt: WhisperStt, tts: PiperTts, callers: list[np.ndarray], levels: list[int],
                            turns: int, all_levels: bool) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for n in levels:
        latencies: list[float] = []
        counters = {"audio_in_s": 0.0, "audio_out_s": 0.0, "empty_transcripts": 0.0}
        with Meter() as m:
            await asyncio.gather(*(session(i, stt, tts, callers, turns, latencies, counters) for i in range(n)))
        row = {
            "sessions": n,
            "turns": len(latencies),
            "first_audio_ms_p50": statistics.median(latencies) * 1000,
            "first_audio_ms_p95": pct(latencies, 0.95) * 1000,
            "first_audio_ms_max": max(latencies) * 1000,
            "process_cores": m.cpu / m.wall,
            "other_processes_cores": m.others_cores,
            "cpu_ms_per_turn": m.cpu / len(latencies) * 1000,
            "audio_in_s": counters["audio_in_s"],
            "audio_out_s": counters["audio_out_s"],
            "empty_transcripts": counters["empty_transcripts"],
        }
        rows.append(row)
        print(
            f"  {n} sessions: first audio p50 {row['first_audio_ms_p50']:.0f} ms, p95 {row['first_audio_ms_p95']:.0f}"
            f" ms; process {row['process_cores']:.2f} cores, others {row['other_processes_cores']:.2f}",
            flush=True,
        )
        if row["first_audio_ms_p95"] > LIMIT_S * 1000 and not all_levels:
            break
    return rows


def report(r: dict[str, Any]) -> str:
    stt, full, tts, vad, mem = r["stt"]["fit"], r["stt"]["full"], r["tts"], r["vad"], r["memory"]
    conc = r["concurrency"]
    sustained = 0
    for row in conc:  # the largest level before the first one over the limit
        if row["first_audio_ms_p95"] > LIMIT_S * 1000:
            break
        sustained = row["sessions"]
    # the same load on a 2-core machine of its own: a session's turn costs cpu_per_turn every cycle
    # (caller speaks, answer plays); 80% of the cores busy keeps queueing delay small
    busiest = conc[-1]
    cycle_s = (busiest["audio_in_s"] + busiest["audio_out_s"]) / busiest["turns"]
    cores_per_session = busiest["cpu_ms_per_turn"] / 1000 / cycle_s
    projected = int(0.8 * r["cpus"] / cores_per_session)
    floor_ms = stt["cpu_ms_p50"] + tts["first_chunk_cpu_ms_p50"]
    r["projection"] = {
        "cores_per_session": cores_per_session,
        "sessions_at_80pct": projected,
        "first_audio_floor_ms": floor_ms,
    }
    lines = [
        f"Measured {r['when']} on {r['cpus']} CPUs, Python {r['python']}, by `make bench-voice` ({r['seconds']:.0f} s);"
        f" other processes kept {r['others_cores']:.2f} cores busy on average (wall times include that contention,"
        " CPU times do not).",
        "",
        "| Metric | Value |",
        "|---|---|",
        f"| STT (Whisper tiny.en int8, fitted window): final transcript after end of audio, p50 / max"
        f" ({stt['audio_s_mean']:.1f} s utterances) | {stt['final_after_end_ms_p50']:.0f}"
        f" / {stt['final_after_end_ms_max']:.0f} ms |",
        f"| STT CPU per utterance, p50 | {stt['cpu_ms_p50']:.0f} ms |",
        f"| STT real-time factor, wall / CPU | {stt['rtf_wall']:.3f} / {stt['rtf_cpu']:.3f} |",
        f"| STT with faster-whisper's 30 s window: final after end, p50; RTF wall / CPU |"
        f" {full['final_after_end_ms_p50']:.0f} ms; {full['rtf_wall']:.3f} / {full['rtf_cpu']:.3f} |",
        f"| TTS (Piper joe-medium): first chunk of a first sentence, p50 (CPU) |"
        f" {tts['first_chunk_ms_p50']:.0f} ms ({tts['first_chunk_cpu_ms_p50']:.0f} ms CPU) |",
        f"| TTS real-time factor, wall / CPU | {tts['rtf_wall']:.3f} / {tts['rtf_cpu']:.3f} |",
        f"| VAD (Silero) CPU per second of audio | {vad['cpu_ms_per_audio_s']:.1f} ms |",
        f"| Memory: engines loaded once per process (RSS) | {mem['rss_engines_mb']:.0f} MB |",
        f"| Memory per extra voice stream (VAD state) | {mem['per_vad_stream_kb']:.0f} KB + its audio buffer"
        " (48 KB per second buffered, at most 30 s) |",
        f"| Sessions one process sustains with first-audio p95 <= {LIMIT_S} s (measured here, shared machine)"
        f" | {sustained} |",
        f"| CPU a talking session keeps busy (caller {cycle_s:.1f} s turn cycle) | {cores_per_session:.3f} cores |",
        f"| Projected sessions on {r['cpus']} dedicated cores at 80% busy | {projected} |",
        f"| First-audio floor: STT final CPU + TTS first-chunk CPU (an idle machine's latency) | {floor_ms:.0f} ms |",
        *([voice_edge.report(r["edge"]).rstrip()] if "edge" in r else []),
        "",
        "| Concurrent voice sessions | Turns | First audio p50 / p95 / max | Process cores | Other processes' cores"
        " | CPU per turn | CPU per s of caller audio in + answer audio out |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in conc:
        per_audio = row["cpu_ms_per_turn"] * row["turns"] / (row["audio_in_s"] + row["audio_out_s"])
        lines.append(
            f"| {row['sessions']} | {row['turns']} | {row['first_audio_ms_p50']:.0f} / {row['first_audio_ms_p95']:.0f}"
            f" / {row['first_audio_ms_max']:.0f} ms | {row['process_cores']:.2f} | {row['other_processes_cores']:.2f}"
            f" | {row['cpu_ms_per_turn']:.0f} ms | {per_audio:.0f} ms |"
        )
    lines += [
        "",
        "First audio = the VAD's `speech_stopped` -> first TTS chunk of the answer (commit, Whisper final,"
        " Piper's first sentence); the caller's silence before `speech_stopped` (`silence_duration_ms`,"
        " 500 ms by default) comes on top. Callers are espeak-ng utterances streamed in 100 ms chunks in real"
        " time; each answer plays out in real time before the caller's next turn.",
    ]
    if "edge_load" in r:
        lines += ["", voice_load.report(r["edge_load"]).rstrip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,4,6,8,12,16", help="concurrent sessions to try, in order")
    parser.add_argument("--turns", type=int, default=3, help="turns per session per level")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the one-at-a-time phases")
    parser.add_argument("--all-levels", action="store_true", help="go on past the 1.5 s limit (a busy machine)")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--edge-turns", type=int, default=10, help="spoken turns through a real stack (phase 6)")
    parser.add_argument("--edge-silence-ms", type=int, default=500, help="server VAD silence_duration_ms (phase 6)")
    parser.add_argument("--edge-only", action="store_true", help="phase 6 alone (bench/results/voice-edge.*)")
    parser.add_argument("--load-levels", default="1,2,4,8,16", help="concurrent sessions through one edge (phase 7)")
    parser.add_argument("--load-turns", type=int, default=3, help="spoken turns per session per level (phase 7)")
    parser.add_argument("--load-only", action="store_true",
                        help="phase 7 alone, merged into bench/results/voice.{json,md}")  # fmt: skip
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe()
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-voice-"))
    hello = tmp / "hello.wav"
    edge_caller = espeak(EDGE_CALLER, hello, pad=(0.3, 1.0))
    loud = np.flatnonzero(np.abs(edge_caller.astype(np.int32)) > 0.02 * np.abs(edge_caller).max())
    speech_s = (loud[-1] + 1) / PCM_RATE  # the last word's end (espeak's own trailing silence excluded)
    if args.edge_only:
        edge = voice_edge.measure(args.edge_turns, edge_caller, speech_s, args.edge_silence_ms)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "voice-edge.json").write_text(json.dumps(edge, indent=2) + "\n")
        (RESULTS / "voice-edge.md").write_text(
            f"Measured {edge['when']}.\n\n| | |\n|---|---|\n" + voice_edge.report(edge)
        )
        print(voice_edge.report(edge))
        return
    load_levels = [int(x) for x in args.load_levels.split(",")]
    if args.load_only:
        load = phase_7(load_levels, args.load_turns, edge_caller, speech_s, args.edge_silence_ms)
        result = json.loads((RESULTS / "voice.json").read_text())
        result["edge_load"] = load
        (RESULTS / "voice.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "voice.md").write_text(report(result))
        print(voice_load.report(load))
        return
    started, busy0 = time.perf_counter(), machine_busy_s()
    cpu0 = cpu_s()
    utterances = [espeak(text, tmp / f"u{i}.wav") for i, text in enumerate(UTTERANCES)]
    callers = [espeak(text, tmp / f"c{i}.wav", pad=(0.3, 1.0)) for i, text in enumerate(UTTERANCES)]
    probe = subprocess.run([sys.executable, __file__, "--memory-probe"], capture_output=True, text=True, check=True)
    memory = json.loads(probe.stdout.strip().splitlines()[-1])
    result = asyncio.run(measure(args, utterances, callers, memory))
    print("through the running system", flush=True)
    result["edge"] = voice_edge.measure(args.edge_turns, edge_caller, speech_s, args.edge_silence_ms)
    result["edge_load"] = phase_7(load_levels, args.load_turns, edge_caller, speech_s, args.edge_silence_ms)
    result["seconds"] = time.perf_counter() - started
    result["others_cores"] = max(0.0, (machine_busy_s() - busy0 - (cpu_s() - cpu0)) / result["seconds"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "voice.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "voice.md").write_text(report(result))
    print(report(result))


def phase_7(levels: list[int], turns: int, caller: np.ndarray, speech_s: float, silence_ms: int) -> dict[str, Any]:
    print("concurrent sessions through one edge", flush=True)
    try:
        return voice_load.measure(levels, turns, caller, speech_s, silence_ms)
    except voice_load.LoadFailure as e:
        sys.exit(f"bench-voice phase 7 failed: {e}")


async def measure(
    args: argparse.Namespace, utterances: list[np.ndarray], callers: list[np.ndarray], memory: dict[str, float]
) -> dict[str, Any]:
    print("loading engines", flush=True)
    stt, tts = WhisperStt(), PiperTts()
    tts.speak("Warm up.")
    stt.recognize(utterances[0])
    print("STT / TTS / VAD one at a time", flush=True)
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "memory": memory,
        "stt": bench_stt(stt, utterances, args.reps),
        "tts": await bench_tts(tts, args.reps),
        "vad": bench_vad(np.concatenate(callers)),
    }
    print("concurrency", flush=True)
    levels = [int(x) for x in args.levels.split(",")]
    result["concurrency"] = await bench_concurrency(stt, tts, callers, levels, args.turns, args.all_levels)
    return result


if __name__ == "__main__":
    main()
