"""The one retry helper: exponential backoff with full jitter, only for retryable errors, within a deadline.

Every retried call in Switchboard goes through :func:`call_with_retry` with a :class:`RetryPolicy`:
agent turns and consults (the edge), model calls (agents), KV and stream operations
(``switchboard.state.StateRetry``, the same policy with a transient-error classifier, a budget and
a per-attempt timeout). Which errors are retried is the policy's ``retry_if``; by default an error
says so itself (``SwitchboardError.retryable``), never by its message.

A plain loop, not a general retry engine: it runs on every hop of every turn, and the first attempt
(which almost always succeeds) must cost no more than the call itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import SwitchboardError

T = TypeVar("T")
Classifier = Callable[[BaseException], bool]


def is_retryable(exc: BaseException) -> bool:
    """Our errors say themselves whether trying again may help (``SwitchboardError.retryable``)."""
    return isinstance(exc, SwitchboardError) and exc.retryable


def is_backpressure(exc: BaseException) -> bool:
    """A healthy downstream said "busy": worth retrying until the deadline, no sign of failure."""
    return isinstance(exc, SwitchboardError) and exc.backpressure


def blames_downstream(exc: BaseException) -> bool:
    """Whether a failure says the downstream is unhealthy (what a circuit breaker should count):
    not bad requests, not backpressure, not our own connection dropping."""
    return is_retryable(exc) and not is_backpressure(exc) and not (isinstance(exc, SwitchboardError) and exc.local)


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried. Attempt n that fails waits a random time in [0, base * 2**(n-1)]
    (full jitter), capped at ``max_backoff_s``, before attempt n + 1."""

    attempts: int | None = 3
    """Total attempts, the first included (backpressure does not use them up); None: no cap, only
    the deadline or ``budget_s`` ends the retries."""
    base_s: float = 0.05
    """Backoff scale."""
    max_backoff_s: float = 1.0
    budget_s: float | None = None
    """No retry starts when its backoff would end later than this after the first attempt started."""
    attempt_timeout_s: float | None = None
    """One attempt's bound (its ``TimeoutError`` is then classified like any other error)."""
    retry_if: Classifier = is_retryable
    """Which errors are worth another attempt."""

    def __post_init__(self) -> None:
        if (
            (self.attempts is not None and self.attempts < 1)
            or self.base_s < 0
            or self.max_backoff_s < 0
            or (self.budget_s is not None and self.budget_s <= 0)
            or (self.attempt_timeout_s is not None and self.attempt_timeout_s <= 0)
        ):
            raise ValueError(f"invalid retry policy {self}")

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based)."""
        return random.uniform(0, min(self.max_backoff_s, self.base_s * 2 ** min(attempt - 1, 32)))


async def call_with_retry(
    fn: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    deadline: float | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Call ``fn(attempt)`` until it succeeds, raises what ``policy.retry_if`` refuses, or runs out
    of attempts, of ``deadline`` (wall clock, ``time.time()``) or of the policy's budget.

    Backpressure ("busy") does not use up attempts: it is retried, with the same growing backoff,
    until the deadline. An error's ``retry_after_s`` (the downstream's ``Retry-After``) lengthens the
    backoff, up to ``max_backoff_s``: a longer one ends the retries. No retry starts when its backoff
    would end past the deadline. The last
    error is re-raised as it is. ``on_retry(attempt, error)`` is told of each failed attempt that
    will be retried.
    """
    stop_at = deadline
    if policy.budget_s is not None:
        budget_end = time.time() + policy.budget_s
        stop_at = budget_end if stop_at is None else min(stop_at, budget_end)
    failures = 0
    attempt = 0
    while True:
        attempt += 1
        try:
            if policy.attempt_timeout_s is None:
                return await fn(attempt)
            async with asyncio.timeout(policy.attempt_timeout_s):
                return await fn(attempt)
        except Exception as exc:
            if not policy.retry_if(exc):
                raise
            if not is_backpressure(exc):
                failures += 1
            asked = exc.retry_after_s if isinstance(exc, SwitchboardError) else None
            sleep = max(policy.backoff(attempt), asked or 0.0)
            if policy.attempts is not None and failures >= policy.attempts:
                raise
            if asked is not None and asked > policy.max_backoff_s:
                raise  # a wait longer than this policy ever makes: the caller's fallback answers sooner
            if stop_at is not None and time.time() + sleep >= stop_at:
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
        await asyncio.sleep(sleep)  # ok-sleep: the backoff between attempts
