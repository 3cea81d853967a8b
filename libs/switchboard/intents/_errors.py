"""Errors of the intents package."""

from __future__ import annotations

from ..errors import ConfigError, SwitchboardError


class IntentError(SwitchboardError):
    """Base error of intent matching."""


class EmbedderUnavailable(IntentError, ConfigError):
    """The asked-for similarity backend cannot run here: its optional packages are not installed, or its
    files are missing or damaged (``damaged``). A ``ConfigError``: the command says it in one line."""

    def __init__(self, message: str, *, damaged: bool = False) -> None:
        super().__init__(message)
        self.damaged = damaged
