"""The root of Switchboard's own exceptions.

Each package has one base deriving from :class:`SwitchboardError` (``BusError``, ``ModelError``,
``StateError``, ...) with typed subclasses. Every error says whether the same call may succeed if
tried again (``retryable``, as livekit's ``APIError.retryable``); the retry helper retries only
those, and never reads an error's message. Third-party errors (nats-py, JetStream) are classified
where they are caught (``switchboard.state.retry.is_transient``).
"""

from __future__ import annotations

__all__ = ["ConfigError", "SwitchboardError"]


class SwitchboardError(Exception):
    """Base of every Switchboard error."""

    retryable: bool = False
    """Whether trying the same call again may succeed (a lost replica, a timeout, a 5xx)."""
    backpressure: bool = False
    """A healthy downstream said "busy": retried until the deadline, and no sign of ill health."""
    local: bool = False
    """The failure came from this process's own connection (a reconnect), not from the downstream."""
    retry_after_s: float | None = None
    """How long the downstream asked to be left alone (HTTP ``Retry-After``): no retry starts sooner."""


class ConfigError(SwitchboardError, ValueError):
    """What the user configured or asked for cannot work (an unknown agent, a missing key, a malformed
    setting): ``str()`` is one line that names it, which the ``switchboard`` command prints instead of a
    traceback. A ``ValueError`` too, for callers that catch those."""
