"""The edge's live view of rollouts and the operator's writes, on a real nats-server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.bus import Bus
from switchboard.bus.subjects import ROLLOUTS_BUCKET
from switchboard.local import NatsServer
from switchboard.rollout import NoCanary, RolloutError, RolloutStore, RolloutTable, WatchStatus
from switchboard.schemas import RolloutState, TrackPin
from switchboard.telemetry import metrics

pytestmark = pytest.mark.system


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "nats") as server:
        yield server


async def until(check: object, what: str, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
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


def following() -> float | None:
    """The rollouts bucket's ``switchboard_watch_following`` gauge (process-wide: the last table to report wins)."""
    return metrics().registry.get_sample_value("switchboard_watch_following", {"bucket": ROLLOUTS_BUCKET})


async def test_a_restarted_nats_server_is_followed_again_and_the_gap_is_visible(
    nats: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """nats-server restarts on its JetStream file store: the watch's consumer is gone with the old process.
    The table says it is stale while the server is away, re-watches, re-reads, and follows a change made
    after the restart (nats-py alone notices the lost consumer only after ~20 s of missed heartbeats)."""
    caplog.set_level(logging.WARNING, logger="switchboard.rollout.table")
    async with Bus([nats.url], name="op") as op, Bus([nats.url], name="edge") as edge:
        store = await RolloutStore.open(op.js)
        await store.set_weight("returns", 40)
        async with await RolloutTable.open(edge.js, check_s=0.2) as table:
            assert table.watch_status() == WatchStatus(following=True, stale_s=None, losses=0)
            assert following() == 1
            await asyncio.to_thread(nats.stop)
            await until(lambda: not table.watch_status().following, "a table without its server still following")
            stale = table.watch_status()
            assert stale.losses == 1 and stale.stale_s is not None and following() == 0
            assert table.snapshot()["returns"].weight == 40  # meanwhile: the last weights seen
            await asyncio.to_thread(nats.start)  # same port, same store dir
            await store.set_weight("returns", 70)
            # within the re-watch backoff (capped at 5 s), well before nats-py's own ~20 s
            await until(lambda: table.snapshot()["returns"].weight == 70, "change after restart not seen", 10)
            await until(lambda: table.watch_status().following, "not following after the restart")
            assert following() == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("rollouts watch lost") for m in messages), messages
    assert any(m.startswith("rollouts watch re-established") for m in messages), messages


async def test_a_re_created_bucket_is_read_afresh(nats: NatsServer) -> None:
    """The bucket is deleted and created again (its new stream starts at sequence 1 again, where the old
    watch would wait for numbers it already passed): the table reads the new bucket whole, so a rollout
    that is not in it any more is gone from the table too."""
    async with Bus([nats.url], name="op") as op, Bus([nats.url], name="edge") as edge:
        store = await RolloutStore.open(op.js)
        await store.set_weight("returns", 40)
        async with await RolloutTable.open(edge.js, check_s=0.2) as table:
            await op.js.delete_key_value(ROLLOUTS_BUCKET)
            store = await RolloutStore.open(op.js)
            await store.set_weight("billing", 30)
            await until(lambda: set(table.snapshot()) == {"billing"}, "the re-created bucket not read")
            assert table.snapshot()["billing"].weight == 30
            assert table.watch_status().following and table.watch_status().losses >= 1


async def test_a_watch_that_stops_delivering_is_replaced(nats: NatsServer) -> None:
    """The watch's consumer is deleted under it (as a server that lost it would): the next change is
    noticed missing within two checks and read by a new watch."""
    async with Bus([nats.url], name="op") as op, Bus([nats.url], name="edge") as edge:
        store = await RolloutStore.open(op.js)
        await store.set_weight("returns", 40)
        async with await RolloutTable.open(edge.js, check_s=0.2) as table:
            stream = f"KV_{ROLLOUTS_BUCKET}"
            for consumer in await op.js._jsm.consumers_info(stream):  # the JSM API is not on nats-py's surface
                await op.js._jsm.delete_consumer(stream, consumer.name)
            await store.set_weight("returns", 70)
            await until(lambda: table.snapshot()["returns"].weight == 70, "the change after the loss not seen")
            assert table.watch_status().losses == 1
