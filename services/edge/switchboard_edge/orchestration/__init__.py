"""The session conductor and its handoff guardrails."""

from .conductor import CANT_TRANSFER, Conductor, TurnFailed, TurnOptions, TurnOutcome
from .consult import ConsultDone, ConsultStats, SupervisorConsults
from .events import AgentFinished, AudioDelta, ConductorEvent, EventSink, HandoffMade, TextDelta
from .guardrails import PENDING_AGENT, Verdict, decide
from .local import LocalAgent, LocalAgentError

__all__ = [
    "CANT_TRANSFER",
    "PENDING_AGENT",
    "AgentFinished",
    "AudioDelta",
    "ConsultDone",
    "ConsultStats",
    "SupervisorConsults",
    "Conductor",
    "ConductorEvent",
    "EventSink",
    "HandoffMade",
    "LocalAgent",
    "LocalAgentError",
    "TextDelta",
    "TurnFailed",
    "TurnOptions",
    "TurnOutcome",
    "Verdict",
    "decide",
]
