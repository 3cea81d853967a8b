"""Model provider for the OpenAI Chat Completions API and compatible servers (vLLM, Ollama...)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import openai
from openai._streaming import ServerSentEvent, SSEDecoder  # the one place the SDK shows the [DONE] it drops
from openai.types.chat import ChatCompletionChunk

from ..agents.tools import ToolSpec
from ..schemas import ConversationItem, FunctionCallItem, FunctionCallOutputItem, MessageItem
from .base import ModelError, ModelRequest, ModelResponse, TextSink, ToolCall

logger = logging.getLogger(__name__)

TAIL_TIMEOUT_S = 1.0
"""Once the answer has its ``finish_reason``, how long the rest of the stream (the usage chunk, ``[DONE]``) may
take: the answer is whole, a server that goes silent then must not turn it into a failure."""


NO_OUTPUT = json.dumps({"error": "no output was recorded for this call"})
"""The tool message of a call that was never answered (a client that did not send its tool's output)."""


def to_chat_messages(
    instructions: str, items: Sequence[ConversationItem], agent: str | None = None
) -> list[dict[str, Any]]:
    """Convert the conversation into chat messages, with ``instructions`` as the system message.

    Consecutive function calls become one assistant message with ``tool_calls``, followed by one tool message
    per call, as Chat Completions requires (OpenAI answers 400 otherwise): a call's output moves up to it from
    wherever it is in the conversation (the caller spoke before a client's tool answered; a consult's output
    comes after the supervisor's own calls), a call never answered gets :data:`NO_OUTPUT`, and an output whose
    call is not in ``items`` (left the hot window) is left out. When ``agent`` is given, assistant messages
    spoken by *another* agent are prefixed with ``"[<agent>] "`` so the model can tell that someone else said
    them.
    """
    outputs: dict[str, str] = {}
    for item in items:
        if isinstance(item, FunctionCallOutputItem):
            outputs.setdefault(item.call_id, item.output)
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    calls: list[dict[str, Any]] = []

    def flush() -> None:
        if calls:
            messages.append({"role": "assistant", "content": None, "tool_calls": list(calls)})
            for call in calls:
                messages.append(
                    {"role": "tool", "tool_call_id": call["id"], "content": outputs.get(call["id"], NO_OUTPUT)}
                )
            calls.clear()

    for item in items:
        if isinstance(item, FunctionCallItem):
            calls.append({"id": item.call_id, "type": "function",
                          "function": {"name": item.name, "arguments": item.arguments}})  # fmt: skip
            continue
        flush()  # a message, or an output (already placed after its call), ends a group of calls
        if isinstance(item, MessageItem):
            text = item.text
            if item.role == "assistant" and item.agent and item.agent != agent:
                text = f"[{item.agent}] {text}"
            messages.append({"role": item.role, "content": text})
    flush()
    return messages


def to_chat_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Describe tools as Chat Completions function tools."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """How long a server asked to wait before the next call: ``retry-after-ms`` (OpenAI's), else ``Retry-After``
    in seconds or as an HTTP date; None when it did not say, or said it unreadably."""
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (ValueError, TypeError, OverflowError):
        return None


def _model_error(err: openai.APIError) -> ModelError:
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        wait = retry_after_s(err.response.headers)
        return ModelError(str(err), retryable=status == 429 or status >= 500, status=status, retry_after_s=wait)
    if isinstance(err, openai.APIConnectionError):  # APITimeoutError is one too
        return ModelError(str(err), retryable=True)
    # an error event inside a 200 stream: the server failed mid-answer, unless it blames the request
    kind = err.body.get("type") if isinstance(err.body, dict) else None
    return ModelError(str(err), retryable=kind != "invalid_request_error")


class _End:
    """The end of a stream."""


class _DoneDecoder(SSEDecoder):
    """The SDK's SSE decoder, noting the ``[DONE]`` that ends a whole stream (the SDK drops it silently)."""

    done = False

    def decode(self, line: str) -> ServerSentEvent | None:
        sse = super().decode(line)
        if sse is not None and sse.data.startswith("[DONE]"):
            self.done = True
        return sse


class _Client(openai.AsyncOpenAI):
    """Each of its streams decodes with a :class:`_DoneDecoder` (``AsyncStream._decoder``)."""

    def _make_sse_decoder(self) -> SSEDecoder:
        return _DoneDecoder()


def _ended_by_done(stream: object) -> bool:
    decoder = getattr(stream, "_decoder", None)
    return isinstance(decoder, _DoneDecoder) and decoder.done


class _Answer:
    """What a stream has said so far. A chunk not of the shape Chat Completions streams (not an object, a choice
    that is null, text that is not a string...) makes the stream malformed, as unreadable JSON does."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.input_tokens = self.output_tokens = 0
        self.finish: str | None = None

    def tail_s(self, tail_s: float) -> float | None:
        """How long the rest of the stream may take: unbounded here until the answer has its finish_reason."""
        return None if self.finish is None else tail_s

    def feed(self, chunk: ChatCompletionChunk) -> str:
        """Take one chunk; return its text, for the caller. Once the answer has its finish_reason, a malformed
        chunk (of the tail: usage) is left out, as a tail that fails to arrive is."""
        finished = self.finish is not None
        try:
            return self._feed(chunk)
        except (AttributeError, TypeError, ValueError) as err:
            if finished:
                logger.info("malformed chunk after the answer: %r", err)
                return ""
            raise ModelError(f"malformed model stream ({type(err).__name__}: {err})", retryable=True) from err

    def _feed(self, chunk: ChatCompletionChunk) -> str:
        if chunk.usage is not None:
            self.input_tokens = int(chunk.usage.prompt_tokens or 0)
            self.output_tokens = int(chunk.usage.completion_tokens or 0)
        if not chunk.choices:
            return ""
        first = chunk.choices[0]
        self.finish = _str(first.finish_reason) or self.finish
        delta = first.delta
        if delta is None:  # a choice that only carries its finish_reason (some servers send it)
            return ""
        content = _str(delta.content)
        if content:
            self.text.append(content)
        for tc in delta.tool_calls or ():
            # the id and name come whole, in the call's first chunk; some servers (DeepSeek, Qwen, Fireworks,
            # the LiteLLM proxy) repeat them in every chunk: only the arguments are deltas
            acc = self.calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            acc["id"] = acc["id"] or _str(tc.id)
            if tc.function is not None:
                acc["name"] = acc["name"] or _str(tc.function.name)
                acc["arguments"] += _str(tc.function.arguments)
        return content

    def response(self) -> ModelResponse:
        tool_calls = tuple(
            ToolCall(call_id=c["id"], name=c["name"], arguments=c["arguments"] or "{}")
            for _, c in sorted(self.calls.items())
        )
        return ModelResponse(
            text="".join(self.text), tool_calls=tool_calls, input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
        )  # fmt: skip


def _str(value: object) -> str:
    """A text field of a chunk: a string, or nothing (None)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


async def _next_chunk(chunks: AsyncIterator[ChatCompletionChunk], tail_s: float | None) -> ChatCompletionChunk | _End:
    """The stream's next chunk, or its end. A stream the SDK cannot read (not JSON, not UTF-8) is a garbled
    answer, retryable like a cut one. ``tail_s`` is set once the answer has its ``finish_reason``: the rest (usage,
    ``[DONE]``) then gets that long, and failing to read it ends the stream: the answer is whole."""
    try:
        if tail_s is None:
            return await anext(chunks)
        async with asyncio.timeout(tail_s):
            return await anext(chunks)
    except StopAsyncIteration:
        return _End()
    except (openai.APIError, ValueError, TimeoutError) as err:
        if tail_s is not None:
            logger.info("model stream failed after its answer: %r", err)
            return _End()
        if isinstance(err, ValueError):
            raise ModelError(f"malformed model stream ({type(err).__name__}: {err})", retryable=True) from err
        raise


class OpenAIChatProvider:
    """Streams completions from a Chat Completions endpoint.

    ``settings`` (temperature, max_tokens, ...) are merged into every request body as-is, so
    server-specific parameters work too. The client never retries: that is the platform's job.

    History conversion: see :func:`to_chat_messages`. Assistant messages of an agent other than
    ``agent`` (the one this provider speaks for, if given) are prefixed with ``"[<agent>] "``.
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        settings: dict[str, Any] | None = None,
        timeout_s: float = 30.0,
        agent: str | None = None,
    ) -> None:
        self.model = model
        self.agent = agent
        self._settings = dict(settings or {})
        self._client = _Client(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)
        self._tail_s = min(timeout_s, TAIL_TIMEOUT_S)

    async def complete(self, request: ModelRequest, on_text: TextSink) -> ModelResponse:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": to_chat_messages(request.instructions, request.items, self.agent),
            "stream": True,
            "stream_options": {"include_usage": True},
            "extra_body": self._settings,
        }
        if request.tools:
            params["tools"] = to_chat_tools(request.tools)
            choice = request.tool_choice
            if choice != "auto":
                named = {"type": "function", "function": {"name": choice}}
                params["tool_choice"] = choice if choice in ("none", "required") else named
        if request.max_output_tokens is not None:
            params["max_completion_tokens"] = request.max_output_tokens
        answer = _Answer()
        try:
            stream = await self._client.chat.completions.create(**params)
            async with stream:
                chunks = aiter(stream)
                while not isinstance(chunk := await _next_chunk(chunks, answer.tail_s(self._tail_s)), _End):
                    said = answer.feed(chunk)
                    if said:
                        await on_text(said)
            if answer.finish is None and not _ended_by_done(stream):
                # ended cleanly, but before the answer did (no finish_reason, no [DONE]): it is not the whole answer
                raise ModelError(f"model {self.model} stream ended before its finish_reason", retryable=True)
        except (openai.APIError, ModelError) as err:
            error = _model_error(err) if isinstance(err, openai.APIError) else err
            logger.warning(
                "model %s failed (status=%s, retryable=%s): %s", self.model, error.status, error.retryable, err
            )
            if error is err:
                raise
            raise error from err
        return answer.response()

    async def aclose(self) -> None:
        await self._client.close()
