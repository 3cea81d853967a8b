"""A bounded buffer of caller audio (PCM16 at 24 kHz) with the session's audio clock."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .errors import AudioTooLargeError, EmptyAudioError
from .formats import PCM16_24K, PCM_RATE, AudioFormat, Pcm16, decode_base64, to_pcm16_24k


class AudioLimits(BaseModel):
    """Per-session bounds that keep memory fixed whatever a client sends."""

    model_config = ConfigDict(frozen=True)

    max_chunk_bytes: int = Field(default=1_048_576, gt=0)
    """Largest decoded ``input_audio_buffer.append`` payload (1 MiB ≈ 21.8 s of PCM16 at 24 kHz)."""
    max_buffer_ms: int = Field(default=30_000, gt=0)
    """Longest uncommitted buffer: one caller turn (Whisper's window is 30 s)."""


class InputAudioBuffer:
    """Caller audio not yet committed, plus the session clock (ms of audio ever appended).

    ``append`` decodes and checks one chunk before it touches the buffer, so a refused chunk leaves
    the buffer as it was. Timestamps are session-relative like the protocol's ``audio_start_ms``.
    """

    def __init__(self, limits: AudioLimits | None = None, fmt: AudioFormat = PCM16_24K) -> None:
        self.limits = limits or AudioLimits()
        self.format = fmt
        self._chunks: list[Pcm16] = []
        self._samples = 0
        self._start_sample = 0  # session sample index of the buffer's first sample

    @property
    def duration_ms(self) -> float:
        return self._samples / PCM_RATE * 1000

    @property
    def session_ms(self) -> float:
        """Milliseconds of audio appended since the session started (the protocol's audio clock)."""
        return (self._start_sample + self._samples) / PCM_RATE * 1000

    def append_base64(self, audio: str) -> Pcm16:
        """Decode one ``input_audio_buffer.append`` payload and append it; returns its samples."""
        return self.append(decode_base64(audio, max_bytes=self.limits.max_chunk_bytes))

    def append(self, data: bytes) -> Pcm16:
        if len(data) > self.limits.max_chunk_bytes:
            raise AudioTooLargeError(
                f"audio chunk of {len(data)} bytes is over the {self.limits.max_chunk_bytes}-byte limit",
                limit=self.limits.max_chunk_bytes, actual=len(data), unit="bytes",
            )  # fmt: skip
        samples = to_pcm16_24k(data, self.format)
        total_ms = (self._samples + samples.size) / PCM_RATE * 1000
        if total_ms > self.limits.max_buffer_ms:
            raise AudioTooLargeError(
                f"input audio buffer would hold {total_ms:.0f} ms, over the {self.limits.max_buffer_ms} ms limit;"
                " commit or clear it first",
                limit=self.limits.max_buffer_ms, actual=int(total_ms), unit="ms",
            )  # fmt: skip
        self._chunks.append(samples)
        self._samples += samples.size
        return samples

    def samples(self) -> Pcm16:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)

    def commit(self) -> Pcm16:
        """Take the whole buffer (``input_audio_buffer.commit``); an empty one is refused."""
        if not self._samples:
            raise EmptyAudioError("cannot commit an empty input audio buffer")
        return self._take(self._samples)

    def commit_until(self, session_ms: float) -> Pcm16:
        """Take the audio up to a session timestamp (a VAD ``audio_end_ms``); the rest stays buffered."""
        end = round(session_ms * PCM_RATE / 1000) - self._start_sample
        if end <= 0:
            raise EmptyAudioError(f"no buffered audio before {session_ms:.0f} ms")
        return self._take(min(end, self._samples))

    def trim_before(self, session_ms: float) -> None:
        """Drop audio older than a session timestamp: with server VAD, while nobody speaks, keep only
        ``prefix_padding_ms`` so a caller's silence never fills the buffer."""
        n = round(session_ms * PCM_RATE / 1000) - self._start_sample
        if n > 0:
            self._take(min(n, self._samples))

    def clear(self) -> None:
        """Drop the buffer (``input_audio_buffer.clear``); the session clock keeps running."""
        self._take(self._samples)

    def _take(self, n: int) -> Pcm16:
        whole = self.samples()
        taken, rest = whole[:n], whole[n:]
        self._chunks = [rest] if rest.size else []
        self._samples = rest.size
        self._start_sample += n
        return taken
