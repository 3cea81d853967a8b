"""A taken-over connection's hold (``switchboard_edge.takeover``): the newer connection waits for the older
one's handler to end, so that what the older one stores on its way out is there when the newer one loads."""

from __future__ import annotations

import asyncio

from switchboard_edge.takeover import Hold


async def _turns_of_the_loop(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)  # ok-sleep: a yield to the event loop, not a wait for time to pass


async def test_giving_up_waits_until_the_old_connection_has_ended() -> None:
    closed = asyncio.Event()

    async def close() -> None:
        closed.set()

    hold = Hold("sess_1", close)
    giving_up = asyncio.create_task(hold.give_up(30))
    await closed.wait()
    await _turns_of_the_loop(20)
    assert not giving_up.done()  # closed, but its handler (and its last save) has not finished
    hold.ended.set()
    await asyncio.wait_for(giving_up, 5)


async def test_a_connection_that_never_ends_is_given_up_on_after_the_bound() -> None:
    async def close() -> None:
        return None

    hold = Hold("sess_1", close)
    await asyncio.wait_for(hold.give_up(0.05), 5)  # returns (and logs) instead of hanging the newer connection
    assert not hold.ended.is_set()
