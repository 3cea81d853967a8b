"""WAV files in and out of the pipeline's PCM16 at 24 kHz (for the CLI, tests and benchmarks)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from .errors import WavError
from .formats import PCM_RATE, Pcm16, pcm16_from_bytes, resample


def read_wav(path: str | Path) -> Pcm16:
    """A PCM16 WAV file (mono, or stereo mixed down) at any rate, as PCM16 mono at 24 kHz."""
    try:
        with wave.open(str(path), "rb") as f:
            width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
            data = f.readframes(f.getnframes())
    except wave.Error as exc:
        raise WavError(f"{path}: not a PCM WAV file ({exc})") from exc
    except EOFError as exc:
        raise WavError(f"{path}: not a WAV file (too short for a WAV header)") from exc
    if width != 2:
        raise WavError(f"{path}: {8 * width}-bit samples; only 16-bit PCM is read")
    samples = pcm16_from_bytes(data)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return resample(samples, rate, PCM_RATE)


def write_wav(path: str | Path, samples: Pcm16, rate: int = PCM_RATE) -> None:
    with open(path, "wb") as out, wave.open(out, "wb") as f:  # the file first: wave leaves no half object
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())
