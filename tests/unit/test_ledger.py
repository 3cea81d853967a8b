"""The side-effect ledger against a real nats-server: replay, and a live claim that outlives the deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig

from switchboard.local import NatsServer
from switchboard.state import StateError
from switchboard.state.ledger import LEDGER_BUCKET, EffectPending, SideEffectLedger


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SideEffectLedger]:
    with NatsServer(tmp_path / "nats") as server:
        nc = await nats.connect(server.url)
        try:
            yield await SideEffectLedger.open(nc.jetstream(), owner="agent-clerk", takeover_s=3.0)
        finally:
            await nc.close()


async def test_a_recorded_call_is_replayed_not_run_again(ledger: SideEffectLedger) -> None:
    runs: list[int] = []

    async def run() -> str:
        runs.append(1)
        return "done once"

    assert await ledger.once("agent-clerk.s1.k1", run) == "done once"
    assert await ledger.once("agent-clerk.s1.k1", run) == "done once"
    assert len(runs) == 1 and ledger.replayed == 1


async def test_a_live_claim_past_the_deadline_is_reported_as_pending(ledger: SideEffectLedger) -> None:
    """The first runner is alive and slow (it refreshes its claim): a retry must not run the call again,
    and must say why before its deadline instead of timing out like any other hang."""
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "slow result"

    first = asyncio.create_task(ledger.once("agent-clerk.s1.k2", slow))
    while True:  # wait for the first runner's claim to be in the ledger
        try:
            await ledger._kv.get("agent-clerk.s1.k2")
            break
        except Exception:
            await asyncio.sleep(0.01)  # ok-sleep: polling the KV for the claim
    started = time.time()

    async def never() -> str:
        raise AssertionError("a claimed call ran twice")

    with pytest.raises(EffectPending, match="still claimed by another runner"):
        await ledger.once("agent-clerk.s1.k2", never, deadline=started + 1.0)
    assert time.time() - started < 1.0  # reported before the deadline, with the margin
    release.set()
    assert await first == "slow result"
    assert await ledger.once("agent-clerk.s1.k2", never) == "slow result"


async def test_a_key_outside_its_owner_is_refused(ledger: SideEffectLedger) -> None:
    async def run() -> str:
        raise AssertionError("ran under another owner's key")

    with pytest.raises(ValueError, match="not agent-clerk's"):
        await ledger.once("agent-billing.s1.k1", run)


async def test_a_bucket_that_would_let_an_agent_read_or_purge_others_records_is_refused(nc: Client) -> None:
    """A bucket of the ledger's name made as nats-py makes a KV bucket (gets by stream API, rollups allowed)
    could not be scoped per agent: the ledger will not use it."""
    await nc.jetstream().create_key_value(KeyValueConfig(bucket=LEDGER_BUCKET, history=1))
    with pytest.raises(StateError, match="must allow direct gets and refuse rollups"):
        await SideEffectLedger.open(nc.jetstream(), owner="agent-clerk")
