"""The base of the state package's errors."""

from __future__ import annotations

from ..errors import SwitchboardError


class StateError(SwitchboardError):
    """Base of every error the state package raises itself (nats/JetStream errors pass through as they
    are and are classified by :func:`switchboard.state.retry.is_transient`)."""


class StaleRead(StateError):
    """A read right after a leader election did not yet see a write the stream has: try again."""

    retryable = True
