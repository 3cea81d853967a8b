"""Choosing and keeping a session's version track (the pure part of rollouts)."""

from __future__ import annotations

import pytest

from switchboard.bus import subjects
from switchboard.rollout import STABLE_PIN, TrackRouter, choose, parse_weights
from switchboard.schemas import Rollout, RolloutState, TrackPin


def rollout(state: RolloutState = RolloutState.CANARY, weight: int = 30, generation: int = 2) -> Rollout:
    return Rollout(agent="returns", state=state, weight=weight, generation=generation, started_at=1.0, updated_at=1.0)


CANARY2 = TrackPin(track="canary", generation=2)


def test_no_rollout_is_stable() -> None:
    assert choose(None, None, 0.0) == STABLE_PIN


@pytest.mark.parametrize(
    ("draw", "expected"), [(0.0, CANARY2), (0.2999, CANARY2), (0.3, STABLE_PIN), (0.99, STABLE_PIN)]
)
def test_first_visit_draws_by_weight(draw: float, expected: TrackPin) -> None:
    assert choose(None, rollout(weight=30), draw) == expected


@pytest.mark.parametrize("weight", [0, 100])
def test_weight_bounds(weight: int) -> None:
    draws = [i / 1000 for i in range(1000)]
    picked = sum(choose(None, rollout(weight=weight), d) == CANARY2 for d in draws)
    assert picked == weight * 10


def test_pins_hold_whatever_the_weight_becomes() -> None:
    assert choose(STABLE_PIN, rollout(weight=100), 0.0) == STABLE_PIN
    assert choose(CANARY2, rollout(weight=0), 0.99) == CANARY2


def test_abort_sends_canary_pins_back_to_stable() -> None:
    aborted = rollout(RolloutState.ABORTED, weight=0)
    assert choose(CANARY2, aborted, 0.0) == STABLE_PIN
    assert choose(None, aborted, 0.0) == STABLE_PIN
    assert choose(CANARY2, rollout(RolloutState.FINISHED, weight=0), 0.0) == STABLE_PIN
    assert choose(CANARY2, None, 0.0) == STABLE_PIN


def test_a_canary_pin_holds_only_for_its_generation() -> None:
    older = TrackPin(track="canary", generation=1)
    assert choose(older, rollout(weight=100, generation=2), 0.0) == STABLE_PIN


def test_promote_moves_everyone_to_the_promoted_version_once() -> None:
    promoted = rollout(RolloutState.PROMOTED, weight=100)
    assert choose(None, promoted, 0.99) == CANARY2
    assert choose(STABLE_PIN, promoted, 0.99) == CANARY2
    assert choose(CANARY2, promoted, 0.99) == CANARY2


def test_router_pins_and_names_the_subject() -> None:
    pins: dict[str, TrackPin] = {}
    assert TrackRouter().pin(pins, "returns") == "switchboard.v1.agent.returns.turn"
    assert pins == {"returns": STABLE_PIN}


def test_subjects_per_track() -> None:
    assert subjects.agent_turn("returns") == "switchboard.v1.agent.returns.turn"  # unchanged for stable
    assert subjects.agent_turn("returns", "canary") == "switchboard.v1.agent.returns.canary.turn"
    assert subjects.agent_queue("returns", "canary") == "agent.returns.canary"


def test_parse_weights() -> None:
    assert parse_weights("returns=10, billing=0") == {"returns": 10, "billing": 0}
    assert parse_weights("") == {}
    for bad in ("returns=101", "returns", "returns=-1", "returns=x", "re turns=1"):
        with pytest.raises(ValueError):
            parse_weights(bad)
