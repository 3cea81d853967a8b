"""The interface every model provider implements, and the errors it raises.

``ToolSpec`` (what a model is told about a tool) belongs to ``switchboard.agents`` and is re-exported here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..agents.tools import ToolSpec
from ..errors import SwitchboardError
from ..schemas import ConversationItem

TextSink = Callable[[str], Awaitable[None]]
"""Receives text deltas as the model produces them."""


@dataclass(frozen=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str
    """JSON-encoded arguments exactly as the model produced them."""


@dataclass(frozen=True)
class ModelRequest:
    instructions: str
    """System prompt of the agent (with any platform notes appended)."""
    items: Sequence[ConversationItem]
    """Conversation history plus the items of the current turn so far."""
    tools: Sequence[ToolSpec] = ()
    context: dict[str, Any] = field(default_factory=dict)
    """Handoff context; real models see it through the instructions, the offline model reads it."""
    caller_authenticated: bool = False
    """Whether the platform has verified the caller (the offline model's rules may test it)."""
    tool_choice: str = "auto"
    """``auto``, ``none``, ``required`` or the name of the one function the model must call."""
    max_output_tokens: int | None = None
    """Cap on the output tokens of this call."""


@dataclass(frozen=True)
class ModelResponse:
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0


class ModelError(SwitchboardError):
    """A model call failed. ``retryable`` says whether the same call may succeed later, ``retry_after_s``
    how long the server asked to wait first (its ``Retry-After``)."""

    def __init__(
        self, message: str, *, retryable: bool, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s


class ModelProvider(Protocol):
    """One call of a chat model: stream text to ``on_text`` and return the full response."""

    async def complete(self, request: ModelRequest, on_text: TextSink) -> ModelResponse: ...

    async def aclose(self) -> None: ...
