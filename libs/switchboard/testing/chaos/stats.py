"""Figures of a run: latency percentiles, and failure details reduced to countable reasons."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50, p99 and max (ms, rounded); zeros when empty."""
    if not values:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {"n": len(ordered), "p50": round(rank(50), 1), "p99": round(rank(99), 1), "max": round(ordered[-1], 1)}


def reason(detail: str) -> str:
    """A failure or fallback detail without its per-turn specifics (ids, numbers), for counting."""
    detail = re.sub(r"switchboard\.v1\.[\w.]+", "<subject>", detail)
    detail = re.sub(r"\b(sess|resp|item)_\w+", "<id>", detail)
    return re.sub(r"\d+(\.\d+)?", "N", detail)[:160]
