"""Per-agent version tracks: the rollout record (NATS KV) and a session's pin to a track."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from ._base import WireModel

Track = Literal["stable", "canary"]
"""The tracks an agent process can serve (``SWITCHBOARD_TRACK``)."""


class RolloutState(StrEnum):
    CANARY = "canary"
    """A canary runs: new sessions reach it by ``weight``; sessions pinned to it stay on it."""
    PROMOTED = "promoted"
    """The canary's version is becoming stable: every session of the agent is served by the canary track
    until the stable replicas run its version and the rollout is finished."""
    ABORTED = "aborted"
    """The canary is withdrawn: every session of the agent is served by stable from its next turn on."""
    FINISHED = "finished"
    """A promotion is complete (stable runs the canary's version): every session is served by stable. The
    record stays, so the next canary gets a new generation and no old canary pin can reach it."""


class Rollout(WireModel):
    """The rollout of one agent, one KV entry (key = agent) in the ``switchboard_rollouts`` bucket."""

    type: Literal["switchboard.v1.rollout"] = "switchboard.v1.rollout"
    agent: str
    """The agent being rolled out."""
    state: RolloutState
    """Where the rollout stands."""
    weight: int = Field(ge=0, le=100)
    """Percent of new sessions pinned to the canary track while ``state`` is ``canary``."""
    generation: int = Field(ge=1)
    """Bumped each time a new canary starts; a session's canary pin only holds for its own generation."""
    version: str = ""
    """What the canary runs (an image tag or a note), shown by ``switchboard rollout status``."""
    started_at: float
    """Unix time this generation's canary started (the rollout gate compares turns since then)."""
    updated_at: float
    """Unix time of the last change."""


class TrackPin(WireModel):
    """The track a session was pinned to when it first reached an agent."""

    track: Track
    """``stable`` or ``canary``."""
    generation: int = 0
    """The canary generation (``Rollout.generation``) a canary pin belongs to; 0 for stable."""
