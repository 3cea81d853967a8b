"""A fault's figures (:class:`FaultReport`) and their Markdown table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FaultReport:
    fault: str
    title: str
    turns_attempted: int
    completed: int
    completed_by_fallback: int
    failed: int
    lost: int
    duplicated_side_effects: int
    effect_turns: int
    effects_recorded: int
    missing_side_effects: int
    """Completed effect turns whose effect is not in the store (the caller was told it happened)."""
    orphan_side_effects: int
    """Effects of turns the caller was told failed or fell back (informational)."""
    re_executions: int
    """Runs of the tool beyond one per idempotency key (ledger takeovers; the effect did not double)."""
    hangs: int
    """Failed turns without any answer within the client's timeout."""
    reconnects: int
    re_asked_turns: int
    re_asked_after_commit: int
    """Re-asked turns whose first ask had been committed (only ``response.done`` was lost)."""
    duplicated_after_committed_reask: int
    """Of the duplicated effects, those of re-asked turns whose first ask had been committed."""
    platform_retried_turns: int | None
    """Turns whose edge record shows a retried agent or supervisor call (the fault landed inside them)."""
    turns_in_fault_window: int
    fallback_span_s: float | None
    """From the first injection to the end of the last turn answered by fallback: how long callers
    were served by the fallback (None when nothing fell back)."""
    latency_ms: dict[str, float]
    fault_latency_ms: dict[str, float]
    """Turns that overlapped a fault window (injection to ``window_s`` after its recovery)."""
    calm_latency_ms: dict[str, float]
    """Turns that overlapped no fault window."""
    failure_reasons: dict[str, int]
    fallback_reasons: dict[str, int]
    lost_details: list[str]
    duplicate_details: list[str]
    injections: list[dict[str, Any]]
    model_calls: dict[str, int] | None
    sessions: int
    wall_s: float
    ok: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def markdown_table(reports: Sequence[FaultReport]) -> str:
    """The figures as a Markdown table, one row per fault."""
    head = (
        "| Fault | Turns | Completed | By fallback | Failed | Lost | Duplicated effects | Reconnects / re-asked "
        "| Retried by platform | p50 / p99 in fault windows | p50 / p99 outside |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for r in reports:
        fw, calm = r.fault_latency_ms, r.calm_latency_ms
        retried = "n/a" if r.platform_retried_turns is None else str(r.platform_retried_turns)
        rows.append(
            f"| {r.title} (`{r.fault}`) | {r.turns_attempted} | {r.completed} | {r.completed_by_fallback} "
            f"| {r.failed} | **{r.lost}** | **{r.duplicated_side_effects}** | {r.reconnects} / {r.re_asked_turns} "
            f"| {retried} | {_ms(fw['p50'])} / {_ms(fw['p99'])} ({int(fw['n'])} turns) "
            f"| {_ms(calm['p50'])} / {_ms(calm['p99'])} ({int(calm['n'])} turns) |"
        )
    return "\n".join([head, *rows])


def _ms(v: float) -> str:
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.0f} ms"
