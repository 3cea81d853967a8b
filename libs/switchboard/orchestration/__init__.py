"""The session conductor and its handoff guardrails."""

from .conductor import CANT_TRANSFER, Conductor, TurnFailed, TurnOutcome
from .events import AgentFinished, ConductorEvent, EventSink, HandoffMade, TextDelta
from .guardrails import PENDING_AGENT, Verdict, decide

__all__ = [
    "CANT_TRANSFER",
    "PENDING_AGENT",
    "AgentFinished",
    "Conductor",
    "ConductorEvent",
    "EventSink",
    "HandoffMade",
    "TextDelta",
    "TurnFailed",
    "TurnOutcome",
    "Verdict",
    "decide",
]
