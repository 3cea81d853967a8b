"""What the callers say and who should answer, and one caller turn as the harness records it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SCENARIO = "chaos"
"""The scenario the harness runs (``chaos/scenarios/chaos`` in the repository)."""
FALLBACK_AGENT = "generalist"

Outcome = Literal["pending", "completed", "fallback", "failed"]


@dataclass(frozen=True)
class Workload:
    """What the callers say, and who should answer.

    ``clerk``: the desk hands the first turn to the clerk specialist, which then answers every turn;
    even turns ask for an effect (``record_effect``), odd turns leave a note. ``consult``: every
    turn is ``ask effect <label>``; the desk consults the supervisor, which records the effect.
    """

    name: Literal["clerk", "consult"]

    def text(self, turn: int, label: str) -> str:
        if self.name == "consult":
            return f"ask effect {label}"
        return f"effect {label}" if turn % 2 == 0 else f"note {label}"

    def is_effect(self, text: str) -> bool:
        return "effect" in text

    def primary(self, agent: str | None, metadata: Mapping[str, Any]) -> bool:
        if self.name == "consult":
            return agent == "desk" and metadata.get("supervisor") == "consulted"
        return agent == "clerk"


CLERK = Workload("clerk")
CONSULT = Workload("consult")


@dataclass
class ChaosTurn:
    client: int
    index: int
    text: str
    item_id: str
    effect: bool
    started: float = 0.0
    ended: float = 0.0
    outcome: Outcome = "pending"
    agent: str | None = None
    reply: str = ""
    detail: str = ""
    """Failed: the error the caller saw. Fallback: why (the handoff's detail)."""
    hung: bool = False
    """Failed without any answer within the client's timeout (a hang)."""
    asks: int = 0
    """Times the turn was asked (more than one after a dropped connection)."""
    warnings: list[str] = field(default_factory=list)
    """Error events seen in a turn that still completed."""
    answered_twice: bool = False
    """The stored history has this turn's reply twice: its first ask was committed, then asked again."""

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.started) * 1000
