"""A spoken response whose audio partly comes ready-made from the upstream Realtime model.

:class:`RelayResponseWriter` is the session's :class:`~..audio_response.AudioResponseWriter` when the
session has an upstream link: the upstream agent's :class:`~..orchestration.AudioDelta` events are relayed
as they arrive (one assistant item per upstream item, under the upstream item's id), while the text of
the agents that answer over the bus is spoken by the edge's TTS as before. Items are spoken in order by
the writer's one pump, on the same playback clock, so barge-in truncates relayed and synthesised items
alike.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field

from switchboard.voice import PCM16_24K, PCM_RATE, encode_base64, from_pcm16_24k
from switchboard.voice.formats import pcm16_from_bytes

from ..audio_response import AudioResponseWriter, SpokenItem, _Item
from ..orchestration import AudioDelta, ConductorEvent
from ..protocol import new_event_id
from ..response import Phase


def base64_pcm_ms(audio: str) -> float:
    """Milliseconds of PCM16 24 kHz audio in a base64 string (without decoding it)."""
    size = len(audio) * 3 // 4 - (2 if audio.endswith("==") else 1 if audio.endswith("=") else 0)
    return size / 2 * 1000 / PCM_RATE


@dataclass
class _Relayed(_Item):
    chunks: asyncio.Queue[AudioDelta | None] = field(default_factory=asyncio.Queue)


class RelayResponseWriter(AudioResponseWriter):
    """An :class:`AudioResponseWriter` that also relays speech the upstream model made."""

    async def on_event(self, ev: ConductorEvent) -> None:
        if self.phase is not Phase.STARTED:
            return
        if not isinstance(ev, AudioDelta):
            await super().on_event(ev)
            return
        last = self._items[-1] if self._items else None
        if not isinstance(last, _Relayed) or last.ended or last.spoken.item_id != ev.item_id:
            self._end_text()
            last = _Relayed(SpokenItem(ev.item_id, self.clock), ev.agent)
            self._items.append(last)
            self._queue.put_nowait(last)
            if self._pump is None:
                self._pump = asyncio.create_task(self._speak_all())
        last.chunks.put_nowait(ev)

    def _end_text(self) -> None:
        last = self._items[-1] if self._items else None
        if isinstance(last, _Relayed) and not last.ended:
            last.chunks.put_nowait(None)
        super()._end_text()

    async def _speak(self, item: _Item) -> None:
        if not isinstance(item, _Relayed):
            await super()._speak(item)
            return
        spoken = item.spoken
        ids = await self._open_item(item)
        spoken.sentences.append((0.0, 0.0, ""))  # the whole transcript on one timeline (cut by the share heard)
        while (ev := await item.chunks.get()) is not None:
            if ev.transcript:
                start, end, text = spoken.sentences[0]
                spoken.sentences[0] = (start, end, text + ev.transcript)
                await self._send({
                    "type": "response.output_audio_transcript.delta", "event_id": new_event_id(), **ids,
                    "content_index": 0, "delta": ev.transcript,
                })  # fmt: skip
            if ev.audio:
                await self._pace()
                audio = ev.audio
                if self.format != PCM16_24K:  # the upstream speaks PCM16 24 kHz; the caller asked for G.711
                    audio = encode_base64(from_pcm16_24k(pcm16_from_bytes(base64.b64decode(audio)), self.format))
                await self._send({
                    "type": "response.output_audio.delta", "event_id": new_event_id(), **ids, "content_index": 0,
                    "delta": audio,
                })  # fmt: skip
                self._played(spoken, base64_pcm_ms(ev.audio))
        spoken.spoken_whole = True
        self._speaking = None
        await self._item_done(item, "completed")
