"""A scripted OpenAI-compatible HTTP server: a test double that speaks the real wire protocol.

Tests enqueue :class:`ScriptedReply` objects (FIFO) and point a real client at ``base_url``;
every request body is recorded in ``requests``. When the queue is empty the optional
``responder`` answers; without one the server answers HTTP 500 ("script exhausted").
Token usage is counted in whitespace-separated words (see :func:`count_tokens`). Like OpenAI, it answers
400 to messages whose tool calls and tool messages do not pair up (:func:`tool_message_error`).
``POST /v1/moderations`` answers scripted :class:`ScriptedModeration` verdicts the same way (their own
queue, ``moderation_responder``, ``moderation_requests``), in the real response's shape.

Manual use: ``python -m switchboard.testing.scripted_openai --port 8000 --echo``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..local.asgi_server import InProcessServer

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


@dataclass
class ScriptedReply:
    """One scripted answer: streamed ``text`` and/or ``tool_calls`` (name, arguments), or an error."""

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    """Non-200 answers with an OpenAI-style error body and this status."""
    retry_after: str | None = None
    """The ``Retry-After`` header of that error answer (seconds, or an HTTP date)."""
    delay_s: float = 0.0
    """Wait this long before answering (a slow model)."""
    chunk_size: int = 8
    """Text and arguments are streamed in chunks of this many characters."""
    stall_after: int | None = None
    """Stream this many characters of ``text``, then go silent for ``stall_s`` before the rest (a model, or
    a replica, that dies mid-answer)."""
    stall_s: float = 0.0
    cut: bool = False
    """End the stream cleanly right after the text and tool calls: no ``finish_reason``, usage or ``[DONE]``
    (a server, or a proxy, that lost the rest of the answer)."""
    omit_finish: bool = False
    """Send no ``finish_reason`` chunk, but the usage chunk and ``[DONE]`` (some OpenAI-compatible proxies)."""
    hang_after_finish_s: float = 0.0
    """After the ``finish_reason`` chunk, go silent this long before the usage chunk and ``[DONE]``."""
    repeat_call_fields: bool = False
    """Repeat each tool call's ``id``, ``type`` and name in every chunk of its arguments, as some OpenAI-compatible
    servers do (DeepSeek, Qwen, Fireworks, the LiteLLM proxy); OpenAI sends them in the first chunk only."""
    raw: list[bytes] = field(default_factory=list)
    """Sent as they are after the text, before the tool calls: malformed SSE, bad JSON, non-UTF-8 bytes."""
    tail_raw: list[bytes] = field(default_factory=list)
    """Sent as they are after the ``finish_reason`` chunk, before the usage chunk."""


Responder = Callable[[dict[str, Any]], ScriptedReply]

MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)  # fmt: skip
"""The categories of OpenAI's moderation models (``omni-moderation-latest``)."""


@dataclass
class ScriptedModeration:
    """One scripted moderation verdict: the ``categories`` flagged (none: not flagged), or an error."""

    categories: list[str] = field(default_factory=list)
    status: int = 200
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.categories) - set(MODERATION_CATEGORIES)
        if unknown:
            raise ValueError(f"unknown moderation categories: {sorted(unknown)}")


ModerationResponder = Callable[[str, str], ScriptedModeration]
"""Judges one input text (``text``, ``model``)."""


def count_tokens(text: str) -> int:
    """The scripted server's token count: whitespace-separated words."""
    return len(text.split())


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def echo_responder(body: dict[str, Any]) -> ScriptedReply:
    """Answer ``You said: <last user message>``."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return ScriptedReply(text="You said: " + (_content_text(users[-1].get("content")) if users else ""))


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    err_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": err_type, "code": code}}, status_code=status)


async def _scripted_failure(status: int, delay_s: float) -> JSONResponse | None:
    """Wait out a scripted delay; then the scripted error answer, if the script says to fail."""
    if delay_s:
        await asyncio.sleep(delay_s)
    return None if status == 200 else _error(status, f"Scripted error {status}", f"scripted_{status}")


def tool_message_error(messages: list[dict[str, Any]]) -> str | None:
    """What OpenAI's Chat Completions answers 400 for in a conversation's tool messages, or None: each assistant
    message with ``tool_calls`` must be followed by one ``tool`` message per call, and every ``tool`` message must
    answer a call of the assistant message before it."""
    pending: list[str] = []
    for message in messages:
        if message.get("role") == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                return f"Invalid parameter: 'tool_call_id' of {call_id!r} not found in the previous 'tool_calls'."
            pending.remove(call_id)
            continue
        if pending:
            break
        if message.get("role") == "assistant":
            pending = [str(call.get("id")) for call in message.get("tool_calls") or ()]
    if pending:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}"
        )
    return None


def _chunks(text: str, size: int) -> Iterator[str]:
    size = max(1, size)
    return (text[i : i + size] for i in range(0, len(text), size))


class ScriptedOpenAIServer(InProcessServer):
    """Serves ``POST /v1/chat/completions`` (streaming or not), ``POST /v1/moderations`` and
    ``GET /v1/models`` on 127.0.0.1."""

    def __init__(
        self,
        *,
        responder: Responder | None = None,
        moderation_responder: ModerationResponder | None = None,
        model: str = "scripted-model",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.responder = responder
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._queue: deque[ScriptedReply] = deque()
        self.moderation_responder = moderation_responder
        self.moderation_requests: list[dict[str, Any]] = []
        self._moderations: deque[ScriptedModeration] = deque()
        self._ids = itertools.count(1)
        self.app = FastAPI()
        self.app.add_api_route("/v1/chat/completions", self._chat, methods=["POST"])
        self.app.add_api_route("/v1/moderations", self._moderate, methods=["POST"])
        self.app.add_api_route("/v1/models", self._models, methods=["GET"])
        super().__init__(self.app, host=host, port=port)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def script(self, *replies: ScriptedReply) -> None:
        """Queue replies, answered in order."""
        self._queue.extend(replies)

    def script_moderation(self, *verdicts: ScriptedModeration) -> None:
        """Queue moderation verdicts, one per input text, answered in order."""
        self._moderations.extend(verdicts)

    async def _moderate(self, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        self.moderation_requests.append(body)
        if not _authorized(request):
            return _error(401, "Missing bearer token", "invalid_api_key")
        raw = body.get("input", "")
        texts = [raw] if isinstance(raw, str) else [t for t in raw if isinstance(t, str)]
        results = []
        model = body.get("model") or "omni-moderation-latest"
        for text in texts:
            if self._moderations:
                verdict = self._moderations.popleft()
            elif self.moderation_responder is not None:
                verdict = self.moderation_responder(text, model)
            else:
                return _error(500, "Script exhausted: no moderation verdict queued", "script_exhausted")
            failure = await _scripted_failure(verdict.status, verdict.delay_s)
            if failure is not None:
                return failure
            flags = {c: c in verdict.categories for c in MODERATION_CATEGORIES}
            results.append({
                "flagged": bool(verdict.categories),
                "categories": flags,
                "category_scores": {c: 0.99 if on else 0.001 for c, on in flags.items()},
                "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
            })  # fmt: skip
        return JSONResponse({"id": f"modr-{next(self._ids)}", "model": model, "results": results})

    async def _models(self, request: Request) -> Response:
        if not _authorized(request):
            return _error(401, "Missing bearer token", "invalid_api_key")
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "switchboard"}],
            }
        )

    async def _chat(self, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        self.requests.append(body)
        if not _authorized(request):
            return _error(401, "Missing bearer token", "invalid_api_key")
        invalid = tool_message_error(body.get("messages") or [])
        if invalid is not None:
            return _error(400, invalid)
        if self._queue:
            reply = self._queue.popleft()
        elif self.responder is not None:
            reply = self.responder(body)
        else:
            return _error(500, "Script exhausted: no reply queued and no responder", "script_exhausted")
        failure = await _scripted_failure(reply.status, reply.delay_s)
        if failure is not None:
            if reply.retry_after is not None:
                failure.headers["Retry-After"] = reply.retry_after
            return failure
        calls = [(f"call_{next(self._ids)}", name, json.dumps(args)) for name, args in reply.tool_calls]
        prompt = " ".join(_content_text(m.get("content")) for m in body.get("messages", []))
        completion = " ".join([reply.text, *(f"{n} {a}" for _, n, a in calls)])
        usage = {"prompt_tokens": count_tokens(prompt), "completion_tokens": count_tokens(completion)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        base = {"id": f"chatcmpl-{next(self._ids)}", "created": int(time.time()), "model": body.get("model")}
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
            if calls:
                message["tool_calls"] = [
                    {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls
                ]
            return JSONResponse(
                {
                    **base,
                    "object": "chat.completion",
                    "usage": usage,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                }
            )
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return _sse({**base, "object": "chat.completion.chunk", "choices": [choice]})

        async def events() -> AsyncIterator[str | bytes]:
            yield chunk({"role": "assistant", "content": ""})
            text = reply.text
            if reply.stall_after is not None:
                for part in _chunks(text[: reply.stall_after], reply.chunk_size):
                    yield chunk({"content": part})
                await asyncio.sleep(reply.stall_s)
                text = text[reply.stall_after :]
            for part in _chunks(text, reply.chunk_size):
                yield chunk({"content": part})
            for raw in reply.raw:
                yield raw
            for index, (call_id, name, args) in enumerate(calls):
                yield chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                )
                for part in _chunks(args, reply.chunk_size):
                    again = {"id": call_id, "type": "function"} if reply.repeat_call_fields else {}
                    named = {"name": name} if reply.repeat_call_fields else {}
                    delta = {"index": index, **again, "function": {**named, "arguments": part}}
                    yield chunk({"tool_calls": [delta]})
            if reply.cut:
                return
            if not reply.omit_finish:
                yield chunk({}, finish)
            if reply.hang_after_finish_s:
                await asyncio.sleep(reply.hang_after_finish_s)
            for raw in reply.tail_raw:
                yield raw
            if with_usage:
                yield _sse({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


def _authorized(request: Request) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def main(argv: list[str] | None = None) -> None:
    """Run a scripted server from the command line until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="scripted-model")
    parser.add_argument("--echo", action="store_true", help='answer "You said: <last user message>"')
    args = parser.parse_args(argv)

    async def run() -> None:
        responder = echo_responder if args.echo else None
        async with ScriptedOpenAIServer(
            responder=responder, model=args.model, host=args.host, port=args.port
        ) as server:
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            print(f"Scripted OpenAI server at {server.base_url} (Ctrl-C to stop)", flush=True)
            await stop.wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
