"""Coalesced text deltas: chunks produced together travel as one message, in order, before the result."""

from __future__ import annotations

import asyncio
import time

import pytest

from switchboard.runtime.coalesce import DeltaCoalescer


class Published:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def __call__(self, text: str) -> None:
        await asyncio.sleep(0)  # ok-sleep: a publish that yields, as a real one may
        self.messages.append(text)


async def until(predicate: object, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)  # ok-sleep: poll interval


async def test_chunks_of_one_step_are_one_message_and_nothing_waits() -> None:
    out = Published()
    deltas = DeltaCoalescer(out)
    for word in ("Hello ", "there, ", "how ", "are ", "you?"):
        deltas.add(word)
    await until(lambda: out.messages)  # flushed by the event loop on its own, no close needed
    assert out.messages == ["Hello there, how are you?"]
    await deltas.aclose()
    assert out.messages == ["Hello there, how are you?"] and deltas.sent == 1


async def test_chunks_apart_in_time_stay_apart_and_keep_their_order() -> None:
    out = Published()
    deltas = DeltaCoalescer(out)
    deltas.add("one ")
    await until(lambda: len(out.messages) == 1)
    deltas.add("two ")
    deltas.add("three")
    await deltas.aclose()
    assert out.messages == ["one ", "two three"]


async def test_a_flush_interval_joins_chunks_that_arrive_within_it() -> None:
    out = Published()
    deltas = DeltaCoalescer(out, flush_after_s=0.05)
    deltas.add("a")
    await asyncio.sleep(0.005)  # ok-sleep: a model producing its next token a little later
    deltas.add("b")
    await until(lambda: out.messages)
    assert out.messages == ["ab"]


async def test_close_sends_what_is_left_before_the_caller_sends_its_result() -> None:
    out = Published()
    deltas = DeltaCoalescer(out, flush_after_s=10.0)  # the timer would fire far too late
    deltas.add("last words")
    await deltas.aclose()
    assert out.messages == ["last words"]
    deltas.add("")  # empty chunks are ignored
    await deltas.aclose()
    assert out.messages == ["last words"]


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        DeltaCoalescer(Published(), flush_after_s=-1)


async def test_the_unsent_tail_is_left_to_the_result_only_when_the_result_says_exactly_that() -> None:
    out = Published()
    deltas = DeltaCoalescer(out, flush_after_s=60)  # nothing leaves before the close
    deltas.add("Hello ")
    deltas.add("there.")
    assert await deltas.close_into("Hello there.") is True
    assert out.messages == []  # the whole answer travels in the result: no delta message at all

    out = Published()
    deltas = DeltaCoalescer(out)
    deltas.add("Hello ")
    await until(lambda: out.messages)
    deltas.add("there.")
    assert await deltas.close_into("Hello there.") is True
    assert out.messages == ["Hello "]  # what was sent stays sent; the tail is the result's

    out = Published()
    deltas = DeltaCoalescer(out, flush_after_s=60)
    deltas.add("Your card is 4111")
    assert await deltas.close_into("Your card is [redacted]") is False  # the result says otherwise
    assert out.messages == ["Your card is 4111"]  # so the text goes out as a delta, as before
