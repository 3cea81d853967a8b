"""The offline engines, loaded once per process and shared by every voice session."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .interfaces import SpeechToText, TextToSpeech, VoiceActivityDetector
from .semantic_vad import TurnDetection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoiceEngines:
    """What a voice session needs: shared STT and TTS, and a VAD per audio stream."""

    stt: SpeechToText
    tts: TextToSpeech
    new_vad: Callable[[TurnDetection | None], VoiceActivityDetector]


def load_offline(*, cpu_threads: int = 1, workers: int = 2) -> VoiceEngines:
    """Whisper tiny.en + Piper "joe" + Silero VAD, all from installed wheels (nothing is downloaded)."""
    from .piper_tts import PiperTts
    from .silero import SileroVad
    from .whisper import WhisperStt

    started = time.perf_counter()
    engines = VoiceEngines(
        stt=WhisperStt(cpu_threads=cpu_threads, workers=workers),
        tts=PiperTts(cpu_threads=cpu_threads),
        new_vad=SileroVad,
    )
    log.info("offline voice loaded", extra={"seconds": round(time.perf_counter() - started, 2)})
    return engines
