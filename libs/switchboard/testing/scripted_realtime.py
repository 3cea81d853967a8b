"""A scripted upstream OpenAI Realtime (GA) WebSocket server: the test double of the Realtime API.

The edge's upstream speech-to-speech mode (docs/voice.md) talks to it exactly as to OpenAI: the same
URL shape (``<base>/realtime?model=...``), bearer auth at the handshake (a wrong key gets HTTP 401),
and the GA events: ``session.update``/``session.updated``, ``input_audio_buffer.append/commit/clear``,
server VAD (``speech_started``/``speech_stopped`` -> ``committed`` -> the caller's item ->
``conversation.item.input_audio_transcription.completed``), ``conversation.item.create/truncate/delete``,
``response.create``/``response.cancel`` and a response's events (``response.output_audio.delta``,
``response.output_audio_transcript.delta``, ``response.function_call_arguments.done``, ...,
``response.done``).

Tests script it: :meth:`ScriptedRealtimeServer.script` queues :class:`ScriptedResponse` objects (one
per ``response.create``), :meth:`ScriptedRealtimeServer.script_transcripts` queues what the caller
"said" (one per committed utterance). Its VAD is an energy gate: a 100 ms chunk with a sample above
``SPEECH_PEAK`` is speech. Every client event is recorded in ``received``.
"""

from __future__ import annotations

import array
import asyncio
import base64
import itertools
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from ..local.asgi_server import InProcessServer

RATE = 24000
SPEECH_PEAK = 1000
"""A PCM16 sample louder than this makes its chunk speech (the scripted VAD)."""
TONE = 440.0


@dataclass
class ScriptedResponse:
    """One scripted answer of the upstream model: ``text`` spoken (audio and transcript), then an
    optional function call (``name``, arguments)."""

    text: str = ""
    function_call: tuple[str, dict[str, Any]] | None = None
    ms_per_word: int = 250
    """Audio per spoken word (a tone)."""
    chunk_ms: int = 100
    pace_s: float = 0.0
    """Wait between audio chunks (0: as fast as the socket takes them; 0.1 for real time)."""
    delay_s: float = 0.0
    """Wait before ``response.created`` (a slow model)."""


def tone(ms: int, *, amplitude: int = 4000) -> bytes:
    """PCM16 24 kHz of a 440 Hz tone."""
    n = RATE * ms // 1000
    return array.array("h", (int(amplitude * math.sin(2 * math.pi * TONE * i / RATE)) for i in range(n))).tobytes()


@dataclass
class _Connection:
    ws: WebSocket
    session: dict[str, Any]
    received: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    buffer_ms: float = 0.0
    clock_ms: float = 0.0
    speech_item: str | None = None
    speech_start_ms: float = 0.0
    quiet_ms: float = 0.0
    response: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, event: dict[str, Any]) -> None:
        async with self.lock:
            await self.ws.send_text(json.dumps(event))


class ScriptedRealtimeServer(InProcessServer):
    """Serves ``GET /v1/realtime`` (WebSocket) on 127.0.0.1; ``api_key`` set: only that bearer token."""

    def __init__(self, *, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self.connections: list[_Connection] = []
        self.refused = 0
        """Handshakes refused for a wrong key."""
        self.audio_sent: list[float] = []
        """``time.monotonic()`` as each ``response.output_audio.delta`` was sent (latency measurements)."""
        self._responses: deque[ScriptedResponse] = deque()
        self._transcripts: deque[str] = deque()
        self._ids = itertools.count(1)
        self.changed = asyncio.Condition()
        self.app = FastAPI()
        self.app.add_api_websocket_route("/v1/realtime", self._serve)
        super().__init__(self.app, host=host, port=port)

    @property
    def url(self) -> str:
        """The base URL to give a client (``ws://host:port/v1``); the client adds ``/realtime``."""
        return f"ws://{self.host}:{self.port}/v1"

    def script(self, *responses: ScriptedResponse) -> None:
        self._responses.extend(responses)

    def script_transcripts(self, *texts: str) -> None:
        self._transcripts.extend(texts)

    async def drop(self) -> None:
        """Close every open connection (the upstream going away mid-session)."""
        for conn in self.connections:
            await conn.ws.close(code=1011, reason="scripted drop")

    def received(self, kind: str) -> list[dict[str, Any]]:
        """Client events of ``kind`` over all connections, in order."""
        return [e for c in self.connections for e in c.received if e.get("type") == kind]

    async def wait_for(self, kind: str, count: int = 1, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``count`` client events of ``kind`` have arrived."""
        async with asyncio.timeout(timeout_s), self.changed:
            await self.changed.wait_for(lambda: len(self.received(kind)) >= count)
        return self.received(kind)

    def _id(self, prefix: str) -> str:
        return f"{prefix}_scripted{next(self._ids):04d}"

    async def _serve(self, ws: WebSocket) -> None:
        scheme, _, token = ws.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token or (self.api_key is not None and token != self.api_key):
            self.refused += 1
            body = {"error": {"type": "invalid_request_error", "code": "invalid_api_key",
                              "message": "Incorrect API key provided."}}  # fmt: skip
            await ws.send_denial_response(JSONResponse(body, status_code=401))
            return
        await ws.accept()
        session = {
            "type": "realtime", "object": "realtime.session", "id": self._id("sess"),
            "model": ws.query_params.get("model", ""), "output_modalities": ["audio"], "instructions": "",
            "tools": [], "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE},
                                             "turn_detection": {"type": "server_vad", "silence_duration_ms": 500,
                                                                "create_response": True}}},
        }  # fmt: skip
        conn = _Connection(ws, session)
        self.connections.append(conn)
        await conn.send({"type": "session.created", "event_id": self._id("event"), "session": session})
        try:
            while True:
                event = json.loads(await ws.receive_text())
                async with self.changed:
                    conn.received.append(event)
                    self.changed.notify_all()
                await self._on_event(conn, event)
        except WebSocketDisconnect:
            pass
        finally:
            if conn.response is not None:
                conn.response.cancel()

    async def _on_event(self, conn: _Connection, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "session.update":
            conn.session.update({k: v for k, v in event.get("session", {}).items() if k != "type"})
            await conn.send({"type": "session.updated", "session": conn.session})
        elif kind == "input_audio_buffer.append":
            await self._append(conn, base64.b64decode(event.get("audio", "")))
        elif kind == "input_audio_buffer.commit":
            if conn.buffer_ms < 100:
                await self._error(conn, "input_audio_buffer_commit_empty", "buffer too small", event)
                return
            await self._commit(conn, self._id("item"), conn.buffer_ms)
        elif kind == "input_audio_buffer.clear":
            conn.buffer_ms, conn.speech_item = 0.0, None
            await conn.send({"type": "input_audio_buffer.cleared"})
        elif kind == "conversation.item.create":
            item = dict(event.get("item", {}))
            item.setdefault("id", self._id("item"))
            previous = conn.items[-1]["id"] if conn.items else None
            conn.items.append(item)
            for done in ("conversation.item.added", "conversation.item.done"):
                await conn.send({"type": done, "previous_item_id": previous, "item": item})
        elif kind == "conversation.item.truncate":
            await conn.send({"type": "conversation.item.truncated", "item_id": event.get("item_id"),
                             "content_index": 0, "audio_end_ms": event.get("audio_end_ms")})  # fmt: skip
        elif kind == "conversation.item.delete":
            conn.items = [i for i in conn.items if i.get("id") != event.get("item_id")]
            await conn.send({"type": "conversation.item.deleted", "item_id": event.get("item_id")})
        elif kind == "response.create":
            if conn.response is not None and not conn.response.done():
                await self._error(conn, "conversation_already_has_active_response", "a response is active", event)
                return
            conn.response = asyncio.create_task(self._respond(conn, event.get("response") or {}))
        elif kind == "response.cancel":
            if conn.response is None or conn.response.done():
                await self._error(conn, "response_cancel_not_active", "no active response found", event)
                return
            conn.response.cancel()
            await asyncio.gather(conn.response, return_exceptions=True)
        else:
            await self._error(conn, "unknown_event", f"unknown event type {kind!r}", event)

    async def _error(self, conn: _Connection, code: str, message: str, event: dict[str, Any]) -> None:
        await conn.send({"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message,
                                                    "event_id": event.get("event_id")}})  # fmt: skip

    def _vad(self, conn: _Connection) -> dict[str, Any] | None:
        detection: dict[str, Any] | None = conn.session.get("audio", {}).get("input", {}).get("turn_detection")
        return detection

    async def _append(self, conn: _Connection, audio: bytes) -> None:
        samples = array.array("h", audio[: len(audio) // 2 * 2])
        ms = len(samples) * 1000 / RATE
        conn.buffer_ms += ms
        conn.clock_ms += ms
        vad = self._vad(conn)
        if vad is None:
            return
        loud = bool(samples) and max(abs(s) for s in samples) > SPEECH_PEAK
        if conn.speech_item is None and loud:
            conn.speech_item, conn.speech_start_ms, conn.quiet_ms = self._id("item"), conn.clock_ms - ms, 0.0
            await conn.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": int(conn.speech_start_ms),
                             "item_id": conn.speech_item})  # fmt: skip
            if vad.get("interrupt_response", True) and conn.response is not None and not conn.response.done():
                conn.response.cancel()
        elif conn.speech_item is not None:
            conn.quiet_ms = 0.0 if loud else conn.quiet_ms + ms
            if conn.quiet_ms >= vad.get("silence_duration_ms", 500):
                item_id, conn.speech_item = conn.speech_item, None
                await conn.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": int(conn.clock_ms),
                                 "item_id": item_id})  # fmt: skip
                await self._commit(conn, item_id, conn.clock_ms - conn.speech_start_ms)
                if vad.get("create_response", True):
                    conn.response = asyncio.create_task(self._respond(conn, {}))

    async def _commit(self, conn: _Connection, item_id: str, ms: float) -> None:
        conn.buffer_ms = 0.0
        previous = conn.items[-1]["id"] if conn.items else None
        item = {"id": item_id, "type": "message", "object": "realtime.item", "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": None}]}  # fmt: skip
        conn.items.append(item)
        await conn.send({"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id})
        await conn.send({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        await conn.send({"type": "conversation.item.done", "previous_item_id": previous, "item": item})
        text = self._transcripts.popleft() if self._transcripts else ""
        ids = {"item_id": item_id, "content_index": 0}
        if text:
            await conn.send({"type": "conversation.item.input_audio_transcription.delta", **ids, "delta": text})
        await conn.send({"type": "conversation.item.input_audio_transcription.completed", **ids, "transcript": text,
                         "usage": {"type": "duration", "seconds": round(ms / 1000, 3)}})  # fmt: skip

    async def _respond(self, conn: _Connection, options: dict[str, Any]) -> None:
        script = self._responses.popleft() if self._responses else ScriptedResponse(text="Script exhausted.")
        response_id = self._id("resp")
        modalities = options.get("output_modalities") or conn.session.get("output_modalities") or ["audio"]
        output: list[dict[str, Any]] = []
        base = {"id": response_id, "object": "realtime.response", "output_modalities": modalities}
        status = "completed"
        if script.delay_s:
            await asyncio.sleep(script.delay_s)
        await conn.send({"type": "response.created", "response": base | {"status": "in_progress", "output": []}})
        try:
            if script.text:
                await self._message(conn, script, response_id, output, audio=modalities == ["audio"])
            if script.function_call is not None:
                await self._function_call(conn, script.function_call, response_id, output)
        except asyncio.CancelledError:
            status = "cancelled"
        words = len(script.text.split())
        usage = {"total_tokens": words + 10, "input_tokens": 10, "output_tokens": words}
        details = (
            {"status_details": {"type": "cancelled", "reason": "client_cancelled"}} if status == "cancelled" else {}
        )
        done = base | {"status": status, "output": output, "usage": usage} | details
        await conn.send({"type": "response.done", "response": done})

    async def _message(
        self, conn: _Connection, script: ScriptedResponse, response_id: str, output: list[dict[str, Any]], *,
        audio: bool,
    ) -> None:  # fmt: skip
        item_id = self._id("item")
        kind = "output_audio" if audio else "output_text"
        item: dict[str, Any] = {"id": item_id, "type": "message", "object": "realtime.item", "status": "in_progress",
                "role": "assistant", "content": []}  # fmt: skip
        ids = {"response_id": response_id, "output_index": len(output)}
        previous = conn.items[-1]["id"] if conn.items else None
        await conn.send({"type": "response.output_item.added", **ids, "item": item})
        await conn.send({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        part = {"type": kind, "transcript": ""} if audio else {"type": kind, "text": ""}
        ids |= {"item_id": item_id, "content_index": 0}
        await conn.send({"type": "response.content_part.added", **ids, "part": part})
        said: list[str] = []
        chunk = base64.b64encode(tone(script.chunk_ms)).decode()
        try:
            for n, word in enumerate(script.text.split()):
                delta = word if n == 0 else f" {word}"
                said.append(delta)
                if not audio:
                    await conn.send({"type": "response.output_text.delta", **ids, "delta": delta})
                    continue
                await conn.send({"type": "response.output_audio_transcript.delta", **ids, "delta": delta})
                for _ in range(max(1, script.ms_per_word // script.chunk_ms)):
                    self.audio_sent.append(time.monotonic())
                    await conn.send({"type": "response.output_audio.delta", **ids, "delta": chunk})
                    if script.pace_s:
                        await asyncio.sleep(script.pace_s)
        finally:
            text = "".join(said)
            part = {"type": kind, "transcript": text} if audio else {"type": kind, "text": text}
            item = item | {"status": "completed", "content": [part]}
            output.append(item)
            conn.items.append(item)
            await asyncio.shield(self._close_message(conn, ids, item, part, text, audio))

    async def _close_message(
        self, conn: _Connection, ids: dict[str, Any], item: dict[str, Any], part: dict[str, Any], text: str,
        audio: bool,
    ) -> None:  # fmt: skip
        if audio:
            await conn.send({"type": "response.output_audio.done", **ids})
            await conn.send({"type": "response.output_audio_transcript.done", **ids, "transcript": text})
        else:
            await conn.send({"type": "response.output_text.done", **ids, "text": text})
        await conn.send({"type": "response.content_part.done", **ids, "part": part})
        item_ids = {k: ids[k] for k in ("response_id", "output_index")}
        await conn.send({"type": "response.output_item.done", **item_ids, "item": item})
        await conn.send({"type": "conversation.item.done", "previous_item_id": None, "item": item})

    async def _function_call(
        self, conn: _Connection, call: tuple[str, dict[str, Any]], response_id: str, output: list[dict[str, Any]]
    ) -> None:
        name, args = call
        arguments = json.dumps(args)
        item_id, call_id = self._id("item"), self._id("call")
        item = {"id": item_id, "type": "function_call", "object": "realtime.item", "status": "in_progress",
                "name": name, "call_id": call_id, "arguments": ""}  # fmt: skip
        ids = {"response_id": response_id, "output_index": len(output)}
        await conn.send({"type": "response.output_item.added", **ids, "item": item})
        await conn.send({"type": "conversation.item.added", "previous_item_id": None, "item": item})
        call_ids = ids | {"item_id": item_id, "call_id": call_id}
        await conn.send({"type": "response.function_call_arguments.delta", **call_ids, "delta": arguments})
        await conn.send({"type": "response.function_call_arguments.done", **call_ids, "name": name,
                         "arguments": arguments})  # fmt: skip
        item = item | {"status": "completed", "arguments": arguments}
        output.append(item)
        conn.items.append(item)
        await conn.send({"type": "response.output_item.done", **ids, "item": item})
        await conn.send({"type": "conversation.item.done", "previous_item_id": None, "item": item})
