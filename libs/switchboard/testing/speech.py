"""A caller for speech tests: espeak-ng (a voice unlike the pipeline's Piper voice) converted by sox."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from switchboard.voice import PCM_RATE, read_wav
from switchboard.voice.formats import Pcm16


@dataclass(frozen=True)
class Spoken:
    samples: Pcm16
    speech_ms: float
    """How long the words last (espeak-ng's output, before any padding)."""


def espeak(text: str, path: Path, *, pad_s: tuple[float, float] = (0.0, 0.0)) -> Spoken:
    """Speak ``text`` with espeak-ng, then sox: 24 kHz mono PCM16 with silence padded around it."""
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
    speech = read_wav(raw)
    subprocess.run(
        ["sox", str(raw), "-r", str(PCM_RATE), "-c", "1", "-b", "16", str(path), "pad", str(pad_s[0]), str(pad_s[1])],
        check=True,
    )
    return Spoken(samples=read_wav(path), speech_ms=speech.size / PCM_RATE * 1000)
