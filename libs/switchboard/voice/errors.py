"""Typed errors of the speech pipeline; each carries the Realtime ``error.code`` it maps to."""

from __future__ import annotations

from ..errors import SwitchboardError


class VoiceError(SwitchboardError):
    """Base of every speech-pipeline failure."""

    code: str = "voice_error"
    """The ``error.code`` a Realtime client gets for it."""


class AudioDecodeError(VoiceError):
    """The audio payload is not valid base64."""

    code = "invalid_audio_base64"


class AudioFormatError(VoiceError):
    """An unknown audio format, or a sample rate the format does not allow."""

    code = "invalid_audio_format"


class AudioLengthError(VoiceError):
    """The byte count is not a whole number of samples of the format (e.g. odd for PCM16)."""

    code = "invalid_audio_length"


class AudioTooLargeError(VoiceError):
    """One chunk, or the buffer it would grow, is over its configured limit."""

    code = "audio_buffer_too_large"

    def __init__(self, message: str, *, limit: int, actual: int, unit: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.actual = actual
        self.unit = unit


class EmptyAudioError(VoiceError):
    """There is no audio where some is needed (commit of an empty buffer, TTS of silence)."""

    code = "input_audio_buffer_commit_empty"


class WavError(VoiceError):
    """A WAV file that is not mono PCM16, or not a WAV file at all."""

    code = "invalid_wav"


class ModelUnavailableError(VoiceError):
    """An offline model is not installed (the ``voice`` extra is missing)."""

    code = "voice_model_unavailable"
