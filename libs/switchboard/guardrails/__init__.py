"""Guardrails at every boundary: caller input, agent output, handoffs; PII kept out of logs, audit, traces."""

from .rules import (
    Action,
    Boundary,
    GuardrailRule,
    GuardrailsConfig,
    Verdict,
    check,
    find_pii,
    redact_pii,
)
from .stream import RedactingFilter, StreamGuard

__all__ = [
    "Action",
    "Boundary",
    "GuardrailRule",
    "GuardrailsConfig",
    "RedactingFilter",
    "StreamGuard",
    "Verdict",
    "check",
    "find_pii",
    "redact_pii",
]
