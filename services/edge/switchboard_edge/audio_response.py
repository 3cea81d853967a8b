"""A response spoken aloud: the agents' text deltas through streaming TTS, as Realtime audio events.

:class:`AudioResponseWriter` is the :class:`~.response.ResponseWriter` of a response whose output
modality is ``audio``; the text writer is untouched, so text sessions pay nothing for voice. Each
assistant item gets an ``audio`` content part: ``response.output_audio.delta`` per synthesised chunk and
``response.output_audio_transcript.delta`` per sentence as its audio starts. Sentences are synthesised
while the agents still stream the rest; the conductor is never held up by speech (items are queued
and spoken in order by one task).

The playback clock: the caller is assumed to play audio as it arrives, from the first chunk on. Audio
is sent at most ``lead_ms`` ahead of that clock, so the edge knows what the caller has heard within
``lead_ms`` (barge-in truncates there), and a barge-in wastes no synthesis on a long answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from switchboard.voice import AudioFormat, TextToSpeech, encode_base64, from_pcm16_24k

from .orchestration import AgentFinished, ConductorEvent, TextDelta
from .protocol import new_event_id, new_id
from .response import Phase, ResponseWriter, Send
from .server_events import (
    OutputRef,
    PartRef,
)

LEAD_MS = 1000.0
"""How far audio is sent ahead of the caller's playback (their jitter buffer)."""


@dataclass
class PlaybackClock:
    """When the response's first audio was sent; the caller's playback position follows wall time."""

    started: float | None = None

    def position_ms(self, now: float | None = None) -> float:
        if self.started is None:
            return 0.0
        return ((now if now is not None else time.monotonic()) - self.started) * 1000


@dataclass
class SpokenItem:
    """One assistant item's audio timeline: which sentence plays when (ms into the item's audio)."""

    item_id: str
    clock: PlaybackClock
    offset_ms: float = 0.0
    """Where the item's audio starts on the response's playback clock."""
    duration_ms: float = 0.0
    sentences: list[tuple[float, float, str]] = field(default_factory=list)
    truncated_ms: float | None = None
    spoken_whole: bool = False
    """All its text has been synthesised and sent."""

    def heard_ms(self, now: float | None = None) -> float:
        """How much of this item the caller has played by ``now`` (the server's estimate)."""
        return min(max(self.clock.position_ms(now) - self.offset_ms, 0.0), self.duration_ms)

    def text_until(self, ms: float) -> str:
        """The words played in the first ``ms``: whole sentences, then the played share of the next."""
        kept: list[str] = []
        for start, end, sentence in self.sentences:
            if end <= ms:
                kept.append(sentence)
                continue
            if ms > start:
                words = sentence.split()
                share = int(len(words) * (ms - start) / (end - start))
                kept.extend(words[:share])
            break
        return " ".join(kept)

    @property
    def transcript(self) -> str:
        return " ".join(s for _, _, s in self.sentences)


@dataclass
class _Item:
    spoken: SpokenItem
    agent: str
    output_index: int = 0
    """Set when its audio starts: items are opened one after another."""
    text: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    opened: bool = False
    ended: bool = False


class AudioResponseWriter(ResponseWriter):
    """Writes one spoken response; ``spoken`` (the session's) receives each item's audio timeline."""

    def __init__(
        self, send: Send, response_id: str, *, tts: TextToSpeech, fmt: AudioFormat,
        spoken: dict[str, SpokenItem], lead_ms: float = LEAD_MS, on_audio: Callable[[float], None] | None = None,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        """``on_audio``: told the seconds of each chunk sent (the session's audio limit)."""
        super().__init__(send, response_id, modalities=["audio"], **kwargs)
        self.tts = tts
        self.format = fmt
        self.lead_ms = lead_ms
        self.clock = PlaybackClock()
        self.spoken = spoken
        self.on_audio = on_audio
        self.first_audio_at: float | None = None
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._items: list[_Item] = []
        self._speaking: _Item | None = None
        self._pump: asyncio.Task[None] | None = None
        self._sent_ms = 0.0

    def played_at(self) -> float:
        """``time.monotonic()`` at which the caller will have played all the audio sent (now, if none)."""
        if self.clock.started is None:
            return time.monotonic()
        return self.clock.started + self._sent_ms / 1000

    async def on_event(self, ev: ConductorEvent) -> None:
        if self.phase is not Phase.STARTED:
            return
        if isinstance(ev, TextDelta):
            await self._delta(ev.agent, ev.text, ev.item_id)
        elif isinstance(ev, AgentFinished):
            self._end_text()
        else:
            await super().on_event(ev)

    async def _delta(self, agent: str, text: str, item_id: str | None = None) -> None:
        last = self._items[-1] if self._items else None
        if last is None or last.ended or last.agent != agent:
            self._end_text()
            last = _Item(SpokenItem(item_id or new_id("item"), self.clock), agent)
            self._items.append(last)
            self._queue.put_nowait(last)
            if self._pump is None:
                self._pump = asyncio.create_task(self._speak_all())
        last.text.put_nowait(text)

    def _end_text(self) -> None:
        if self._items and not self._items[-1].ended:
            self._items[-1].ended = True
            self._items[-1].text.put_nowait(None)

    async def _close_item(self, ok: bool) -> None:
        """Wait until everything queued has been spoken (``ok``), or stop speaking at once."""
        self._end_text()
        pump = self._pump
        if pump is not None and ok:
            self._queue.put_nowait(None)
            await pump
        elif pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        self._pump = None
        item, self._speaking = self._speaking, None
        if item is not None:
            await self._item_done(item, "incomplete")

    async def _speak_all(self) -> None:
        while (item := await self._queue.get()) is not None:
            await self._speak(item)

    async def _text(self, item: _Item) -> AsyncIterator[str]:
        while (delta := await item.text.get()) is not None:
            yield delta

    async def _open_item(self, item: _Item) -> PartRef:
        """The item's opening events; it becomes the one speaking. Returns the ids its events carry."""
        spoken = item.spoken
        item.output_index = len(self.output)
        out: OutputRef = {"response_id": self.response_id, "output_index": item.output_index}
        added = audio_item(spoken.item_id, "", "in_progress")
        await self._send({"type": "response.output_item.added", "event_id": new_event_id(), **out, "item": added})
        await self._conversation_item("conversation.item.added", added)
        ids: PartRef = {**out, "item_id": spoken.item_id}
        await self._send({
            "type": "response.content_part.added", "event_id": new_event_id(), **ids, "content_index": 0,
            "part": {"type": "audio", "transcript": ""},
        })  # fmt: skip
        item.opened, self._speaking = True, item
        self.spoken[spoken.item_id] = spoken
        spoken.offset_ms = self._sent_ms
        return ids

    def _played(self, spoken: SpokenItem, ms: float) -> None:
        """``ms`` more of ``spoken`` went out: the playback clock, the session's audio count, the timeline."""
        if self.clock.started is None:
            self.clock.started = self.first_audio_at = time.monotonic()
        if self.on_audio is not None:
            self.on_audio(ms / 1000)
        spoken.duration_ms += ms
        self._sent_ms += ms
        if spoken.sentences:
            start, _, text = spoken.sentences[-1]
            spoken.sentences[-1] = (start, spoken.duration_ms, text)

    async def _speak(self, item: _Item) -> None:
        spoken = item.spoken
        ids = await self._open_item(item)
        stream = self.tts.synthesize(self._text(item))
        try:
            async for chunk in stream:
                await self._pace()
                if chunk.first_of_sentence:
                    delta = chunk.text if not spoken.sentences else f" {chunk.text}"
                    spoken.sentences.append((spoken.duration_ms, spoken.duration_ms, chunk.text))
                    await self._send({
                        "type": "response.output_audio_transcript.delta", "event_id": new_event_id(), **ids,
                        "content_index": 0, "delta": delta,
                    })  # fmt: skip
                audio = encode_base64(from_pcm16_24k(chunk.samples, self.format))
                await self._send({
                    "type": "response.output_audio.delta", "event_id": new_event_id(), **ids, "content_index": 0,
                    "delta": audio,
                })  # fmt: skip
                self._played(spoken, chunk.duration_ms)
        finally:
            close = getattr(stream, "aclose", None)  # stops synthesis (barge-in)
            if close is not None:
                await close()
        spoken.spoken_whole = True
        self._speaking = None
        await self._item_done(item, "completed")

    async def _pace(self) -> None:
        """Keep at most ``lead_ms`` of audio ahead of the caller's playback."""
        ahead = self._sent_ms - self.clock.position_ms() - self.lead_ms
        if self.clock.started is not None and ahead > 0:
            await asyncio.sleep(ahead / 1000)

    async def _item_done(self, item: _Item, status: str) -> None:
        spoken = item.spoken
        transcript = spoken.transcript
        ids: PartRef = {"response_id": self.response_id, "output_index": item.output_index, "item_id": spoken.item_id}
        done = audio_item(spoken.item_id, transcript, status)
        self.output.append(done)  # before the sends: a cancel mid-close still reports the item
        await self._send({"type": "response.output_audio.done", "event_id": new_event_id(), **ids, "content_index": 0})
        await self._send({
            "type": "response.output_audio_transcript.done", "event_id": new_event_id(), **ids, "content_index": 0,
            "transcript": transcript,
        })  # fmt: skip
        await self._send({
            "type": "response.content_part.done", "event_id": new_event_id(), **ids, "content_index": 0,
            "part": {"type": "audio", "transcript": transcript},
        })  # fmt: skip
        await self._send({
            "type": "response.output_item.done", "event_id": new_event_id(), "response_id": self.response_id,
            "output_index": item.output_index, "item": done,
        })  # fmt: skip
        await self._conversation_item("conversation.item.done", done)
        self._previous = spoken.item_id

    def message_ids(self) -> list[str]:
        return [i.spoken.item_id for i in self._items]

    def unopened_ids(self) -> list[str]:
        """Items queued whose audio never started: the client was never sent ``conversation.item.added``
        for them (final once the response has stopped)."""
        return [i.spoken.item_id for i in self._items if not i.opened]


def audio_item(item_id: str, transcript: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id, "type": "message", "object": "realtime.item", "status": status, "role": "assistant",
        "content": [{"type": "output_audio", "transcript": transcript}],
    }  # fmt: skip
