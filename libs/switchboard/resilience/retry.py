"""Retry policy: exponential backoff with full jitter, only for retryable errors, within a deadline."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_any,
    wait_random_exponential,
)
from tenacity.stop import stop_base

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
    error is re-raised.
    """
    failures = 0

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None and on_retry is not None:
            on_retry(state.attempt_number, exc)

    class past_deadline(stop_base):  # noqa: N801 - tenacity's stop conditions are lower-case
        def __call__(self, state: RetryCallState) -> bool:
            return time.time() + (state.upcoming_sleep or 0.0) >= deadline

    class attempts_used(stop_base):  # noqa: N801
        def __call__(self, state: RetryCallState) -> bool:
            nonlocal failures
            exc = state.outcome.exception() if state.outcome else None
            if exc is None or not is_backpressure(exc):
                failures += 1
            return failures >= policy.attempts

    retrying = AsyncRetrying(
        stop=stop_any(attempts_used(), past_deadline()),
        wait=wait_random_exponential(multiplier=policy.base_s, max=policy.max_backoff_s),
        retry=retry_if_exception(is_retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await fn(attempt.retry_state.attempt_number)
    raise AssertionError("unreachable: tenacity re-raises the last error")
