"""Agents that run inside the edge for one session (the Realtime API's upstream agent), not on the bus."""

from __future__ import annotations

from typing import Protocol

from switchboard.errors import SwitchboardError
from switchboard.schemas import TurnRequest, TurnResult

from .events import EventSink


class LocalAgentError(SwitchboardError):
    """A local agent could not answer: the conductor treats it as an agent that did not answer (fallback)."""


class LocalAgent(Protocol):
    """Runs one agent turn as the bus would: events to ``emit`` while it runs, its result at the end."""

    async def __call__(self, req: TurnRequest, emit: EventSink, deadline: float) -> TurnResult: ...
