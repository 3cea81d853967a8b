"""What the conductor tells its caller (the edge) while a turn runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from switchboard.schemas import HandoffDecision


@dataclass(frozen=True)
class TextDelta:
    agent: str
    text: str
    item_id: str | None = None
    """The assistant item's id when the agent named it (the upstream agent's items keep the upstream's ids)."""


@dataclass(frozen=True)
class AudioDelta:
    """Speech an agent produced itself (the upstream Realtime agent): PCM16 24 kHz audio as base64, and/or
    the next piece of its transcript, for the assistant item ``item_id``."""

    agent: str
    item_id: str
    audio: str = ""
    transcript: str = ""


@dataclass(frozen=True)
class AgentFinished:
    """An agent's part of the response ended; ``ok`` is False when it failed mid-way."""

    agent: str
    text: str
    ok: bool


@dataclass(frozen=True)
class HandoffMade:
    decision: HandoffDecision


ConductorEvent = TextDelta | AudioDelta | AgentFinished | HandoffMade
EventSink = Callable[[ConductorEvent], Awaitable[None]]
