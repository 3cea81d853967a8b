"""The session a piece of work belongs to, and the ids a log line is correlated by."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import trace

current_session: ContextVar[str | None] = ContextVar("switchboard_session", default=None)
"""Session id of the work running in this context (``None`` outside a session)."""


@contextmanager
def session_context(session_id: str | None) -> Iterator[None]:
    """Run the block as work of ``session_id``: log lines inside it carry ``session_id``.

    Context variables follow asyncio tasks, so tasks created inside the block inherit it.
    """
    token = current_session.set(session_id)
    try:
        yield
    finally:
        current_session.reset(token)


def correlation_ids() -> dict[str, str | None]:
    """``trace_id`` and ``span_id`` of the current span (when it is recording) and ``session_id``."""
    span = trace.get_current_span()
    trace_id = span_id = None
    if span.is_recording():
        ctx = span.get_span_context()
        trace_id = trace.format_trace_id(ctx.trace_id)
        span_id = trace.format_span_id(ctx.span_id)
    return {"trace_id": trace_id, "span_id": span_id, "session_id": current_session.get()}


def current_trace_id() -> str | None:
    """The current trace id (hex), or None when no span is recording."""
    return correlation_ids()["trace_id"]
