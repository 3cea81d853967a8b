"""The edge's live view of rollouts and the operator's writes, on a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.bus import Bus
from switchboard.local import NatsServer
from switchboard.rollout import NoCanary, RolloutError, RolloutStore, RolloutTable
from switchboard.schemas import RolloutState, TrackPin

pytestmark = pytest.mark.system


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


async def until(check: object, what: str) -> None:
    deadline = time.monotonic() + 5
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)  # ok-sleep: poll interval


async def test_the_table_follows_every_change_without_reading_kv_per_turn(nats: NatsServer) -> None:
    async with Bus([nats.url], name="t") as bus:
        store = await RolloutStore.open(bus.js)
        await store.set_weight("returns", 40, version="v2")
        async with await RolloutTable.open(bus.js) as table:
            assert table.snapshot()["returns"].weight == 40  # the current values, before open returns
            await store.set_weight("returns", 100)
            await until(lambda: table.snapshot()["returns"].weight == 100, "weight change not seen")
            pins: dict[str, TrackPin] = {}
            assert table.pin(pins, "returns") == "switchboard.v1.agent.returns.canary.turn"
            assert pins["returns"] == TrackPin(track="canary", generation=1)
            await store.abort("returns")
            await until(lambda: table.snapshot()["returns"].state == RolloutState.ABORTED, "abort not seen")
            assert table.pin(pins, "returns") == "switchboard.v1.agent.returns.turn"
            assert table.pin({}, "billing") == "switchboard.v1.agent.billing.turn"  # no rollout at all
            second = await store.set_weight("returns", 10)
            assert second.generation == 2 and second.state == RolloutState.CANARY
            await store.promote("returns")
            with pytest.raises(RolloutError, match="is being promoted"):
                await store.set_weight("returns", 50)
            await store.finish("returns")
            await until(lambda: table.snapshot()["returns"].state == RolloutState.FINISHED, "finish not seen")
            assert table.pin({"returns": TrackPin(track="canary", generation=2)}, "returns").endswith("returns.turn")
            with pytest.raises(NoCanary):
                await store.finish("returns")
            # the next canary is a new generation: no pin of an earlier canary reaches it
            assert (await store.set_weight("returns", 5)).generation == 3


async def test_seed_weights_only_where_no_rollout_exists(nats: NatsServer) -> None:
    async with Bus([nats.url], name="t") as bus:
        store = await RolloutStore.open(bus.js)
        await store.set_weight("returns", 25)
        async with await RolloutTable.open(bus.js, seed={"returns": 10, "billing": 15, "auth": 0}) as table:
            snapshot = table.snapshot()
        assert snapshot["returns"].weight == 25  # the operator's weight wins over the values
        assert snapshot["billing"].weight == 15 and snapshot["billing"].state == RolloutState.CANARY
        assert "auth" not in snapshot
