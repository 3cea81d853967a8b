"""Retry policy and circuit breakers."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from switchboard.bus import NoResponders, RemoteError
from switchboard.resilience import BreakerOpen, Breakers, RetryPolicy, call_with_retry
from switchboard.schemas import ErrorCode, ErrorReply
from switchboard.telemetry import metrics

FAST = RetryPolicy(attempts=3, base_s=0.001, max_backoff_s=0.002)
BUSY = RemoteError(ErrorReply(code=ErrorCode.BUSY, message="busy", retryable=True))
BAD = RemoteError(ErrorReply(code=ErrorCode.BAD_REQUEST, message="bad", retryable=False))


async def _failing(errors: list[Exception], calls: list[int]) -> str:
    calls.append(1)
    if errors:
        raise errors.pop(0)
    return "ok"


async def test_retryable_errors_are_retried_up_to_the_attempt_cap() -> None:
    calls: list[int] = []
    errors: list[Exception] = [NoResponders("x"), NoResponders("x")]
    assert await call_with_retry(lambda n: _failing(errors, calls), FAST, deadline=time.time() + 5) == "ok"
    assert len(calls) == 3
    calls.clear()
    errors = [NoResponders("x")] * 3
    with pytest.raises(NoResponders):
        await call_with_retry(lambda n: _failing(errors, calls), FAST, deadline=time.time() + 5)
    assert len(calls) == 3


async def test_non_retryable_errors_are_not_retried() -> None:
    calls: list[int] = []
    with pytest.raises(RemoteError):
        await call_with_retry(lambda n: _failing([BAD, BAD], calls), FAST, deadline=time.time() + 5)
    assert len(calls) == 1


async def test_backpressure_is_retried_beyond_the_attempt_cap_until_the_deadline() -> None:
    calls: list[int] = []
    errors: list[Exception] = [BUSY] * 6
    retried: list[int] = []
    result = await call_with_retry(
        lambda n: _failing(errors, calls), FAST, deadline=time.time() + 5, on_retry=lambda n, e: retried.append(n)
    )
    assert result == "ok" and len(calls) == 7 and retried == [1, 2, 3, 4, 5, 6]


async def test_no_retry_starts_past_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # the longest backoff full jitter can draw: a draw under 10 ms legitimately retried in time (1 run in 100)
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    calls: list[int] = []
    slow = RetryPolicy(attempts=10, base_s=1.0, max_backoff_s=1.0)
    with pytest.raises(NoResponders):
        await call_with_retry(lambda n: _failing([NoResponders("x")] * 10, calls), slow, deadline=time.time() + 0.01)
    assert len(calls) == 1


async def _guarded(breakers: Breakers, exc: Exception | None) -> None:
    async with breakers.guard("agent.x"):
        if exc is not None:
            raise exc


def _gauge(name: str) -> float | None:
    return metrics().registry.get_sample_value("switchboard_breaker_state", {"target": name})


async def test_breaker_opens_on_retryable_failures_and_recovers_after_cooldown() -> None:
    breakers = Breakers(threshold=2, cooldown_s=0.2)
    await _guarded(breakers, None)
    assert _gauge("agent.x") == 0  # closed
    for _ in range(2):
        with pytest.raises(NoResponders):
            await _guarded(breakers, NoResponders("x"))
    assert _gauge("agent.x") == 2  # the gauge follows the state: open
    with pytest.raises(BreakerOpen):
        await _guarded(breakers, None)
    assert await breakers.state("agent.x") == "opened"
    deadline = time.monotonic() + 5
    while True:  # half-opens once the cool-down has passed; one success closes it
        try:
            await _guarded(breakers, None)
            break
        except BreakerOpen:
            assert time.monotonic() < deadline
    assert await breakers.state("agent.x") == "closed"
    assert _gauge("agent.x") == 0


@pytest.mark.parametrize("exc", [BAD, BUSY])
async def test_bad_requests_and_busy_do_not_open_the_breaker(exc: Exception) -> None:
    breakers = Breakers(threshold=2, cooldown_s=10)
    for _ in range(5):
        with pytest.raises(RemoteError):
            await _guarded(breakers, exc)
    await _guarded(breakers, None)
    assert await breakers.state("agent.x") == "closed"


async def _cancelled_call(breakers: Breakers) -> bool:
    """A call that is cancelled while it runs (a caller barged in or hung up); False if the breaker refused it."""
    entered = asyncio.Event()

    async def call() -> None:
        async with breakers.guard("agent.x"):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(call())
    waiter = asyncio.create_task(entered.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if task.done():  # refused before it ran
        waiter.cancel()
        with pytest.raises(BreakerOpen):
            await task
        return False
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return True


async def test_a_cancelled_call_says_nothing_about_the_downstream() -> None:
    """The caller's cancel (barge-in, disconnect) is not a failure of the agent: in a row they must not
    open its breaker, and a cancelled trial call after the cool-down neither re-opens nor closes it."""
    breakers = Breakers(threshold=2, cooldown_s=0.2)
    for _ in range(4):
        assert await _cancelled_call(breakers)
    assert await breakers.state("agent.x") == "closed"
    for _ in range(2):
        with pytest.raises(NoResponders):
            await _guarded(breakers, NoResponders("x"))
    assert await breakers.state("agent.x") == "opened"
    deadline = time.monotonic() + 5
    while not await _cancelled_call(breakers):  # refused until the cool-down has passed
        assert time.monotonic() < deadline, "the breaker never half-opened"
        await asyncio.sleep(0.01)  # ok-sleep: poll interval while the cool-down runs
    assert await breakers.state("agent.x") == "half-opened"


def test_the_ack_timeout_follows_slow_responders_but_not_a_frozen_one() -> None:
    from switchboard.bus.rpc import AckTimes

    acks = AckTimes()
    assert acks.timeout("s", 0.25) == 0.25  # nothing seen yet
    for _ in range(20):
        acks.record("healthy", 0.002)
        acks.record("saturated", 0.2)
    assert acks.timeout("healthy", 0.25) == 0.25  # a frozen replica among fast ones: noticed at 0.25 s
    assert acks.timeout("saturated", 0.25) == pytest.approx(0.8)  # every responder slow: not taken for lost
