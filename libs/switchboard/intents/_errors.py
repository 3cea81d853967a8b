"""Errors of the intents package."""

from __future__ import annotations


class IntentError(Exception):
    """Base error of intent matching."""

    retryable = False


class EmbedderUnavailable(IntentError):
    """The asked-for similarity backend cannot run here (its optional packages are not installed)."""
