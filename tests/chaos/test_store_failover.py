"""Chaos: the tools' store rides out the election that follows killing its KV stream's leader node."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

from switchboard.bus import Bus
from switchboard.local.nats_cluster import NatsCluster
from switchboard.state import ToolStore, store_bucket

pytestmark = [pytest.mark.chaos, pytest.mark.system]


class Return(BaseModel):
    order_id: str
    writer: str


async def test_store_writes_and_racing_creates_ride_out_a_leader_election(tmp_path: Path) -> None:
    bucket = store_bucket("failover")
    with NatsCluster(tmp_path / "nats", 3, log_dir=tmp_path / "log") as cluster:
        async with Bus(cluster.urls, name="replica-1") as one, Bus(cluster.urls, name="replica-2") as two:
            stores = [await ToolStore.open(bus.js, bucket, replicas=3) for bus in (one, two)]
            returns = [s.collection("returns", Return) for s in stores]
            await returns[0].put("warm", Return(order_id="warm", writer="r1"))
            leader = await asyncio.to_thread(cluster.wait_stream_leader, f"KV_{bucket}", 30)
            killed_at = time.monotonic()
            cluster.kill(leader)
            # both "replicas" race to open a return for each of 20 orders while the stream elects a leader
            results = await asyncio.gather(
                *(
                    returns[n % 2].get_or_create(f"A{k}", Return(order_id=f"A{k}", writer=f"r{n % 2 + 1}"))
                    for k in range(20)
                    for n in range(2)
                )
            )
            elapsed = time.monotonic() - killed_at
            listed = await returns[1].list()
    assert sum(created for _, created in results) == 20  # one creator per order, across the election
    assert {d.id for d in listed} == {f"A{k}" for k in range(20)} | {"warm"}
    for k in range(20):
        a, b = results[2 * k][0].value, results[2 * k + 1][0].value
        assert a == b, (k, a, b)
    print(f"\nstore leader n{leader} killed; 40 racing creates done {elapsed:.1f}s after the kill")
