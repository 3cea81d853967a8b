"""Tracing over real OTLP/HTTP into the shipped receiver, W3C propagation through headers, log correlation."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes, messaging_attributes

from switchboard.logs import JsonFormatter
from switchboard.telemetry import (
    content_enabled,
    extract,
    get_tracer,
    inject,
    names,
    process_span,
    send_span,
    session_context,
    set_content,
    setup_tracing,
    shutdown_tracing,
    span,
    tracing_enabled,
)
from switchboard.telemetry.otlp_receiver import OTLPReceiver, ReceivedSpan

SUBJECT = "switchboard.v1.agent.triage.turn"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* or content setting leaks in from the environment; tracing is off afterwards."""
    for key in list(os.environ):
        if key.startswith("OTEL_") or key == "SWITCHBOARD_TRACE_CONTENT":
            monkeypatch.delenv(key)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")  # ms: export batches promptly
    yield
    shutdown_tracing(timeout_s=0.5)


@pytest.fixture
async def receiver() -> AsyncIterator[OTLPReceiver]:
    async with OTLPReceiver() as rcv:
        yield rcv


@pytest.fixture(params=["light", "sdk"])
def tracer_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each export test runs on Switchboard's light tracer (the default) and on the SDK's."""
    kind: str = request.param
    monkeypatch.setenv("SWITCHBOARD_TRACER", kind)
    return kind


@pytest.fixture
async def traced(
    receiver: OTLPReceiver, tracer_kind: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OTLPReceiver]:
    """Tracing of service ``edge`` exporting to the receiver over HTTP."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    setup_tracing("edge")
    yield receiver
    await asyncio.to_thread(shutdown_tracing)  # the receiver serves on this loop: flush off it


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


# --- export ------------------------------------------------------------------------------------


async def test_spans_are_exported_over_http_with_names_attributes_and_parents(traced: OTLPReceiver) -> None:
    assert tracing_enabled()
    tracer = get_tracer()
    with tracer.start_as_current_span(names.SPAN_EDGE_RESPONSE, attributes={names.SESSION_ID: "s-1"}) as root:
        with span(names.SPAN_CONDUCTOR_HOP, {names.AGENT: "triage", names.HOP: 0, names.HANDOFF_FROM: None}):
            with span(names.SPAN_MODEL_CALL, {names.GEN_AI_REQUEST_MODEL: "gpt-4.1-mini"}):
                pass
    spans = await traced.wait_for(lambda got: len(got) >= 3)

    edge, hop, model = (one(spans, n) for n in (names.SPAN_EDGE_RESPONSE, names.SPAN_CONDUCTOR_HOP, "model.call"))
    assert edge.trace_id == trace.format_trace_id(root.get_span_context().trace_id)
    assert {s.trace_id for s in spans} == {edge.trace_id}
    assert edge.parent_span_id is None
    assert hop.parent_span_id == edge.span_id
    assert model.parent_span_id == hop.span_id
    assert {s.service_name for s in spans} == {"edge"}
    assert edge.resource[names.SERVICE_NAMESPACE] == "switchboard"
    assert edge.attributes == {names.SESSION_ID: "s-1"}
    assert hop.attributes == {names.AGENT: "triage", names.HOP: 0}  # the None value is left out
    assert model.attributes[names.GEN_AI_REQUEST_MODEL] == "gpt-4.1-mini"
    assert edge.start_ns <= hop.start_ns <= model.start_ns <= model.end_ns <= hop.end_ns <= edge.end_ns


async def test_traces_endpoint_gzip_and_service_name_override(
    receiver: OTLPReceiver, tracer_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.traces_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-eu-1")
    setup_tracing("edge", resource_attributes={names.SERVICE_INSTANCE_ID: "replica-7"})
    with span(names.SPAN_HANDOFF, {names.HANDOFF_OUTCOME: "accepted"}):
        pass
    await asyncio.to_thread(shutdown_tracing)  # shutdown flushes what is still queued

    got = await receiver.wait_for_span(names.SPAN_HANDOFF)
    assert got.service_name == "edge-eu-1"
    assert got.resource[names.SERVICE_INSTANCE_ID] == "replica-7"
    assert got.attributes == {names.HANDOFF_OUTCOME: "accepted"}
    assert receiver.encodings == {"gzip"}
    assert not tracing_enabled()


async def test_exceptions_mark_spans_failed_without_their_message(traced: OTLPReceiver) -> None:
    with pytest.raises(ValueError), span(names.SPAN_TOOL_CALL, {names.GEN_AI_TOOL_NAME: "lookup_order"}):
        raise ValueError("my email is jane@example.com")
    failed = await traced.wait_for_span(names.SPAN_TOOL_CALL)
    assert failed.status == "error"
    assert failed.attributes[names.ERROR_TYPE] == "ValueError"
    assert "jane@example.com" not in failed.status_message
    assert failed.events == []  # no exception event: its message and stack would be content


async def test_with_content_enabled_exceptions_and_content_are_recorded(
    traced: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_TRACE_CONTENT", "1")
    with pytest.raises(ValueError), span(names.SPAN_HANDOFF) as current:
        set_content(current, names.HANDOFF_REASON, "Caller wants to return an order")
        raise ValueError("boom")
    failed = await traced.wait_for_span(names.SPAN_HANDOFF)
    assert failed.attributes[names.HANDOFF_REASON] == "Caller wants to return an order"
    assert failed.status_message == "ValueError: boom"
    assert failed.events == ["exception"]


async def test_cancellation_is_not_an_error(traced: OTLPReceiver) -> None:
    entered = asyncio.Event()

    async def hop() -> None:
        with span(names.SPAN_CONDUCTOR_HOP):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hop())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled = await traced.wait_for_span(names.SPAN_CONDUCTOR_HOP)
    assert cancelled.status == "unset"
    assert names.ERROR_TYPE not in cancelled.attributes


# --- propagation -------------------------------------------------------------------------------


async def test_trace_context_crosses_a_headers_dict_to_the_other_side(traced: OTLPReceiver) -> None:
    headers = {"Switchboard-Schema": "1.0"}
    with span(names.SPAN_CONDUCTOR_HOP):
        with send_span(SUBJECT, headers, message_id="turn-1") as sent:
            pass
    assert headers["traceparent"].split("-")[2] == trace.format_span_id(sent.get_span_context().span_id)

    async def other_side(received: dict[str, str]) -> None:
        assert not trace.get_current_span().get_span_context().is_valid  # nothing inherited
        with process_span(SUBJECT, received, name=names.SPAN_AGENT_TURN, consumer_group="agent.triage"):
            with span(names.SPAN_MODEL_CALL):
                pass

    # A fresh contextvars context: only the headers can link the two sides.
    await asyncio.create_task(other_side(dict(headers)), context=contextvars.Context())

    spans = await traced.wait_for(lambda got: len(got) >= 4)
    hop, send, turn, model = (
        one(spans, n) for n in (names.SPAN_CONDUCTOR_HOP, f"publish {SUBJECT}", names.SPAN_AGENT_TURN, "model.call")
    )
    assert {s.trace_id for s in spans} == {hop.trace_id}
    assert send.parent_span_id == hop.span_id
    assert turn.parent_span_id == send.span_id
    assert model.parent_span_id == turn.span_id
    assert (send.kind, turn.kind) == ("producer", "consumer")
    assert send.attributes == {
        names.MESSAGING_SYSTEM: "nats",
        names.MESSAGING_DESTINATION_NAME: SUBJECT,
        names.MESSAGING_OPERATION_TYPE: "send",
        names.MESSAGING_OPERATION_NAME: "publish",
        names.MESSAGING_MESSAGE_ID: "turn-1",
    }
    assert turn.attributes[names.MESSAGING_OPERATION_TYPE] == "process"
    assert turn.attributes[names.MESSAGING_CONSUMER_GROUP_NAME] == "agent.triage"


async def test_an_unsampled_trace_skips_the_sdk_and_stays_one_unsampled_trace_across_the_bus(
    receiver: OTLPReceiver, tracer_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")  # no root is sampled
    setup_tracing("edge")
    headers = {"Switchboard-Schema": "1.0"}
    with span(names.SPAN_EDGE_RESPONSE) as root:  # the sampler's decision: valid trace, not recorded
        root_ctx = root.get_span_context()
        assert root_ctx.is_valid and not root.is_recording()
        with span(names.SPAN_CONDUCTOR_HOP) as hop, send_span(SUBJECT, headers) as sent:
            assert hop is trace.INVALID_SPAN and sent is trace.INVALID_SPAN  # no SDK span was built
            assert trace.get_current_span() is root
    _, trace_id, _, flags = headers["traceparent"].split("-")
    assert trace_id == trace.format_trace_id(root_ctx.trace_id) and not int(flags, 16) & 1  # "not sampled" travels

    async def other_side(received: dict[str, str]) -> None:
        with process_span(SUBJECT, received, name=names.SPAN_AGENT_TURN):
            current = trace.get_current_span().get_span_context()
            assert current.trace_id == root_ctx.trace_id and not current.trace_flags.sampled  # not a new root
            with span(names.SPAN_MODEL_CALL) as model:
                assert model is trace.INVALID_SPAN
        assert not trace.get_current_span().get_span_context().is_valid  # the remote context is detached

    await asyncio.create_task(other_side(dict(headers)), context=contextvars.Context())
    await asyncio.to_thread(shutdown_tracing)
    assert receiver.spans == []


def test_inject_extract_round_trip_through_a_plain_dict() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("sender") as sender:
        headers = inject({"Switchboard-Session": "s-1"})
    assert set(headers) == {"Switchboard-Session", "traceparent"}

    child = tracer.start_span("receiver", context=extract(headers))
    assert isinstance(child, ReadableSpan)
    parent = child.parent
    assert parent is not None and parent.is_remote
    assert parent.trace_id == sender.get_span_context().trace_id
    assert parent.span_id == sender.get_span_context().span_id

    upper = {"Traceparent": headers["traceparent"]}  # header names are case-insensitive
    assert trace.get_current_span(extract(upper)).get_span_context().span_id == sender.get_span_context().span_id
    for empty in (None, {}, {"Switchboard-Schema": "1.0"}, {"traceparent": "garbage"}):
        assert not trace.get_current_span(extract(empty)).get_span_context().is_valid


# --- disabled ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
    ],
    ids=["no-endpoint", "exporter-none", "sdk-disabled"],
)
def test_disabled_tracing_creates_no_exporter_and_records_nothing(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    created: list[Any] = []
    monkeypatch.setattr(trace_exporter, "OTLPSpanExporter", lambda *a, **k: created.append(1))
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    setup_tracing("edge")

    assert created == []
    assert not tracing_enabled()
    with get_tracer().start_as_current_span(names.SPAN_EDGE_RESPONSE) as raw, span(names.SPAN_CONDUCTOR_HOP) as hop:
        assert not raw.is_recording() and not hop.is_recording()
        headers = {"Switchboard-Schema": "1.0"}
        with send_span(SUBJECT, headers):
            pass
    assert headers == {"Switchboard-Schema": "1.0"}  # nothing injected


def test_endpoint_set_creates_the_otlp_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    setup_tracing("edge")
    assert tracing_enabled()
    with span(names.SPAN_EDGE_RESPONSE) as current:
        assert current.is_recording()
    started = time.monotonic()
    shutdown_tracing(timeout_s=0.2)  # nothing listens on :9: the exporter would retry for seconds
    assert time.monotonic() - started < 1.5
    assert not tracing_enabled()


# --- content -----------------------------------------------------------------------------------


def test_content_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert content_enabled() is False
    recording = TracerProvider().get_tracer("test").start_span("s")
    built: list[str] = []

    def build() -> str:
        built.append("called")
        return "[...]"

    assert isinstance(recording, ReadableSpan)
    set_content(recording, names.GEN_AI_INPUT_MESSAGES, build)
    assert names.GEN_AI_INPUT_MESSAGES not in (recording.attributes or {})
    assert built == []  # never serialized

    monkeypatch.setenv("SWITCHBOARD_TRACE_CONTENT", "1")
    assert content_enabled() is True
    set_content(recording, names.GEN_AI_INPUT_MESSAGES, build)
    assert (recording.attributes or {})[names.GEN_AI_INPUT_MESSAGES] == "[...]"


# --- logs --------------------------------------------------------------------------------------


def log_lines(emit: Any) -> list[dict[str, Any]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("agent-triage"))
    logger = logging.getLogger("switchboard.test_telemetry")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_log_lines_carry_trace_span_and_session_ids() -> None:
    tracer = TracerProvider().get_tracer("test")
    ids: dict[str, str] = {}

    def emit(logger: logging.Logger) -> None:
        logger.info("outside")
        with session_context("s-42"):
            with tracer.start_as_current_span("turn") as current:
                ctx = current.get_span_context()
                ids.update(trace=trace.format_trace_id(ctx.trace_id), span=trace.format_span_id(ctx.span_id))
                logger.info("inside")
                logger.info("explicit", extra={"session_id": "other"})
            with session_context(None):
                logger.info("nested none")
            logger.info("session only")
        logger.info("after")

    outside, inside, explicit, nested, session_only, after = log_lines(emit)
    for line in (outside, after):
        assert (line["trace_id"], line["span_id"], line["session_id"]) == (None, None, None)
    assert (inside["trace_id"], inside["span_id"], inside["session_id"]) == (ids["trace"], ids["span"], "s-42")
    assert len(inside["trace_id"]) == 32 and len(inside["span_id"]) == 16
    assert explicit["session_id"] == "other"  # an extra= field wins
    assert nested["session_id"] is None
    assert (session_only["trace_id"], session_only["session_id"]) == (None, "s-42")
    assert inside["msg"] == "inside" and inside["service"] == "agent-triage"


def test_log_lines_skip_non_recording_spans() -> None:
    def emit(logger: logging.Logger) -> None:
        with span(names.SPAN_AGENT_TURN):  # tracing is off: a non-recording span
            logger.info("untraced")

    (line,) = log_lines(emit)
    assert line["trace_id"] is None and line["span_id"] is None


async def test_session_context_follows_tasks() -> None:
    async def child() -> list[dict[str, Any]]:
        return log_lines(lambda logger: logger.info("in task"))

    with session_context("s-7"):
        task = asyncio.create_task(child())
    (line,) = await task
    assert line["session_id"] == "s-7"


# --- names -------------------------------------------------------------------------------------


def test_names_match_the_semantic_conventions() -> None:
    assert names.MESSAGING_SYSTEM == messaging_attributes.MESSAGING_SYSTEM
    assert names.MESSAGING_DESTINATION_NAME == messaging_attributes.MESSAGING_DESTINATION_NAME
    assert names.MESSAGING_OPERATION_TYPE == messaging_attributes.MESSAGING_OPERATION_TYPE
    assert names.MESSAGING_OPERATION_NAME == messaging_attributes.MESSAGING_OPERATION_NAME
    assert names.MESSAGING_MESSAGE_ID == messaging_attributes.MESSAGING_MESSAGE_ID
    assert names.MESSAGING_CONSUMER_GROUP_NAME == messaging_attributes.MESSAGING_CONSUMER_GROUP_NAME
    assert names.MESSAGING_OPERATION_SEND == messaging_attributes.MessagingOperationTypeValues.SEND.value
    assert names.MESSAGING_OPERATION_PROCESS == messaging_attributes.MessagingOperationTypeValues.PROCESS.value
    for ours, theirs in [
        (names.GEN_AI_SYSTEM, "GEN_AI_SYSTEM"),
        (names.GEN_AI_PROVIDER_NAME, "GEN_AI_PROVIDER_NAME"),
        (names.GEN_AI_OPERATION_NAME, "GEN_AI_OPERATION_NAME"),
        (names.GEN_AI_REQUEST_MODEL, "GEN_AI_REQUEST_MODEL"),
        (names.GEN_AI_USAGE_INPUT_TOKENS, "GEN_AI_USAGE_INPUT_TOKENS"),
        (names.GEN_AI_USAGE_OUTPUT_TOKENS, "GEN_AI_USAGE_OUTPUT_TOKENS"),
        (names.GEN_AI_AGENT_NAME, "GEN_AI_AGENT_NAME"),
        (names.GEN_AI_TOOL_NAME, "GEN_AI_TOOL_NAME"),
        (names.GEN_AI_CONVERSATION_ID, "GEN_AI_CONVERSATION_ID"),
        (names.GEN_AI_INPUT_MESSAGES, "GEN_AI_INPUT_MESSAGES"),
        (names.GEN_AI_TOOL_CALL_ARGUMENTS, "GEN_AI_TOOL_CALL_ARGUMENTS"),
    ]:
        assert ours == getattr(gen_ai_attributes, theirs)
    ops = gen_ai_attributes.GenAiOperationNameValues
    assert names.GEN_AI_OPERATION_CHAT == ops.CHAT.value
    assert names.GEN_AI_OPERATION_EXECUTE_TOOL == ops.EXECUTE_TOOL.value
    assert names.GEN_AI_OPERATION_INVOKE_AGENT == ops.INVOKE_AGENT.value
    keys = [v for k, v in vars(names).items() if k.isupper() and not k.startswith("SPAN_") and isinstance(v, str)]
    dotted = [v for v in keys if "." in v]
    assert len(dotted) > 40
    assert {v.split(".")[0] for v in dotted} == {"messaging", "gen_ai", "error", "service", "switchboard"}


async def test_the_exporter_reads_the_proxy_from_the_environment_once_and_uses_it(
    receiver: OTLPReceiver, tracer_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export session does not re-read the environment at every export (it costs the export thread about
    a quarter of its CPU), yet a proxy set in the environment when tracing starts still carries the spans: here
    the receiver is the proxy, and the collector's host does not even resolve."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.invalid:4318")
    monkeypatch.setenv("HTTP_PROXY", receiver.endpoint)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    setup_tracing("edge")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # read once, at set-up: this dead proxy is never used
    with span(names.SPAN_HANDOFF, {names.HANDOFF_OUTCOME: "accepted"}):
        pass
    await asyncio.to_thread(shutdown_tracing)

    got = await receiver.wait_for_span(names.SPAN_HANDOFF)
    assert got.attributes == {names.HANDOFF_OUTCOME: "accepted"}
