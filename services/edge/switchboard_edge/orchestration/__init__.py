"""The session conductor and its handoff guardrails."""

from .conductor import CANT_TRANSFER, Conductor, TurnFailed, TurnOptions, TurnOutcome
from .consult import ConsultDone, ConsultStats, SupervisorConsults
from .events import AgentFinished, ConductorEvent, EventSink, HandoffMade, TextDelta
from .guardrails import PENDING_AGENT, Verdict, decide

__all__ = [
    "CANT_TRANSFER",
    "PENDING_AGENT",
    "AgentFinished",
    "ConsultDone",
    "ConsultStats",
    "SupervisorConsults",
    "Conductor",
    "ConductorEvent",
    "EventSink",
    "HandoffMade",
    "TextDelta",
    "TurnFailed",
    "TurnOptions",
    "TurnOutcome",
    "Verdict",
    "decide",
]
