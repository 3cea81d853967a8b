"""Retry policy: exponential backoff with full jitter, only for retryable errors, within a deadline."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    """Errors say themselves whether trying again may help (``retryable`` attribute)."""
    return bool(getattr(exc, "retryable", False))


def is_backpressure(exc: BaseException) -> bool:
    """A healthy downstream said "busy": worth retrying until the deadline, no sign of failure."""
    return bool(getattr(exc, "backpressure", False))


def blames_downstream(exc: BaseException) -> bool:
    """Whether a failure says the downstream is unhealthy (what a circuit breaker should count):
    not bad requests, not backpressure, not our own connection dropping."""
    return is_retryable(exc) and not is_backpressure(exc) and not getattr(exc, "local", False)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    """Total attempts, the first included."""
    base_s: float = 0.05
    """Backoff scale: attempt n waits a random time in [0, base * 2**n], capped at ``max_backoff_s``."""
    max_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"invalid retry policy {self}")


async def call_with_retry(
    fn: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    deadline: float,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Call ``fn(attempt)`` until it succeeds, a non-retryable error, the attempt cap or the deadline.

    Backpressure ("busy") does not use up attempts: it is retried, with the same growing backoff,
    until the deadline. No retry starts when its backoff would end past ``deadline``. The last
    error is re-raised. Attempt n that fails waits a random time in [0, base * 2**(n-1)] (full
    jitter), capped at ``max_backoff_s``. A plain loop: it runs on every hop of every turn, where
    setting up a general retry engine per call cost more than the call's own bookkeeping.
    """
    failures = 0
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn(attempt)
        except Exception as exc:
            if not is_retryable(exc):
                raise
            if not is_backpressure(exc):
                failures += 1
            sleep = random.uniform(0, min(policy.max_backoff_s, policy.base_s * 2 ** (attempt - 1)))
            if failures >= policy.attempts or time.time() + sleep >= deadline:
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
        await asyncio.sleep(sleep)  # ok-sleep: the backoff between attempts
