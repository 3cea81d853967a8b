"""Server VAD turn detection: speech probabilities per frame -> speech_started / speech_stopped.

Field names and defaults follow the Realtime protocol's ``turn_detection`` of type ``server_vad``
(``openai.types.realtime.realtime_audio_input_turn_detection.ServerVad``).

Pauses: once the caller has been silent ``PROBE_MS`` mid-speech, :meth:`TurnDetector.pause` hands out a
token once per pause: the edge transcribes the words so far then, while the silence that ends the turn is
still being waited for, and uses that transcript if the turn ends with no more speech (the Whisper decode
then costs the caller no time: first audio ~0.2 s sooner). Semantic VAD also judges those words
(:class:`~.semantic_vad.SemanticTurnDetector`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .interfaces import SpeechStarted, SpeechStopped, VadEvent


class ServerVadConfig(BaseModel):
    """``session.audio.input.turn_detection`` with ``type: server_vad``; unset fields take the defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    """Speech probability (0..1) at which speech starts; higher needs louder, clearer speech."""
    prefix_padding_ms: int = Field(default=300, ge=0, le=10_000)
    """Audio kept before the detected start (``audio_start_ms`` moves back by this much)."""
    silence_duration_ms: int = Field(default=500, ge=0, le=10_000)
    """Silence that ends speech; shorter answers faster but may cut in on pauses."""
    create_response: bool = True
    """For the edge: start a response when speech stops."""
    interrupt_response: bool = True
    """For the edge: cancel the response in progress when speech starts (barge-in)."""
    idle_timeout_ms: int | None = Field(default=None, ge=0)
    """For the edge: prompt the caller after this much silence following a response."""


PROBE_MS = 150
"""Silence after which a pause is worth transcribing (about the gap between two words at its longest)."""
HYSTERESIS = 0.15
"""Speech continues while the probability stays above ``threshold - HYSTERESIS`` (no flapping)."""


class TurnDetector:
    """The state machine, independent of the model that scores frames."""

    def __init__(self, config: ServerVadConfig | None = None) -> None:
        self.config = config or ServerVadConfig()
        self.speaking = False
        self._silence_from: float | None = None
        self._floor_ms = 0.0  # no padding before a reset (clear) point
        self._pause = 0  # counts pauses; a token names one
        self._asked = False
        self._last_ms = 0.0
        self.speech_end_ms = 0.0
        """Where the last turn's speech ended (its silence began), detector clock."""

    def silence_ms(self) -> float:
        """The silence that ends the current speech (semantic VAD varies it with what was said)."""
        return self.config.silence_duration_ms

    def reset(self, at_ms: float) -> None:
        self.speaking = False
        self._silence_from = None
        self._floor_ms = at_ms
        self._new_pause()

    def frame(self, probability: float, start_ms: float, end_ms: float) -> VadEvent | None:
        """Score one frame that covers [start_ms, end_ms) of the session audio clock."""
        silence_from = self._silence_from
        event = self._score(probability, start_ms, end_ms)
        self._last_ms = end_ms
        if isinstance(event, SpeechStopped) and silence_from is not None:
            self.speech_end_ms = silence_from
        if self._silence_from is None:  # speaking again, or the turn ended: the next pause is a new one
            self._new_pause()
        return event

    def _new_pause(self) -> None:
        if self._asked:
            self._pause += 1
        self._asked = False

    @property
    def heard_until_ms(self) -> float:
        """The end of the last frame scored (detector clock)."""
        return self._last_ms

    def pause(self) -> int | None:
        """A token when the caller has paused ``PROBE_MS`` mid-turn and the words are not yet being transcribed."""
        if self.speaking and self._silence_from is not None and not self._asked:
            if self._last_ms - self._silence_from >= PROBE_MS:
                self._asked = True
                return self._pause
        return None

    def judge(self, token: int, text: str) -> str | None:
        """The words said before pause ``token``: server VAD's wait does not depend on them (semantic VAD's does)."""
        return None

    def due(self) -> SpeechStopped | None:
        """The end of the turn if the silence already heard is long enough for it (after a verdict that shortened
        the wait: the audio may have stopped arriving, as from a client that sends a whole utterance at once)."""
        if not self.speaking or self._silence_from is None or self._last_ms - self._silence_from < self.silence_ms():
            return None
        self.speaking, self.speech_end_ms, self._silence_from = False, self._silence_from, None
        self._new_pause()
        return SpeechStopped(audio_end_ms=int(round(self._last_ms)))

    def _score(self, probability: float, start_ms: float, end_ms: float) -> VadEvent | None:
        cfg = self.config
        if not self.speaking:
            if probability >= cfg.threshold:
                self.speaking = True
                self._silence_from = None
                return SpeechStarted(audio_start_ms=int(max(self._floor_ms, start_ms - cfg.prefix_padding_ms)))
            return None
        if probability >= max(cfg.threshold - HYSTERESIS, 0.0):
            self._silence_from = None
            return None
        if self._silence_from is None:
            self._silence_from = start_ms
        if end_ms - self._silence_from >= self.silence_ms():
            self.speaking = False
            self._silence_from = None
            return SpeechStopped(audio_end_ms=int(round(end_ms)))
        return None
