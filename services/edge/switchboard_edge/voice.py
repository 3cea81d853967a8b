"""Audio at the edge: the session's audio settings, the caller's buffer and turn detection, the engines.

Imported only when a session uses audio (``session.update`` with ``audio`` or ``output_modalities:
["audio"]``, or an audio event): a text-only session never imports the ``voice`` extra, loads a model
or pays for any of this. The engines (``switchboard.voice.load_offline``: Whisper, Piper, Silero) load
once per process, lazily, in a worker thread; STT and TTS run in worker threads too
(``asyncio.to_thread`` inside the engines), so other sessions keep flowing while one is transcribed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from switchboard.voice import (
    PCM16_24K,
    AudioFormat,
    AudioLimits,
    InputAudioBuffer,
    SemanticVadConfig,
    ServerVadConfig,
    SpeechToText,
    TurnDetection,
    VoiceActivityDetector,
    VoiceEngines,
    VoiceError,
    load_offline,
)

from .protocol import ProtocolError, field_path

log = logging.getLogger(__name__)

VOICE = "joe"
"""The one offline voice that ships (Piper en_US joe); a client's other ``voice`` is echoed, not applied."""


class _Loose(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


STT_MODEL = "whisper-tiny.en"
"""The one transcription model that ships; ``STT_MODELS`` are the names a session may ask it by."""
OPENAI_STT_MODELS = frozenset({
    "whisper-1", "gpt-transcribe", "gpt-live-transcribe", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
    "gpt-4o-mini-transcribe-2025-12-15", "gpt-realtime-whisper",
})  # fmt: skip
"""The GA protocol's transcription models that a client may name and the shipped Whisper serves instead, so an
official client on its defaults (the Agents SDK asks for ``gpt-4o-mini-transcribe``) works unchanged. Not
``gpt-4o-transcribe-diarize``: its speaker labels cannot be served."""
STT_MODELS = frozenset({STT_MODEL, "tiny.en", "whisper-tiny"}) | OPENAI_STT_MODELS
STT_LANGUAGES = frozenset({"en"})
"""Whisper tiny.en hears English only."""


class Transcription(_Loose):
    """``session.audio.input.transcription`` (GA ``AudioTranscription``). The edge always transcribes the
    caller (the agents work on the words); these settings steer that transcription."""

    model: str | None = None
    """One of ``STT_MODELS``, all served by the shipped Whisper tiny.en; another model is refused."""
    language: str | None = None
    languages: list[str] | None = None
    """ISO-639-1; only ``en``."""
    prompt: str | None = Field(default=None, max_length=2000)
    """Whisper's initial prompt: words to expect (names, products), a spelling or style to follow."""
    keywords: list[str] | None = Field(default=None, max_length=100)
    """Words or phrases to expect: added to the prompt."""
    delay: str | None = None
    """``gpt-realtime-whisper`` only: refused."""

    @field_validator("model")
    @classmethod
    def _shipped_model(cls, model: str | None) -> str | None:
        if model is not None and model not in STT_MODELS:
            names = ", ".join(sorted(STT_MODELS))
            raise ValueError(
                f"transcription model {model!r} is not available on this edge; it transcribes with Whisper "
                f"tiny.en, asked for by any of: {names}"
            )
        return model

    @field_validator("language")
    @classmethod
    def _english(cls, language: str | None) -> str | None:
        if language is not None and language.lower() not in STT_LANGUAGES:
            raise ValueError(f"language {language!r} is not available: Whisper tiny.en transcribes English ('en') only")
        return language

    @field_validator("languages")
    @classmethod
    def _all_english(cls, languages: list[str] | None) -> list[str] | None:
        for language in languages or []:
            cls._english(language)
        return languages

    @field_validator("delay")
    @classmethod
    def _no_delay(cls, delay: str | None) -> str | None:
        if delay is not None:
            raise ValueError("delay applies to gpt-realtime-whisper only; Whisper tiny.en transcribes each turn whole")
        return delay

    def whisper_prompt(self) -> str | None:
        said = [p for p in (self.prompt, ", ".join(self.keywords or [])) if p and p.strip()]
        return " ".join(said) or None


class NoiseReduction(_Loose):
    """``session.audio.input.noise_reduction`` (GA ``NoiseReduction``): checked, then refused (no filter ships)."""

    type: Literal["near_field", "far_field"] | None = None
    strength: float | None = Field(default=None, ge=0.0)


class AudioInput(_Loose):
    """``session.audio.input`` (GA ``RealtimeAudioConfigInput``)."""

    format: AudioFormat | None = None
    noise_reduction: NoiseReduction | None = None
    transcription: Transcription | None = None
    turn_detection: dict[str, Any] | None = None
    """``server_vad``, ``semantic_vad`` or ``null`` (push-to-talk)."""

    @field_validator("noise_reduction")
    @classmethod
    def _no_filter(cls, noise_reduction: NoiseReduction | None) -> NoiseReduction | None:
        if noise_reduction is not None:
            raise ValueError(
                "noise reduction is not available on this edge: the caller's audio goes to VAD and Whisper "
                "unfiltered; send null (Whisper is trained on noisy speech, and server_vad's threshold "
                "can be raised for a noisy line)"
            )
        return noise_reduction


class AudioOutput(_Loose):
    """``session.audio.output`` (GA ``RealtimeAudioConfigOutput``)."""

    format: AudioFormat | None = None
    speed: float | None = Field(default=None, ge=0.25, le=1.5)
    """A multiple of the normal pace (GA: 0.25 to 1.5)."""
    voice: str | dict[str, Any] | None = None


class AudioConfig(_Loose):
    input: AudioInput | None = None
    output: AudioOutput | None = None


def _turn_detection(raw: Mapping[str, Any] | None) -> TurnDetection | None:
    if raw is None:
        return None
    if raw.get("type") == "semantic_vad":
        return SemanticVadConfig.model_validate(raw)
    return ServerVadConfig.model_validate(raw)


def _invalid(exc: ValidationError | VoiceError, prefix: str, raw: Any) -> ProtocolError:
    """The error for the client's ``raw`` settings at ``prefix``, its ``param`` the field's path in them
    (not pydantic's location, which names union members: ``voice.str``)."""
    if isinstance(exc, VoiceError):
        return ProtocolError(exc.code, str(exc), param=prefix)
    first = exc.errors()[0]
    path = ".".join(p for p in (prefix, field_path(raw, first["loc"])) if p)
    message = str(first["msg"]).removeprefix("Value error, ")
    return ProtocolError("invalid_value", f"{path}: {message}", param=path)


_engines: asyncio.Task[VoiceEngines] | None = None


def engines() -> asyncio.Task[VoiceEngines]:
    """The process's engines, loading in a worker thread on first use (about 5 s, 258 MB)."""
    global _engines
    if _engines is None or (_engines.done() and _engines.exception() is not None):
        _engines = asyncio.get_running_loop().create_task(asyncio.to_thread(load_offline))
    return _engines


async def ready_engines() -> VoiceEngines:
    try:
        return await asyncio.shield(engines())
    except VoiceError as exc:
        raise ProtocolError(exc.code, f"speech is not available on this edge: {exc}") from exc


class VoiceState:
    """One session's audio: formats, turn detection, the uncommitted caller audio and its VAD."""

    def __init__(self, limits: AudioLimits | None = None) -> None:
        self.input_format: AudioFormat = PCM16_24K
        self.output_format: AudioFormat = PCM16_24K
        self.voice: str | dict[str, Any] = VOICE
        self.transcription: Transcription | None = None
        self.speed = 1.0
        self.turn_detection: TurnDetection | None = ServerVadConfig()
        self.buffer = InputAudioBuffer(limits)
        self.vad: VoiceActivityDetector | None = None
        self.vad_origin_ms = 0
        """Where the VAD's clock starts on the session's audio clock."""
        self.speech_item_id: str | None = None
        """The user item announced by ``speech_started``, committed at ``speech_stopped``."""

    def apply(self, raw: Mapping[str, Any]) -> None:
        """A ``session.update``'s ``audio``; checked whole before anything changes."""
        try:
            config = AudioConfig.model_validate(raw)
        except (ValidationError, VoiceError) as exc:
            raise _invalid(exc, "session.audio", raw) from None
        vad = self.turn_detection
        if config.input and "turn_detection" in config.input.model_fields_set:
            try:
                vad = _turn_detection(config.input.turn_detection)
            except ValidationError as exc:
                raise _invalid(exc, "session.audio.input.turn_detection", config.input.turn_detection) from None
        if config.input is not None:
            if config.input.format is not None:
                self.input_format = self.buffer.format = config.input.format
            if "transcription" in config.input.model_fields_set:
                self.transcription = config.input.transcription
        if vad != self.turn_detection:
            self.turn_detection, self.vad = vad, None  # a new detector at the next audio
        if config.output is not None:
            self.output_format = config.output.format or self.output_format
            self.voice = config.output.voice or self.voice
            self.speed = config.output.speed or self.speed

    def stt(self, engines: VoiceEngines) -> SpeechToText:
        """The engines' STT with this session's ``transcription.prompt`` and ``keywords``, when it takes one."""
        prompt = self.transcription.whisper_prompt() if self.transcription else None
        with_prompt = getattr(engines.stt, "with_prompt", None)
        return with_prompt(prompt) if prompt and with_prompt is not None else engines.stt

    def detector(self, engines: VoiceEngines, just_appended_ms: float) -> VoiceActivityDetector | None:
        """The session's VAD; a new one (first audio, or turn detection changed) starts its clock where the
        audio it is about to hear starts on the session's clock."""
        if self.turn_detection is not None and self.vad is None:
            self.vad = engines.new_vad(self.turn_detection)
            self.vad_origin_ms = round(self.buffer.session_ms - just_appended_ms)
        return self.vad

    def echo(self) -> dict[str, Any]:
        """``session.audio`` as ``session.updated`` reports it."""
        turn = None if self.turn_detection is None else self.turn_detection.model_dump()
        return {
            "input": {
                "format": wire_format(self.input_format), "turn_detection": turn,
                "noise_reduction": None, "transcription": _dump(self.transcription),
            },
            "output": {"format": wire_format(self.output_format), "voice": self.voice, "speed": self.speed},
        }  # fmt: skip


def _dump(config: BaseModel | None) -> dict[str, Any] | None:
    return None if config is None else config.model_dump(exclude_none=True)


def wire_format(fmt: AudioFormat) -> dict[str, Any]:
    """GA names the rate for ``audio/pcm`` only (G.711 is always 8 kHz)."""
    return fmt.model_dump() if fmt.type == "audio/pcm" else {"type": fmt.type}
