"""Observability: OpenTelemetry traces (W3C context in NATS headers), Prometheus metrics, log correlation.

Start of a process: ``setup_tracing("edge")``; at its stop: ``shutdown_tracing()``. Span and
attribute names live in :mod:`switchboard.telemetry.names`. Content stays off spans unless
``SWITCHBOARD_TRACE_CONTENT=1``. The OTLP test receiver is
``switchboard.telemetry.otlp_receiver.OTLPReceiver`` (also reachable from here, imported lazily).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import names
from .context import correlation_ids, current_session, current_trace_id, session_context
from .metrics import Metrics, metrics, metrics_app, metrics_route, start_metrics_server, stop_metrics_servers
from .spans import mark_error, process_span, send_span, set_attributes, set_content, span
from .tracing import (
    content_enabled,
    extract,
    get_tracer,
    inject,
    setup_tracing,
    shutdown_tracing,
    tracing_enabled,
)

if TYPE_CHECKING:
    from .otlp_receiver import OTLPReceiver, ReceivedSpan

__all__ = [
    "Metrics",
    "OTLPReceiver",
    "ReceivedSpan",
    "content_enabled",
    "correlation_ids",
    "current_session",
    "current_trace_id",
    "extract",
    "get_tracer",
    "inject",
    "mark_error",
    "metrics",
    "metrics_app",
    "metrics_route",
    "names",
    "process_span",
    "send_span",
    "session_context",
    "set_attributes",
    "set_content",
    "setup_tracing",
    "shutdown_tracing",
    "span",
    "start_metrics_server",
    "stop_metrics_servers",
    "tracing_enabled",
]

_LAZY = {"OTLPReceiver", "ReceivedSpan"}


def __getattr__(name: str) -> Any:
    # The receiver pulls in uvicorn and the OTLP protobufs, which services do not need.
    if name in _LAZY:
        from . import otlp_receiver

        return getattr(otlp_receiver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
