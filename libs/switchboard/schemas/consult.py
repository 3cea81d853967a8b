"""Chat-supervisor messages: a front agent's consult request and the supervisor's result."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from ._base import WireModel
from .conversation import ConversationItem, dump_with_history
from .errors import ErrorReply
from .turn import CallerIdentity, Heartbeat, TurnDelta, Usage


class ConsultRequest(WireModel):
    """Ask a supervisor to answer what the caller just asked.

    Sent to ``switchboard.v1.supervisor.<name>.consult``; the supervisor streams ``TurnDelta``
    messages (``turn_id`` = ``consult_id``) and ends with one ``ConsultResult`` or ``ErrorReply``.
    """

    type: Literal["switchboard.v1.consult_request"] = "switchboard.v1.consult_request"
    session_id: str
    """Conversation id."""
    consult_id: str
    """Unique id of this consult (retries of the same consult keep it)."""
    agent: str
    """The front agent that consults."""
    supervisor: str
    """Name of the supervisor that must answer."""
    history: list[ConversationItem]
    """The full conversation, in order: every message and every tool call and output (earlier
    consults' work included). Only the in-flight ``consult_supervisor`` call is left out: its
    note travels in ``note``."""
    note: str
    """The front agent's note on what the caller just asked."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Handoff context of the conversation."""
    caller: CallerIdentity = Field(default_factory=CallerIdentity)
    """Verified identity of the caller (the supervisor's tools act for this caller only)."""

    def to_bytes(self) -> bytes:
        return dump_with_history(self, self.history)


class ConsultResult(WireModel):
    """The supervisor's answer; the front agent speaks ``text``."""

    type: Literal["switchboard.v1.consult_result"] = "switchboard.v1.consult_result"
    consult_id: str
    """The consult this answers."""
    supervisor: str
    """The supervisor that answered."""
    text: str
    """The answer (equal to the concatenated deltas)."""
    items: list[ConversationItem] = Field(default_factory=list)
    """The supervisor's tool calls and outputs, recorded in the session's history."""
    caller: CallerIdentity | None = None
    """Set when a supervisor tool verified the caller."""
    usage: Usage = Field(default_factory=Usage)
    """Model usage of the consult."""
    replica: str | None = None
    """Which supervisor replica answered."""


ConsultReply = Annotated[TurnDelta | ConsultResult | ErrorReply | Heartbeat, Field(discriminator="type")]
"""Anything a supervisor may send to a consult's reply inbox."""

consult_reply_adapter: TypeAdapter[ConsultReply] = TypeAdapter(ConsultReply)
