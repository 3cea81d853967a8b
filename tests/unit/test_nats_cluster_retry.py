"""Riding out leader elections: which errors are retried, the retry budget, lost acks of CAS writes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import nats.errors
import pytest
from nats.js import errors as js_errors

from switchboard.resilience import RetryPolicy
from switchboard.schemas import SessionState
from switchboard.state import SessionConflict, SessionStore, StateError, StateRetry, is_transient
from switchboard.state.retry import cas_write

FAST = StateRetry(budget_s=2.0, attempt_timeout_s=0.2, base_s=0.001, max_backoff_s=0.01)


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        nats.errors.TimeoutError(),
        nats.errors.NoRespondersError(),
        nats.errors.ConnectionReconnectingError(),
        nats.errors.UnexpectedEOF(),
        js_errors.NoStreamResponseError(),
        js_errors.ServiceUnavailableError(code=503, description="JetStream system temporarily unavailable"),
        js_errors.APIError(code=500, err_code=10008, description="JetStream system temporarily unavailable"),
        js_errors.APIError(code=500, err_code=10009, description="JetStream cluster can not handle request"),
        js_errors.APIError(code=500, description="stream has no leader"),
    ],
    ids=repr,
)
def test_election_errors_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        js_errors.KeyWrongLastSequenceError("wrong last sequence: 3"),
        js_errors.KeyNotFoundError(),
        js_errors.BucketNotFoundError(),
        js_errors.BadRequestError(code=400, err_code=10071, description="wrong last sequence"),
        nats.errors.ConnectionClosedError(),  # closed on purpose: it never reconnects
        ValueError("bad json"),
        asyncio.CancelledError(),
    ],
    ids=repr,
)
def test_conflicts_and_bugs_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


async def test_transient_errors_are_retried_until_success() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise nats.errors.NoRespondersError
        return "ok"

    assert await FAST.run("test", flaky) == "ok"
    assert calls == 4


async def test_a_hung_attempt_is_cut_off_and_retried() -> None:
    calls = 0

    async def first_hangs() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(30)  # ok-sleep: simulates a hung attempt that the retry must cut off
        return "ok"

    started = time.monotonic()
    assert await FAST.run("test", first_hangs) == "ok"
    assert calls == 2 and time.monotonic() - started < 1.0


async def test_non_transient_errors_are_raised_at_once() -> None:
    calls = 0

    async def conflict() -> None:
        nonlocal calls
        calls += 1
        raise js_errors.KeyWrongLastSequenceError("wrong last sequence")

    with pytest.raises(js_errors.KeyWrongLastSequenceError):
        await FAST.run("test", conflict)
    assert calls == 1


async def test_the_budget_bounds_the_retries() -> None:
    policy = StateRetry(budget_s=0.3, attempt_timeout_s=0.1, base_s=0.01, max_backoff_s=0.05)

    async def down() -> None:
        raise nats.errors.TimeoutError

    started = time.monotonic()
    with pytest.raises(nats.errors.TimeoutError):
        await policy.run("test", down)
    assert 0.25 < time.monotonic() - started < 1.0


def test_the_default_budget_outlasts_an_election() -> None:
    assert StateRetry().budget_s > 10


@dataclass
class _Entry:
    value: bytes | None
    revision: int


class FakeKV:
    """One key; ``lose_acks`` writes are applied but their ack times out."""

    def __init__(self, lose_acks: int = 0, *, overwrite_after_lost_ack: bytes | None = None) -> None:
        self.value: bytes | None = None
        self.revision = 0
        self.lose_acks = lose_acks
        self.overwrite = overwrite_after_lost_ack
        self.writes = 0

    async def get(self, key: str) -> _Entry:
        if self.value is None:
            raise js_errors.KeyNotFoundError
        return _Entry(self.value, self.revision)

    async def create(self, key: str, value: bytes) -> int:
        return await self.update(key, value, last=0)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        if (last or 0) != self.revision:
            raise js_errors.KeyWrongLastSequenceError(f"wrong last sequence: {self.revision}")
        self.value, self.revision = value, self.revision + 1
        self.writes += 1
        if self.lose_acks:
            self.lose_acks -= 1
            if self.overwrite is not None:  # another writer commits before our retry
                self.value, self.revision = self.overwrite, self.revision + 1
            raise nats.errors.TimeoutError
        return self.revision


async def test_a_write_whose_ack_was_lost_is_recognised_on_retry() -> None:
    kv = FakeKV(lose_acks=1)
    assert await cas_write(kv, "k", b"one", 0, FAST, "test") == 1  # type: ignore[arg-type]
    kv.lose_acks = 1
    assert await cas_write(kv, "k", b"two", 1, FAST, "test") == 2  # type: ignore[arg-type]
    assert kv.writes == 2 and kv.value == b"two"


async def test_a_real_conflict_is_not_mistaken_for_a_lost_ack() -> None:
    kv = FakeKV()
    await cas_write(kv, "k", b"theirs", 0, FAST, "test")  # type: ignore[arg-type]
    with pytest.raises(js_errors.KeyWrongLastSequenceError):
        await cas_write(kv, "k", b"mine", 0, FAST, "test")  # type: ignore[arg-type]

    kv = FakeKV(lose_acks=1, overwrite_after_lost_ack=b"theirs")
    with pytest.raises(js_errors.KeyWrongLastSequenceError):  # ours was applied, then overwritten: a conflict
        await cas_write(kv, "k", b"mine", 0, FAST, "test")  # type: ignore[arg-type]
    assert kv.value == b"theirs"


async def test_session_store_save_survives_a_lost_ack_and_reports_real_conflicts() -> None:
    kv = FakeKV(lose_acks=1)
    store = SessionStore(kv, FAST)  # type: ignore[arg-type]
    now = time.time()
    state = SessionState(session_id="s1", scenario="x", active_agent="a", created_at=now, updated_at=now)
    assert await store.save(state, 0) == 1
    loaded = await store.load("s1")
    assert loaded is not None and loaded[0] == state and loaded[1] == 1
    with pytest.raises(SessionConflict):
        await store.save(state.model_copy(update={"turns": 1}), 0)


class _Flaky(StateError):
    retryable = True


def test_our_errors_are_classified_by_their_flag_never_their_message() -> None:
    assert is_transient(_Flaky("anything"))
    assert not is_transient(StateError("no leader: temporarily unavailable, offline"))


async def test_state_retry_is_the_shared_policy_and_helper() -> None:
    assert isinstance(FAST, RetryPolicy)
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _Flaky("lost a leader")
        return "ok"

    assert await FAST.run("test.flaky", flaky) == "ok"
    assert len(calls) == 3
