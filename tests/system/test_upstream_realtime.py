"""Upstream speech-to-speech mode through the real stack: the front agent runs on a scripted upstream
Realtime API (``switchboard.testing.ScriptedRealtimeServer``, the GA protocol over a real WebSocket), billing
and the generalist are offline agent processes on a real nats-server, the caller is the ``openai`` SDK.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agents.realtime import RealtimeAgent

from switchboard.local.ports import free_port
from switchboard.local.stack import Stack
from switchboard.telemetry.otlp_receiver import OTLPReceiver, ReceivedSpan
from switchboard.testing import ScriptedRealtimeServer, ScriptedResponse
from switchboard.testing.scripted_realtime import tone
from switchboard.testing.speech import espeak
from switchboard.voice import encode_base64

from .client import RawClient, audit_decisions, done_of, open_session, sdk_client, text_of
from .stacks import make_stack
from .test_official_clients import runner_session
from .test_realtime_contract import violations
from .test_voice import refuses_a_cut_past_the_audio, until

pytestmark = [pytest.mark.system, pytest.mark.voice]

KEY = "sk-upstream-test"
VOICE_SESSION = {
    "type": "realtime",
    "output_modalities": ["audio"],
    "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}},
}


def caller_audio(speech_ms: int = 800, silence_ms: int = 600) -> Iterator[str]:
    """A caller "speaking" (a tone the scripted VAD hears) then silent, as 100 ms appends."""
    for _ in range(speech_ms // 100):
        yield base64.b64encode(tone(100)).decode()
    for _ in range(silence_ms // 100):
        yield base64.b64encode(bytes(4800)).decode()


@asynccontextmanager
async def upstream_stack(
    tmp: Path, *, url: str | None = None, key: str = KEY, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[ScriptedRealtimeServer, Stack]]:
    async with ScriptedRealtimeServer(api_key=KEY) as server:
        env = {"OPENAI_API_KEY": key, "SWITCHBOARD_REALTIME_URL": url or server.url} | (env or {})
        with make_stack(tmp, scenario="upstream", env=env) as stack:
            yield server, stack


async def test_the_upstream_front_agent_answers_aloud_then_hands_off_to_billing(tmp_path: Path) -> None:
    async with OTLPReceiver() as receiver:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        async with upstream_stack(tmp_path, env=otel) as (upstream, stack):
            assert {p.name for p in stack.procs if not p.is_edge} >= {"agent:billing", "agent:generalist"}
            assert not [p.name for p in stack.procs if "front" in p.name]  # no agent process serves it
            upstream.script_transcripts("What is my balance? My card is 4111 1111 1111 1111.", "And last month?")
            said = "Sure, let me get billing for you."
            upstream.script(ScriptedResponse(text=said, function_call=("transfer_to_billing", {"reason": "balance"})))
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                session_id = (await open_session(conn))["session_id"]
                await conn.session.update(session=VOICE_SESSION)  # type: ignore[arg-type]
                seen: list[Any] = []
                await until(conn, "session.updated", seen)
                for payload in caller_audio():
                    await conn.input_audio_buffer.append(audio=payload)
                first = await until(conn, "response.done", seen)
                mark = len(seen)
                for payload in caller_audio():  # the conversation goes on, with billing now
                    await conn.input_audio_buffer.append(audio=payload)
                second = await until(conn, "response.done", seen)
                item_id = first.response.output[0].id
                committed = next(e for e in seen if e.type == "input_audio_buffer.committed")
                await conn.conversation.item.retrieve(item_id=committed.item_id)
                caller_item = await until(conn, "conversation.item.retrieved", seen)

            def traced(spans: list[ReceivedSpan]) -> bool:
                return any(s.name == "upstream.response" for s in spans) and any(s.name == "handoff" for s in spans)

            await receiver.wait_for(traced, timeout_s=20)
            decisions = await audit_decisions(stack, session_id, 1)

    kinds = [e.type for e in seen[:mark]]
    for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                 "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed"):  # fmt: skip
        assert kind in kinds, kind
    assert kinds.index("conversation.item.input_audio_transcription.completed") < kinds.index("response.created")
    # the caller's words went through the input guardrails before the agents saw them
    assert caller_item.item.content[0].text == "What is my balance? My card is [CARD]."
    assert first.response.status == "completed" and first.response.metadata["agent"] == "billing"
    upstream_item, billing_item = first.response.output
    assert upstream_item.id == item_id and upstream_item.id.startswith("item_scripted")
    assert upstream_item.content[0].transcript == said
    assert "forty two dollars" in billing_item.content[0].transcript
    relayed = b"".join(base64.b64decode(e.delta) for e in seen[:mark]
                       if e.type == "response.output_audio.delta" and e.item_id == item_id)  # fmt: skip
    assert relayed == tone(100) * (len(said.split()) * (250 // 100))  # the upstream's audio, byte for byte
    spoken = [e for e in seen[:mark] if e.type == "response.output_audio.delta" and e.item_id == billing_item.id]
    assert len(spoken) > 5  # billing's text, spoken by the edge's TTS
    assert second.response.status == "completed" and second.response.metadata["agent"] == "billing"
    assert len(upstream.received("response.create")) == 1  # billing answered the second turn over the bus

    configured = upstream.received("session.update")[0]["session"]
    assert [t["name"] for t in configured["tools"]] == ["transfer_to_billing", "consult_supervisor"]
    parameters = configured["tools"][0]["parameters"]  # the handoff contract, as JSON Schema
    assert set(parameters["properties"]) == {"reason", "invoice_id"} and parameters["required"] == ["reason"]
    turn = configured["audio"]["input"]["turn_detection"]
    assert (turn["create_response"], turn["interrupt_response"], turn["silence_duration_ms"]) == (False, False, 300)
    assert len(upstream.received("input_audio_buffer.append")) == 2 * 14
    assert decisions == [("front", "billing", "billing", "accepted")]

    response = next(s for s in receiver.spans if s.name == "upstream.response")
    index = {s.span_id: s for s in receiver.spans}
    hop = index[response.parent_span_id]  # type: ignore[index]
    assert hop.name == "conductor.hop" and hop.attributes["switchboard.agent"] == "front"
    assert index[hop.parent_span_id].name == "edge.response"  # type: ignore[index]
    assert response.service_name == "edge" and response.attributes["gen_ai.request.model"] == "gpt-realtime"
    handoff = next(s for s in receiver.spans if s.name == "handoff")
    assert handoff.trace_id == response.trace_id
    assert (handoff.attributes["switchboard.handoff.from"], handoff.attributes["switchboard.handoff.to"]) == (
        "front", "billing",
    )  # fmt: skip


async def test_barge_in_cancels_the_upstream_response_and_truncates_it_on_both_sides(tmp_path: Path) -> None:
    async with upstream_stack(tmp_path) as (upstream, stack):
        upstream.script_transcripts("Tell me everything.", "Stop.")
        long = " ".join(["word"] * 40)  # 10 s of speech, made at twice real time (the edge paces it)
        upstream.script(ScriptedResponse(text=long, pace_s=0.05), ScriptedResponse(text="Okay."))
        async with RawClient(stack, events=False) as client:
            await client.open()
            await client.send({"type": "session.update", "session": VOICE_SESSION})
            await client.next("session.updated")
            for payload in caller_audio():
                await client.send({"type": "input_audio_buffer.append", "audio": payload})
            created = await client.next("response.created")
            received_ms = 0
            while received_ms < 2500:  # audio goes out 1 s ahead of playback: ~1.5 s has been heard
                delta = await client.next("response.output_audio.delta")
                received_ms += len(base64.b64decode(delta["delta"])) // 48
            for payload in caller_audio():
                await client.send({"type": "input_audio_buffer.append", "audio": payload})
            done = await client.next("response.done")
            truncated = await client.next("conversation.item.truncated")
            answer = await client.next("response.done")
        cancels = await upstream.wait_for("response.cancel")
        cut = (await upstream.wait_for("conversation.item.truncate"))[0]
    assert done["response"]["id"] == created["response"]["id"]
    assert (done["response"]["status"], done["response"]["status_details"]["reason"]) == ("cancelled", "turn_detected")
    assert truncated["item_id"] == done["response"]["output"][0]["id"]
    assert 1000 <= truncated["audio_end_ms"] < received_ms  # what was played, not what was sent
    assert (cut["item_id"], cut["audio_end_ms"]) == (truncated["item_id"], truncated["audio_end_ms"])
    assert len(cancels) == 1
    assert answer["response"]["status"] == "completed"
    assert violations(client.events) == []


async def test_a_truncate_past_the_end_of_relayed_audio_is_refused_and_never_reaches_the_upstream(
    tmp_path: Path,
) -> None:
    async with upstream_stack(tmp_path) as (upstream, stack):
        upstream.script_transcripts("Hello?")
        upstream.script(ScriptedResponse(text="Hello there, how can I help?"))
        async with RawClient(stack, events=False) as client:
            await client.open()
            await client.send({"type": "session.update", "session": VOICE_SESSION})
            await client.next("session.updated")
            start = len(client.events)
            for payload in caller_audio():
                await client.send({"type": "input_audio_buffer.append", "audio": payload})
            await client.next("response.done")
            at_end = await refuses_a_cut_past_the_audio(client, client.events[start:])
        cuts = await upstream.wait_for("conversation.item.truncate")  # the refused one would have come first
    assert [(c["item_id"], c["audio_end_ms"]) for c in cuts] == [(at_end["item_id"], at_end["audio_end_ms"])]
    assert violations(client.events) == []


async def test_an_unreachable_upstream_is_reported_and_the_fallback_agent_answers(tmp_path: Path) -> None:
    closed = f"ws://127.0.0.1:{free_port()}/v1"  # nothing listens there
    async with upstream_stack(tmp_path, url=closed) as (_, stack), RawClient(stack) as client:
        await client.open()
        await client.send({"type": "session.update", "session": VOICE_SESSION})
        error = (await client.next("error"))["error"]
        events = await client.turn("hello")
        session_id = next(e for e in client.events if e["type"] == "switchboard.session")["session_id"]
        decisions = await audit_decisions(stack, session_id, 1)
        caller = espeak("Hello, can you help me?", tmp_path / "hello.wav")  # the offline pipeline hears it
        audio = np.concatenate([caller.samples, np.zeros(24000, dtype=np.int16)])
        for start in range(0, audio.size, 2400):
            chunk = encode_base64(audio[start : start + 2400].tobytes())
            await client.send({"type": "input_audio_buffer.append", "audio": chunk})
        heard = await client.next("conversation.item.input_audio_transcription.completed")
        spoken = (await client.next("response.done"))["response"]
    assert "help" in heard["transcript"].lower()
    assert spoken["status"] == "completed" and spoken["metadata"]["agent"] == "generalist"
    assert error["code"] == "upstream_unavailable"
    assert closed in error["message"]
    assert "generalist agent" in error["message"] and "offline speech pipeline" in error["message"]
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["status"] == "completed" and done["response"]["metadata"]["agent"] == "generalist"
    assert decisions == [("front", "front", "generalist", "unavailable")]


async def test_a_refused_key_is_reported_as_an_auth_failure(tmp_path: Path) -> None:
    async with upstream_stack(tmp_path, key="sk-wrong") as (upstream, stack), RawClient(stack) as client:
        await client.open()
        await client.send({"type": "session.update", "session": VOICE_SESSION})
        error = (await client.next("error"))["error"]
        events = await client.turn("hello")
    assert error["code"] == "upstream_auth_failed" and "refused the API key (HTTP 401)" in error["message"]
    assert upstream.refused >= 1 and upstream.connections == []
    done = next(e for e in events if e["type"] == "response.done")
    assert done["response"]["metadata"]["agent"] == "generalist"


async def test_a_text_session_talks_to_the_upstream_agent_in_text_and_syncs_only_what_it_lacks(
    tmp_path: Path,
) -> None:
    async with upstream_stack(tmp_path) as (upstream, stack), RawClient(stack) as client:
        upstream.script(ScriptedResponse(text="Hello from upstream."), ScriptedResponse(text="Still here."))
        await client.open()
        first = await client.turn("hello there")
        second = await client.turn("are you there?")
    assert text_of(first) == "Hello from upstream." and text_of(second) == "Still here."
    assert done_of(second)["metadata"]["agent"] == "front"
    configured = upstream.received("session.update")[0]["session"]
    assert configured["output_modalities"] == ["text"] and "audio" not in configured
    created = [e["item"] for e in upstream.received("conversation.item.create")]
    # each caller message once; the upstream's own answer is not sent back to it
    said = [(i["role"], i["content"][0]["text"]) for i in created]
    assert said == [("user", "hello there"), ("user", "are you there?")]


async def test_an_upstream_that_drops_mid_session_is_reported_and_the_session_goes_on(tmp_path: Path) -> None:
    async with upstream_stack(tmp_path) as (upstream, stack), RawClient(stack) as client:
        upstream.script(ScriptedResponse(text="Hello from upstream."))
        await client.open()
        first = await client.turn("hello there")
        await upstream.drop()
        error = (await client.next("error"))["error"]
        second = await client.turn("are you there?")
        session_id = next(e for e in client.events if e["type"] == "switchboard.session")["session_id"]
        decisions = await audit_decisions(stack, session_id, 1)
    assert done_of(first)["metadata"]["agent"] == "front"
    assert error["code"] == "upstream_closed" and "closed" in error["message"]
    assert done_of(second)["status"] == "completed" and done_of(second)["metadata"]["agent"] == "generalist"
    assert decisions == [("front", "front", "generalist", "unavailable")]


async def test_a_spoken_turn_the_input_guardrails_block_never_reaches_the_upstream_model(tmp_path: Path) -> None:
    async with upstream_stack(tmp_path) as (upstream, stack), RawClient(stack, events=False) as client:
        upstream.script_transcripts("There is a bomb in the box.", "Hello there.")
        upstream.script(ScriptedResponse(text="Hi."))
        await client.open()
        await client.send({"type": "session.update", "session": VOICE_SESSION})
        await client.next("session.updated")
        for payload in caller_audio():
            await client.send({"type": "input_audio_buffer.append", "audio": payload})
        blocked = (await client.next("error"))["error"]
        deleted = await client.next("conversation.item.deleted")
        await client.send({"type": "conversation.item.retrieve", "item_id": deleted["item_id"]})
        missing = (await client.next("error"))["error"]
        assert not any(e["type"] == "response.created" for e in client.events)
        for payload in caller_audio():  # the next turn passes: by its end, a late request of the first would be in
            await client.send({"type": "input_audio_buffer.append", "audio": payload})
        await client.next("response.done")
    assert blocked["code"] == "guardrail_blocked" and "threats" in blocked["message"]
    assert missing["code"] == "item_not_found"  # not stored
    assert len(upstream.received("response.create")) == 1  # the second turn's only


async def test_the_upstream_agent_consults_the_supervisor_whose_answer_is_spoken(tmp_path: Path) -> None:
    async with upstream_stack(tmp_path) as (upstream, stack), RawClient(stack, events=False) as client:
        upstream.script_transcripts("When does my order ship?", "I want a refund.")
        upstream.script(ScriptedResponse(text="Let me check.", function_call=("consult_supervisor", {"note": "ship"})))
        await client.open()
        await client.send({"type": "session.update", "session": VOICE_SESSION})
        await client.next("session.updated")
        for payload in caller_audio():
            await client.send({"type": "input_audio_buffer.append", "audio": payload})
        asked = (await client.next("response.done"))["response"]
        for payload in caller_audio():  # "refund" is a must_consult word: the policy consults at once
            await client.send({"type": "input_audio_buffer.append", "audio": payload})
        policy = (await client.next("response.done"))["response"]
    spoken = [" ".join(part["transcript"] for part in o["content"]) for o in asked["output"]]
    assert spoken[0] == "Let me check." and "ships tomorrow" in " ".join(spoken[1:]), spoken
    assert asked["status"] == "completed" and asked["metadata"]["agent"] == "front"
    policy_said = " ".join(part["transcript"] for o in policy["output"] for part in o["content"])
    assert "One moment please." in policy_said and "ships tomorrow" in policy_said
    assert len(upstream.received("response.create")) == 1  # the policy consult never asked the upstream model
    assert violations(client.events) == []


async def test_agents_sdk_runner_talks_to_the_upstream_agent_and_is_handed_to_billing(tmp_path: Path) -> None:
    async with upstream_stack(tmp_path) as (upstream, stack):
        upstream.script_transcripts("What is my balance?")
        upstream.script(ScriptedResponse(text="Let me get billing.", function_call=("transfer_to_billing", {
            "reason": "balance"})))  # fmt: skip
        agent = RealtimeAgent(name="caller", instructions="Help the caller.")
        async with runner_session(stack, agent, settings={}) as log:  # SDK defaults: semantic VAD, audio both ways
            for payload in caller_audio():
                await log.session.send_audio(base64.b64decode(payload))
            await log.wait(lambda: len(log.dones()) == 1, timeout_s=60)
            await log.wait(lambda: any(e.type == "audio_end" for e in log.events))
            history = next(e.history for e in reversed(log.events) if e.type == "history_updated")
        configured = upstream.received("session.update")[-1]["session"]
    assert log.errors == []
    done = log.dones()[0]
    assert (done["status"], done["metadata"]["agent"]) == ("completed", "billing")
    user = next(i for i in history if i.type == "message" and i.role == "user")
    assert user.content[0].transcript == "What is my balance?"
    said = [i.content[0].transcript for i in history if i.type == "message" and i.role == "assistant"]
    assert said[0] == "Let me get billing." and "forty two dollars" in (said[1] or "")
    assert configured["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"  # the caller's, passed on
