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
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from switchboard.voice import (
    PCM16_24K,
    AudioFormat,
    AudioLimits,
    InputAudioBuffer,
    ServerVadConfig,
    VoiceActivityDetector,
    VoiceEngines,
    VoiceError,
    load_offline,
)

from .protocol import ProtocolError

log = logging.getLogger(__name__)

VOICE = "joe"
"""The one offline voice that ships (Piper en_US joe); a client's other ``voice`` is echoed, not applied."""


class _Loose(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AudioInput(_Loose):
    """``session.audio.input`` (GA ``RealtimeAudioConfigInput``)."""

    format: AudioFormat | None = None
    noise_reduction: dict[str, Any] | None = None
    """Accepted, not applied."""
    transcription: dict[str, Any] | None = None
    """Accepted: the edge always transcribes the caller with its own STT (the agents need the words)."""
    turn_detection: dict[str, Any] | None = None
    """``server_vad`` (``semantic_vad`` is served by server VAD with its defaults) or ``null`` (push-to-talk)."""


class AudioOutput(_Loose):
    """``session.audio.output`` (GA ``RealtimeAudioConfigOutput``)."""

    format: AudioFormat | None = None
    speed: float | None = None
    voice: str | dict[str, Any] | None = None


class AudioConfig(_Loose):
    input: AudioInput | None = None
    output: AudioOutput | None = None


def _turn_detection(raw: Mapping[str, Any] | None) -> ServerVadConfig | None:
    if raw is None:
        return None
    fields = dict(raw)
    if fields.get("type") == "semantic_vad":  # no semantic model here: server VAD with its defaults
        fields = {k: v for k, v in fields.items() if k in ("create_response", "interrupt_response")}
        fields["type"] = "server_vad"
    return ServerVadConfig.model_validate(fields)


def _invalid(exc: ValidationError | VoiceError, prefix: str) -> ProtocolError:
    if isinstance(exc, VoiceError):
        return ProtocolError(exc.code, str(exc), param=prefix)
    first = exc.errors()[0]
    path = ".".join(str(p) for p in (prefix, *first["loc"]))
    return ProtocolError("invalid_value", f"{path}: {first['msg']}", param=path)


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
        self.transcription: dict[str, Any] | None = None
        self.noise_reduction: dict[str, Any] | None = None
        self.speed = 1.0
        self.turn_detection: ServerVadConfig | None = ServerVadConfig()
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
            raise _invalid(exc, "session.audio") from None
        vad = self.turn_detection
        if config.input and "turn_detection" in config.input.model_fields_set:
            try:
                vad = _turn_detection(config.input.turn_detection)
            except ValidationError as exc:
                raise _invalid(exc, "session.audio.input.turn_detection") from None
        if config.input is not None:
            if config.input.format is not None:
                self.input_format = self.buffer.format = config.input.format
            if "transcription" in config.input.model_fields_set:
                self.transcription = config.input.transcription
            if "noise_reduction" in config.input.model_fields_set:
                self.noise_reduction = config.input.noise_reduction
        if vad != self.turn_detection:
            self.turn_detection, self.vad = vad, None  # a new detector at the next audio
        if config.output is not None:
            self.output_format = config.output.format or self.output_format
            self.voice = config.output.voice or self.voice
            self.speed = config.output.speed or self.speed

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
                "format": wire_format(self.input_format), "noise_reduction": self.noise_reduction,
                "transcription": self.transcription, "turn_detection": turn,
            },
            "output": {"format": wire_format(self.output_format), "voice": self.voice, "speed": self.speed},
        }  # fmt: skip


def wire_format(fmt: AudioFormat) -> dict[str, Any]:
    """GA names the rate for ``audio/pcm`` only (G.711 is always 8 kHz)."""
    return fmt.model_dump() if fmt.type == "audio/pcm" else {"type": fmt.type}
