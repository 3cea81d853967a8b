"""Edge Realtime protocol: client event parsing and server events checked against the OpenAI SDK."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.realtime import (
    ConversationItemAdded,
    RealtimeConversationItemAssistantMessage,
    RealtimeConversationItemUserMessage,
    RealtimeErrorEvent,
    RealtimeServerEvent,
    RealtimeSessionCreateRequest,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    SessionCreatedEvent,
)
from pydantic import TypeAdapter

from switchboard_edge import server_events as sent
from switchboard_edge.protocol import (
    ConversationItemCreate,
    ProtocolError,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
    assistant_item,
    error_event,
    new_event_id,
    parse_client_event,
    session_config,
    user_item,
)

LIMIT = 64 * 1024
MSG: dict[str, Any] = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
server_events: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


def parse(event: Any, limit: int = LIMIT) -> Any:
    return parse_client_event(event if isinstance(event, str | bytes) else json.dumps(event), limit)


def refuse(event: Any, limit: int = LIMIT) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(event, limit)
    return info.value


def item_create(text: Any = "hi", **extra: Any) -> dict[str, Any]:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    return {"type": "conversation.item.create", "event_id": "evt_1", "item": item, **extra}


# --- valid client events ----------------------------------------------------------------------------


def test_conversation_item_create() -> None:
    event = parse(item_create("refund please", previous_item_id="item_0"))
    assert isinstance(event, ConversationItemCreate)
    assert event.event_id == "evt_1"
    assert event.previous_item_id == "item_0"
    assert event.item.role == "user"
    assert [c.text for c in event.item.content] == ["refund please"]


def test_conversation_item_create_from_bytes() -> None:
    event = parse(json.dumps(item_create("hi")).encode())
    assert isinstance(event, ConversationItemCreate)
    assert event.item.text == "hi"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("event", "param"),
    [
        ({"type": "response.create", "response": {"temperature": "hot"}}, "response.temperature"),
        ({"type": "response.create", "surprise": 1}, "surprise"),
        ({"type": "session.update", "session": {"voice": "alloy"}}, "session.voice"),
        ({"type": "response.cancel", "response_id": "r", "why": "x"}, "why"),
    ],
)
def test_unknown_fields_are_refused_naming_the_field(event: dict[str, Any], param: str) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        parse({**event, "event_id": "evt_x"})
    assert (excinfo.value.code, excinfo.value.param, excinfo.value.event_id) == ("unknown_parameter", param, "evt_x")


def test_response_create() -> None:
    event = parse({"type": "response.create", "response": {"instructions": "be brief"}})
    assert isinstance(event, ResponseCreate)
    assert event.response is not None and event.response.instructions == "be brief"
    assert isinstance(parse({"type": "response.create"}), ResponseCreate)


def test_session_update() -> None:
    event = parse({"type": "session.update", "event_id": "evt_s", "session": {"type": "realtime", "instructions": "x"}})
    assert isinstance(event, SessionUpdate)
    assert event.session.instructions == "x"


def test_response_cancel() -> None:
    event = parse({"type": "response.cancel", "response_id": "resp_1"})
    assert isinstance(event, ResponseCancel)
    assert event.response_id == "resp_1"


# --- refused client events --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["{not json", "", b"\xff\xfe\x00"])
def test_malformed_json(raw: str | bytes) -> None:
    err = refuse(raw)
    assert err.code == "invalid_json"
    assert err.event_id is None


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "null", "42"])
def test_non_object(raw: str) -> None:
    err = refuse(raw)
    assert err.code == "invalid_event"
    assert "JSON object" in err.message


def test_missing_type() -> None:
    err = refuse({"event_id": "evt_x"})
    assert err.code == "invalid_event"
    assert err.param == "type"
    assert err.event_id == "evt_x"


def test_unknown_type() -> None:
    err = refuse({"type": "conversation.item.explode", "event_id": "evt_u"})
    assert err.code == "unknown_event"
    assert err.param == "type"
    assert err.event_id == "evt_u"
    assert "conversation.item.explode" in err.message
    assert "response.create" in err.message  # lists the supported events


def test_webrtc_output_buffer_event_is_known_but_unsupported() -> None:
    err = refuse({"type": "output_audio_buffer.clear", "event_id": "evt_a"})
    assert err.code == "unsupported_event"
    assert err.event_id == "evt_a"
    assert "output_audio_buffer.clear" in err.message


@pytest.mark.parametrize(
    ("event", "param"),
    [
        ({"type": "input_audio_buffer.append", "event_id": "evt_1"}, "audio"),
        ({"type": "input_audio_buffer.commit", "event_id": "evt_1", "audio": "AAAA"}, "audio"),
        (
            item_create() | {"item": {**MSG, "content": [{"type": "input_audio", "data": "AAAA"}]}},
            "item.content.0.data",
        ),
    ],
)
def test_audio_events_are_strict(event: dict[str, Any], param: str) -> None:
    err = refuse(event)
    assert err.param == param


def test_wrong_field_type_reports_param_path() -> None:
    err = refuse(item_create(5))
    assert err.code == "invalid_event"
    assert err.param == "item.content.0.text"
    assert err.event_id == "evt_1"
    assert "item.content.0.text" in err.message


@pytest.mark.parametrize(
    ("event", "param"),
    [
        ({"type": "conversation.item.create", "event_id": "evt_1"}, "item"),
        (item_create() | {"item": {**MSG, "role": "robot"}}, "item.role"),
        (item_create() | {"item": {**MSG, "role": "assistant"}}, "item.content.0.type"),  # output_text
        (item_create() | {"item": {"type": "function_call_output", "output": "x"}}, "item.call_id"),
        (item_create() | {"item": {**MSG, "content": []}}, "item.content"),
        (item_create() | {"item": {**MSG, "id": "bad id!"}}, "item.id"),
        ({"type": "session.update", "event_id": "evt_1", "session": "nope"}, "session"),
    ],
)
def test_invalid_fields(event: dict[str, Any], param: str) -> None:
    err = refuse(event)
    assert err.code == "invalid_event"
    assert err.param == param
    assert err.event_id == "evt_1"


def test_non_string_event_id_is_not_echoed() -> None:
    err = refuse({"type": "nope", "event_id": 7})
    assert err.code == "unknown_event"
    assert err.event_id is None


def test_oversized_event() -> None:
    event = item_create("x" * 200)
    raw = json.dumps(event)
    err = refuse(raw, limit=100)
    assert err.code == "event_too_large"
    assert str(len(raw)) in err.message and "100" in err.message
    assert isinstance(parse(raw, limit=len(raw)), ConversationItemCreate)  # the limit itself is allowed


def test_oversized_is_measured_in_bytes_not_characters() -> None:
    raw = json.dumps(item_create("é" * 40), ensure_ascii=False)
    chars, size = len(raw), len(raw.encode())
    assert size == chars + 40
    assert refuse(raw, limit=chars).code == "event_too_large"  # fits in characters, not in bytes
    assert isinstance(parse(raw, limit=size), ConversationItemCreate)


# --- server events validate against the OpenAI SDK -------------------------------------------------


def test_error_event_for_protocol_error_matches_sdk() -> None:
    err = refuse({"type": "nope", "event_id": "evt_bad"})
    event = error_event(err)
    parsed = server_events.validate_python(event)
    assert isinstance(parsed, RealtimeErrorEvent)
    assert parsed.error.type == "invalid_request_error"
    assert parsed.error.code == "unknown_event"
    assert parsed.error.param == "type"
    assert parsed.error.event_id == "evt_bad"
    assert parsed.event_id.startswith("event_")


def test_server_error_event_matches_sdk() -> None:
    parsed = server_events.validate_python(error_event(code="turn_failed", message="boom"))
    assert isinstance(parsed, RealtimeErrorEvent)
    assert parsed.error.type == "server_error"
    assert parsed.error.code == "turn_failed"
    assert parsed.error.message == "boom"
    assert parsed.error.param is None and parsed.error.event_id is None


@pytest.mark.parametrize("status", ["in_progress", "completed", "incomplete"])
def test_output_item_added_with_assistant_item_matches_sdk(status: str) -> None:
    event = sent.ResponseOutputItemAdded(type="response.output_item.added", event_id=new_event_id(),
                                         response_id="resp_1", output_index=0,
                                         item=assistant_item("item_9", "Hello", status))  # fmt: skip
    parsed = server_events.validate_python(event)
    assert isinstance(parsed, ResponseOutputItemAddedEvent)
    assert isinstance(parsed.item, RealtimeConversationItemAssistantMessage)
    assert parsed.item.id == "item_9"
    assert parsed.item.status == status
    assert parsed.item.content[0].type == "output_text"
    assert parsed.item.content[0].text == "Hello"


def test_output_item_done_matches_sdk() -> None:
    event = sent.ResponseOutputItemDone(type="response.output_item.done", event_id=new_event_id(),
                                        response_id="resp_1", output_index=1,
                                        item=assistant_item("item_9", "Bye", "completed"))  # fmt: skip
    parsed = ResponseOutputItemDoneEvent.model_validate(event)
    assert parsed.output_index == 1
    assert isinstance(parsed.item, RealtimeConversationItemAssistantMessage)


def test_conversation_item_added_with_user_item_matches_sdk() -> None:
    event = sent.ConversationItemAdded(type="conversation.item.added", event_id=new_event_id(),
                                       previous_item_id=None, item=user_item("item_1", "hi"))  # fmt: skip
    parsed = server_events.validate_python(event)
    assert isinstance(parsed, ConversationItemAdded)
    assert isinstance(parsed.item, RealtimeConversationItemUserMessage)
    assert parsed.item.content[0].text == "hi"


def test_session_created_matches_sdk() -> None:
    event = sent.SessionCreated(type="session.created", event_id=new_event_id(),
                                session=session_config("sess_1", "retail", "Be helpful."))  # fmt: skip
    parsed = server_events.validate_python(event)
    assert isinstance(parsed, SessionCreatedEvent)
    assert isinstance(parsed.session, RealtimeSessionCreateRequest)
    assert parsed.session.type == "realtime"
    assert parsed.session.model == "switchboard-retail"
    assert parsed.session.output_modalities == ["text"]
    assert parsed.session.instructions == "Be helpful."


def test_server_event_ids_are_unique() -> None:
    ids = {new_event_id() for _ in range(50)}
    assert len(ids) == 50
