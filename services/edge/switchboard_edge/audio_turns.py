"""A session's spoken turns: caller audio in, transcripts into the conversation, barge-in and truncation.

The flow of one spoken caller turn (server VAD; push-to-talk is the same from ``commit`` on):
``append`` -> the bounded buffer and the VAD -> ``speech_started`` (a response playing is cancelled and
its assistant items truncated to what was heard) -> ``speech_stopped`` -> ``committed`` +
``conversation.item.added`` (an ``input_audio`` part, no transcript yet) -> STT in a worker thread ->
``input_audio_transcription.delta/completed`` -> the transcript, screened by the input guardrails like
typed text, is committed as the caller's message -> ``conversation.item.done`` -> the response (if
``create_response``). Transcriptions of consecutive turns may overlap; their items join the
conversation in the order they were spoken, and a response waits for the one before it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import numpy as np

from switchboard.schemas import MessageItem, SessionState
from switchboard.voice import (
    PCM_RATE,
    AudioFormat,
    AudioTooLargeError,
    EmptyAudioError,
    ServerVadConfig,
    SpeechStarted,
    SpeechStopped,
    SpeechToText,
    Transcript,
    TurnDetector,
    VoiceError,
    decode_base64,
    to_pcm16_24k,
)
from switchboard.voice.formats import Pcm16

from . import items
from .audio_response import AudioResponseWriter, SpokenItem
from .client_events import (
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    ResponseCreate,
    UserMessage,
)
from .orchestration import LocalAgentError
from .protocol import ProtocolError, error_event, new_event_id, new_id
from .response import ResponseWriter
from .server_events import (
    DurationUsage,
    TranscriptionError,
)
from .turn_timing import IdleTimer, PauseJudge
from .voice import VoiceState, engines, ready_engines

if TYPE_CHECKING:
    from .session import EdgeSession

log = logging.getLogger(__name__)

MIN_COMMIT_MS = 100
"""Less caller audio than this has no words in it (the protocol's own minimum for a commit)."""
MAX_TRANSCRIBING = 4
"""Caller utterances of one session being transcribed at once; a client committing faster is refused
(a caller speaking in real time cannot: each utterance takes longer to say than to transcribe)."""
NO_AUDIO: Pcm16 = np.zeros(0, dtype=np.int16)
"""The audio of an utterance the edge did not keep (the upstream heard it)."""
KEEP_SPOKEN = 16
"""Assistant items whose audio timeline a session keeps for truncation (the newest)."""


BufferEvent = InputAudioBufferAppend | InputAudioBufferCommit | InputAudioBufferClear


def voice_error(exc: VoiceError, param: str | None = None) -> ProtocolError:
    return ProtocolError(exc.code, str(exc), param=param)


async def transcribe(stt: SpeechToText, samples: Pcm16) -> str:
    async def once() -> Any:
        yield samples

    text = ""
    async for event in stt.transcribe(once()):
        if isinstance(event, Transcript):
            text = event.text
    return text.strip()


def user_audio_item(item_id: str, transcript: str | None, status: str) -> dict[str, Any]:
    return {
        "id": item_id, "type": "message", "object": "realtime.item", "status": status, "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }  # fmt: skip


class AudioTurns:
    """The audio side of one :class:`~.session.EdgeSession`."""

    def __init__(self, session: EdgeSession) -> None:
        self.session = session
        self.config = VoiceState()
        self.spoken: OrderedDict[str, SpokenItem] = OrderedDict()
        """Audio timelines of the assistant items spoken on this connection (newest last)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.idle = IdleTimer(self._idle_timeout, lambda: self.config.buffer.session_ms)
        self.pauses = PauseJudge()
        self.responses_started = 0
        """Responses started on this connection (a committed utterance notes the count: see ``_transcribe_turn``)."""
        self._pending_item: str | None = None
        """The item of ``session.pending_input``: the utterance a later one joins the conversation after."""

    def preload(self) -> None:
        engines()

    async def aclose(self) -> None:
        await self.idle.aclose()
        await self.pauses.aclose()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the input buffer -------------------------------------------------------------------------------

    async def on_buffer_event(
        self, event: InputAudioBufferAppend | InputAudioBufferCommit | InputAudioBufferClear
    ) -> None:
        link = self.session.upstream
        if link is not None and await link.hears():  # upstream mode: its VAD and transcription hear the caller
            try:
                await link.forward(event, self.config)
                return
            except LocalAgentError:  # the link just failed (the caller has been told): the offline pipeline hears
                pass
        buffer = self.config.buffer
        if isinstance(event, InputAudioBufferAppend):
            await self._append(event.audio)
        elif isinstance(event, InputAudioBufferCommit):
            if buffer.duration_ms < MIN_COMMIT_MS:
                raise voice_error(EmptyAudioError(
                    f"buffer too small: {buffer.duration_ms:.0f} ms of audio; commit needs at least {MIN_COMMIT_MS} ms"
                ))  # fmt: skip
            item_id = self.config.speech_item_id or new_id("item")
            self._reset_vad()
            await self._commit(buffer.commit(), item_id, respond=False)
        else:
            buffer.clear()
            self._reset_vad()
            await self.session.send({"type": "input_audio_buffer.cleared", "event_id": new_event_id()})

    def _reset_vad(self) -> None:
        self.config.speech_item_id = None
        if self.config.vad is not None:
            self.config.vad.reset()

    async def _append(self, audio: str) -> None:
        config = self.config
        try:
            try:
                samples = config.buffer.append_base64(audio)  # a refused chunk leaves the buffer as it was
            except AudioTooLargeError as exc:
                if exc.unit != "ms" or config.speech_item_id is None:
                    raise
                await self._end_long_turn()
                samples = config.buffer.append_base64(audio)
        except VoiceError as exc:
            raise voice_error(exc, "audio") from None
        self.session.add_audio_seconds(samples.size / PCM_RATE)
        vad_config = config.turn_detection
        if vad_config is None:  # push-to-talk: the client commits
            return
        vad = config.detector(await ready_engines(), samples.size * 1000 / PCM_RATE)
        if vad is None:
            return
        detector = getattr(vad, "detector", None)
        pauses = detector if isinstance(detector, TurnDetector) else None
        for ev in vad.process(samples):
            if isinstance(ev, SpeechStarted):
                self.idle.cancel()
                config.speech_item_id = item_id = new_id("item")
                heard_at = time.monotonic()
                await self.session.send(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "event_id": new_event_id(),
                        "audio_start_ms": ev.audio_start_ms + config.vad_origin_ms,
                        "item_id": item_id,
                    }
                )
                if vad_config.interrupt_response:
                    await self.barge_in(heard_at)
            else:
                await self._speech_stopped(ev, pauses)
        if pauses is not None:  # transcribe at a pause, while the VAD waits for the turn's end
            stt = config.stt(await ready_engines())
            self.pauses.after_audio(
                pauses, config.buffer.samples, lambda audio: transcribe(stt, audio), self._speech_stopped
            )
        if config.speech_item_id is None:  # nobody speaks: keep only the prefix padding
            config.buffer.trim_before(config.buffer.session_ms - vad_config.prefix_padding_ms)

    async def _speech_stopped(self, ev: SpeechStopped, detector: TurnDetector | None = None) -> None:
        """The VAD ended the caller's turn (or semantic VAD's verdict did, on audio already heard)."""
        config = self.config
        item_id = config.speech_item_id or new_id("item")
        config.speech_item_id = None
        end_ms = ev.audio_end_ms + config.vad_origin_ms
        await self.session.send({
            "type": "input_audio_buffer.speech_stopped", "event_id": new_event_id(), "audio_end_ms": end_ms,
            "item_id": item_id,
        })  # fmt: skip
        try:
            utterance = config.buffer.commit_until(end_ms)
        except EmptyAudioError:
            return
        heard = self.pauses.transcript(detector) if detector is not None else None
        respond = config.turn_detection is not None and config.turn_detection.create_response
        await self._commit(utterance, item_id, respond=respond, heard=heard)

    async def _end_long_turn(self) -> None:
        """The caller has spoken for as long as the buffer holds (Whisper's window): end the turn there, as a
        pause would, so the VAD goes on hearing them (if they go on, that is the next turn and a barge-in)."""
        config = self.config
        item_id = config.speech_item_id or new_id("item")
        end_ms = round(config.buffer.session_ms)
        self._reset_vad()
        await self.session.send({
            "type": "input_audio_buffer.speech_stopped", "event_id": new_event_id(), "audio_end_ms": end_ms,
            "item_id": item_id,
        })  # fmt: skip
        respond = config.turn_detection is not None and config.turn_detection.create_response
        await self._commit(config.buffer.commit(), item_id, respond=respond)

    # --- server VAD's idle timeout ---------------------------------------------------------------------

    def on_response(self, response: asyncio.Task[None], writer: ResponseWriter) -> None:
        """A response started: no idle timeout while it runs; the count starts once its audio has played."""
        self.responses_started += 1
        self.idle.cancel()
        response.add_done_callback(lambda _: self._arm_idle(writer))

    def _arm_idle(self, writer: ResponseWriter) -> None:
        vad = self.config.turn_detection
        if not isinstance(vad, ServerVadConfig) or vad.idle_timeout_ms is None or self.config.speech_item_id:
            return  # no timeout configured, or the caller is speaking (a barge-in ended the response)
        played = writer.played_at() if isinstance(writer, AudioResponseWriter) else time.monotonic()
        self.idle.arm(played, vad.idle_timeout_ms)

    async def _idle_timeout(self, audio_start_ms: int, audio_end_ms: int) -> None:
        """The caller said nothing for ``idle_timeout_ms`` after the answer played: commit the silence as an
        empty caller turn and answer it (the agent sees an empty user message and can check on the caller)."""
        config, session = self.config, self.session
        vad = config.turn_detection
        busy = [t for t in (session._response, session.pending_input) if t is not None and not t.done()]
        if not isinstance(vad, ServerVadConfig) or busy:  # (speech cancels the timer: see _append)
            return
        item_id = new_id("item")
        await session.send({
            "type": "input_audio_buffer.timeout_triggered", "event_id": new_event_id(),
            "audio_start_ms": audio_start_ms, "audio_end_ms": audio_end_ms, "item_id": item_id,
        })  # fmt: skip
        silence = config.buffer.samples()
        config.buffer.clear()
        nothing: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        nothing.set_result("")  # the VAD heard no speech: nothing to transcribe
        await self._commit(silence, item_id, respond=vad.create_response, heard=nothing, silent=True)

    # --- a committed utterance becomes the caller's message ---------------------------------------------

    async def _commit(
        self, samples: Pcm16, item_id: str, *, respond: bool, heard: Awaitable[str] | None = None, silent: bool = False
    ) -> None:
        """``heard``: the transcript, when already known (semantic VAD's pause, an idle timeout's ``""``);
        ``silent``: an idle timeout's turn, kept and answered though nothing was said."""
        session = self.session
        if len(self._tasks) >= MAX_TRANSCRIBING:
            raise ProtocolError(
                "rate_limit_exceeded", f"{MAX_TRANSCRIBING} utterances are still being transcribed; commit later",
            )  # fmt: skip
        pending = session.pending_input
        if pending is not None and not pending.done() and self._pending_item is not None:
            previous: str | None = self._pending_item  # the caller's words before these, still being transcribed
        else:
            previous = session.state.history[-1].id if session.state.history else None
        await session.send({
            "type": "input_audio_buffer.committed", "event_id": new_event_id(), "previous_item_id": previous,
            "item_id": item_id,
        })  # fmt: skip
        added = user_audio_item(item_id, None, "in_progress")
        await session.send({
            "type": "conversation.item.added", "event_id": new_event_id(), "previous_item_id": previous, "item": added
        })  # fmt: skip
        task = asyncio.create_task(self._transcribe_turn(
            samples, item_id, session.pending_input, respond, heard=heard, silent=silent,
            responses=self.responses_started,
        ))  # fmt: skip
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        session.pending_input, self._pending_item = task, item_id

    async def committed(self, item_id: str, heard: Awaitable[str], *, respond: bool) -> None:
        """The upstream (Realtime API) committed the caller's utterance ``item_id``: announce it; ``heard`` is
        the upstream's transcript, which joins the conversation as the caller's message (no audio here)."""
        await self._commit(NO_AUDIO, item_id, respond=respond, heard=heard)

    async def _transcribe_turn(
        self, samples: Pcm16, item_id: str, before: asyncio.Task[None] | None, respond: bool,
        *, heard: Awaitable[str] | None = None, silent: bool = False, responses: int = 0,
    ) -> None:  # fmt: skip
        """``responses``: how many responses had started when the utterance was committed."""
        session = self.session
        try:
            started = time.perf_counter()
            text = (
                await heard if heard is not None else await transcribe(self.config.stt(await ready_engines()), samples)
            )
            log.info("caller audio transcribed", extra={
                "session_id": session.state.session_id, "audio_ms": round(samples.size * 1000 / PCM_RATE),
                "stt_ms": round((time.perf_counter() - started) * 1000), "words": len(text.split()),
                "from_pause": heard is not None,
            })  # fmt: skip
        except Exception as exc:  # the STT failed: the caller is told, the session goes on
            log.warning("transcription failed", extra={"session_id": session.state.session_id}, exc_info=True)
            err: TranscriptionError = {
                "type": "server_error",
                "code": "transcription_failed",
                "message": f"{type(exc).__name__}: {exc}",
            }
            await session.send({
                "type": "conversation.item.input_audio_transcription.failed", "event_id": new_event_id(),
                "item_id": item_id, "content_index": 0, "error": err,
            })  # fmt: skip
            await session.send({"type": "conversation.item.deleted", "event_id": new_event_id(), "item_id": item_id})
            return
        if before is not None:  # the caller's earlier words join the conversation first
            await asyncio.wait([before])
        usage: DurationUsage = {"type": "duration", "seconds": round(samples.size / PCM_RATE, 3)}
        if text:
            await session.send({
                "type": "conversation.item.input_audio_transcription.delta", "event_id": new_event_id(),
                "item_id": item_id, "content_index": 0, "delta": text,
            })  # fmt: skip
        await session.send({
            "type": "conversation.item.input_audio_transcription.completed", "event_id": new_event_id(),
            "item_id": item_id, "content_index": 0, "transcript": text, "usage": usage,
        })  # fmt: skip
        if not text and not silent:  # nothing was said: no empty message for the agents, no response
            await session.send({"type": "conversation.item.deleted", "event_id": new_event_id(), "item_id": item_id})
            return
        try:
            await self._add_user_message(item_id, text)
        except ProtocolError as err:
            await session.send(error_event(err))
            await session.send({"type": "conversation.item.deleted", "event_id": new_event_id(), "item_id": item_id})
            return
        if not respond:
            return
        playing = session._response
        if playing is not None and not playing.done():
            if self.responses_started != responses:  # it started after this commit, so it waited for these words
                return  # and answers them (waiting for it here would wait for itself)
            await asyncio.wait([playing])  # it started before these words (not interrupted): answer once it ends
        if session._writer is None or session._writer.done:
            try:  # as the client's response.create (the session's turn limit counts it)
                await session._response_create(ResponseCreate(type="response.create"))
            except ProtocolError as err:
                await session.send(error_event(err))

    async def _add_user_message(self, item_id: str, text: str) -> None:
        session = self.session
        text, to_fallback = await session.screen(text)
        item = MessageItem(id=item_id, role="user", text=text)
        fallback = session.deps.conductor.scenario.fallback_agent
        previous: str | None = None

        def add(current: SessionState) -> SessionState:
            nonlocal previous
            previous = current.history[-1].id if current.history else None
            update: dict[str, object] = {"history": [*current.history, item]}
            if to_fallback:
                update["active_agent"] = fallback
            return current.model_copy(update=update)

        await session._commit(add)
        done = user_audio_item(item_id, text, "completed")
        await session.send({
            "type": "conversation.item.done", "event_id": new_event_id(), "previous_item_id": previous, "item": done
        })  # fmt: skip

    async def transcribe_parts(self, message: UserMessage) -> str:
        """The text of a ``conversation.item.create`` message with ``input_audio`` parts: typed text
        and transcribed audio, in order."""
        stt = self.config.stt(await ready_engines())
        said: list[str] = []
        for index, part in enumerate(message.content):
            if part.type == "input_text":
                said.append(part.text)
                continue
            param = f"item.content.{index}.audio"
            if not part.audio:
                raise ProtocolError("invalid_value", "an input_audio part needs its audio (base64)", param=param)
            try:
                samples = self._decode(part.audio, self.config.input_format)
            except VoiceError as exc:
                raise voice_error(exc, param) from None
            self.session.add_audio_seconds(samples.size / PCM_RATE)
            said.append(await transcribe(stt, samples))
        return " ".join(s for s in said if s)

    def _decode(self, audio: str, fmt: AudioFormat) -> Pcm16:
        limits = self.config.buffer.limits
        samples = to_pcm16_24k(decode_base64(audio, max_bytes=limits.max_chunk_bytes), fmt)
        if samples.size * 1000 / PCM_RATE > limits.max_buffer_ms:
            ms = int(samples.size * 1000 / PCM_RATE)
            raise AudioTooLargeError(
                f"input_audio of {ms} ms is over the {limits.max_buffer_ms} ms limit",
                limit=limits.max_buffer_ms, actual=ms, unit="ms",
            )  # fmt: skip
        return samples

    # --- speaking, barge-in and truncation --------------------------------------------------------------

    async def writer(self, response_id: str, **kwargs: Any) -> ResponseWriter:
        tts = (await ready_engines()).tts
        while len(self.spoken) > KEEP_SPOKEN:
            self.spoken.popitem(last=False)
        writer = AudioResponseWriter
        if self.session.upstream is not None:  # the upstream agent's speech is relayed as it comes
            from .upstream import RelayResponseWriter

            writer = RelayResponseWriter
        return writer(
            self.session.send,
            response_id,
            tts=tts,
            fmt=self.config.output_format,
            spoken=self.spoken,
            on_audio=self.session.add_audio_seconds,
            **kwargs,
        )

    async def barge_in(self, heard_at: float) -> None:
        """The caller speaks: stop the response in flight, cut what was not heard from its items."""
        writer = self.session._writer
        running = writer is not None and not writer.done
        cut = set(writer.message_ids()) if writer is not None and running else set()
        await self.session._cancel_response("turn_detected")
        if running and isinstance(writer, AudioResponseWriter):  # its items never opened were never shown
            await self._drop_unshown(set(writer.unopened_ids()))
        heard = {item_id: s.heard_ms(heard_at) for item_id, s in self.spoken.items() if s.truncated_ms is None}
        for item_id, ms in heard.items():  # measured once the audio has stopped: its duration is what was sent
            spoken = self.spoken[item_id]
            unfinished = item_id in cut and not spoken.spoken_whole  # the interrupted answer's, even if none was sent
            if ms < spoken.duration_ms or unfinished:
                await self.truncate(item_id, ms)
            elif self.session.upstream is not None:  # all that was relayed was heard; the upstream made more
                await self.session.upstream.truncate(item_id, ms)

    async def _drop_unshown(self, item_ids: set[str]) -> None:
        """Take out of the history the interrupted answer's items whose audio never started: the caller was
        never sent them (no ``conversation.item.added``), so the conversation never held them, as in the
        Realtime API, where a cancelled response adds no item it had not started."""
        session = self.session
        if not any(i.id in item_ids for i in session.state.history):
            return

        def drop(current: SessionState) -> SessionState:
            return current.model_copy(update={"history": [i for i in current.history if i.id not in item_ids]})

        await session._commit(drop)
        if session.upstream is not None:  # an item the upstream made but the caller never got
            for item_id in item_ids:
                await session.upstream.delete(item_id)

    async def truncate(self, item_id: str, audio_end_ms: float) -> bool:
        """Cut an assistant item's stored text to the words its first ``audio_end_ms`` speak; False when
        the edge has no audio timeline for the item (a text answer, or spoken on another connection).

        ``audio_end_ms`` past the end of the item's audio (all of it that was sent, to the whole millisecond)
        is refused as the Realtime API refuses it (``invalid_value``, ``param`` ``audio_end_ms``): nothing is
        cut, here or upstream. A barge-in's own cut never is: it is at most what was sent."""
        spoken = self.spoken.get(item_id)
        if spoken is None:
            return False
        if audio_end_ms > math.ceil(spoken.duration_ms):
            raise ProtocolError(
                "invalid_value",
                f"Audio content of {spoken.duration_ms:.0f}ms is already shorter than {audio_end_ms:.0f}ms",
                param="audio_end_ms",
            )
        ms = min(float(audio_end_ms), spoken.duration_ms)  # under a millisecond past its end: its end
        text = spoken.text_until(ms)
        spoken.truncated_ms = ms
        session = self.session

        def cut(current: SessionState) -> SessionState:
            history = list(current.history)
            for i, item in enumerate(history):
                if item.id == item_id and items.is_assistant_message(item):
                    history[i] = item.model_copy(update={"text": text})
            return current.model_copy(update={"history": history})

        if any(i.id == item_id for i in session.state.history):  # a cancelled turn stored nothing
            await session._commit(cut)
        if session.upstream is not None:  # the upstream model learns what was heard of what it said
            await session.upstream.truncate(item_id, ms)
        await session.send({
            "type": "conversation.item.truncated", "event_id": new_event_id(), "item_id": item_id, "content_index": 0,
            "audio_end_ms": int(ms),
        })  # fmt: skip
        return True
