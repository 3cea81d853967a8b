"""Bad input at the edge: every malformed event gets an ``error`` event and the connection lives on."""

from __future__ import annotations

from typing import Any

import pytest
import websockets

from switchboard.local.stack import Stack

from .client import RawClient, done_of, open_session, say, sdk_client, user_message

pytestmark = pytest.mark.system


@pytest.mark.parametrize(
    ("frame", "code", "param"),
    [
        ("{this is not json", "invalid_json", None),
        ('["an", "array"]', "invalid_event", None),
        ('{"no_type": 1}', "invalid_event", "type"),
        ('{"type": "conversation.item.explode"}', "unknown_event", "type"),
        ('{"type": "input_audio_buffer.append", "audio": ""}', "audio_not_enabled", None),  # a text-only session
        ('{"type": "output_audio_buffer.clear"}', "unsupported_event", None),
        ('{"type": "conversation.item.create", "item": {"type": "message", "role": "user", '
         '"content": [{"type": "input_text", "text": 42}]}}', "invalid_event", "item.content.0.text"),
        ('{"type": "conversation.item.create", "item": {"type": "message", "role": "robot", '
         '"content": [{"type": "input_text", "text": "hi"}]}}', "invalid_event", "item.role"),
        ('{"type": "conversation.item.create", "item": {"type": "message", "role": "system", '
         '"content": [{"type": "input_audio", "audio": "AAAA"}]}}', "invalid_event", "item.content.0.type"),
        ('{"type": "response.create", "event_id": "e1", "response": {"input": [{"type": "message", "role": "user", '
         '"content": [{"type": "input_audio", "audio": "AAAA"}]}]}}', "invalid_value", "response.input.0.content.0"),
        ('{"type": "session.update", "session": "not an object"}', "invalid_event", "session"),
        ('{"type": "response.create", "response": 7}', "invalid_event", "response"),
        ('{"type": "response.create", "event_id": "e1", "response": {"temperature": "hot"}}', "unknown_parameter",
         "response.temperature"),
        ('{"type": "response.create", "event_id": "e1", "response": {"max_output_tokens": "lots"}}', "invalid_event",
         "response.max_output_tokens"),
        ('{"type": "response.create", "event_id": "e1", "response": {"max_output_tokens": 0}}', "invalid_event",
         "response.max_output_tokens"),  # GA: an integer from 1 to 4096, or "inf"
        ('{"type": "response.create", "event_id": "e1", "response": {"max_output_tokens": "5"}}', "invalid_event",
         "response.max_output_tokens"),
        ('{"type": "session.update", "event_id": "e1", "session": {"max_output_tokens": -1}}', "invalid_event",
         "session.max_output_tokens"),
        ('{"type": "session.update", "event_id": "e1", "session": {"max_output_tokens": 4097}}', "invalid_event",
         "session.max_output_tokens"),
        ('{"type": "session.update", "event_id": "e1", "session": {"tools": [{"type": "function", "name": 5}]}}',
         "invalid_event", "session.tools.0.name"),
        ('{"type": "response.cancel", "event_id": "e1", "bogus": true}', "unknown_parameter", "bogus"),
        ('{"type": "session.update", "event_id": "e1", "session": {"audio": {"output": {"voice": 5}}}}',
         "invalid_value", "session.audio.output.voice"),  # not the union member's name ("voice.str")
        ('{"type": "session.update", "event_id": "e1", "session": {"output_modalities": []}}', "invalid_value",
         "session.output_modalities"),  # as response.create refuses it
        ('{"type": "session.update", "event_id": "e1", "session": {"audio": {"output": {"speed": 100}}}}',
         "invalid_value", "session.audio.output.speed"),  # GA: 0.25 to 1.5
        ('{"type": "session.update", "event_id": "e1", "session": {"audio": {"output": {"speed": -3}}}}',
         "invalid_value", "session.audio.output.speed"),
        ('{"type": "conversation.item.create", "event_id": "e1", "item": {"id": "root", "type": "message", '
         '"role": "user", "content": [{"type": "input_text", "text": "hi"}]}}', "invalid_event", "item.id"),
        ('{"type": "response.create", "event_id": "e1", "response": {"tool_choice": {"type": "function", '
         '"name": "nope"}}}', "invalid_value", "response.tool_choice.name"),  # the session declares no tools
        ('{"type": "session.update", "event_id": "e1", "session": {"tools": [{"type": "function", "name": "a"}], '
         '"tool_choice": {"type": "function", "name": "nope"}}}', "invalid_value", "session.tool_choice.name"),
        ('{"type": "session.update", "event_id": "e1", "session": {"tools": [{"type": "function", "name": "a"}, '
         '{"type": "function", "name": "a"}]}}', "invalid_value", "session.tools.1.name"),
        ('{"type": "response.create", "event_id": "e1", "response": {"tools": [{"type": "function", "name": "a"}, '
         '{"type": "function", "name": "b"}, {"type": "function", "name": "a"}]}}', "invalid_value",
         "response.tools.2.name"),
        ('{"type": "response.create", "event_id": "e1", "response": {"metadata": {"' + "k" * 65 + '": "v"}}}',
         "invalid_event", "response.metadata." + "k" * 65),  # GA: keys up to 64 characters
        ('{"type": "response.create", "event_id": "e1", "response": {"metadata": {"k": "' + "v" * 513 + '"}}}',
         "invalid_event", "response.metadata.k"),  # values up to 512
    ],
)  # fmt: skip
async def test_malformed_event_gets_error_and_connection_stays_usable(
    retail: Stack, frame: str, code: str, param: str | None
) -> None:
    async with RawClient(retail) as client:
        await client.open()
        await client.send(frame)
        error = await client.next("error")
        assert error["error"]["code"] == code, error
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"].get("param") == param
        assert error["error"].get("event_id") == ("e1" if '"event_id": "e1"' in frame else None)
        done = done_of(await client.turn("hello"))
        assert done["status"] == "completed"
        assert done["metadata"]["agent"] == "triage"


async def test_a_function_tool_choice_names_a_client_function_tool_in_effect(retail: Stack) -> None:
    """Declared in the same event or earlier in the session; a response's own ``tools`` replace the session's
    for that response, so a choice must name one of them. The string choices need no tool."""
    lookup, note = {"type": "function", "name": "lookup"}, {"type": "function", "name": "note"}
    pick = {"type": "function", "name": "lookup"}

    async def refused(event: dict[str, Any]) -> str:
        await client.send(event | {"event_id": "e1"})
        error = (await client.next("error"))["error"]
        assert (error["code"], error["event_id"]) == ("invalid_value", "e1"), error
        param: str = error["param"]
        return param

    async with RawClient(retail) as client:
        await client.open()
        await client.send({"type": "session.update", "session": {"tools": [lookup]}})
        await client.next("session.updated")
        await client.send({"type": "session.update", "session": {"tool_choice": pick}})  # declared earlier
        assert (await client.next("session.updated"))["session"]["tool_choice"] == pick
        # the session's choice would name a tool this response's own tools leave out
        assert await refused({"type": "response.create", "response": {"tools": [note]}}) == "response.tools"
        only_note = {"tools": [note], "tool_choice": pick}
        assert await refused({"type": "response.create", "response": only_note}) == "response.tool_choice.name"
        # nor may the session drop the tool its choice names
        assert await refused({"type": "session.update", "session": {"tools": [note]}}) == "session.tools"
        for choice in ("auto", "none", "required", {"type": "function", "name": "note"}):
            await client.send({"type": "response.create", "response": {"tools": [note], "tool_choice": choice}})
            assert (await client.next("response.done"))["response"]["status"] == "completed"
        await client.send({"type": "session.update", "session": {"tools": [note], "tool_choice": "auto"}})
        assert (await client.next("session.updated"))["session"]["tool_choice"] == "auto"
        assert done_of(await client.turn("hello"))["status"] == "completed"


async def test_oversized_frame_is_refused_with_an_error(retail: Stack) -> None:
    async with RawClient(retail) as client:
        await client.open()
        huge = "x" * (300 * 1024)  # over the 256 KiB default limit
        await client.send({"type": "conversation.item.create", "event_id": "evt_big", "item": user_message(huge)})
        error = await client.next("error")
        assert error["error"]["code"] == "event_too_large"
        assert "exceeds the limit" in error["error"]["message"]
        assert done_of(await client.turn("hello"))["status"] == "completed"


async def test_second_response_while_one_runs_is_refused(retail: Stack) -> None:
    async with RawClient(retail) as client:
        await client.open()
        await client.send({"type": "response.create"})
        await client.send({"type": "response.create", "event_id": "evt_2"})
        kinds = []
        while "response.done" not in kinds:
            event = await client.recv()
            kinds.append(event["type"])
            if event["type"] == "error":
                assert event["error"]["code"] == "conversation_already_has_active_response"
                assert event["error"]["event_id"] == "evt_2"
        # either the refusal arrived, or the first response finished before the second was read
        assert "error" in kinds or kinds.count("response.created") == 1


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic abc", "Bearer "])
async def test_bad_credentials_are_rejected_before_the_upgrade(retail: Stack, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth is not None else {}
    with pytest.raises(websockets.InvalidStatus) as excinfo:
        async with RawClient(retail, auth="none", headers=headers):
            pass
    assert excinfo.value.response.status_code == 401
    assert b"invalid_api_key" in excinfo.value.response.body


async def test_invalid_session_id_is_rejected(retail: Stack) -> None:
    with pytest.raises(websockets.InvalidStatus) as excinfo:
        async with RawClient(retail, session_id="../etc"):
            pass
    assert excinfo.value.response.status_code == 400


async def test_sdk_reports_a_wrong_key(retail: Stack) -> None:
    with pytest.raises(Exception, match="401"):
        async with sdk_client(retail, key="nope").realtime.connect(model="switchboard") as conn:
            await open_session(conn)
            await say(conn, "hi")
