"""Riding out JetStream leader elections: bounded retries of KV and stream operations.

While a stream's (or the meta) leader is being elected, typically 5-8 s after a node is lost,
JetStream requests time out or get "no responders" / 503 "cluster not available" answers.
``StateRetry.run`` retries such transient failures with exponential backoff and full jitter for
up to ``budget_s`` (longer than an election), bounding each attempt by ``attempt_timeout_s``.
Anything else, a compare-and-set conflict (``KeyWrongLastSequenceError``) in particular, is
raised at once.

A write whose ack was lost may have been applied; ``cas_write`` re-reads the key when a retried
compare-and-set reports a conflict and treats "the stored value is what we wrote" as success.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats.errors
from nats.js import errors as js_errors
from nats.js.kv import KeyValue
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_before_delay

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TimeoutError,  # asyncio.TimeoutError and nats.errors.TimeoutError (request, flush) are subclasses
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,  # a lost server: the client reconnects (forever, see Bus)
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    js_errors.NoStreamResponseError,
    js_errors.ServiceUnavailableError,
)
_TRANSIENT_ERR_CODES = frozenset(
    {
        10008,  # JSClusterNotAvailErr: JetStream system temporarily unavailable
        10009,  # JSClusterNotLeaderErr: JetStream cluster can not handle request
        10118,  # JSStreamOfflineErr: stream is offline
    }
)
_TRANSIENT_WORDS = ("no leader", "not available", "temporarily unavailable", "can not handle request", "offline")


def is_transient(exc: BaseException) -> bool:
    """True for failures that a leader election or a reconnect explains; never for a CAS conflict.

    ``ConnectionClosedError`` is not transient: nats-py closes a connection only when told to (the
    process is stopping), and a closed client never reconnects.
    """
    if isinstance(exc, js_errors.KeyWrongLastSequenceError | js_errors.NotFoundError):
        return False
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, js_errors.APIError):
        if exc.code == 503 or exc.err_code in _TRANSIENT_ERR_CODES:
            return True
        text = (exc.description or "").lower()
        return any(word in text for word in _TRANSIENT_WORDS)
    return False


@dataclass(frozen=True)
class StateRetry:
    """How long state operations keep trying through transient failures."""

    budget_s: float = 20.0
    """No new attempt starts later than this after the first one (an election takes ~5-8 s)."""
    attempt_timeout_s: float = 1.0
    """One attempt's bound; a request to a dead leader is otherwise only answered by a 5 s timeout."""
    base_s: float = 0.05
    """Backoff before retry n is uniform in [0, base * 2**(n-1)] (full jitter), capped at ``max_backoff_s``."""
    max_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        if self.budget_s <= 0 or self.attempt_timeout_s <= 0 or self.base_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"invalid state retry policy {self}")

    async def run(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` until it succeeds, fails with a non-transient error, or the budget is spent.

        The first attempt runs without the retry machinery, which is set up only once something
        failed: state operations are on every turn's path and almost always succeed at once.
        """
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.attempt_timeout_s):
                return await fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            first = exc
        sleep = random.uniform(0, min(self.max_backoff_s, self.base_s))
        log.warning(
            "state operation failed; retrying", extra={"op": op, "attempt": 1, "error": repr(first), "sleep_s": sleep}
        )
        await asyncio.sleep(sleep)  # ok-sleep: the backoff before the second attempt
        budget = self.budget_s - (time.monotonic() - started)
        if budget <= 0:
            raise first

        def before_sleep(state: RetryCallState) -> None:  # tenacity's attempt n is the (n + 1)th
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "state operation failed; retrying",
                extra={
                    "op": op, "attempt": state.attempt_number + 1, "error": repr(exc), "sleep_s": state.upcoming_sleep,
                },
            )  # fmt: skip

        def wait(state: RetryCallState) -> float:
            return random.uniform(0, min(self.max_backoff_s, self.base_s * 2**state.attempt_number))

        retrying = AsyncRetrying(
            stop=stop_before_delay(budget),
            wait=wait,
            retry=retry_if_exception(is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                async with asyncio.timeout(self.attempt_timeout_s):
                    result = await fn()
                log.info(
                    "state operation recovered", extra={"op": op, "attempt": attempt.retry_state.attempt_number + 1}
                )
                return result
        raise AssertionError("unreachable: tenacity re-raises the last error")


async def cas_write(kv: KeyValue, key: str, value: bytes, last: int, retry: StateRetry, op: str) -> int:
    """Write ``value`` if the key's revision is still ``last`` (0 = create); return the new revision.

    Raises ``KeyWrongLastSequenceError`` on a real conflict. When an earlier attempt was applied but
    its ack was lost, the retry's conflict is recognised by reading back our own value.
    """
    attempts = 0

    async def attempt() -> int:
        nonlocal attempts
        attempts += 1
        try:
            if last == 0:
                return await kv.create(key, value)
            return await kv.update(key, value, last=last)
        except js_errors.KeyWrongLastSequenceError:
            if attempts == 1:
                raise
            try:
                entry = await kv.get(key)
            except js_errors.KeyNotFoundError:
                entry = None
            if entry is not None and entry.value == value and entry.revision:
                log.info("write applied by an earlier attempt whose ack was lost", extra={"op": op, "key": key})
                return entry.revision
            raise

    return await retry.run(op, attempt)
