"""The three small interfaces another STT, TTS or VAD plugs into, and the events they produce.

Audio crossing these interfaces is always PCM16 mono at 24 kHz (``formats.PCM_RATE``); an engine
that wants another rate resamples inside. Wire formats (base64, G.711) stay outside.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from .formats import PCM_RATE, Pcm16


@dataclass(frozen=True, slots=True)
class TranscriptPartial:
    """The recogniser's current hypothesis for all audio so far; a later one may revise it."""

    text: str
    audio_ms: float
    type: Literal["partial"] = "partial"


@dataclass(frozen=True, slots=True)
class Transcript:
    """The final transcript of one utterance."""

    text: str
    audio_ms: float
    type: Literal["final"] = "final"


TranscriptEvent = TranscriptPartial | Transcript


@runtime_checkable
class SpeechToText(Protocol):
    """Streaming recognition: audio chunks in, partial hypotheses while they arrive, one final."""

    def transcribe(self, audio: AsyncIterable[Pcm16]) -> AsyncIterator[TranscriptEvent]:
        """Consume ``audio`` until it ends; yield any partials, then exactly one :class:`Transcript`."""
        ...


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    """A piece of synthesised speech (PCM16 at 24 kHz) and the text it speaks."""

    samples: Pcm16
    text: str
    """The sentence this chunk belongs to (for ``response.output_audio_transcript.delta``)."""
    first_of_sentence: bool

    @property
    def duration_ms(self) -> float:
        return self.samples.size / PCM_RATE * 1000


@runtime_checkable
class TextToSpeech(Protocol):
    """Streaming synthesis: text deltas in, audio chunks out, sentence by sentence.

    The first sentence is synthesised as soon as it is complete, while later text is still arriving;
    closing the returned iterator (``aclose``) stops the work (barge-in).
    """

    def synthesize(self, text: AsyncIterable[str]) -> AsyncIterator[SpeechChunk]: ...


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech began; ``audio_start_ms`` includes the prefix padding (session audio clock)."""

    audio_start_ms: int
    type: Literal["speech_started"] = "speech_started"


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """Speech ended; ``audio_end_ms`` includes the silence that confirmed it (session audio clock)."""

    audio_end_ms: int
    type: Literal["speech_stopped"] = "speech_stopped"


VadEvent = SpeechStarted | SpeechStopped


@runtime_checkable
class VoiceActivityDetector(Protocol):
    """Frames in, turn events out. One instance per audio stream (it keeps the stream's state)."""

    def process(self, samples: Pcm16) -> list[VadEvent]:
        """Feed the next samples (any length); return the events they complete, in order."""
        ...

    def reset(self) -> None:
        """Forget the speech state (``input_audio_buffer.clear``); the audio clock keeps running."""
        ...
