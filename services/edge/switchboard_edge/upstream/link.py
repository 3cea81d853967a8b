"""One session's WebSocket to the upstream OpenAI Realtime API (GA protocol): the upstream mode's ear and voice.

While it is up, the caller's audio goes upstream (validated and converted to PCM16 24 kHz at the edge),
the upstream's server VAD and transcription find the caller's turns, and the edge turns each transcript
into the caller's message exactly as its own STT would (input guardrails, the session's history), then
starts the response. The upstream model never answers on its own (``create_response: false``,
``interrupt_response: false``): the edge decides when it speaks (:mod:`.agent`) and when it is cut off
(barge-in), so guardrails, handoffs and the audit stay in Switchboard.

When the link cannot open (unreachable, refused key) or drops, the caller gets one ``error`` event
(``upstream_unavailable``, ``upstream_auth_failed`` or ``upstream_closed``) and the session goes on
without it: the edge's offline pipeline hears the caller, and the upstream agent's turns go to the
scenario's fallback agent (the conductor's "agent did not answer" path, audited).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from switchboard.agents import AgentConfig
from switchboard.runtime.loop import platform_tools
from switchboard.schemas import ConversationItem, FunctionCallItem, FunctionCallOutputItem, MessageItem
from switchboard.voice import PCM16_24K, PCM_RATE, VoiceError, decode_base64, encode_base64, to_pcm16_24k

from ..client_events import InputAudioBufferAppend, InputAudioBufferClear, InputAudioBufferCommit
from ..orchestration import LocalAgentError
from ..protocol import ProtocolError, error_event, new_event_id, new_id
from ..server_events import ErrorBody, ServerEvent

if TYPE_CHECKING:
    from ..session import EdgeSession
    from ..voice import VoiceState

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://api.openai.com/v1"
URL_ENV = "SWITCHBOARD_REALTIME_URL"
DEFAULT_TRANSCRIPTION: dict[str, Any] = {"model": "gpt-4o-mini-transcribe"}
QUIET_ERRORS = {"response_cancel_not_active"}
"""Upstream errors that only say a cancel crossed the response's end: nothing for the caller."""

Event = dict[str, Any]


class UpstreamError(LocalAgentError):
    """The upstream Realtime API is not usable for this session; ``code`` is the caller's ``error.code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class UpstreamConfig:
    """Where and how the upstream agent connects (from its ``model`` block and the environment)."""

    url: str
    """The WebSocket base; the link connects to ``<url>/realtime?model=<model>``."""
    api_key: str
    model: str
    transcription: dict[str, Any]
    voice: str | None = None
    connect_timeout_s: float = 5.0

    @classmethod
    def of(cls, agent: AgentConfig, env: Mapping[str, str] | None = None) -> UpstreamConfig:
        env = os.environ if env is None else env
        settings = agent.model.settings
        return cls(
            url=(agent.model.base_url or env.get(URL_ENV) or DEFAULT_URL).rstrip("/"),
            api_key=env.get("OPENAI_API_KEY", ""), model=agent.model.name,
            transcription=dict(settings.get("transcription", DEFAULT_TRANSCRIPTION)), voice=settings.get("voice"),
            connect_timeout_s=float(settings.get("connect_timeout_s", 5.0)),
        )  # fmt: skip


def upstream_item(item: ConversationItem) -> Event | None:
    """A Switchboard history item as a GA ``conversation.item.create`` item (same id)."""
    if isinstance(item, MessageItem):
        kind = "output_text" if item.role == "assistant" else "input_text"
        return {"id": item.id, "type": "message", "role": item.role, "content": [{"type": kind, "text": item.text}]}
    if isinstance(item, FunctionCallItem):
        return {"id": item.id, "type": "function_call", "call_id": item.call_id, "name": item.name,
                "arguments": item.arguments}  # fmt: skip
    if isinstance(item, FunctionCallOutputItem):
        return {"id": item.id, "type": "function_call_output", "call_id": item.call_id, "output": item.output}
    return None


class UpstreamLink:
    """The session's one upstream WebSocket: connects once, lazily; after a failure it stays failed."""

    def __init__(self, session: EdgeSession, agent: AgentConfig, config: UpstreamConfig) -> None:
        self.session = session
        self.agent = agent
        self.config = config
        self.failed: UpstreamError | None = None
        self.known: set[str] = set()
        """Ids of the items the upstream conversation holds (the caller's audio, its own, those synced)."""
        self.voiced: set[str] = set()
        """Assistant items the upstream spoke (truncated upstream at barge-in)."""
        self._ws: ClientConnection | None = None
        self._opening: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._response: asyncio.Queue[Event | UpstreamError] | None = None
        self._transcripts: dict[str, asyncio.Future[str]] = {}
        self._speech_start: dict[str, int] = {}
        self._closing = False
        self._handlers: dict[str, Callable[[Event], Any]] = {
            "error": self._on_error,
            "input_audio_buffer.speech_started": self._on_speech_started,
            "input_audio_buffer.speech_stopped": self._relay,
            "input_audio_buffer.cleared": self._relay,
            "input_audio_buffer.committed": self._on_committed,
            "conversation.item.input_audio_transcription.completed": self._on_transcript,
            "conversation.item.input_audio_transcription.failed": self._on_transcript,
            "conversation.item.added": self._on_item,
            "conversation.item.done": self._on_item,
            "conversation.item.deleted": self._on_deleted,
        }

    # --- the connection ---------------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._ws is not None and self.failed is None

    def start(self) -> None:
        """Connect in the background (the session enabled audio), or send the changed session settings."""
        if self.failed is not None:
            return
        task = asyncio.create_task(self._refresh() if self._ws is not None else self._connect_quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_quietly(self) -> None:
        try:
            await self.connect()
        except UpstreamError:
            pass  # the caller has been told; the session goes on without the upstream

    async def _refresh(self) -> None:
        try:
            await self.send(self.session_update())
        except UpstreamError:
            pass

    async def connect(self) -> None:
        """Open the link if it is not open; ``UpstreamError`` if it cannot be (the caller is told once)."""
        if self.failed is not None:
            raise self.failed
        if self._ws is not None:
            return
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        await asyncio.shield(self._opening)

    async def hears(self) -> bool:
        """True when the caller's audio goes upstream (connecting first if needed)."""
        try:
            await self.connect()
        except UpstreamError:
            return False
        return True

    async def _open(self) -> None:
        config = self.config
        url = f"{config.url}/realtime?model={quote(config.model)}"
        try:
            async with asyncio.timeout(config.connect_timeout_s):
                ws = await connect(
                    url, additional_headers={"Authorization": f"Bearer {config.api_key}"}, max_size=None,
                    compression=None, user_agent_header=None,
                )  # fmt: skip
        except InvalidStatus as exc:
            status = exc.response.status_code
            code = "upstream_auth_failed" if status in (401, 403) else "upstream_unavailable"
            what = "refused the API key" if status in (401, 403) else "refused the connection"
            raise await self._fail(code, f"the OpenAI Realtime API at {config.url} {what} (HTTP {status})") from exc
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            raise await self._fail(
                "upstream_unavailable", f"cannot reach the OpenAI Realtime API at {config.url} ({reason})"
            ) from exc
        self._ws = ws
        await self.send(self.session_update())
        self._reader = asyncio.create_task(self._read(ws))
        log.info("upstream realtime connected", extra={"session_id": self.session.state.session_id,
                                                       "agent": self.agent.name})  # fmt: skip

    async def _fail(self, code: str, message: str) -> UpstreamError:
        """Mark the link failed (once), tell the caller, and fail whatever waited on it."""
        if self.failed is not None:
            return self.failed
        fallback = self.session.deps.conductor.scenario.fallback_agent
        err = UpstreamError(
            code, f"{message}; this session goes on without it: the offline speech pipeline hears the caller and "
            f"the {self.agent.name} agent's turns go to the {fallback} agent",
        )  # fmt: skip
        self.failed = err
        log.warning("upstream realtime failed", extra={"session_id": self.session.state.session_id, "code": code,
                                                       "error": message})  # fmt: skip
        if self._response is not None:
            self._response.put_nowait(err)
        for waiting in self._transcripts.values():
            if not waiting.done():
                waiting.set_exception(err)
        try:
            await self.session.send({"type": "error", "event_id": new_event_id(), "error": {
                "type": "server_error", "code": code, "message": err.message, "param": None}})  # fmt: skip
        except Exception:  # the caller is gone
            log.debug("upstream failure not reported: caller gone", exc_info=True)
        return err

    async def aclose(self) -> None:
        self._closing = True
        for task in [*self._tasks, *([self._opening] if self._opening else [])]:
            task.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def send(self, event: Event) -> None:
        ws = self._ws
        if ws is None or self.failed is not None:
            raise self.failed or UpstreamError("upstream_unavailable", "the upstream link is not open")
        try:
            await ws.send(orjson.dumps(event).decode())
        except ConnectionClosed as exc:
            raise await self._fail("upstream_closed", f"the OpenAI Realtime connection closed ({exc})") from exc

    def session_update(self) -> Event:
        """The upstream session: the agent's instructions and platform tools, PCM16 24 kHz both ways, the
        caller's turn detection with the edge deciding responses, transcription of the caller."""
        audio = self.session.audio
        modalities = ["audio"] if audio is not None else ["text"]
        tools = [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
                 for t in platform_tools(self.agent)]  # fmt: skip
        session: Event = {
            "type": "realtime", "model": self.config.model, "instructions": self.agent.instructions,
            "output_modalities": modalities, "tools": tools, "tool_choice": "auto",
        }  # fmt: skip
        if audio is not None:
            vad = audio.config.turn_detection
            turn = None if vad is None else vad.model_dump() | {"create_response": False, "interrupt_response": False}
            output: Event = {"format": {"type": "audio/pcm", "rate": PCM_RATE}}
            if self.config.voice:
                output["voice"] = self.config.voice
            session["audio"] = {
                "input": {"format": {"type": "audio/pcm", "rate": PCM_RATE}, "turn_detection": turn,
                          "transcription": self.config.transcription},
                "output": output,
            }  # fmt: skip
        return {"type": "session.update", "session": session}

    # --- caller audio up ---------------------------------------------------------------------------------

    async def forward(
        self, event: InputAudioBufferAppend | InputAudioBufferCommit | InputAudioBufferClear, voice: VoiceState
    ) -> None:
        """The caller's buffer event, upstream: audio checked (strict base64, limits, format) and sent as PCM16
        24 kHz; a bad chunk is refused with the same error the offline pipeline gives."""
        if isinstance(event, InputAudioBufferAppend):
            limits = voice.buffer.limits
            try:
                samples = to_pcm16_24k(decode_base64(event.audio, max_bytes=limits.max_chunk_bytes), voice.input_format)
            except VoiceError as exc:
                raise ProtocolError(exc.code, str(exc), param="audio") from None
            self.session.add_audio_seconds(samples.size / PCM_RATE)
            audio = event.audio if voice.input_format == PCM16_24K else encode_base64(samples.tobytes())
            await self.send({"type": "input_audio_buffer.append", "audio": audio})
        elif isinstance(event, InputAudioBufferCommit):
            await self.send({"type": "input_audio_buffer.commit", "event_id": event.event_id or new_id("event")})
        else:
            await self.send({"type": "input_audio_buffer.clear"})

    # --- upstream events down ----------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                event: Event = orjson.loads(raw)
                kind = str(event.get("type", ""))
                if kind.startswith("response."):
                    if kind == "response.output_audio.delta":
                        self.voiced.add(str(event.get("item_id")))
                    if self._response is not None:
                        self._response.put_nowait(event)
                    continue
                handler = self._handlers.get(kind)
                if handler is not None:
                    await handler(event)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("upstream event failed", extra={"session_id": self.session.state.session_id})
        if not self._closing:
            await self._fail("upstream_closed", "the OpenAI Realtime connection closed")

    async def _relay(self, event: Event) -> None:
        # The upstream's own GA event (speech_started/stopped, cleared: see _handlers), passed on as it came:
        # its type is known at runtime only, so mypy cannot check it field by field (nor the upstream's error
        # body in _on_error).
        relayed = {"type": event["type"], "event_id": new_event_id(), **{k: v for k, v in event.items() if k != "type"}}
        await self.session.send(cast(ServerEvent, relayed))

    async def _on_error(self, event: Event) -> None:
        error = event.get("error") or {}
        if self._response is not None:
            self._response.put_nowait(event)
        elif error.get("code") not in QUIET_ERRORS:  # e.g. the caller committed an empty buffer
            await self.session.send({"type": "error", "event_id": new_event_id(), "error": cast(ErrorBody, error)})

    async def _on_speech_started(self, event: Event) -> None:
        self._speech_start[event["item_id"]] = int(event.get("audio_start_ms", 0))
        heard_at = asyncio.get_running_loop().time()
        await self._relay(event)
        audio = self.session.audio
        vad = audio.config.turn_detection if audio is not None else None
        if audio is not None and vad is not None and vad.interrupt_response:
            await audio.barge_in(heard_at)

    async def _on_committed(self, event: Event) -> None:
        item_id = str(event["item_id"])
        self._transcripts[item_id] = asyncio.get_running_loop().create_future()
        self.known.add(item_id)
        audio = self.session.audio
        if audio is None:
            return
        vad = audio.config.turn_detection
        respond = vad is not None and vad.create_response and item_id in self._speech_start
        try:
            await audio.committed(item_id, self._transcripts[item_id], respond=respond)
        except ProtocolError as err:
            await self.session.send(error_event(err))

    async def _on_transcript(self, event: Event) -> None:
        waiting = self._transcripts.pop(str(event.get("item_id")), None)
        if waiting is None or waiting.done():
            return
        if event["type"].endswith(".completed"):
            waiting.set_result(str(event.get("transcript") or "").strip())
        else:
            message = (event.get("error") or {}).get("message", "transcription failed")
            waiting.set_exception(UpstreamError("transcription_failed", f"upstream transcription: {message}"))

    async def _on_item(self, event: Event) -> None:
        item = event.get("item") or {}
        if item.get("id"):
            self.known.add(str(item["id"]))

    async def _on_deleted(self, event: Event) -> None:
        self.known.discard(str(event.get("item_id")))

    # --- what the agent turn uses ------------------------------------------------------------------------

    def open_response(self) -> asyncio.Queue[Event | UpstreamError]:
        """The queue the next response's events (and errors) arrive on; one response at a time."""
        self._response = asyncio.Queue()
        return self._response

    def close_response(self) -> None:
        self._response = None

    async def sync(self, history: Sequence[ConversationItem]) -> None:
        """Give the upstream conversation the items it lacks (other agents' answers, typed messages, handoff
        outputs), each after the one before it, so the upstream agent hears the whole conversation."""
        previous = "root"
        for item in history:
            if item.id not in self.known:
                payload = upstream_item(item)
                if payload is None:
                    continue
                await self.send({"type": "conversation.item.create", "previous_item_id": previous, "item": payload})
                self.known.add(item.id)
            previous = item.id

    async def delete(self, item_id: str) -> None:
        """An item the upstream made was never relayed to the caller (a barge-in stopped the answer first):
        it leaves the upstream conversation, as it left Switchboard's."""
        if item_id not in self.known or not self.up:
            return
        try:
            await self.send({"type": "conversation.item.delete", "item_id": item_id})
        except UpstreamError:
            pass  # the link just failed: the caller has been told, and nothing upstream is left to delete

    async def truncate(self, item_id: str, audio_end_ms: float) -> None:
        """An item the upstream spoke was cut at barge-in: the upstream model learns what was heard."""
        if item_id not in self.voiced or not self.up:
            return
        try:
            await self.send({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                             "audio_end_ms": int(audio_end_ms)})  # fmt: skip
        except UpstreamError:
            pass  # the link just failed: the caller has been told, and nothing upstream is left to cut
