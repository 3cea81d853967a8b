"""Spoken conversations through the real stack with the official ``openai`` SDK: server VAD and a
handoff by voice, push-to-talk, barge-in with truncation, and bad audio.

The caller's voice is espeak-ng's or Piper's (generated here, not by the edge), so the edge's Whisper
hears a voice other than its own; the edge's spoken answers are heard back with Whisper.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from agents.realtime import RealtimeAgent

from switchboard.local.stack import Stack
from switchboard.schemas import MessageItem
from switchboard.testing import ScriptedOpenAIServer, ScriptedReply
from switchboard.testing.speech import espeak
from switchboard.voice import PCM_RATE, PCMU, encode_base64, from_pcm16_24k, read_wav
from switchboard.voice.formats import Pcm16, pcm16_from_bytes
from switchboard.voice.piper_tts import PiperTts
from switchboard.voice.whisper import WhisperStt

from .client import RawClient, done_of, sdk_client, stored_items, user_message
from .stacks import SlowModel, make_stack, two_edges_on_a_model
from .test_conversation_items import request
from .test_official_clients import runner_session
from .test_realtime_contract import violations
from .test_supervisor import FILLERS

pytestmark = [pytest.mark.system, pytest.mark.voice]

VOICE_SESSION = {
    "type": "realtime",
    "output_modalities": ["audio"],
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": {"type": "server_vad"}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}},
    },
}
PUSH_TO_TALK = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="module")
def whisper() -> WhisperStt:
    return WhisperStt()


@pytest.fixture(scope="module")
def piper() -> PiperTts:
    return PiperTts(noise_scale=0.0, noise_w_scale=0.0)


def silence(ms: int) -> Pcm16:
    return np.zeros(PCM_RATE * ms // 1000, dtype=np.int16)


def pcm_chunks(samples: Pcm16, *, tail_ms: int = 1000) -> Iterator[bytes]:
    """The caller's audio in PCM16 chunks of 100 ms, followed by silence (VAD ends the turn)."""
    audio = np.concatenate([silence(200), samples, silence(tail_ms)])
    step = PCM_RATE // 10
    for i in range(0, audio.size, step):
        yield from_pcm16_24k(audio[i : i + step])


def said(samples: Pcm16, *, tail_ms: int = 1000) -> Iterator[str]:
    """The same as ``input_audio_buffer.append`` payloads (base64)."""
    for chunk in pcm_chunks(samples, tail_ms=tail_ms):
        yield encode_base64(chunk)


def words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()


def spoken(word: str, text: str) -> bool:
    """``word`` is in the transcript, also when the recogniser split it ("in voice" for "invoice", as
    Whisper tiny does now and then on a loaded machine)."""
    return word in "".join(words(text))


async def until(conn: Any, kind: str, seen: list[Any]) -> Any:
    """Read events (kept in ``seen``) up to the first of ``kind``."""
    async with asyncio.timeout(60):
        async for event in conn:
            seen.append(event)
            if event.type == kind:
                return event
    raise AssertionError(f"closed before {kind}")


async def first(client: RawClient, kind: str, after: int) -> dict[str, Any]:
    """The first event of ``kind`` after index ``after``, received already or still to come."""
    for event in client.events[after + 1 :]:
        if event["type"] == kind:
            return event
    return await client.next(kind)


def audio_of(events: list[Any]) -> Pcm16:
    chunks = [pcm16_from_bytes(base64.b64decode(e.delta)) for e in events if e.type == "response.output_audio.delta"]
    return np.concatenate(chunks) if chunks else silence(0)


async def test_spoken_refund_request_is_heard_handed_off_and_answered_aloud(
    retail: Stack, speech_dir: Path, whisper: WhisperStt
) -> None:
    caller = espeak("I want a refund for my order.", speech_dir / "refund.wav")
    async with sdk_client(retail, events=False).realtime.connect(model="switchboard") as conn:
        await conn.session.update(session=VOICE_SESSION)  # type: ignore[arg-type]
        seen: list[Any] = []
        updated = await until(conn, "session.updated", seen)
        for payload in said(caller.samples):
            await conn.input_audio_buffer.append(audio=payload)
        done = await until(conn, "response.done", seen)
    kinds = [e.type for e in seen]
    assert updated.session.output_modalities == ["audio"]
    for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                 "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed",
                 "response.created"):  # fmt: skip
        assert kind in kinds, kind
    assert kinds.index("conversation.item.input_audio_transcription.completed") < kinds.index("response.created")
    transcript = next(e for e in seen if e.type == "conversation.item.input_audio_transcription.completed")
    assert "refund" in words(transcript.transcript)
    assert done.response.status == "completed"
    assert (done.response.metadata or {})["agent"] == "auth"  # triage -> returns, redirected to auth first
    spoken = "".join(e.delta for e in seen if e.type == "response.output_audio_transcript.delta")
    assert "verify your identity" in spoken
    assert done.response.output[0].content[0].type == "output_audio"
    assert done.response.output[0].content[0].transcript == spoken
    answer = audio_of(seen)
    assert answer.size / PCM_RATE > 3  # two sentences, spoken
    heard = words(whisper.recognize(answer))
    assert {"verify", "identity", "email"} <= set(heard), heard
    assert "response.output_text.delta" not in kinds
    session_id = next(e for e in seen if e.type == "session.created").session.id
    stt = await edge_record(retail, "caller audio transcribed", session_id)
    assert stt["from_pause"] is True  # decoded at the pause, while server VAD still waited for the turn's end


async def edge_record(stack: Stack, msg: str, session_id: str | None, timeout_s: float = 10) -> dict[str, Any]:
    """The edge's first JSON log record ``msg`` of ``session_id`` (its stdout is read on a thread: the line
    may land just after the event that followed it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for line in list(stack.proc("edge").lines):
            if line.startswith("{") and msg in line:
                record: dict[str, Any] = json.loads(line)
                if record.get("msg") == msg and record.get("session_id") == session_id:
                    return record
        assert time.monotonic() < deadline, f"no {msg!r} log record of session {session_id}"
        await asyncio.sleep(0.02)  # ok-sleep: poll interval


async def test_push_to_talk_commit_then_response(retail: Stack, piper: PiperTts) -> None:
    caller = piper.speak("I would like to return an order.")
    async with RawClient(retail, events=False) as client:
        await client.open()
        await client.send({"type": "session.update", "session": PUSH_TO_TALK})
        await client.next("session.updated")
        for payload in said(caller, tail_ms=300):
            await client.send({"type": "input_audio_buffer.append", "audio": payload})
        await client.send({"type": "input_audio_buffer.commit", "event_id": "c1"})
        await client.send({"type": "response.create"})
        committed = await client.next("input_audio_buffer.committed")
        transcript = await client.next("conversation.item.input_audio_transcription.completed")
        done = await client.next("response.done")
        retrieved_id = committed["item_id"]
        await client.send({"type": "conversation.item.retrieve", "item_id": retrieved_id})
        item = (await client.next("conversation.item.retrieved"))["item"]
    kinds = [e["type"] for e in client.events]
    assert "input_audio_buffer.speech_started" not in kinds  # no VAD: the client decides the turn
    assert transcript["item_id"] == committed["item_id"]
    assert "return" in words(transcript["transcript"])
    assert done["response"]["status"] == "completed" and done["response"]["metadata"]["agent"] == "auth"
    assert "response.output_text.delta" in kinds  # audio in, text out (the session's modality)
    assert item["content"][0]["text"] == transcript["transcript"]  # the transcript is the caller's message
    assert violations(client.events) == []


async def test_barge_in_cancels_truncates_and_keeps_the_callers_new_words(retail: Stack, speech_dir: Path) -> None:
    refund = espeak("I want a refund for my order.", speech_dir / "refund2.wav")
    second = espeak("What about my invoice?", speech_dir / "invoice.wav")
    async with RawClient(retail, events=False) as client:
        await client.open()
        await client.send({"type": "session.update", "session": VOICE_SESSION})
        await client.next("session.updated")
        for payload in said(refund.samples):
            await client.send({"type": "input_audio_buffer.append", "audio": payload})
        created = await client.next("response.created")
        sent_ms = 0.0
        while sent_ms < 2500:  # audio goes out 1 s ahead of playback: ~1.5 s has been heard
            delta = await client.next("response.output_audio.delta")
            sent_ms += len(base64.b64decode(delta["delta"])) / 2 / PCM_RATE * 1000
        for payload in said(second.samples):
            await client.send({"type": "input_audio_buffer.append", "audio": payload})
        done = await client.next("response.done")
        mark = len(client.events)  # the caller's new words are transcribed while the test looks around
        truncated = await client.next("conversation.item.truncated")
        item_id = truncated["item_id"]
        await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
        heard = (await client.next("conversation.item.retrieved"))["item"]["content"][0]["text"]
        await client.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                           "audio_end_ms": 300})  # fmt: skip
        await client.next("conversation.item.truncated")
        await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
        after_client_cut = (await client.next("conversation.item.retrieved"))["item"]["content"][0]["text"]
        new_words = await first(client, "conversation.item.input_audio_transcription.completed", mark)
        answer = await first(client, "response.done", client.events.index(new_words))
    assert done["response"]["id"] == created["response"]["id"]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    full = "Before I can help with that, I need to verify your identity."
    assert 1000 <= truncated["audio_end_ms"] < 2500
    assert heard and full.startswith(heard) and len(heard) < len(full), heard
    assert heard.startswith(after_client_cut) and len(after_client_cut) < len(heard)  # the client heard less
    assert spoken("invoice", new_words["transcript"])
    assert answer["response"]["status"] == "completed"
    assert violations(client.events) == []


async def refuses_a_cut_past_the_audio(client: RawClient, response: list[dict[str, Any]]) -> dict[str, Any]:
    """Truncate the first spoken item of ``response`` (its events) 100 ms past the end of its audio: an
    ``error`` naming ``audio_end_ms``, the item unchanged, as the Realtime API answers; then at the end of its
    audio: accepted. Returns that ``conversation.item.truncated``."""
    deltas = [e for e in response if e["type"] == "response.output_audio.delta"]
    item_id = deltas[0]["item_id"]
    audio_ms = sum(len(base64.b64decode(e["delta"])) for e in deltas if e["item_id"] == item_id) * 1000 // 2 // PCM_RATE
    retrieve = {"type": "conversation.item.retrieve", "item_id": item_id}
    before = await request(client, retrieve)
    past = await request(client, {"type": "conversation.item.truncate", "event_id": "evt_past", "item_id": item_id,
                                  "content_index": 0, "audio_end_ms": audio_ms + 100})  # fmt: skip
    assert past["type"] == "error", past
    error = past["error"]
    assert (error["type"], error["code"], error["param"], error["event_id"]) == (
        "invalid_request_error", "invalid_value", "audio_end_ms", "evt_past",
    )  # fmt: skip
    assert re.fullmatch(rf"Audio content of \d+ms is already shorter than {audio_ms + 100}ms", error["message"])
    assert (await request(client, retrieve))["item"] == before["item"]  # nothing was cut
    at_end = await request(client, {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                                    "audio_end_ms": audio_ms})  # fmt: skip
    assert (at_end["type"], at_end["item_id"]) == ("conversation.item.truncated", item_id), at_end
    assert abs(at_end["audio_end_ms"] - audio_ms) <= 1
    return at_end


async def test_a_truncate_past_the_end_of_an_items_audio_is_refused_and_cuts_nothing(retail: Stack) -> None:
    async with RawClient(retail, events=False) as client:
        await client.open()
        await client.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["audio"]}})
        await client.next("session.updated")
        await refuses_a_cut_past_the_audio(client, await client.turn("hello"))
        again = await client.turn("hello")  # the connection goes on
    assert done_of(again)["status"] == "completed"
    assert violations(client.events) == []


async def test_bad_audio_gets_clear_errors_and_the_session_stays_usable(retail: Stack) -> None:
    async def error_for(client: RawClient, event: dict[str, Any]) -> dict[str, Any]:
        await client.send(event)
        return dict((await client.next("error"))["error"])

    tone = (np.sin(np.arange(PCM_RATE) * 2 * np.pi * 440 / PCM_RATE) * 8000).astype(np.int16)
    four_s = encode_base64(from_pcm16_24k(np.tile(tone, 4)))
    async with RawClient(retail, events=False) as client:
        await client.open()
        text_only = await error_for(client, {"type": "input_audio_buffer.append", "audio": four_s})
        assert text_only["code"] == "audio_not_enabled" and "text-only" in text_only["message"]
        rate = await error_for(client, {"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}})  # fmt: skip
        assert (rate["code"], rate["param"]) == ("invalid_audio_format", "session.audio")
        assert "24000" in rate["message"]
        await client.send({"type": "session.update", "session": PUSH_TO_TALK})
        await client.next("session.updated")
        cases = [
            ({"type": "input_audio_buffer.append", "audio": "not base64!"}, "invalid_audio_base64"),
            ({"type": "input_audio_buffer.append", "audio": encode_base64(b"\x00\x01\x02")}, "invalid_audio_length"),
            ({"type": "input_audio_buffer.commit"}, "input_audio_buffer_commit_empty"),
        ]
        for event, code in cases:
            assert (await error_for(client, event))["code"] == code
        for _ in range(7):  # 28 s buffered
            await client.send({"type": "input_audio_buffer.append", "audio": four_s})
        too_long = await error_for(client, {"type": "input_audio_buffer.append", "audio": four_s})
        assert too_long["code"] == "audio_buffer_too_large" and "30000 ms" in too_long["message"]
        await client.send({"type": "input_audio_buffer.clear"})
        await client.next("input_audio_buffer.cleared")
        events = await client.turn("hello")  # the session still serves a turn
    assert any(e["type"] == "response.done" and e["response"]["status"] == "completed" for e in events)
    assert violations(client.events) == []


async def test_text_message_to_voice_session_is_answered_aloud(retail: Stack) -> None:
    async with sdk_client(retail, events=False).realtime.connect(model="switchboard") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["audio"]})
        seen: list[Any] = []
        await until(conn, "session.updated", seen)
        await conn.conversation.item.create(item=user_message("hello"))  # type: ignore[arg-type]
        await conn.response.create()
        done = await until(conn, "response.done", seen)
    assert done.response.status == "completed"
    assert audio_of(seen).size > PCM_RATE  # more than a second of speech


async def test_agents_sdk_runner_holds_a_spoken_turn_with_a_handoff(retail: Stack, speech_dir: Path) -> None:
    caller = espeak("I want a refund for my order.", speech_dir / "runner.wav")
    agent = RealtimeAgent(name="caller", instructions="Help the caller.")
    async with runner_session(retail, agent, settings={}) as log:  # SDK defaults: gpt-4o-mini-transcribe, semantic VAD
        for chunk in pcm_chunks(caller.samples):
            await log.session.send_audio(chunk)
        await log.wait(lambda: len(log.dones()) == 1, timeout_s=60)
        await log.wait(lambda: any(e.type == "audio_end" for e in log.events))
        history = next(e.history for e in reversed(log.events) if e.type == "history_updated")
    assert log.errors == []
    done = log.dones()[0]
    assert (done["status"], done["metadata"]["agent"]) == ("completed", "auth")
    user = next(i for i in history if i.type == "message" and i.role == "user")
    assert "refund" in words(user.content[0].transcript or "")
    answer = next(i for i in history if i.type == "message" and i.role == "assistant")
    assert answer.content[0].type == "audio" and "verify your identity" in (answer.content[0].transcript or "")
    audio = b"".join(e.audio.data for e in log.events if e.type == "audio")
    assert len(audio) / 2 / PCM_RATE > 3  # the SDK received the spoken answer


def test_chat_voice_speaks_a_wav_file_and_writes_the_answer(retail: Stack, speech_dir: Path) -> None:
    espeak("I want a refund for my order.", speech_dir / "chat_in.wav")
    out = speech_dir / "chat_out.wav"
    run = subprocess.run(
        [sys.executable, "-m", "switchboard", "chat", "--url", retail.ws_base, "--key", retail.api_key,
         "--voice", str(speech_dir / "chat_in.wav"), str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    said = next(line for line in run.stdout.splitlines() if line.startswith("you> "))
    assert "refund" in words(said)
    assert "bot> Before I can help with that" in run.stdout and "[answered by auth, completed]" in run.stdout
    assert read_wav(out).size / PCM_RATE > 3


async def test_barge_in_while_the_agent_is_still_thinking_keeps_both_utterances(
    tmp_path: Path, speech_dir: Path
) -> None:
    slow = SlowModel("Let me look into that for you. One moment please.", 3)
    first = espeak("Hello, I have a question.", speech_dir / "question.wav")
    second = espeak("Actually, what about my invoice?", speech_dir / "invoice2.wav")
    async with two_edges_on_a_model(tmp_path, slow) as (stack, _), RawClient(stack, events=False) as client:
        await client.open()
        await client.send({"type": "session.update", "session": VOICE_SESSION})
        await client.next("session.updated")
        for payload in said(first.samples):
            await client.send({"type": "input_audio_buffer.append", "audio": payload})
        first_item = (await client.next("input_audio_buffer.committed"))["item_id"]
        await asyncio.wait_for(slow.asked.wait(), 60)  # the agent is thinking: nothing has been said yet
        for payload in said(second.samples):
            await client.send({"type": "input_audio_buffer.append", "audio": payload})
        cut = await client.next("response.done")
        second_item = (await client.next("input_audio_buffer.committed"))["item_id"]
        answer = await client.next("response.done")
        for item_id in (first_item, second_item):
            await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
        kept = [(await client.next("conversation.item.retrieved"))["item"] for _ in range(2)]
    assert (cut["response"]["status"], cut["response"]["status_details"]["reason"]) == ("cancelled", "turn_detected")
    assert answer["response"]["status"] == "completed"
    assert "One moment please." in answer["response"]["output"][0]["content"][0]["transcript"]
    assert "question" in words(kept[0]["content"][0]["text"]) and spoken("invoice", kept[1]["content"][0]["text"])
    assert not [e for e in client.events if e["type"] == "error"]


async def test_a_spoken_question_that_needs_the_supervisor_hears_the_filler_first(
    tmp_path: Path, speech_dir: Path
) -> None:
    caller = espeak("I have a question about my invoice.", speech_dir / "invoice3.wav")
    with make_stack(tmp_path, scenario="supervisor") as stack:
        async with RawClient(stack, events=False) as client:
            await client.open()
            await client.send({"type": "session.update", "session": VOICE_SESSION})
            await client.next("session.updated")
            for payload in said(caller.samples):
                await client.send({"type": "input_audio_buffer.append", "audio": payload})
            done = await client.next("response.done")
    spoken = [e for e in client.events if e["type"].startswith("response.output_audio")]
    sentences = [e["delta"] for e in spoken if e["type"] == "response.output_audio_transcript.delta"]
    heard = next(e for e in client.events if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert done["response"]["metadata"]["supervisor"] == "consulted", (heard["transcript"], sentences)
    assert sentences[0] in FILLERS and len(sentences) >= 2  # the filler, then the supervisor's answer
    assert spoken[1]["type"] == "response.output_audio.delta"  # the filler is spoken as soon as it is said
    assert "verify" in "".join(sentences[1:])


async def test_the_session_audio_limit_counts_the_callers_audio(tmp_path: Path) -> None:
    tone = (np.sin(np.arange(PCM_RATE) * 2 * np.pi * 440 / PCM_RATE) * 8000).astype(np.int16)
    one_s = encode_base64(from_pcm16_24k(tone))
    with make_stack(tmp_path, agents=["triage"], env={"SWITCHBOARD_SESSION_MAX_AUDIO_S": "3"}) as stack:
        async with RawClient(stack, events=False) as client:
            await client.open()
            await client.send({"type": "session.update", "session": PUSH_TO_TALK})
            await client.next("session.updated")
            for _ in range(3):  # 3 s: at the limit, not over it
                await client.send({"type": "input_audio_buffer.append", "audio": one_s})
            await client.send({"type": "input_audio_buffer.clear"})
            await client.next("input_audio_buffer.cleared")
            await client.send({"type": "input_audio_buffer.append", "audio": one_s})
            async with asyncio.timeout(30):
                error = (await client.next("error"))["error"]
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await client.recv()
    assert error["code"] == "session_audio_limit_reached"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_input_audio_in_a_created_item_is_transcribed_in_the_sessions_format(
    retail: Stack, piper: PiperTts
) -> None:
    caller = piper.speak("I want to return an order.")
    part = {"type": "input_audio", "audio": encode_base64(from_pcm16_24k(caller, PCMU))}  # G.711 at 8 kHz
    item = {"type": "message", "role": "user", "content": [part]}
    async with RawClient(retail, events=False) as client:
        await client.open()
        await client.send({"type": "conversation.item.create", "item": item})
        refused = (await client.next("error"))["error"]
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}},
                },
            }
        )
        await client.next("session.updated")
        await client.send({"type": "conversation.item.create", "item": item})
        added = (await client.next("conversation.item.done"))["item"]
        await client.send({"type": "response.create"})
        done = (await client.next("response.done"))["response"]
    assert refused["code"] == "audio_not_enabled"
    assert added["content"][0]["type"] == "input_audio" and "return" in words(added["content"][0]["transcript"])
    assert (done["status"], done["metadata"]["agent"]) == ("completed", "auth")
    assert violations(client.events) == []


@asynccontextmanager
async def overlapping_turns(stack: Stack, speech_dir: Path) -> AsyncIterator[tuple[RawClient, dict[str, Any]]]:
    """Two server-VAD turns a short pause apart ("Hello there.", 700 ms, "I want a refund for my order."),
    sent faster than Whisper transcribes; yields the client and the first ``response.done``."""
    hello = espeak("Hello there.", speech_dir / "hello-overlap.wav")
    refund = espeak("I want a refund for my order.", speech_dir / "refund-overlap.wav")
    audio = np.concatenate([hello.samples, silence(700), refund.samples])  # server VAD's 500 ms ends a turn
    async with RawClient(stack, events=False, timeout_s=30) as client:
        await voice_session(client)
        await speak(client, audio)
        yield client, await client.next("response.done")


async def voice_session(client: RawClient) -> None:
    """Open the session and make it a voice one (server VAD, audio out)."""
    await client.open()
    await client.send({"type": "session.update", "session": VOICE_SESSION})
    await client.next("session.updated")


async def speak(client: RawClient, samples: Pcm16) -> None:
    """The caller says ``samples``, as ``input_audio_buffer.append`` events sent at once."""
    for payload in said(samples):
        await client.send({"type": "input_audio_buffer.append", "audio": payload})


async def test_a_second_utterance_committed_before_the_first_is_transcribed_is_answered_once(
    retail: Stack, speech_dir: Path
) -> None:
    """Two turns a short pause apart, sent faster than Whisper transcribes: the first turn's response waits
    for the second's words and answers both (before, it waited for the second turn, which waited for it to
    end: the response never ended and the session refused every later response)."""
    async with overlapping_turns(retail, speech_dir) as (client, done):
        await client.send({"type": "session.update", "session": VOICE_SESSION})
        await client.next("session.updated")  # a second response would have started by now
    committed = [e["item_id"] for e in client.events if e["type"] == "input_audio_buffer.committed"]
    joined = [e["item"]["id"] for e in client.events if e["type"] == "conversation.item.done"
              and e["item"]["role"] == "user"]  # fmt: skip
    assert len(committed) == 2 and joined == committed
    assert done["response"]["status"] == "completed"
    assert "verify your identity" in done["response"]["output"][0]["content"][0]["transcript"]  # the refund's answer
    assert [e["type"] for e in client.events].count("response.created") == 1
    assert violations(client.events) == []


async def test_a_caller_speaking_past_the_buffer_limit_is_heard_whole_and_answered(
    retail: Stack, speech_dir: Path
) -> None:
    """Server VAD: speech longer than the 30 s buffer ends a turn there, as a pause would, and the rest is
    the next turn (before, every append past 30 s was refused, the VAD never heard the silence that ends the
    turn, and the session was stuck)."""
    story = ("I have been a customer for many years and I bought a lot of things from your shop including "
             "shoes and shirts and a lamp and a table and a chair and some books ") * 3  # fmt: skip
    caller = espeak(story + "and now I would like a refund for my blue umbrella", speech_dir / "long.wav")
    assert caller.samples.size / PCM_RATE > 32
    vad = {"type": "server_vad", "silence_duration_ms": 2000}  # espeak's breaths never end the turn
    async with RawClient(retail, events=False) as client:
        await client.open()
        await client.send({"type": "session.update", "session": {"type": "realtime",
                           "audio": {"input": {"turn_detection": vad}}}})  # fmt: skip
        await client.next("session.updated")
        for payload in said(caller.samples, tail_ms=3000):
            await client.send({"type": "input_audio_buffer.append", "audio": payload})
        heard = [await client.next("conversation.item.input_audio_transcription.completed") for _ in range(2)]
        while (done := await client.next("response.done"))["response"]["status"] != "completed":
            pass
    errors = [e["error"] for e in client.events if e["type"] == "error"]
    assert errors == []
    stops = [e for e in client.events if e["type"] == "input_audio_buffer.speech_stopped"]
    assert len(stops) == 2 and stops[0]["audio_end_ms"] <= 30_200  # the turn ended at the buffer's limit
    assert "customer" in words(heard[0]["transcript"]) and "umbrella" in words(heard[1]["transcript"])
    assert done["response"]["status"] == "completed"
    assert violations(client.events) == []


async def test_a_barge_in_as_the_answer_starts_stops_it_and_keeps_only_what_was_heard(
    retail: Stack, speech_dir: Path
) -> None:
    """The caller speaks as the answer's item opens, while its turn is being stored: the answer stops there
    (before, the cancel waited for the whole answer to be spoken over the caller, ~7 s, then stored none of
    its words though the caller had been sent all of them)."""
    refund = espeak("I want a refund for my order.", speech_dir / "refund4.wav")
    stop = espeak("Wait, stop.", speech_dir / "stop.wav")
    async with RawClient(retail, events=False) as client:
        await voice_session(client)
        await speak(client, refund.samples)
        while (added := await client.next("conversation.item.added"))["item"]["role"] != "assistant":
            pass
        for payload in said(stop.samples, tail_ms=100):
            await client.send({"type": "input_audio_buffer.append", "audio": payload})
        barged = await client.next("input_audio_buffer.speech_started")
        done = await client.next("response.done")
        await client.send({"type": "conversation.item.retrieve", "item_id": added["item"]["id"]})
        kept = await client.next("conversation.item.retrieved")
    after = client.events[client.events.index(barged) :]
    sent_ms = sum(len(base64.b64decode(e["delta"])) for e in after if e["type"] == "response.output_audio.delta")
    assert sent_ms / 2 / PCM_RATE * 1000 <= 1200  # at most the lead it had before the barge-in
    assert (done["response"]["status"], done["response"]["status_details"]["reason"]) == ("cancelled", "turn_detected")
    spoken = done["response"]["output"][0]["content"][0]["transcript"]
    stored = kept["item"]["content"][0]["text"]
    assert spoken.startswith(stored) and len(stored.split()) <= 3, (stored, spoken)  # what the caller heard
    assert violations(client.events) == []


HANDING_OVER = (
    "Sure, I can help you with that refund. Our returns team handles every refund request. "
    "They will ask you for your order number and the reason for the return. I am transferring you now."
)
AFTER_HANDOFF = "Returns here, what is your order number?"


def hands_over(body: dict[str, Any]) -> ScriptedReply:
    """Triage says a long sentence and transfers; whoever takes the call answers ``AFTER_HANDOFF``."""
    if "front desk" in body["messages"][0]["content"]:
        return ScriptedReply(text=HANDING_OVER, tool_calls=[("transfer_to_returns", {"reason": "refund"})])
    return ScriptedReply(text=AFTER_HANDOFF)


async def test_a_barge_in_keeps_no_item_of_the_answer_whose_audio_never_started(
    tmp_path: Path, speech_dir: Path
) -> None:
    """An answer spoken across a handoff is two items, stored with the turn before the first has played;
    the caller speaks during the first: the second, never sent, is not in the session (before, it was
    stored whole, and the agents went on as if the caller had heard it)."""
    refund = espeak("I want a refund for my order.", speech_dir / "refund5.wav")
    stop = espeak("Wait, stop.", speech_dir / "stop2.wav")
    async with ScriptedOpenAIServer(responder=hands_over) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        with make_stack(tmp_path, env=env) as stack:
            async with RawClient(stack, events=False) as client:
                session_id = (await client.open())["session"]["id"]
                await client.send({"type": "session.update", "session": VOICE_SESSION})
                await client.next("session.updated")
                for payload in said(refund.samples):
                    await client.send({"type": "input_audio_buffer.append", "audio": payload})
                sent_ms = 0.0
                while sent_ms < 2000:  # ~1 s of the first item heard, ~7 s still to come
                    delta = await client.next("response.output_audio.delta")
                    sent_ms += len(base64.b64decode(delta["delta"])) / 2 / PCM_RATE * 1000
                for payload in said(stop.samples, tail_ms=100):
                    await client.send({"type": "input_audio_buffer.append", "audio": payload})
                done = await client.next("response.done")
                truncated = await client.next("conversation.item.truncated")
                stored = await stored_items(stack, session_id)
    shown = {e["item"]["id"] for e in client.events if e["type"] == "conversation.item.added"}
    answers = [i for i in stored if isinstance(i, MessageItem) and i.role == "assistant"]
    assert (done["response"]["status"], done["response"]["status_details"]["reason"]) == ("cancelled", "turn_detected")
    assert [i["id"] for i in done["response"]["output"]] == [truncated["item_id"]]
    assert [i.id for i in answers] == [truncated["item_id"]]  # stored with the turn, then cut
    assert HANDING_OVER.startswith(answers[0].text) and len(answers[0].text) < len(HANDING_OVER)
    assert {i.id for i in stored if isinstance(i, MessageItem)} <= shown, [(i.id, i.text) for i in stored]
    assert AFTER_HANDOFF not in [i.text for i in answers]
    assert violations(client.events) == []


async def test_overlapping_turns_name_the_item_before_each_alike_in_all_their_events(
    retail: Stack, speech_dir: Path
) -> None:
    """The second utterance is committed while the first is still being transcribed: its ``committed``,
    ``item.added`` and ``item.done`` all name the first as the item before it (before, the first two named
    the last item already stored, ``null`` in a new session, while ``item.done`` named the first)."""
    async with overlapping_turns(retail, speech_dir) as (client, _):
        pass
    events = client.events
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert len(committed) == 2
    first, second = (c["item_id"] for c in committed)
    first_done = next(e for e in events if e["type"] == "conversation.item.done" and e["item"]["id"] == first)
    assert events.index(committed[1]) < events.index(first_done)  # the turns did overlap
    for item_id, before in ((first, None), (second, first)):
        named = [e["previous_item_id"] for e in events if e["type"] == "input_audio_buffer.committed"
                 and e["item_id"] == item_id or e["type"] in ("conversation.item.added", "conversation.item.done")
                 and e["item"]["id"] == item_id]  # fmt: skip
        assert named == [before] * 3, (item_id, named)
    answer = next(e for e in events if e["type"] == "conversation.item.added" and e["item"]["role"] == "assistant")
    assert answer["previous_item_id"] == second
    assert violations(client.events) == []
