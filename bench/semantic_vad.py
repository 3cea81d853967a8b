"""Semantic VAD against server VAD on real speech: false end-of-turn rate and end-of-turn latency.

Callers (espeak-ng and Piper, two voices) say sentences two ways: with a hesitation mid-sentence (the
first part, a pause of ``--pause-ms``, the rest) and whole, followed by silence. Each goes through the
shipped Silero VAD and turn detector exactly as the edge runs them, 100 ms chunks; semantic VAD's pause
probes run the shipped Whisper on the buffered audio (the edge's buffer: speech from the prefix padding
on), and their verdict is applied only after as much audio as the decode took in wall time has gone by,
as it would on a live call.

- false end of turn: a hesitation that ended the turn (a ``speech_stopped`` before the rest was said);
- end-of-turn latency: ``speech_stopped.audio_end_ms`` minus the end of the last word (the end of
  the synthesised words), for the whole sentences and for the hesitant ones that were not cut.

Run: ``.venv/bin/python bench/semantic_vad.py`` (a few minutes of CPU); writes
bench/results/semantic_vad.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from switchboard.testing.speech import espeak
from switchboard.voice import PCM_RATE, SemanticVadConfig, ServerVadConfig, SpeechStopped, TurnDetection
from switchboard.voice.formats import Pcm16
from switchboard.voice.piper_tts import PiperTts
from switchboard.voice.semantic_vad import SemanticTurnDetector
from switchboard.voice.silero import SileroVad
from switchboard.voice.whisper import WhisperStt

RESULTS = Path(__file__).resolve().parent / "results"
CHUNK = PCM_RATE // 10
LEAD_MS = 200
TAIL_MS = 9000

HESITANT = [  # (first part, rest): a pause where callers hesitate, mostly where the words cannot end
    ("I was charged twice and", "I want my money back."),
    ("My order number is", "four five six seven."),
    ("I need to return my order because", "it arrived broken."),
    ("I would like to speak to", "someone about my bill."),
    ("Can you tell me about", "the return policy?"),
    ("I have a question about", "my last invoice."),
    ("So I was wondering if", "you could help me."),
    ("I want a refund for", "the shoes I bought."),
    ("My email address is", "jane at example dot com."),
    ("I called yesterday, and", "nobody called me back."),
    ("I want to return", "the blue jacket."),  # no cue in the words: a verb that can end a sentence
    ("I bought a jacket last week", "and it does not fit."),  # no cue: the first part is a sentence
]
WHOLE = [
    "Hello, can you help me please?",
    "I want a refund for my order.",
    "What is my balance?",
    "I can't log in to my account.",
    "I was charged twice for the same order.",
    "Please cancel my subscription.",
]


@dataclass
class Run:
    stops: list[float]
    """``audio_end_ms`` of each ``speech_stopped``."""
    probes: list[float]
    """Wall ms of each pause decode."""


class Probe:
    """Whisper on the buffered audio, cached per (utterance, sample count): eagerness levels share probes."""

    def __init__(self, stt: WhisperStt) -> None:
        self.stt = stt
        self.cache: dict[tuple[str, int], tuple[str, float]] = {}

    def __call__(self, key: str, audio: Pcm16) -> tuple[str, float]:
        if (key, audio.size) not in self.cache:
            started = time.perf_counter()
            text = self.stt.recognize(audio)
            self.cache[(key, audio.size)] = (text, (time.perf_counter() - started) * 1000)
        return self.cache[(key, audio.size)]


def detect(config: TurnDetection, audio: Pcm16, key: str, probe: Probe) -> Run:
    vad = SileroVad(config)
    detector = vad.detector
    semantic = detector if isinstance(detector, SemanticTurnDetector) else None
    stops: list[float] = []
    probes: list[float] = []
    pending: tuple[int, int, str] | None = None  # (chunk index at which the verdict lands, token, text)
    speech_from = 0
    for n, i in enumerate(range(0, audio.size, CHUNK)):
        for ev in vad.process(audio[i : i + CHUNK]):
            if isinstance(ev, SpeechStopped):
                stops.append(ev.audio_end_ms)
            else:
                speech_from = max(0, round(ev.audio_start_ms * PCM_RATE / 1000))
        if semantic is None:
            continue
        if pending is not None and n >= pending[0]:
            semantic.judge(pending[1], pending[2])
            pending = None
        if pending is None and (token := semantic.pause()) is not None:
            text, wall_ms = probe(key, audio[speech_from : i + CHUNK])
            probes.append(wall_ms)
            pending = (n + max(1, round(wall_ms / 100)), token, text)
    return Run(stops, probes)


def configs() -> dict[str, TurnDetection]:
    return {
        "server_vad (500 ms)": ServerVadConfig(),
        "server_vad (1000 ms)": ServerVadConfig(silence_duration_ms=1000),
        "semantic_vad high": SemanticVadConfig(eagerness="high"),
        "semantic_vad auto (medium)": SemanticVadConfig(eagerness="auto"),
        "semantic_vad low": SemanticVadConfig(eagerness="low"),
    }


def words_ms(samples: Pcm16) -> float:
    """Where the words end in a synthesised clip (its last 10 ms above 2% of its peak): TTS pads silence."""
    frames = samples[: samples.size // 240 * 240].astype(np.float32).reshape(-1, 240)
    loud = np.flatnonzero(np.abs(frames).max(axis=1) > 0.02 * max(1.0, float(np.abs(samples).max())))
    return (loud[-1] + 1) * 10.0 if loud.size else 0.0


def silence(ms: int) -> Pcm16:
    return np.zeros(PCM_RATE * ms // 1000, dtype=np.int16)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pause-ms", type=int, default=1200)
    args = parser.parse_args()
    stt, piper = WhisperStt(), PiperTts(noise_scale=0.0, noise_w_scale=0.0)
    probe = Probe(stt)
    work = Path(tempfile.mkdtemp(prefix="semantic-vad-"))
    voices = {
        "espeak-ng": lambda text, name: espeak(text, work / f"{name}.wav").samples,
        "piper": lambda text, name: piper.speak(text),
    }
    results: dict[str, dict[str, list[float]]] = {
        name: {"false": [], "latency": [], "hesitant_latency": [], "probe_ms": []} for name in configs()
    }
    details: list[dict[str, Any]] = []
    for voice, speak in voices.items():
        for n, (first, rest) in enumerate(HESITANT):
            a, b = speak(first, f"h{n}a"), speak(rest, f"h{n}b")
            audio = np.concatenate([silence(LEAD_MS), a, silence(args.pause_ms), b, silence(TAIL_MS)])
            pause_at = (LEAD_MS + words_ms(a), LEAD_MS + a.size * 1000 / PCM_RATE + args.pause_ms)
            end = pause_at[1] + words_ms(b)
            for name, config in configs().items():
                run = detect(config, audio, f"{voice}-h{n}", probe)
                cut = any(pause_at[0] < s <= pause_at[1] + 100 for s in run.stops)
                results[name]["false"].append(float(cut))
                details.append({"config": name, "voice": voice, "said": [first, rest], "cut": cut,
                                "stops_after_words_ms": [round(s - pause_at[0]) for s in run.stops]})  # fmt: skip
                if not cut and run.stops:
                    results[name]["hesitant_latency"].append(run.stops[-1] - end)
                results[name]["probe_ms"].extend(run.probes)
        for n, text in enumerate(WHOLE):
            a = speak(text, f"w{n}")
            audio = np.concatenate([silence(LEAD_MS), a, silence(TAIL_MS)])
            end = LEAD_MS + words_ms(a)
            for name, config in configs().items():
                run = detect(config, audio, f"{voice}-w{n}", probe)
                if run.stops:
                    results[name]["latency"].append(run.stops[-1] - end)
                results[name]["probe_ms"].extend(run.probes)
    report: dict[str, Any] = {"pause_ms": args.pause_ms, "utterances": {"hesitant": len(HESITANT) * 2,
                              "whole": len(WHOLE) * 2}, "configs": {}}  # fmt: skip
    lines = [
        f"# Semantic VAD vs server VAD ({time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())})",
        "",
        f"{len(HESITANT) * 2} hesitant utterances (a {args.pause_ms} ms pause mid-sentence) and {len(WHOLE) * 2} "
        "whole ones, espeak-ng and Piper; bench/semantic_vad.py.",
        "",
        "| turn detection | false end of turn (hesitant) | end-of-turn latency, whole: p50 / max "
        "| hesitant, not cut: p50 | pause decode p50 / max |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for name, r in results.items():
        row = {
            "false_end_of_turn_rate": statistics.fmean(r["false"]),
            "latency_ms_p50": pct(r["latency"], 50), "latency_ms_max": max(r["latency"], default=float("nan")),
            "hesitant_latency_ms_p50": pct(r["hesitant_latency"], 50),
            "probe_ms_p50": pct(r["probe_ms"], 50), "probe_ms_max": max(r["probe_ms"], default=float("nan")),
            "probes": len(r["probe_ms"]),
        }  # fmt: skip
        report["configs"][name] = row
        probes = f"{row['probe_ms_p50']:.0f} / {row['probe_ms_max']:.0f} ms" if r["probe_ms"] else "-"
        lines.append(
            f"| {name} | {sum(r['false']):.0f}/{len(r['false'])} ({row['false_end_of_turn_rate']:.0%}) | "
            f"{row['latency_ms_p50']:.0f} / {row['latency_ms_max']:.0f} ms | "
            f"{row['hesitant_latency_ms_p50']:.0f} ms | {probes} |"
        )
    report["hesitant"] = details
    report["probe_transcripts"] = {f"{k[0]}@{k[1]}": v[0] for k, v in probe.cache.items()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "semantic_vad.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "semantic_vad.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
