"""Control-plane audit: one record per change an operator makes (keys, rollouts) and per agent
configuration the platform sees serve for the first time."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import WireModel

ControlAction = Literal[
    "key.created",
    "key.revoked",
    "rollout.weight_set",
    "rollout.promoted",
    "rollout.finished",
    "rollout.aborted",
    "agent.config_changed",
]


class ControlRecord(WireModel):
    """Who changed what, and when, in the ``SWITCHBOARD_CONTROL`` stream (``switchboard audit`` lists it)."""

    type: Literal["switchboard.v1.control_record"] = "switchboard.v1.control_record"
    action: ControlAction
    """What was done."""
    actor: str
    """Who did it: ``SWITCHBOARD_ACTOR``, else the OS user and host of the command."""
    target: str
    """What it was done to: a key id, an agent."""
    details: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    """What changed (a key's tenant and name, a rollout's weight and generation); never a secret."""
    ts: float
    """Unix time of the change."""
