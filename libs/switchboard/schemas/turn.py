"""Messages of one agent turn: request, streamed deltas, and the result (answer or handoff)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from ._base import WireModel
from .conversation import ConversationItem, dump_with_history
from .errors import ErrorReply


class CallerIdentity(WireModel):
    """Who the caller is, as far as the platform has verified."""

    authenticated: bool = False
    """True once an identity tool verified the caller."""
    customer_id: str | None = None
    """The verified customer id."""
    verified_by: str | None = None
    """The agent whose tool verified the caller."""


class ClientTool(WireModel):
    """A function tool the Realtime client declared: the model may call it, the client runs it."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    """Function name, as the client declared it."""
    description: str = ""
    """What the tool does, for the model."""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    """JSON Schema of the arguments."""


class TurnRequest(WireModel):
    """Ask one agent to take the next step of a conversation.

    Sent by the conductor to ``switchboard.v1.agent.<agent>.turn``; the agent streams
    ``TurnDelta`` messages to the reply inbox and ends with one ``TurnResult`` (or ``ErrorReply``).
    """

    type: Literal["switchboard.v1.turn_request"] = "switchboard.v1.turn_request"
    session_id: str
    """Conversation this turn belongs to."""
    turn_id: str
    """Unique id of this agent turn (a handoff starts a new agent turn with a new id)."""
    agent: str
    """Name of the agent that must answer."""
    history: list[ConversationItem]
    """The full conversation so far, newest last (not a summary)."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Context transferred by handoffs, validated against the handoff contract."""
    caller: CallerIdentity = Field(default_factory=CallerIdentity)
    """Verified identity of the caller."""
    handoff_depth: int = 0
    """Handoffs so far in this conversation."""
    handoff_reason: str | None = None
    """When this turn follows a handoff: why the previous agent transferred."""
    handoff_from: str | None = None
    """When this turn follows a handoff: the agent that transferred."""
    client_tools: list[ClientTool] = Field(default_factory=list)
    """Function tools of the Realtime client, offered to the model beside the agent's own (whose names win).
    When the model calls one, the turn ends with outcome ``client_tool`` and the call pending."""
    response_instructions: str | None = None
    """The client's instructions for this response (``response.create``), added to the agent's own."""
    tool_choice: str = "auto"
    """``auto``, ``none`` (no tool is offered), ``required``, or the name of the one function to call."""
    max_output_tokens: int | None = None
    """Cap on the model's output tokens per model call (the client's ``max_output_tokens``)."""
    tail_in_result: bool = False
    """The sender takes the end of the answer from ``TurnResult.text``: the agent need not send its
    last, still unsent text as a delta (one message fewer per turn). Since 1.2; older agents send it."""

    def to_bytes(self) -> bytes:
        return dump_with_history(self, self.history)


class TurnDelta(WireModel):
    """A chunk of the agent's spoken text, streamed while the turn runs."""

    type: Literal["switchboard.v1.turn_delta"] = "switchboard.v1.turn_delta"
    turn_id: str
    """The turn this delta belongs to."""
    seq: int
    """0-based sequence number; lets the receiver detect gaps."""
    text: str
    """The text chunk."""


class Heartbeat(WireModel):
    """Sent by a responder while it works, so the caller can tell a slow replica from a dead one."""

    type: Literal["switchboard.v1.heartbeat"] = "switchboard.v1.heartbeat"
    ref: str = ""
    """The request it belongs to (turn or consult id)."""


class CancelRequest(WireModel):
    """The caller no longer wants the replies of one of its requests (the caller's response was cancelled,
    its turn ran out of time, or the responder was taken for lost): the replica running it stops.

    Published to every replica of the agent or supervisor (``switchboard.v1.agent.<agent>.cancel``, no queue
    group); the one running the request stops it, the others ignore it. Since 1.3; older responders do not
    subscribe and run the request to its end, as before.
    """

    type: Literal["switchboard.v1.cancel_request"] = "switchboard.v1.cancel_request"
    reply_to: str
    """The reply subject of the request to stop (unguessable: only its caller and its responder know it)."""


class ConsultAsk(WireModel):
    """An agent asks the platform to consult its supervisor and speak the answer."""

    note: str
    """What the caller asked, in the agent's words."""
    call_id: str | None = None
    """The ``consult_supervisor`` tool call, if the model made one (policy consults have none)."""
    policy: bool = False
    """True when the platform's routing policy required the consult, not the model."""


class HandoffRequest(WireModel):
    """An agent asks to transfer the conversation to another agent."""

    type: Literal["switchboard.v1.handoff_request"] = "switchboard.v1.handoff_request"
    source: str
    """The agent asking for the transfer."""
    target: str
    """The agent it wants to transfer to."""
    reason: str
    """Why, in the agent's words (logged and shown to operators)."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Fields to transfer; checked against the edge's handoff contract."""
    call_id: str | None = None
    """The transfer tool call that asked for this; the conductor answers it with the decision."""


class Usage(WireModel):
    """Token usage of the model calls in one agent turn."""

    input_tokens: int = 0
    """Prompt tokens over all model calls."""
    output_tokens: int = 0
    """Completion tokens over all model calls."""
    model_calls: int = 0
    """Number of model calls."""


class TurnResult(WireModel):
    """The end of an agent turn: an answer to speak, or a handoff request."""

    type: Literal["switchboard.v1.turn_result"] = "switchboard.v1.turn_result"
    turn_id: str
    """The turn this ends."""
    agent: str
    """The agent that ran the turn."""
    outcome: Literal["answer", "handoff", "consult", "client_tool"]
    """``answer``: ``text`` is the reply; ``handoff``: see ``handoff``; ``consult``: see ``consult``;
    ``client_tool``: the last of ``items`` is a call of a client tool, which the client runs."""
    text: str = ""
    """The full reply text: the concatenated deltas, plus, when the request set ``tail_in_result``,
    a last part that no delta carried."""
    items: list[ConversationItem] = Field(default_factory=list)
    """Items produced during the turn (tool calls and outputs, the assistant message), in order."""
    handoff: HandoffRequest | None = None
    """Present when ``outcome == "handoff"``."""
    consult: ConsultAsk | None = None
    """Present when ``outcome == "consult"``."""
    caller: CallerIdentity | None = None
    """Set when a tool of this turn verified the caller's identity."""
    usage: Usage = Field(default_factory=Usage)
    """Model usage of the turn."""
    replica: str | None = None
    """Which replica of the agent ran the turn (for load-balancing checks and debugging)."""
    config: str | None = None
    """Fingerprint of the agent configuration that ran the turn (since 1.2): the edge audits the first
    turn each configuration serves."""


TurnReply = Annotated[TurnDelta | TurnResult | ErrorReply | Heartbeat, Field(discriminator="type")]
"""Anything an agent may send to a turn's reply inbox."""

turn_reply_adapter: TypeAdapter[TurnReply] = TypeAdapter(TurnReply)
