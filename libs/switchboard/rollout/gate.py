"""The rollout gate: canary against stable on the platform's own turn records (the audit stream).

For one agent, every turn since the canary started that the agent ran in counts for the track that
served it (``TurnRecord.tracks``): its latency, whether it was an error (the turn failed, or the agent
did not answer and the fallback took over: an ``unavailable`` decision from it), and whether a handoff
the agent asked for was refused (the handoff decisions of the same response).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict, Field

from ..bus.subjects import AUDIT_STREAM, AUDIT_SUBJECTS
from ..schemas import HandoffDecision, HandoffOutcome, TurnRecord
from ..state.audit import AuditRecord, audit_record_adapter

FAILED_HANDOFFS = frozenset(
    {
        HandoffOutcome.REFUSED_GRAPH, HandoffOutcome.REFUSED_CONTRACT, HandoffOutcome.UNKNOWN_TARGET,
        HandoffOutcome.REFUSED_AUTH, HandoffOutcome.DEPTH_CAP, HandoffOutcome.PING_PONG,
    }
)  # fmt: skip


class GatePolicy(BaseModel):
    """How much worse than stable a canary may be and still be promoted."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # the docstrings are `rollout promote --help`'s

    min_turns: int = Field(20, ge=1)
    """Turns of each track (canary, and stable to compare with) needed before the gate judges at all."""
    max_error_increase: float = Field(0.02, ge=0)
    """Canary error rate may exceed stable's by this much (absolute: 0.02 = 2 percentage points)."""
    max_handoff_failure_increase: float = Field(0.02, ge=0)
    """The same for refused handoffs the agent asked for."""
    max_p99_ratio: float = Field(1.25, ge=1)
    """Canary turn latency p99 may be this many times stable's ..."""
    p99_slack_ms: float = Field(10.0, ge=0)
    """... or this many milliseconds above it, whichever is larger (small p99s are noisy)."""


@dataclass
class TrackStats:
    turns: int = 0
    errors: int = 0
    handoff_failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.errors / self.turns if self.turns else 0.0

    @property
    def handoff_failure_rate(self) -> float:
        return self.handoff_failures / self.turns if self.turns else 0.0

    @property
    def p99_ms(self) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]

    def line(self) -> str:
        return (
            f"{self.turns} turns, errors {self.error_rate:.1%}, handoff failures {self.handoff_failure_rate:.1%}, "
            f"p99 {self.p99_ms:.1f} ms"
        )


def summarize(records: Iterable[AuditRecord], agent: str) -> dict[str, TrackStats]:
    """Per track, the turns ``agent`` ran in."""
    records = list(records)
    by_response: dict[str, list[HandoffDecision]] = {}
    for r in records:
        if isinstance(r, HandoffDecision) and r.source == agent:
            by_response.setdefault(r.response_id, []).append(r)
    stats: dict[str, TrackStats] = {}
    for r in records:
        if not isinstance(r, TurnRecord) or r.status == "cancelled" or agent not in r.tracks:
            continue
        s = stats.setdefault(r.tracks[agent], TrackStats())
        decisions = by_response.get(r.response_id, [])
        s.turns += 1
        s.latencies_ms.append(r.latency_ms)
        if r.status == "failed" or any(d.outcome == HandoffOutcome.UNAVAILABLE for d in decisions):
            s.errors += 1
        if any(d.outcome in FAILED_HANDOFFS for d in decisions):
            s.handoff_failures += 1
    return stats


def _above(value: float, limit: float) -> bool:
    """``value > limit``, where a value equal to the limit but for float rounding is not above it
    (7/50 - 6/50 is 0.020000000000000018, not more than an allowed 0.02)."""
    return value > limit and not math.isclose(value, limit, rel_tol=1e-9, abs_tol=1e-12)


def judge(stable: TrackStats, canary: TrackStats, policy: GatePolicy) -> list[str]:
    """Why the canary must not be promoted (empty: it may). Both tracks need ``min_turns``: without a
    stable baseline there is nothing to compare the canary with."""
    reasons = []
    if canary.turns < policy.min_turns:
        reasons.append(f"only {canary.turns} canary turns (the gate needs {policy.min_turns})")
    if stable.turns < policy.min_turns:
        reasons.append(f"only {stable.turns} stable turns to compare with (the gate needs {policy.min_turns})")
    if reasons:
        return reasons
    if _above(canary.error_rate, stable.error_rate + policy.max_error_increase):
        reasons.append(
            f"error rate {canary.error_rate:.1%} vs stable {stable.error_rate:.1%} "
            f"(allowed +{policy.max_error_increase:.1%})"
        )
    if _above(canary.handoff_failure_rate, stable.handoff_failure_rate + policy.max_handoff_failure_increase):
        reasons.append(
            f"handoff failures {canary.handoff_failure_rate:.1%} vs stable {stable.handoff_failure_rate:.1%} "
            f"(allowed +{policy.max_handoff_failure_increase:.1%})"
        )
    limit = max(stable.p99_ms * policy.max_p99_ratio, stable.p99_ms + policy.p99_slack_ms)
    if _above(canary.p99_ms, limit):
        reasons.append(
            f"turn latency p99 {canary.p99_ms:.1f} ms vs stable {stable.p99_ms:.1f} ms (limit {limit:.1f} ms)"
        )
    return reasons


async def read_since(js: JetStreamContext, since: float, *, idle_s: float = 1.0) -> list[AuditRecord]:
    """Every audit record stored since ``since`` (Unix time)."""
    start = datetime.fromtimestamp(since, UTC)
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start)
    try:
        sub = await js.subscribe(AUDIT_SUBJECTS, stream=AUDIT_STREAM, ordered_consumer=True, config=config)
    except NotFoundError:  # no audit stream yet: no turns
        return []
    out: list[AuditRecord] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_s)
            except TimeoutError:
                break
            out.append(audit_record_adapter.validate_json(msg.data))
            if msg.metadata.num_pending == 0:
                break
    except Exception:
        await sub.unsubscribe()
        raise
    await sub.unsubscribe()
    return out
