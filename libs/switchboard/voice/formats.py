"""Audio formats of the Realtime protocol and conversions between them.

The pipeline works on PCM16 mono at 24 kHz (``audio/pcm``, the protocol's default), the format the
edge keeps in its buffers. G.711 μ-law and A-law at 8 kHz (``audio/pcmu``, ``audio/pcma``) are the
telephony formats; they are converted at the boundary, never inside the models. Nothing here knows
about sessions or transports.
"""

from __future__ import annotations

import base64
import binascii
from functools import cache
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import AudioDecodeError, AudioFormatError, AudioLengthError, AudioTooLargeError

PCM_RATE = 24_000
"""The rate of ``audio/pcm`` (the only one the protocol allows) and of every buffer in the pipeline."""
G711_RATE = 8_000
"""The rate of ``audio/pcmu`` and ``audio/pcma``."""

FormatType = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
Pcm16 = npt.NDArray[np.int16]


class AudioFormat(BaseModel):
    """One audio format as the Realtime protocol names it in ``session.audio.input/output.format``."""

    model_config = ConfigDict(frozen=True)

    type: FormatType = "audio/pcm"
    """``audio/pcm`` (PCM16 little-endian mono), ``audio/pcmu`` (G.711 μ-law) or ``audio/pcma`` (A-law)."""
    rate: int = Field(default=0, validate_default=True)
    """Samples per second; the format fixes it (24000 for PCM, 8000 for G.711), 0 means that one."""

    @model_validator(mode="after")
    def _check_rate(self) -> AudioFormat:
        fixed = PCM_RATE if self.type == "audio/pcm" else G711_RATE
        if self.rate == 0:
            object.__setattr__(self, "rate", fixed)
        elif self.rate != fixed:
            raise AudioFormatError(f"{self.type} supports only a rate of {fixed} Hz, not {self.rate}")
        return self

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.type == "audio/pcm" else 1

    def duration_ms(self, n_bytes: int) -> float:
        """How long ``n_bytes`` of this format play."""
        return n_bytes / self.bytes_per_sample / self.rate * 1000


PCM16_24K = AudioFormat(type="audio/pcm")
PCMU = AudioFormat(type="audio/pcmu")
PCMA = AudioFormat(type="audio/pcma")


def decode_base64(data: str, *, max_bytes: int | None = None) -> bytes:
    """Decode one base64 audio payload strictly; a too-long payload is refused before decoding."""
    approx = len(data.rstrip("=")) * 3 // 4
    if max_bytes is not None and approx > max_bytes:
        raise AudioTooLargeError(
            f"audio chunk of ~{approx} bytes is over the {max_bytes}-byte limit",
            limit=max_bytes, actual=approx, unit="bytes",
        )  # fmt: skip
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AudioDecodeError(f"audio is not valid base64: {exc}") from exc


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def pcm16_from_bytes(data: bytes) -> Pcm16:
    """PCM16 little-endian bytes as samples; an odd byte count is refused (half a sample)."""
    if len(data) % 2:
        raise AudioLengthError(f"PCM16 audio needs an even number of bytes (2 per sample), got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)


def pcm16_to_float(samples: Pcm16) -> npt.NDArray[np.float32]:
    return samples.astype(np.float32) / 32768.0


def float_to_pcm16(samples: npt.NDArray[np.floating]) -> Pcm16:
    return np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)


def resample(samples: Pcm16, in_rate: int, out_rate: int) -> Pcm16:
    """Resample a whole signal (use :class:`Resampler` for a stream of chunks)."""
    if in_rate == out_rate or samples.size == 0:
        return samples
    import soxr

    out: Pcm16 = soxr.resample(samples, in_rate, out_rate, quality="HQ")
    return out


class Resampler:
    """Resamples a stream chunk by chunk without clicks at chunk borders (soxr keeps the filter state)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = None
        if in_rate != out_rate:
            import soxr

            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")

    def push(self, samples: Pcm16, *, last: bool = False) -> Pcm16:
        if self._stream is None:
            return samples
        out: Pcm16 = self._stream.resample_chunk(samples, last=last)
        return out


# --- G.711 (ITU-T): segment-companded 8-bit codes; tables built once ---------------------------------

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


def _segment(magnitude: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """floor(log2(x)) - 7 for x >= 128, else 0: the G.711 segment of a 16-bit magnitude."""
    seg = np.zeros_like(magnitude)
    big = magnitude >= 128
    seg[big] = np.floor(np.log2(magnitude[big])).astype(np.int32) - 7
    return np.clip(seg, 0, 7)


def ulaw_encode(samples: Pcm16) -> bytes:
    x = samples.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS
    seg = _segment(mag)
    mantissa = (mag >> (seg + 3)) & 0x0F
    codes: npt.NDArray[np.uint8] = (~(sign | (seg << 4) | mantissa) & 0xFF).astype(np.uint8)
    return codes.tobytes()


@cache
def _ulaw_table() -> Pcm16:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def ulaw_decode(data: bytes) -> Pcm16:
    return _ulaw_table()[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(samples: Pcm16) -> bytes:
    x = samples.astype(np.int32)
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, ~x)  # -x - 1 for negatives: 0..32767
    seg = np.where(mag < 256, 0, _segment(mag))
    mantissa = np.where(seg == 0, mag >> 4, mag >> (seg + 3)) & 0x0F
    return (((seg << 4) | mantissa) ^ mask).astype(np.uint8).tobytes()


@cache
def _alaw_table() -> Pcm16:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def alaw_decode(data: bytes) -> Pcm16:
    return _alaw_table()[np.frombuffer(data, dtype=np.uint8)]


# --- the boundary: wire format <-> PCM16 at 24 kHz ---------------------------------------------------


def to_pcm16_24k(data: bytes, fmt: AudioFormat = PCM16_24K) -> Pcm16:
    """Decode wire audio of ``fmt`` into the pipeline's PCM16 at 24 kHz."""
    if fmt.type == "audio/pcm":
        return pcm16_from_bytes(data)
    samples = ulaw_decode(data) if fmt.type == "audio/pcmu" else alaw_decode(data)
    return resample(samples, fmt.rate, PCM_RATE)


def from_pcm16_24k(samples: Pcm16, fmt: AudioFormat = PCM16_24K) -> bytes:
    """Encode the pipeline's PCM16 at 24 kHz as wire audio of ``fmt`` (a whole signal)."""
    if fmt.type == "audio/pcm":
        return samples.astype("<i2").tobytes()
    narrow = resample(samples, PCM_RATE, fmt.rate)
    return ulaw_encode(narrow) if fmt.type == "audio/pcmu" else alaw_encode(narrow)
