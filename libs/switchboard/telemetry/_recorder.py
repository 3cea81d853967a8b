"""Spans that cost a few microseconds: an OpenTelemetry ``Tracer`` that records plain objects, exported in
batches over OTLP/HTTP by a background thread.

The SDK's span checks and copies every attribute under a lock, builds a read-only copy when it ends and
builds a protobuf message per field at export: ~20 us of the caller's thread and ~30 us of the export
thread's per span here (the figures are in docs/performance.md). This tracer keeps what a span is made
of (ids, name, kind, times, attributes, events, links, status) in one slotted object, which is written
as OTLP protobuf directly when it ends (:mod:`._otlp_wire`); a background thread posts the bytes. What it
takes from the SDK: the sampler (``OTEL_TRACES_SAMPLER``), the resource (``OTEL_RESOURCE_ATTRIBUTES``)
and the OTLP/HTTP exporter's transport (endpoint, headers, timeout, compression, certificates, retries).

Left out, on purpose: span limits (``OTEL_SPAN_*_LIMIT``; Switchboard's spans carry a bounded set of
attributes) and attribute type checks (the call sites pass strings, numbers and booleans; anything else
is exported as its string).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, StaticSampler, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes, AttributeValue

from ._otlp_wire import Encoder

if TYPE_CHECKING:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

log = logging.getLogger(__name__)

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_EMPTY_STATE = TraceState()
_KIND_VALUES = {kind: kind.value for kind in SpanKind}
_LOW_64 = (1 << 64) - 1


class RecordedSpan(trace.Span):
    """A sampled span: plain fields, queued for export by :meth:`end`."""

    __slots__ = (
        "_batcher", "_context", "attributes", "end_ns", "events", "kind", "links", "name", "parent_id",
        "parent_remote", "span_id", "start_ns", "status_code", "status_message", "trace_flags", "trace_id",
        "trace_state",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        span_context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[Link] | None,
        start_ns: int,
        batcher: Batcher,
    ) -> None:
        self.name = name
        self._context = span_context
        self.trace_id = span_context.trace_id
        self.span_id = span_context.span_id
        self.trace_flags = span_context.trace_flags
        state = span_context.trace_state
        self.trace_state = state.to_header() if state is not _EMPTY_STATE and state else ""
        if parent is None:
            self.parent_id, self.parent_remote = 0, False
        else:
            self.parent_id, self.parent_remote = parent.span_id, parent.is_remote
        self.kind = _KIND_VALUES[kind]
        self.attributes = attributes
        self.events: list[tuple[str, int, Mapping[str, Any]]] = []
        self.links = [_link(link) for link in links] if links else []
        self.start_ns = start_ns
        self.end_ns = 0
        self.status_code = 0  # UNSET
        self.status_message = ""
        self._batcher = batcher

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self.end_ns

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if not self.end_ns:
            self.attributes.update(attributes)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if not self.end_ns:
            self.attributes[key] = value

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        if not self.end_ns:
            self.events.append((name, timestamp or time.time_ns(), dict(attributes or {})))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if not self.end_ns and context.is_valid:
            self.links.append(_link(Link(context, attributes)))

    def update_name(self, name: str) -> None:
        if not self.end_ns:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_ns or self.status_code == StatusCode.OK.value:  # OK is final, as in the SDK
            return
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        self.status_code = code.value
        self.status_message = (description or "") if code is StatusCode.ERROR else ""

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        stack = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
        event = {
            "exception.type": type(exception).__name__, "exception.message": str(exception),
            "exception.stacktrace": stack, "exception.escaped": str(escaped), **(attributes or {}),
        }  # fmt: skip
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_ns:
            return
        self.end_ns = end_time or time.time_ns()
        self._batcher.add(self)


def _link(link: Link) -> tuple[int, int, int, str, Mapping[str, Any]]:
    ctx = link.context
    state = ctx.trace_state.to_header() if ctx.trace_state else ""
    return ctx.trace_id, ctx.span_id, int(ctx.trace_flags), state, dict(link.attributes or {})


class _CurrentSpan:
    """``start_as_current_span``'s context manager: the span is current inside the block and ends after it."""

    __slots__ = ("_end_on_exit", "_record_exception", "_set_status", "_span", "_token")

    def __init__(self, span: trace.Span, record_exception: bool, set_status: bool, end_on_exit: bool) -> None:
        self._span = span
        self._record_exception = record_exception
        self._set_status = set_status
        self._end_on_exit = end_on_exit

    def __enter__(self) -> trace.Span:
        self._token = context_api.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        context_api.detach(self._token)
        current = self._span
        if isinstance(exc, Exception) and current.is_recording():  # as the API's ``use_span``
            if self._record_exception:
                current.record_exception(exc)
            if self._set_status:
                current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        if self._end_on_exit:
            current.end()


class Tracer(trace.Tracer):
    """Starts :class:`RecordedSpan` for sampled spans and non-recording ones for the rest."""

    def __init__(self, sampler: Sampler, batcher: Batcher) -> None:
        self._sampler = sampler
        self._batcher = batcher
        self._root_bound = _root_bound(sampler)

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        current = trace.get_current_span(context).get_span_context()
        parent = current if current.is_valid else None
        trace_id = parent.trace_id if parent is not None else _new_trace_id()
        attrs = dict(attributes or {})
        trace_state = parent.trace_state if parent is not None else _EMPTY_STATE
        if self._root_bound is not None:
            sampled = bool(parent.trace_flags & 1) if parent is not None else trace_id & _LOW_64 < self._root_bound
        else:
            result = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            attrs.update(result.attributes or {})
            trace_state = result.trace_state or trace_state
        span_context = SpanContext(
            trace_id, random.getrandbits(64) or 1, False, _SAMPLED if sampled else _NOT_SAMPLED, trace_state
        )
        if not sampled:
            return NonRecordingSpan(span_context)
        return RecordedSpan(name, span_context, parent, kind, attrs, links, start_time or time.time_ns(), self._batcher)

    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Any:
        started = self.start_span(name, context, kind, attributes, links, start_time)
        return _CurrentSpan(started, record_exception, set_status_on_exception, end_on_exit)


def _root_bound(sampler: Sampler) -> int | None:
    """For the ``parentbased_*`` samplers that follow the parent and sample a root always or by trace-id ratio
    (the default, and the one to use under load), the bound a root's trace id is compared with, so the decision
    is taken here without the sampler's result objects; ``None`` for any other sampler (it is asked)."""
    if not isinstance(sampler, ParentBased):
        return None
    follows_parent = (
        _always(sampler._remote_parent_sampled, True) and _always(sampler._local_parent_sampled, True)  # noqa: SLF001
        and _always(sampler._remote_parent_not_sampled, False)  # noqa: SLF001
        and _always(sampler._local_parent_not_sampled, False)  # noqa: SLF001
    )  # fmt: skip
    root = sampler._root  # noqa: SLF001
    if not follows_parent:
        return None
    if _always(root, True):
        return 1 << 64
    if _always(root, False):
        return 0
    if isinstance(root, TraceIdRatioBased):
        return root.bound  # the SDK's test: the trace id's low 64 bits below this bound
    return None


def _always(sampler: Sampler, sampled: bool) -> bool:
    return isinstance(sampler, StaticSampler) and (sampler._decision is Decision.RECORD_AND_SAMPLE) is sampled  # noqa: SLF001


def _new_trace_id() -> int:
    return random.getrandbits(128) or 1


class Batcher:
    """Encodes each span as it ends, on the thread that ends it (a few microseconds), and posts the encoded
    spans from a daemon thread: every ``schedule_delay_s``, or at once when a batch is full. A full queue
    drops new spans (counted, and logged at the next export).

    Encoding here rather than on the export thread keeps that thread's Python work short: a thread that holds
    the GIL for milliseconds makes the event loop's thread wait for it after each of its system calls (up to
    the 5 ms switch interval each time), which showed as +74 ms on the p99 of a paced turn when a whole batch
    was encoded at once on the export thread.
    """

    def __init__(
        self,
        exporter: OTLPSpanExporter,
        resource: Resource,
        scope: tuple[str, str],
        *,
        schedule_delay_s: float,
        max_queue: int,
        max_batch: int,
    ) -> None:
        self._exporter = exporter
        self._encoder = Encoder(resource.attributes, *scope)
        self._queue: deque[bytes] = deque()
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._delay_s = schedule_delay_s
        self._wake = threading.Event()
        self._stopping = False
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="switchboard-span-export", daemon=True)
        self._thread.start()

    def add(self, span: RecordedSpan) -> None:
        queue = self._queue
        if len(queue) >= self._max_queue:
            self._dropped += 1
            return
        queue.append(self._encoder.entry(span))
        if len(queue) == self._max_batch:
            self._wake.set()

    def shutdown(self) -> None:
        """Export what is queued, then stop (blocks until the thread ends)."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._exporter.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            self._export_queued()
        self._export_queued()

    def _export_queued(self) -> None:
        queue = self._queue
        while queue:
            batch = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
            if self._dropped:
                dropped, self._dropped = self._dropped, 0
                log.warning("span queue full: spans dropped", extra={"dropped": dropped})
            try:
                self._exporter._client.export(self._encoder.request(batch))  # noqa: SLF001 (its HTTP client)
            except Exception:  # an export must never stop the thread
                log.exception("span export failed", extra={"spans": len(batch)})
