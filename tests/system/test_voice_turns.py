"""The session's turn-taking and transcription settings through the real stack: server VAD's
``idle_timeout_ms``, ``semantic_vad``, and ``transcription`` (model, language, prompt).

The caller is espeak-ng, streamed in real time (100 ms chunks, silence between utterances) as a
microphone would; the agents answer from a scripted OpenAI-compatible model, which also records what
the agents were asked.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from switchboard.local.stack import Stack
from switchboard.testing import ScriptedOpenAIServer, ScriptedReply
from switchboard.testing.speech import espeak
from switchboard.voice import PCM_RATE, encode_base64, from_pcm16_24k
from switchboard.voice.formats import Pcm16

from .client import RawClient
from .stacks import make_stack
from .test_realtime_contract import violations
from .test_voice import said, silence, words

pytestmark = [pytest.mark.system, pytest.mark.voice]

ANSWER = "Sure, I can help with that. What would you like to do today?"
STILL_THERE = "Are you still there?"


class Agent:
    """The scripted model: an empty caller turn (the idle timeout's) gets ``STILL_THERE``; others ``ANSWER``."""

    def __init__(self) -> None:
        self.heard: list[str] = []

    def __call__(self, body: dict[str, Any]) -> ScriptedReply:
        users = [m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user"]
        self.heard.append(users[-1] if users else "")
        return ScriptedReply(text=STILL_THERE if users and not users[-1].strip() else ANSWER)


@asynccontextmanager
async def scripted_stack(tmp: Path, agent: Agent) -> AsyncIterator[Stack]:
    async with ScriptedOpenAIServer(responder=agent) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        with make_stack(tmp, agents=["triage", "generalist"], env=env) as stack:
            yield stack


class Microphone:
    """Streams the caller's audio in real time: queued speech, else silence, 100 ms per append."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self._queue: list[bytes] = []
        self.sent_ms = 0.0
        self._task: asyncio.Task[None] | None = None

    def say(self, samples: Pcm16) -> None:
        step = PCM_RATE // 10
        padded = np.concatenate([samples, silence((-samples.size % step) * 1000 // PCM_RATE)])
        self._queue.extend(from_pcm16_24k(padded[i : i + step]) for i in range(0, padded.size, step))

    async def __aenter__(self) -> Microphone:
        self._task = asyncio.create_task(self._stream())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _stream(self) -> None:
        quiet = from_pcm16_24k(silence(100))
        started = time.monotonic()
        while True:
            chunk = self._queue.pop(0) if self._queue else quiet
            await self.client.send({"type": "input_audio_buffer.append", "audio": encode_base64(chunk)})
            self.sent_ms += 100
            await asyncio.sleep(max(0.0, started + self.sent_ms / 1000 - time.monotonic()))  # ok-sleep: real time


def audio_ms(events: list[dict[str, Any]], response_id: str) -> float:
    deltas = [e for e in events if e["type"] == "response.output_audio.delta" and e["response_id"] == response_id]
    return sum(len(base64.b64decode(e["delta"])) for e in deltas) / 2 / PCM_RATE * 1000


def kinds_between(events: list[dict[str, Any]], start: dict[str, Any], end: dict[str, Any]) -> list[str]:
    return [e["type"] for e in events[events.index(start) : events.index(end)]]


async def test_idle_timeout_after_playback_prompts_the_silent_caller_and_speech_cancels_it(
    tmp_path: Path, speech_dir: Path
) -> None:
    idle_ms = 1500
    session = {
        "type": "realtime", "output_modalities": ["audio"],
        "audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": idle_ms}}},
    }  # fmt: skip
    hello = espeak("Hello, can you help me please?", speech_dir / "idle_hello.wav")
    here = espeak("Yes, I am still here.", speech_dir / "idle_here.wav")
    agent = Agent()
    async with scripted_stack(tmp_path, agent) as stack, RawClient(stack, events=False) as client:
        await client.open()
        await client.send({"type": "session.update", "session": session})
        updated = await client.next("session.updated")
        async with Microphone(client) as mic:
            mic.say(hello.samples)
            first_audio = await client.next("response.output_audio.delta")
            heard_at = time.monotonic()  # the edge's playback clock starts at its first chunk, as ours does
            answered = await client.next("response.done")
            timeout = await client.next("input_audio_buffer.timeout_triggered")
            timed_out_at = time.monotonic()
            committed = await client.next("input_audio_buffer.committed")
            empty = await client.next("conversation.item.input_audio_transcription.completed")
            prompted = await client.next("response.done")
            # the caller answers 700 ms after the prompt was sent (it plays for ~1.2 s): the timer armed
            # after it would fire while the caller speaks, were it not cancelled
            mic.say(np.concatenate([silence(700), here.samples]))
            stopped = await client.next("input_audio_buffer.speech_stopped")
            third = await client.next("response.done")
            second_timeout = await client.next("input_audio_buffer.timeout_triggered")
            await client.next("response.done")
    played_ms = audio_ms(client.events, answered["response"]["id"])
    assert updated["session"]["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == idle_ms
    assert first_audio["response_id"] == answered["response"]["id"] and played_ms > 3000
    # counted from the end of playback (not response.done): ~3.9 s of audio, then 1.5 s of silence
    assert timed_out_at - heard_at >= (played_ms + idle_ms) / 1000 - 0.3
    assert abs(timeout["audio_end_ms"] - timeout["audio_start_ms"] - idle_ms) <= 300
    assert timeout["item_id"] == committed["item_id"] == empty["item_id"] and empty["transcript"] == ""
    assert prompted["response"]["output"][0]["content"][0]["transcript"] == STILL_THERE
    assert "help" in words(agent.heard[0]) and agent.heard[1] == ""  # the agents saw an empty caller turn
    # speech cancelled the timer armed after the prompt: no timeout until the answer to the caller's words
    assert "input_audio_buffer.timeout_triggered" not in kinds_between(client.events, prompted, third)
    assert second_timeout["audio_start_ms"] >= stopped["audio_end_ms"]
    assert "still" in words(agent.heard[2]) or "here" in words(agent.heard[2]), agent.heard
    assert [e["type"] for e in client.events].count("input_audio_buffer.timeout_triggered") == 2
    assert not [e for e in client.events if e["type"] == "error"]
    assert violations(client.events) == []


@pytest.mark.parametrize(
    ("turn_detection", "turns"),
    [({"type": "server_vad"}, 2), ({"type": "semantic_vad", "eagerness": "auto"}, 1)],
    ids=["server_vad_cuts_in", "semantic_vad_waits"],
)
async def test_a_pause_after_an_unfinished_phrase_ends_the_turn_only_with_server_vad(
    retail: Stack, speech_dir: Path, turn_detection: dict[str, Any], turns: int
) -> None:
    start = espeak("So I was wondering if", speech_dir / "pause_start.wav")  # tiny.en: "So I was wondering if..."
    rest = espeak("you could help me.", speech_dir / "pause_rest.wav")
    caller = np.concatenate([start.samples, silence(2000), rest.samples])  # a hesitation mid-sentence
    session = {"type": "realtime", "audio": {"input": {"turn_detection": {**turn_detection, "create_response": False}}}}
    async with RawClient(retail, events=False) as client:
        await client.open()
        await client.send({"type": "session.update", "session": session})
        updated = await client.next("session.updated")
        async with Microphone(client) as mic:  # in real time: the words are judged while the caller pauses
            mic.say(caller)
            heard = [await client.next("conversation.item.input_audio_transcription.completed") for _ in range(turns)]
    assert updated["session"]["audio"]["input"]["turn_detection"]["type"] == turn_detection["type"]
    said_words = words(" ".join(h["transcript"] for h in heard))
    assert "wondering" in said_words and "help" in said_words, heard
    assert [e["type"] for e in client.events].count("input_audio_buffer.speech_stopped") == turns
    if turns == 1:  # the whole sentence in one caller turn
        assert {"wondering", "help"} <= set(words(heard[0]["transcript"]))


@pytest.mark.parametrize(("prompt", "heard"), [(None, False), ("Kestrel router", True)], ids=["no_prompt", "prompt"])
async def test_the_transcription_prompt_teaches_whisper_a_product_name(
    retail: Stack, speech_dir: Path, prompt: str | None, heard: bool
) -> None:
    caller = espeak("My Kestrel router stopped working.", speech_dir / "kestrel.wav")
    transcription = {"model": "whisper-1", "language": "en", **({"prompt": prompt} if prompt else {})}
    session = {"type": "realtime", "audio": {"input": {"turn_detection": None, "transcription": transcription}}}
    async with RawClient(retail, events=False) as client:
        await client.open()
        await client.send({"type": "session.update", "session": session})
        updated = await client.next("session.updated")
        for payload in said(caller.samples, tail_ms=300):
            await client.send({"type": "input_audio_buffer.append", "audio": payload})
        await client.send({"type": "input_audio_buffer.commit"})
        transcript = (await client.next("conversation.item.input_audio_transcription.completed"))["transcript"]
    assert updated["session"]["audio"]["input"]["transcription"] == transcription
    assert ("kestrel" in words(transcript)) is heard, transcript
    assert "working" in words(transcript)


async def test_transcription_settings_whisper_cannot_serve_are_refused_and_the_session_stays_as_it_was(
    retail: Stack,
) -> None:
    async with RawClient(retail, events=False) as client:
        await client.open()
        refused = []
        for transcription in ({"model": "gpt-4o-transcribe-diarize"}, {"language": "de"}):
            audio = {"input": {"transcription": transcription}}
            update = {"type": "realtime", "output_modalities": ["audio"], "audio": audio}
            await client.send({"type": "session.update", "session": update})
            refused.append((await client.next("error"))["error"])
        await client.send({"type": "input_audio_buffer.append", "audio": encode_base64(b"\x00\x00")})
        still_text = (await client.next("error"))["error"]
    assert [(e["type"], e["code"], e["param"]) for e in refused] == [
        ("invalid_request_error", "invalid_value", "session.audio.input.transcription.model"),
        ("invalid_request_error", "invalid_value", "session.audio.input.transcription.language"),
    ]
    assert "gpt-4o-transcribe-diarize" in refused[0]["message"] and "whisper-1" in refused[0]["message"]
    assert "English" in refused[1]["message"]
    assert still_text["code"] == "audio_not_enabled"  # the refused update changed nothing


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech_turns")
