"""Riding out JetStream leader elections: bounded retries of KV and stream operations.

While a stream's (or the meta) leader is being elected, typically 5-8 s after a node is lost,
JetStream requests time out or get "no responders" / 503 "cluster not available" answers.
``StateRetry.run`` retries such transient failures with the shared retry helper
(``switchboard.resilience.call_with_retry``: exponential backoff, full jitter) for up to
``budget_s`` (longer than an election), bounding each attempt by ``attempt_timeout_s``.
Anything else, a compare-and-set conflict (``KeyWrongLastSequenceError``) in particular, is
raised at once.

A write whose ack was lost may have been applied; ``cas_write`` re-reads the key when a retried
compare-and-set reports a conflict and treats "the stored value is what we wrote" as success.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import nats.errors
from nats.js import errors as js_errors
from nats.js.kv import KeyValue

from ..errors import SwitchboardError
from ..resilience.retry import Classifier, RetryPolicy, call_with_retry
from .errors import StaleRead

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
    if isinstance(exc, SwitchboardError):  # our own errors say it themselves
        return exc.retryable
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
class StateRetry(RetryPolicy):
    """The retry policy of state operations: the shared :class:`RetryPolicy` with no attempt cap, a
    budget longer than an election, a per-attempt bound and the transient-error classifier."""

    attempts: int | None = None
    budget_s: float = 20.0
    """No new attempt starts later than this after the first one (an election takes ~5-8 s)."""
    attempt_timeout_s: float = 1.0
    """One attempt's bound; a request to a dead leader is otherwise only answered by a 5 s timeout."""
    retry_if: Classifier = field(default=is_transient)

    async def run(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` until it succeeds, fails with a non-transient error, or the budget is spent."""

        def on_retry(attempt: int, exc: BaseException) -> None:
            log.warning("state operation failed; retrying", extra={"op": op, "attempt": attempt, "error": repr(exc)})

        async def attempt(n: int) -> T:
            result = await fn()
            if n > 1:
                log.info("state operation recovered", extra={"op": op, "attempt": n})
            return result

        return await call_with_retry(attempt, self, on_retry=on_retry)


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
                try:
                    return await kv.create(key, value)
                except js_errors.KeyNotFoundError as exc:
                    # nats-py's create met an existing key, then could not read it (a follower not yet
                    # caught up after an election): neither a conflict nor a success yet, so try again
                    raise StaleRead(f"{op}: {key} exists but could not be read back yet") from exc
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
