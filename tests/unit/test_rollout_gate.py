"""The rollout gate on turn records: a canary with a worse error rate, latency or handoff failures is refused."""

from __future__ import annotations

import itertools

from switchboard.rollout.gate import GatePolicy, TrackStats, judge, summarize
from switchboard.schemas import HandoffDecision, HandoffOutcome, TurnRecord

_ids = itertools.count()


def turns(
    track: str, n: int, *, latency_ms: float = 5.0, failed: int = 0, unavailable: int = 0, refused: int = 0
) -> list[TurnRecord | HandoffDecision]:
    """``n`` turns of ``returns`` on ``track``: some failed, some where it did not answer, some refused handoffs."""
    out: list[TurnRecord | HandoffDecision] = []
    for i in range(n):
        rid = f"resp_{next(_ids)}"
        status = "failed" if i < failed else "completed"
        out.append(TurnRecord(session_id="s", response_id=rid, status=status, agents=["returns"], agent="returns",
                              latency_ms=latency_ms + i % 3, tracks={"returns": track}, ts=1.0))  # fmt: skip
        outcome = None
        if failed <= i < failed + unavailable:
            outcome = HandoffOutcome.UNAVAILABLE
        elif failed + unavailable <= i < failed + unavailable + refused:
            outcome = HandoffOutcome.REFUSED_GRAPH
        if outcome is not None:
            out.append(HandoffDecision(session_id="s", response_id=rid, source="returns", requested_target="x",
                                       final_target="generalist", outcome=outcome, reason="r", context_keys=[],
                                       depth=1, ts=1.0))  # fmt: skip
    return out


def gate(records: list[TurnRecord | HandoffDecision]) -> list[str]:
    stats = summarize(records, "returns")
    return judge(stats.get("stable", TrackStats()), stats.get("canary", TrackStats()), GatePolicy())


def test_an_equal_canary_passes() -> None:
    assert gate(turns("stable", 200, failed=2) + turns("canary", 50)) == []


def test_counts_per_track() -> None:
    stats = summarize(turns("stable", 100, failed=1, unavailable=2, refused=3) + turns("canary", 40), "returns")
    assert (stats["stable"].turns, stats["stable"].errors, stats["stable"].handoff_failures) == (100, 3, 3)
    assert stats["canary"].turns == 40 and stats["canary"].errors == 0


def test_a_canary_with_more_errors_is_refused_with_numbers() -> None:
    (reason,) = gate(turns("stable", 200, failed=2) + turns("canary", 50, unavailable=5))
    assert reason == "error rate 10.0% vs stable 1.0% (allowed +2.0%)"


def test_a_slower_canary_is_refused_with_numbers() -> None:
    (reason,) = gate(turns("stable", 200, latency_ms=20) + turns("canary", 50, latency_ms=60))
    assert reason == "turn latency p99 62.0 ms vs stable 22.0 ms (limit 32.0 ms)"


def test_a_canary_with_more_refused_handoffs_is_refused() -> None:
    (reason,) = gate(turns("stable", 200) + turns("canary", 50, refused=10))
    assert reason.startswith("handoff failures 20.0% vs stable 0.0%")


def test_too_few_canary_turns_is_refused() -> None:
    assert gate(turns("stable", 200) + turns("canary", 5)) == ["only 5 canary turns (the gate needs 20)"]


def test_an_increase_exactly_at_the_allowed_one_passes() -> None:
    """'More than 0.02 above' stable's: 14 % against 12 % is allowed (it was refused by a float rounding)."""
    assert gate(turns("stable", 50, failed=6) + turns("canary", 50, failed=7)) == []
    assert gate(turns("stable", 50, refused=6) + turns("canary", 50, refused=7)) == []


def test_a_canary_without_stable_turns_to_compare_with_is_refused() -> None:
    """No baseline is no evidence: a canary 100 times slower than stable ever was must not pass unseen."""
    assert gate(turns("canary", 50, latency_ms=5000)) == ["only 0 stable turns to compare with (the gate needs 20)"]
    assert gate(turns("stable", 5) + turns("canary", 50)) == ["only 5 stable turns to compare with (the gate needs 20)"]


def test_cancelled_turns_and_other_agents_handoffs_do_not_count() -> None:
    """A turn the caller cancelled says nothing of the version; a handoff another agent of the same
    response asked for is that agent's (both counted against the canary before they were tested)."""
    records = turns("stable", 50) + turns("canary", 30)
    last = records[-1]
    assert isinstance(last, TurnRecord)
    cancelled = TurnRecord(session_id="s", response_id="resp_cancelled", status="cancelled", agents=["returns"],
                           agent="returns", latency_ms=9000, tracks={"returns": "canary"}, ts=1.0)  # fmt: skip
    others = [
        HandoffDecision(session_id="s", response_id=last.response_id, source="triage", requested_target="billing",
                        final_target="generalist", outcome=outcome, reason="r", context_keys=[], depth=1, ts=1.0)
        for outcome in (HandoffOutcome.UNAVAILABLE, HandoffOutcome.REFUSED_GRAPH)
    ]  # fmt: skip
    canary = summarize([*records, cancelled, *others], "returns")["canary"]
    assert (canary.turns, canary.errors, canary.handoff_failures, canary.p99_ms) == (30, 0, 0, 7.0)
