"""Errors of the intents package."""

from __future__ import annotations

from ..errors import SwitchboardError


class IntentError(SwitchboardError):
    """Base error of intent matching."""


class EmbedderUnavailable(IntentError):
    """The asked-for similarity backend cannot run here (its optional packages are not installed)."""
