"""``switchboard voice say TEXT OUT.wav`` and ``switchboard voice transcribe IN.wav``: hear the offline
engines without the edge (the parser is in ``switchboard.cli``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import numpy as np

from ..errors import ConfigError
from .errors import EmptyAudioError, VoiceError
from .formats import PCM_RATE


def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the models come from wheels; never ask a hub
    try:
        if args.voice_command == "say":
            _say(args.text, args.out)
        else:
            _transcribe(args.wav)
    except VoiceError as exc:
        print(f"switchboard voice: {exc}", file=sys.stderr)
        sys.exit(2)


def _say(text: str, out: str) -> None:
    if not text.strip():  # before the engine loads, and before anything is written
        raise ConfigError("nothing to say: TEXT is blank; no WAV written")
    from .piper_tts import PiperTts
    from .wav import write_wav

    tts = PiperTts()

    async def speak() -> tuple[np.ndarray, float]:
        async def words() -> object:
            for word in text.split():
                yield word + " "

        started, first = time.perf_counter(), 0.0
        pieces = []
        async for chunk in tts.synthesize(words()):  # type: ignore[arg-type]
            first = first or time.perf_counter() - started
            pieces.append(chunk.samples)
        return (np.concatenate(pieces) if pieces else np.zeros(0, np.int16)), first

    samples, first = asyncio.run(speak())
    if not samples.size:  # text Piper has no sound for, e.g. "..."
        raise EmptyAudioError(f"Piper says nothing for {text!r}; no WAV written")
    write_wav(out, samples)
    print(f"wrote {out}: {samples.size / PCM_RATE:.2f} s of speech, first audio after {first * 1000:.0f} ms")


def _transcribe(path: str) -> None:
    from .wav import read_wav
    from .whisper import WhisperStt

    samples = read_wav(path)
    print(WhisperStt(workers=1).recognize(samples))
