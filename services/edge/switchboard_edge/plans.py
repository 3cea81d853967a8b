"""What one response runs with: the connection's client settings and a ``response.create``'s options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from switchboard.schemas import ClientTool, ConversationItem

from . import items
from .client_events import FunctionTool, InputAudio, ResponseOptions, SessionConfig, ToolChoice, UserMessage
from .orchestration import TurnOptions, TurnOutcome
from .protocol import ProtocolError, new_id

EMPTY_PARAMETERS: dict[str, object] = {"type": "object", "properties": {}}


def client_tool(tool: FunctionTool) -> ClientTool:
    parameters = tool.parameters or EMPTY_PARAMETERS
    return ClientTool(name=tool.name, description=tool.description or "", parameters=parameters)


@dataclass
class ClientSettings:
    """What ``session.update`` set for this connection; each response's default."""

    tools: list[ClientTool] = field(default_factory=list)
    """Function tools the client declared, offered to the active agent's model."""
    tool_choice: ToolChoice = "auto"
    max_output_tokens: int | Literal["inf"] = "inf"

    def updated(self, config: SessionConfig) -> ClientSettings:
        """These settings after a ``session.update``, checked whole (nothing changes if it is refused)."""
        tools = self.tools if config.tools is None else checked_tools(config.tools, "session.tools")
        choice = self.tool_choice if config.tool_choice is None else config.tool_choice
        if config.tools is not None or config.tool_choice is not None:
            checked_choice(choice, tools, "session", chosen_here=config.tool_choice is not None)
        limit = self.max_output_tokens if config.max_output_tokens is None else config.max_output_tokens
        return ClientSettings(tools=tools, tool_choice=choice, max_output_tokens=limit)


def checked_tools(given: Sequence[FunctionTool], param: str) -> list[ClientTool]:
    """The client's function tools; two of one name are refused (a call could not say which one it meant)."""
    names: set[str] = set()
    for i, tool in enumerate(given):
        if tool.name in names:
            raise ProtocolError(
                "invalid_value", f"two function tools are named {tool.name!r}: each tool needs its own name",
                param=f"{param}.{i}.name",
            )  # fmt: skip
        names.add(tool.name)
    return [client_tool(t) for t in given]


def checked_choice(choice: ToolChoice, tools: Sequence[ClientTool], scope: str, *, chosen_here: bool) -> None:
    """A function ``tool_choice`` must name one of the client's function tools in effect (``scope``'s ``tools``,
    or the session's); the agents' own tools are theirs to offer, not the client's to force."""
    if isinstance(choice, str) or any(t.name == choice.name for t in tools):
        return
    declared = ", ".join(repr(t.name) for t in tools) or "none"
    if chosen_here:
        raise ProtocolError(
            "invalid_value", f"{scope}.tool_choice names function {choice.name!r}, which is not one of the declared "
            f"function tools (declared: {declared})", param=f"{scope}.tool_choice.name",
        )  # fmt: skip
    raise ProtocolError(
        "invalid_value", f"the session's tool_choice names function {choice.name!r}, which {scope}.tools leaves out "
        f"(declared: {declared}): declare it, or set {scope}.tool_choice too", param=f"{scope}.tools",
    )  # fmt: skip


@dataclass(frozen=True)
class ResponsePlan:
    """One ``response.create``, checked: what runs and whether it joins the conversation."""

    options: TurnOptions
    input: list[ConversationItem] | None
    """The client's ``input``: the turn's whole context instead of the session's history."""
    out_of_band: bool
    """``conversation: "none"``: nothing is committed."""
    metadata: dict[str, str]
    modalities: list[str] | None = None
    """``["text"]`` or ``["audio"]`` for this response; None: the session's."""
    agent: str | None = None
    """The agent that answers instead of the session's active one (an input guardrail's fallback on ``input``)."""


def checked_modalities(value: Sequence[str], param: str) -> list[str]:
    """The GA protocol allows ``["text"]`` or ``["audio"]`` (audio carries its transcript)."""
    if list(value) not in (["text"], ["audio"]):
        raise ProtocolError(
            "invalid_value", "output_modalities must be ['text'] or ['audio'] (audio includes its transcript)",
            param=param,
        )  # fmt: skip
    return list(value)


def plan_response(options: ResponseOptions, client: ClientSettings) -> ResponsePlan:
    """The client's per-response options, checked, with the connection's settings as defaults."""
    modalities = None
    if options.output_modalities is not None:
        modalities = checked_modalities(options.output_modalities, "response.output_modalities")
    tools = client.tools if options.tools is None else checked_tools(options.tools, "response.tools")
    choice = options.tool_choice if options.tool_choice is not None else client.tool_choice
    if options.tools is not None or options.tool_choice is not None:  # else the session's, checked when set
        checked_choice(choice, tools, "response", chosen_here=options.tool_choice is not None)
    limit = options.max_output_tokens if options.max_output_tokens is not None else client.max_output_tokens
    turn = TurnOptions(
        client_tools=tools, instructions=options.instructions,
        tool_choice=choice if isinstance(choice, str) else choice.name,
        max_output_tokens=limit if isinstance(limit, int) else None,
    )  # fmt: skip
    given = None
    if options.input is not None:
        _refuse_audio(options.input)
        given = [items.from_client(i, i.id or new_id("item")) for i in options.input]
    return ResponsePlan(turn, given, options.conversation == "none", dict(options.metadata or {}), modalities)


def _refuse_audio(given: Sequence[object]) -> None:
    """``response.input`` is text: its turn does not transcribe (an audio part would reach the agent empty)."""
    for i, item in enumerate(given):
        for j, part in enumerate(item.content if isinstance(item, UserMessage) else ()):
            if isinstance(part, InputAudio):
                raise ProtocolError(
                    "invalid_value", "response.input takes input_text parts; add audio with conversation.item.create "
                    "or input_audio_buffer.append, then response.create", param=f"response.input.{i}.content.{j}",
                )  # fmt: skip


def response_metadata(outcome: TurnOutcome) -> dict[str, str]:
    """Switchboard's facts in ``response.metadata`` (string values, as the GA API requires)."""
    metadata = {
        "agent": outcome.state.active_agent,
        "agents": ",".join(outcome.agents),
        "handoffs": str(len(outcome.decisions)),
        "handoff_outcomes": ",".join(d.outcome.value for d in outcome.decisions),
        "session_id": outcome.state.session_id,
    }
    if outcome.replica:
        metadata["replica"] = outcome.replica
    state = outcome.state
    metadata["supervisor"] = "no"
    if outcome.consult is not None:
        metadata["supervisor"] = "consulted" if outcome.consult.ok else "failed"
        metadata["consult_ms"] = f"{outcome.consult.ms:.1f}"
        metadata["consult_tokens"] = str(outcome.consult.tokens)
    metadata["routing_rate"] = f"{state.consults / state.turns:.2f}" if state.turns else "0.00"
    return metadata
