"""Handoff audit records, appended to the durable audit stream."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from ._base import WireModel


class HandoffOutcome(StrEnum):
    ACCEPTED = "accepted"
    """Transferred to the requested target."""
    REDIRECTED_AUTH = "redirected_auth"
    """Target requires an authenticated caller: transferred to the auth agent first."""
    REFUSED_GRAPH = "refused_graph"
    """Target is not an allowed handoff of the source agent."""
    REFUSED_CONTRACT = "refused_contract"
    """Transferred context violates the handoff contract."""
    UNKNOWN_TARGET = "unknown_target"
    """No agent of that name exists in the scenario."""
    REFUSED_AUTH = "refused_auth"
    """Target requires an authenticated caller and no auth agent can verify them first."""
    DEPTH_CAP = "depth_cap"
    """The conversation reached its maximum handoff depth."""
    PING_PONG = "ping_pong"
    """The target already ran in this user turn (A -> B -> A)."""
    UNAVAILABLE = "unavailable"
    """The target did not answer (no responders, timeout or error)."""
    REFUSED_GUARDRAIL = "refused_guardrail"
    """A handoff guardrail blocked the transfer's reason or context."""
    HOP_CAP = "hop_cap"
    """The caller turn already visited ``max_hops_per_turn`` agents: the caller stays with the source."""


class HandoffDecision(WireModel):
    """One handoff decision: what was asked, what the platform did, and how it went."""

    type: Literal["switchboard.v1.handoff_decision"] = "switchboard.v1.handoff_decision"
    session_id: str
    """Conversation id."""
    response_id: str
    """The client-visible response during which the handoff happened."""
    source: str
    """The agent that asked (or, for ``unavailable``, the conductor on its behalf)."""
    requested_target: str
    """The agent that was asked for."""
    final_target: str
    """The agent the conversation actually went to (the fallback when refused)."""
    outcome: HandoffOutcome
    """What the platform decided."""
    reason: str
    """The requesting agent's reason."""
    detail: str = ""
    """Why a handoff was refused or redirected."""
    context_keys: list[str]
    """Names of the context fields transferred (values are not audited)."""
    depth: int
    """Handoff count of the conversation after this decision."""
    latency_ms: float | None = None
    """Time from the handoff request to the first reply of the final target."""
    target_ok: bool | None = None
    """Whether the final target completed its turn."""
    ts: float
    """Unix time of the decision."""
    trace_id: str | None = None
    """W3C trace id of the caller turn (hex), when tracing is on."""


class TurnRecord(WireModel):
    """One caller turn (response) as the edge saw it; with the handoff decisions, the session's timeline."""

    type: Literal["switchboard.v1.turn_record"] = "switchboard.v1.turn_record"
    session_id: str
    """Conversation id."""
    response_id: str
    """The client-visible response."""
    status: Literal["completed", "incomplete", "failed", "cancelled"]
    """How the response ended (``incomplete``: cut at ``max_output_tokens``)."""
    agents: list[str]
    """Agents that ran, in order."""
    agent: str
    """The agent that answered (the session's active agent afterwards)."""
    latency_ms: float
    """``response.create`` to ``response.done`` at the edge."""
    handoffs: int = 0
    """Handoff decisions within the turn."""
    retries: int = 0
    """Retried agent or supervisor calls within the turn."""
    consulted: bool = False
    """Whether the supervisor was consulted."""
    consult_outcome: str | None = None
    """``answered``, ``unavailable`` or ``breaker_open`` when consulted."""
    consult_ms: float | None = None
    """Time the consult took."""
    error: str | None = None
    """Why the turn failed, if it did."""
    tracks: dict[str, str] = Field(default_factory=dict)
    """Per agent that ran, the version track that served it (``stable`` or ``canary``)."""
    trace_id: str | None = None
    """W3C trace id of the turn (hex), when tracing is on."""
    ts: float
    """Unix time the response ended."""
