"""Speech fixtures: engines loaded once per test session; caller audio spoken by espeak-ng (a voice
unlike the pipeline's Piper voice) and converted by sox, the way `make test` installs them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable

import numpy as np
import pytest

from switchboard.voice import PCM_RATE

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the models come from wheels: a hub lookup must fail loudly
from switchboard.testing.speech import Spoken, espeak
from switchboard.voice.formats import Pcm16
from switchboard.voice.piper_tts import PiperTts
from switchboard.voice.whisper import WhisperStt

__all__ = ["Spoken", "espeak"]


@pytest.fixture(scope="session")
def stt() -> WhisperStt:
    return WhisperStt()


@pytest.fixture(scope="session")
def tts() -> PiperTts:
    return PiperTts()


@pytest.fixture(scope="session")
def repeatable_tts() -> PiperTts:
    """Piper without sampling noise: the same text always gives the same audio, so what Whisper hears
    of it does not vary from run to run (with noise, tiny.en drops a trailing sentence ~1 time in 10)."""
    return PiperTts(noise_scale=0.0, noise_w_scale=0.0)


@pytest.fixture(scope="session")
def order_utterance(tmp_path_factory: pytest.TempPathFactory) -> Spoken:
    return espeak("I want to return order A one zero zero one", tmp_path_factory.mktemp("speech") / "order.wav")


_NUMBERS = dict(
    zero="0", oh="0", one="1", two="2", three="3", four="4", five="5", six="6", seven="7", eight="8", nine="9"
)


def words(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()


def digits(text: str) -> str:
    """Every digit said, in order, whether written as digits ("1.0.01") or words ("one zero")."""
    return "".join(_NUMBERS.get(w, "".join(c for c in w if c.isdigit())) for w in words(text))


async def chunks(samples: Pcm16, ms: int = 100) -> AsyncIterator[Pcm16]:
    step = PCM_RATE * ms // 1000
    for i in range(0, samples.size, step):
        yield samples[i : i + step]


async def text_stream(parts: Iterable[str]) -> AsyncIterator[str]:
    for part in parts:
        yield part


def silence(ms: int) -> Pcm16:
    return np.zeros(PCM_RATE * ms // 1000, dtype=np.int16)
