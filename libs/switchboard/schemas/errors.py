"""The typed error reply any consumer sends instead of crashing or staying silent."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from ._base import WireModel


class ErrorCode(StrEnum):
    UNSUPPORTED_VERSION = "unsupported_version"
    """The message's schema major version is not one this consumer speaks."""
    BAD_REQUEST = "bad_request"
    """The message could not be parsed or failed validation."""
    WRONG_AGENT = "wrong_agent"
    """The request names an agent this service does not serve."""
    ITERATION_CAP = "iteration_cap"
    """The agent loop hit its iteration cap without an answer."""
    MODEL_ERROR = "model_error"
    """The model provider failed."""
    TIMEOUT = "timeout"
    """The work's deadline passed."""
    BUSY = "busy"
    """The service is saturated; retry later."""
    EFFECT_PENDING = "effect_pending"
    """A side-effecting tool call of this turn is claimed by another runner that neither finished nor
    went stale before the deadline: the effect may be happening, so it is not run again."""
    INTERNAL = "internal"
    """An unexpected failure inside the consumer."""


class ErrorReply(WireModel):
    """A consumer could not handle a message."""

    type: Literal["switchboard.v1.error"] = "switchboard.v1.error"
    code: ErrorCode
    """Machine-readable reason."""
    message: str
    """Human-readable explanation."""
    retryable: bool = False
    """Whether sending the same message again may succeed."""
    supported_versions: list[str] | None = None
    """For ``unsupported_version``: the versions this consumer speaks."""
