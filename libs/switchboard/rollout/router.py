"""Which track serves a session's turn to an agent: a pure function of its pin, the rollout and a draw.

What "a live conversation never switches version" means here:

* a session is pinned to a track the first time one of its turns reaches an agent (drawn by the canary
  weight) and every later turn, resume or edge restart uses that pin;
* a canary pin holds only for its own canary generation: once that canary is **aborted** (or finished, or
  replaced by a newer canary) the session is served by stable from its next turn on — an aborted version
  never keeps serving;
* **promote** makes the canary's version the stable one: canary pins never move (the canary track serves
  them until the stable replicas run the same version), and stable pins move forward to the promoted
  version once, at a turn boundary, and never back.
"""

from __future__ import annotations

from ..schemas import Rollout, RolloutState, TrackPin

STABLE_PIN = TrackPin(track="stable")


def choose(pin: TrackPin | None, rollout: Rollout | None, draw: float) -> TrackPin:
    """The pin to use for this turn (and to keep). ``draw`` is uniform in [0, 1), used for a first visit."""
    live = rollout if rollout is not None and rollout.state in (RolloutState.CANARY, RolloutState.PROMOTED) else None
    if live is None:
        return STABLE_PIN
    canary = TrackPin(track="canary", generation=live.generation)
    if pin is None:
        if live.state == RolloutState.PROMOTED or draw * 100 < live.weight:
            return canary
        return STABLE_PIN
    if pin.track == "canary":
        return pin if pin.generation == live.generation else STABLE_PIN
    return canary if live.state == RolloutState.PROMOTED else pin
