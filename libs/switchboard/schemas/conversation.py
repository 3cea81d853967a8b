"""Conversation items: what the caller and the agents said and did, in order."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from ._base import WireModel


class MessageItem(WireModel):
    """A text message from the caller, an agent or the system."""

    type: Literal["message"] = "message"
    id: str
    """Item id, unique within the session (Realtime-style ``item_...``)."""
    role: Literal["user", "assistant", "system"]
    """Who said it."""
    text: str
    """The message text (for voice, the transcript)."""
    agent: str | None = None
    """For assistant messages: the agent that spoke."""


class FunctionCallItem(WireModel):
    """A tool call an agent made during a turn."""

    type: Literal["function_call"] = "function_call"
    id: str
    """Item id."""
    call_id: str
    """Correlates the call with its output."""
    name: str
    """Tool name."""
    arguments: str
    """JSON-encoded arguments, as the model produced them."""
    agent: str | None = None
    """The agent that called the tool."""


class FunctionCallOutputItem(WireModel):
    """The result of a tool call."""

    type: Literal["function_call_output"] = "function_call_output"
    id: str
    """Item id."""
    call_id: str
    """The ``call_id`` of the call this answers."""
    output: str
    """JSON-encoded tool output (or an error object)."""
    agent: str | None = None
    """The agent whose tool produced it."""


ConversationItem = Annotated[MessageItem | FunctionCallItem | FunctionCallOutputItem, Field(discriminator="type")]
"""Any item in a session's history."""

conversation_item_adapter: TypeAdapter[ConversationItem] = TypeAdapter(ConversationItem)
