"""Switchboard's light tracer: its OTLP bytes decode with the official classes to what was recorded, it is the
default, it honours the sampler and the batch settings, and it records exceptions as the API's tracer does."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as WireSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as WireStatus
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from switchboard.telemetry import get_tracer, names, setup_tracing, shutdown_tracing, span
from switchboard.telemetry._otlp_wire import Encoder
from switchboard.telemetry._recorder import RecordedSpan, Tracer
from switchboard.telemetry.otlp_receiver import OTLPReceiver

REMOTE_PARENT = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("OTEL_") or key.startswith("SWITCHBOARD_TRACE"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    yield
    shutdown_tracing(timeout_s=0.5)


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OTLPReceiver]:
    async with OTLPReceiver() as rcv:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.endpoint)
        yield rcv


class Kept:
    """A batcher that keeps ended spans."""

    def __init__(self) -> None:
        self.spans: list[RecordedSpan] = []

    def add(self, ended: RecordedSpan) -> None:
        self.spans.append(ended)


def value(v: AnyValue) -> object:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind)


def test_the_wire_bytes_decode_to_every_recorded_field() -> None:
    kept = Kept()
    tracer = Tracer(ParentBased(ALWAYS_ON), kept)  # type: ignore[arg-type]  # the batcher's one method
    state = TraceState([("vendor", "abc")])
    parent = SpanContext(REMOTE_PARENT.trace_id, REMOTE_PARENT.span_id, True, TraceFlags(1), state)
    linked = SpanContext(0x1, 0x2, False, TraceFlags(1), state)
    attrs = {"s": "tëxt", "yes": True, "no": False, "n": -5, "big": 2**40, "x": 0.25, "tags": ["a", "b"]}
    with tracer.start_as_current_span(
        "agent.turn", trace.set_span_in_context(trace.NonRecordingSpan(parent)), SpanKind.CONSUMER, attrs,
        links=[Link(linked, {"why": "retry"})],
    ) as current:  # fmt: skip
        current.add_event("transfer", {"to": "returns", "hop": 1})
        current.set_attribute("late", 7)
        current.set_status(Status(StatusCode.ERROR, "timeout"))
    encoder = Encoder(Resource.create({"service.name": "edge"}).attributes, "switchboard", "9.9")
    request = ExportTraceServiceRequest.FromString(encoder.request(encoder.entry(s) for s in kept.spans))

    (resource_spans,) = request.resource_spans
    resource = {kv.key: value(kv.value) for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "edge" and resource["telemetry.sdk.language"] == "python"
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("switchboard", "9.9")
    (wire,) = scope_spans.spans
    recorded = kept.spans[0]
    assert wire.trace_id == parent.trace_id.to_bytes(16, "big")
    assert wire.span_id == recorded.span_id.to_bytes(8, "big") and recorded.span_id != parent.span_id
    assert wire.parent_span_id == parent.span_id.to_bytes(8, "big")
    assert wire.trace_state == "vendor=abc"
    assert wire.name == "agent.turn" and wire.kind == WireSpan.SPAN_KIND_CONSUMER
    assert 0 < wire.start_time_unix_nano <= wire.end_time_unix_nano
    assert (wire.start_time_unix_nano, wire.end_time_unix_nano) == (recorded.start_ns, recorded.end_ns)
    assert {kv.key: value(kv.value) for kv in wire.attributes} == {**attrs, "late": 7}
    (event,) = wire.events
    assert event.name == "transfer" and {kv.key: value(kv.value) for kv in event.attributes} == {
        "to": "returns",
        "hop": 1,
    }
    assert event.time_unix_nano >= wire.start_time_unix_nano
    (link,) = wire.links
    assert (link.trace_id, link.span_id) == ((1).to_bytes(16, "big"), (2).to_bytes(8, "big"))
    assert link.trace_state == "vendor=abc" and {kv.key: value(kv.value) for kv in link.attributes} == {"why": "retry"}
    assert (wire.status.code, wire.status.message) == (WireStatus.STATUS_CODE_ERROR, "timeout")
    assert wire.flags == 0x301  # sampled, parent is remote (as the SDK's exporter writes it)


def test_a_span_ended_twice_is_exported_once_and_frozen_after_its_end() -> None:
    kept = Kept()
    started = Tracer(ParentBased(ALWAYS_ON), kept).start_span("s", attributes={"a": 1})  # type: ignore[arg-type]
    started.end()
    started.end()
    started.set_attribute("a", 2)
    started.set_status(StatusCode.ERROR)
    assert len(kept.spans) == 1
    assert kept.spans[0].attributes == {"a": 1} and kept.spans[0].status_code == StatusCode.UNSET.value
    assert not started.is_recording()


@pytest.mark.parametrize(
    ("tracer", "exporter", "recorded_type"),
    [(None, None, RecordedSpan), ("sdk", None, ReadableSpan), (None, "otlp,console", ReadableSpan)],
    ids=["default-light", "sdk-asked-for", "console-needs-the-sdk"],
)
def test_the_light_tracer_is_the_default_for_otlp(
    tracer: str | None, exporter: str | None, recorded_type: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    if tracer:
        monkeypatch.setenv("SWITCHBOARD_TRACER", tracer)
    if exporter:
        monkeypatch.setenv("OTEL_TRACES_EXPORTER", exporter)
    setup_tracing("edge")
    with span(names.SPAN_HANDOFF) as current:
        assert isinstance(current, recorded_type)
        assert current.is_recording()
    shutdown_tracing(timeout_s=0.2)


async def test_a_full_batch_is_exported_before_the_schedule_delay(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    setup_tracing("edge")
    for hop in range(4):
        with span(names.SPAN_CONDUCTOR_HOP, {names.HOP: hop}):
            pass
    spans = await receiver.wait_for(lambda got: len(got) == 4)
    assert sorted(s.attributes[names.HOP] for s in spans) == [0, 1, 2, 3]


async def test_a_full_queue_drops_new_spans_and_says_so(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "3")
    setup_tracing("edge")
    for hop in range(5):
        with span(names.SPAN_CONDUCTOR_HOP, {names.HOP: hop}):
            pass
    with caplog.at_level(logging.WARNING, "switchboard.telemetry"):
        await asyncio.to_thread(shutdown_tracing)  # exports what was queued
    spans = await receiver.wait_for(lambda got: len(got) == 3)
    assert sorted(s.attributes[names.HOP] for s in spans) == [0, 1, 2]
    assert [r.__dict__.get("dropped") for r in caplog.records if "dropped" in r.getMessage()] == [2]


@pytest.mark.parametrize(
    ("sampler", "exported"),
    [("always_on", True), ("traceidratio", True), ("always_off", False), ("parentbased_always_off", False)],
)
async def test_the_configured_sampler_decides(
    sampler: str, exported: bool, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "1")
    setup_tracing("edge")
    with get_tracer().start_as_current_span(names.SPAN_EDGE_RESPONSE) as root:
        assert root.is_recording() is exported
        assert root.get_span_context().trace_flags.sampled is exported
    await asyncio.to_thread(shutdown_tracing)
    assert [s.name for s in receiver.spans] == ([names.SPAN_EDGE_RESPONSE] if exported else [])


async def test_an_escaping_exception_is_recorded_as_the_api_tracer_does(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_tracing("edge")
    with pytest.raises(ValueError), get_tracer().start_as_current_span(names.SPAN_TOOL_CALL):
        raise ValueError("boom")
    with pytest.raises(asyncio.CancelledError), get_tracer().start_as_current_span(names.SPAN_CONDUCTOR_HOP):
        raise asyncio.CancelledError
    await asyncio.to_thread(shutdown_tracing)
    failed = await receiver.wait_for_span(names.SPAN_TOOL_CALL)
    assert (failed.status, failed.status_message, failed.events) == ("error", "ValueError: boom", ["exception"])
    cancelled = await receiver.wait_for_span(names.SPAN_CONDUCTOR_HOP)
    assert (cancelled.status, cancelled.events) == ("unset", [])


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "vendor=abc"},
        {"traceparent": "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"},
        {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"},
        {"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01"},
        {"Traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        {"traceparent": "garbage"},
    ],
)
def test_extract_reads_what_the_w3c_propagator_reads(headers: dict[str, str]) -> None:
    """The quick parse of a plain version-00 ``traceparent`` gives the propagator's answer, and anything else is
    left to the propagator."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from switchboard.telemetry import extract
    from switchboard.telemetry.tracing import _GETTER

    ours = trace.get_current_span(extract(headers)).get_span_context()
    theirs = trace.get_current_span(TraceContextTextMapPropagator().extract(headers, getter=_GETTER)).get_span_context()
    assert (ours.is_valid, ours.trace_id, ours.span_id, ours.is_remote) == (
        theirs.is_valid, theirs.trace_id, theirs.span_id, theirs.is_remote,
    )  # fmt: skip
    assert ours.trace_flags.sampled is theirs.trace_flags.sampled
    assert ours.trace_state.to_header() == theirs.trace_state.to_header()


@pytest.mark.parametrize(
    "sampler",
    [
        ParentBased(TraceIdRatioBased(0.25)),
        ParentBased(ALWAYS_ON),
        ParentBased(ALWAYS_OFF),
        ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON),  # asked, not decided here
        TraceIdRatioBased(0.5),
    ],
    ids=["parentbased-ratio", "parentbased-on", "parentbased-off", "parentbased-custom", "ratio"],
)
def test_sampling_decisions_match_the_sdk_sampler(sampler: Sampler) -> None:
    """Roots and children of sampled and unsampled remote parents: the light tracer samples exactly what the
    configured SDK sampler would (it decides the common ``parentbased_*`` cases itself)."""
    tracer = Tracer(sampler, Kept())  # type: ignore[arg-type]  # the batcher's one method
    rng = random.Random(7)
    for _ in range(400):
        flags = rng.choice((0, 1))
        parent = SpanContext(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, True, TraceFlags(flags))
        for context in (None, trace.set_span_in_context(trace.NonRecordingSpan(parent))):
            started = tracer.start_span("s", context)
            ctx = started.get_span_context()
            expected = sampler.should_sample(context, ctx.trace_id, "s").decision is Decision.RECORD_AND_SAMPLE
            assert started.is_recording() is expected
            assert ctx.trace_flags.sampled is expected
