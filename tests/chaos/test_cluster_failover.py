"""Chaos: SIGKILL a nats-server of the 3-node JetStream cluster under a conversation load.

Every turn must complete, answered by the agent the script reaches (not the fallback), and none may be
lost from the session store, whether the killed node led the sessions KV stream (a leader election,
~5-7 s) or was a follower.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest

from switchboard.bus.subjects import AUDIT_STREAM, SESSIONS_BUCKET
from switchboard.local.stack import Stack
from switchboard.state import LEDGER_BUCKET

from .conversations import Conversations, lost_turns, resumed_history_items, summary

pytestmark = [pytest.mark.chaos, pytest.mark.system]

SESSIONS_STREAM = f"KV_{SESSIONS_BUCKET}"
LEDGER_STREAM = f"KV_{LEDGER_BUCKET}"


async def _all_nodes_healthy(stack: Stack) -> None:
    cluster = stack.nats_cluster
    for i in range(cluster.size):
        if not cluster.alive(i):
            await asyncio.to_thread(cluster.restart, i)
    await asyncio.to_thread(cluster.wait_stream_leader, SESSIONS_STREAM, 30)
    await asyncio.to_thread(cluster.wait_leader, 30)


def _wait_for(probe: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)  # ok-sleep: poll interval of the monitoring endpoint


async def _check(stack: Stack, loop: Conversations, fault: tuple[float, float], label: str) -> dict[str, object]:
    figures = summary(loop.turns, fault)
    lost = await lost_turns(stack, loop.turns)
    figures["lost"] = len(lost)
    print(f"\n{label}: {json.dumps(figures)}")
    assert figures["failed"] == 0, [(t.text, t.status, t.errors) for t in loop.turns if t.status != "completed"]
    assert not lost, [(t.session_id, t.text, t.item_id, t.reply) for t in lost]
    assert figures["errors"] == 0, [t.errors for t in loop.turns if t.errors]
    # completed by the agent the script reaches, not by the fallback: the platform's retries ride out the fault
    assert figures["fallbacks"] == 0, [(t.text, t.agent) for t in loop.turns if t.agent == "generalist"]
    for sid in loop.sessions[:3]:  # a caller reconnecting sees the whole conversation
        assert await resumed_history_items(stack, sid) >= sum(t.session_id == sid for t in loop.turns)
    return figures


async def test_turns_ride_out_killing_a_follower(clustered: Stack) -> None:
    await _all_nodes_healthy(clustered)
    cluster = clustered.nats_cluster
    kv_leader = cluster.stream_leader_index(SESSIONS_STREAM)
    # a follower of the sessions KV; preferably of the other data-path streams too, with clients to move
    others = {cluster.stream_leader_index(s) for s in (AUDIT_STREAM, LEDGER_STREAM)}
    follower = max(
        (i for i in range(cluster.size) if i != kv_leader),
        key=lambda i: (i not in others, cluster.client_connections(i)),
    )
    async with Conversations(clustered, callers=6) as loop:
        await loop.each_completes(2)
        connections = await asyncio.to_thread(cluster.client_connections)
        moved = await asyncio.to_thread(cluster.client_connections, follower)
        killed_at = time.monotonic()
        cluster.kill(follower)
        # processes that were connected to the follower reconnect elsewhere, and callers keep talking
        await asyncio.to_thread(_wait_for, lambda: cluster.client_connections() >= connections, 30)
        reconnected_at = time.monotonic()
        await loop.each_completes(4)
        assert cluster.stream_leader_index(SESSIONS_STREAM) == kv_leader, "no election for a follower"
        await asyncio.to_thread(cluster.restart, follower)
        restarted_at = time.monotonic()
        await loop.each_completes(1)
    leads = "audit or ledger stream" if follower in others else "nothing"
    print(
        f"\nfollower n{follower} (leads {leads}; KV leader n{kv_leader}) killed; its {moved} client connections "
        f"were back after {reconnected_at - killed_at:.1f}s; node restarted after {restarted_at - killed_at:.1f}s"
    )
    await _check(clustered, loop, (killed_at, restarted_at), "kill follower")
    await _all_nodes_healthy(clustered)


async def test_turns_ride_out_killing_the_sessions_kv_leader(clustered: Stack) -> None:
    await _all_nodes_healthy(clustered)
    cluster = clustered.nats_cluster
    async with Conversations(clustered, callers=6) as loop:
        await loop.each_completes(2)
        leader = await asyncio.to_thread(cluster.wait_stream_leader, SESSIONS_STREAM, 30)
        killed_at = time.monotonic()
        cluster.kill(leader)
        new_leader = await asyncio.to_thread(cluster.wait_stream_leader, SESSIONS_STREAM, 30, not_=leader)
        elected_at = time.monotonic()
        await loop.each_completes(2)
        await asyncio.to_thread(cluster.restart, leader)  # the node rejoins under load
        await loop.each_completes(1)
    print(f"\nsessions KV leader n{leader} killed; n{new_leader} elected after {elected_at - killed_at:.1f}s")
    figures = await _check(clustered, loop, (killed_at, elected_at), "kill KV leader")
    assert figures["handoff_turns"], "the load includes handoff turns"
    await _all_nodes_healthy(clustered)
