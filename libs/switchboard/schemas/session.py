"""Durable session state, stored in JetStream KV so any edge replica can continue a session."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ._base import WireModel
from .conversation import ConversationItem, dump_with_history
from .rollout import TrackPin
from .turn import CallerIdentity


class SessionState(WireModel):
    """Everything needed to continue a conversation after a reconnect or an edge restart."""

    type: Literal["switchboard.v1.session_state"] = "switchboard.v1.session_state"
    session_id: str
    """Conversation id (also the KV key)."""
    scenario: str
    """Scenario the session runs."""
    active_agent: str
    """Agent that takes the next turn."""
    history: list[ConversationItem] = Field(default_factory=list)
    """The newest committed conversation items, oldest first: the session's bounded hot window. Older
    items are in the ``SWITCHBOARD_HISTORY`` stream (see ``archived_items``)."""
    archived_items: int = 0
    """Items that left the window for the history stream; the conversation has ``archived_items +
    len(history)`` items in all."""
    archive_head: str | None = None
    """The newest batch of archived items (schema 1.4): the items one commit moved to the history stream
    carry its id, and each batch names the one before. Readers follow this chain, so a batch appended by a
    commit that then lost its compare-and-set is never part of the conversation. None until the first
    batch; a session archived before 1.4 has items without a batch, read before the chain."""
    handoff_count: int = 0
    """Handoffs so far (the depth checked against the cap)."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Context accumulated from handoffs."""
    caller: CallerIdentity = Field(default_factory=CallerIdentity)
    """Verified identity of the caller."""
    owner: str | None = None
    """Fingerprint of the API key that created the session; only that key may resume it."""
    turns: int = 0
    """Completed responses."""
    consults: int = 0
    """Responses in which the supervisor was consulted (routing rate = consults / turns)."""
    consult_ms: float = 0.0
    """Time spent in supervisor consults, summed."""
    consult_tokens: int = 0
    """Supervisor model tokens, summed."""
    tracks: dict[str, TrackPin] = Field(default_factory=dict)
    """Per agent, the version track the session was pinned to when it first reached that agent."""
    created_at: float
    """Unix time the session started."""
    updated_at: float
    """Unix time of the last commit."""

    def to_bytes(self) -> bytes:
        return dump_with_history(self, self.history)
