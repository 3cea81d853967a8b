"""One-line span helpers for the call sites: content-safe spans and NATS send/process spans.

Spans made here never carry content by default: an exception escaping a span is recorded as
``error.type`` (its class name) and an ERROR status; its message and stack trace only with
``SWITCHBOARD_TRACE_CONTENT=1`` (exception messages can quote what the caller said). When tracing
is off every helper yields a non-recording span without building any attribute; so does a span whose
parent was not sampled when the sampler follows the parent (the default): an unsampled trace costs a
context check per span, not the SDK's work.

Do not keep a span current across a ``yield`` of an async generator: the generator may be closed
in another context, and the span would stay current in the wrong task.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import TracebackType

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ..guardrails.rules import redact_pii
from . import names
from .tracing import active_tracer, content_enabled, extract, inject, sampled_out, tracing_enabled

Attrs = Mapping[str, AttributeValue | None]
"""Span attributes; ``None`` values are left out."""

_OFF: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)
"""What every helper returns while tracing is off (reusable, ~0.1 us per ``with``)."""


def set_attributes(span: Span, attributes: Attrs) -> None:
    """Set the attributes whose value is not ``None``."""
    if span.is_recording():
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})


def set_content(span: Span, key: str, value: str | Callable[[], str]) -> None:
    """Put content on ``span`` only when ``SWITCHBOARD_TRACE_CONTENT=1``, with PII redacted.

    Pass a callable to build the value (e.g. serialize messages) only when it will be used.
    """
    if span.is_recording() and content_enabled():
        span.set_attribute(key, redact_pii(value() if callable(value) else value))  # content yes, PII never


def mark_error(span: Span, error_type: str, description: str | None = None) -> None:
    """Mark ``span`` failed with a low-cardinality ``error.type`` (an error code, ``timeout`` ...).

    ``description`` (free text) is kept only when content is enabled.
    """
    if span.is_recording():
        span.set_attribute(names.ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR, description if content_enabled() else None))


def span(
    name: str,
    attributes: Attrs | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: Context | None = None,
) -> AbstractContextManager[Span]:
    """Run the block in a new current span ``name`` (child of the current span, or of ``context``).

    An exception escaping the block marks the span failed (cancellation does not).
    """
    if not tracing_enabled() or sampled_out(context):
        return _OFF
    return _Span(name, attributes, kind, context)


class _Span(AbstractContextManager[Span]):
    """The block runs in a new current span; an exception escaping it marks the span failed (cancellation does
    not). A class rather than a generator: it is on every turn's path, several times."""

    __slots__ = ("_current", "_started")

    def __init__(self, name: str, attributes: Attrs | None, kind: SpanKind, context: Context | None) -> None:
        attrs = {k: v for k, v in attributes.items() if v is not None} if attributes else None
        self._started = active_tracer().start_as_current_span(
            name, context, kind, attrs, record_exception=False, set_status_on_exception=False
        )

    def __enter__(self) -> Span:
        self._current: Span = self._started.__enter__()
        return self._current

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        if exc is not None and not isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            mark_error(self._current, type(exc).__name__, f"{type(exc).__name__}: {exc}")
            if isinstance(exc, Exception) and content_enabled() and self._current.is_recording():
                self._current.record_exception(exc)  # its message and stack are content
        return self._started.__exit__(exc_type, exc, tb)


def send_span(
    destination: str,
    headers: MutableMapping[str, str],
    attributes: Attrs | None = None,
    *,
    message_id: str | None = None,
) -> AbstractContextManager[Span]:
    """A PRODUCER span around publishing a request to ``destination`` (never a reply inbox).

    Injects the span's trace context into ``headers`` (mutated in place), so the consumer's
    :func:`process_span` becomes its child::

        with send_span(subject, hdrs):
            await nc.publish(subject, data, headers=hdrs)
    """
    if not tracing_enabled():
        return _OFF
    if sampled_out():  # no span of ours, but the receiver must learn that this trace is not sampled
        inject(headers)
        return _OFF
    return _send_span(destination, headers, attributes, message_id)


@contextmanager
def _send_span(
    destination: str, headers: MutableMapping[str, str], attributes: Attrs | None, message_id: str | None
) -> Iterator[Span]:
    attrs: dict[str, AttributeValue | None] = {
        names.MESSAGING_SYSTEM: names.MESSAGING_SYSTEM_NATS,
        names.MESSAGING_DESTINATION_NAME: destination,
        names.MESSAGING_OPERATION_TYPE: names.MESSAGING_OPERATION_SEND,
        names.MESSAGING_OPERATION_NAME: "publish",
        names.MESSAGING_MESSAGE_ID: message_id,
        **(attributes or {}),
    }
    with _Span(f"publish {destination}", attrs, SpanKind.PRODUCER, None) as current:
        inject(headers)
        yield current


def process_span(
    destination: str,
    headers: Mapping[str, str] | None,
    attributes: Attrs | None = None,
    *,
    name: str | None = None,
    consumer_group: str | None = None,
    message_id: str | None = None,
) -> AbstractContextManager[Span]:
    """A CONSUMER span handling a message from ``destination``, child of the sender's span.

    ``name`` defaults to ``process <destination>``; pass e.g. ``names.SPAN_AGENT_TURN`` to make
    the handler's own span the consumer span.
    """
    if not tracing_enabled():
        return _OFF
    parent = extract(headers)
    if sampled_out(parent):  # the sender's trace is not sampled: carry its context on, record nothing
        return _Attached(parent)
    attrs = _consumer_attributes(destination, consumer_group)
    if attributes or message_id is not None:
        attrs = {**attrs, names.MESSAGING_MESSAGE_ID: message_id, **(attributes or {})}
    return _Span(name or f"process {destination}", attrs, SpanKind.CONSUMER, parent)


@functools.lru_cache(maxsize=256)
def _consumer_attributes(destination: str, consumer_group: str | None) -> Attrs:
    """A consumer span's messaging attributes (the same for every message a subscription handles)."""
    return {
        names.MESSAGING_SYSTEM: names.MESSAGING_SYSTEM_NATS,
        names.MESSAGING_DESTINATION_NAME: destination,
        names.MESSAGING_OPERATION_TYPE: names.MESSAGING_OPERATION_PROCESS,
        names.MESSAGING_OPERATION_NAME: "process",
        names.MESSAGING_CONSUMER_GROUP_NAME: consumer_group,
    }


class _Attached(AbstractContextManager[Span]):
    """Runs the block in ``context`` (its non-recording span current), so the work's own spans stay unsampled
    children of the remote parent instead of becoming new root traces."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: Context) -> None:
        self._context = context

    def __enter__(self) -> Span:
        self._token = otel_context.attach(self._context)
        return trace.get_current_span(self._context)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        otel_context.detach(self._token)
