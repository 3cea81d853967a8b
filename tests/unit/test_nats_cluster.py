"""NatsCluster: 3 real nats-server processes; leader elections; sessions and audit riding them out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.bus import Bus
from switchboard.bus.subjects import AUDIT_STREAM, SESSIONS_BUCKET
from switchboard.local import NatsCluster
from switchboard.schemas import HandoffDecision, HandoffOutcome, SessionState
from switchboard.state import AuditLog, SessionStore

pytestmark = pytest.mark.system

SESSIONS_STREAM = f"KV_{SESSIONS_BUCKET}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "nats", 3, log_dir=tmp_path / "log") as c:
        yield c


def test_cluster_elects_a_new_meta_leader_when_the_leader_dies(cluster: NatsCluster) -> None:
    assert len(cluster.urls) == 3 and cluster.url == ",".join(cluster.urls)
    assert all(cluster.healthy(i) for i in range(3))
    leader = cluster.leader_index()
    assert leader is not None

    killed_at = time.monotonic()
    cluster.kill(leader)
    assert not cluster.alive(leader)
    new_leader = cluster.wait_leader(30, not_=leader)
    print(f"\nmeta leader n{leader} killed; n{new_leader} elected after {time.monotonic() - killed_at:.1f}s")
    assert new_leader != leader and cluster.alive(new_leader)

    cluster.restart(leader)
    assert cluster.alive(leader) and cluster.healthy(leader)
    assert cluster.leader_index() is not None


def _decision(session_id: str, n: int) -> HandoffDecision:
    return HandoffDecision(
        session_id=session_id, response_id=f"resp_{n}", source="triage", requested_target="auth",
        final_target="auth", outcome=HandoffOutcome.ACCEPTED, reason="test", context_keys=[], depth=1, ts=time.time(),
    )  # fmt: skip


async def test_sessions_and_audit_ride_out_a_stream_leader_kill(cluster: NatsCluster) -> None:
    async with Bus(cluster.urls, name="test") as bus:
        store = await SessionStore.open(bus.js, replicas=3)
        audit = await AuditLog.open(bus.js, replicas=3)
        assert (await bus.js.stream_info(SESSIONS_STREAM)).config.num_replicas == 3
        assert (await bus.js.stream_info(AUDIT_STREAM)).config.num_replicas == 3
        leader = await asyncio.to_thread(cluster.wait_stream_leader, SESSIONS_STREAM, 30)

        now = time.time()
        ids = [f"sess_chaos{i}" for i in range(4)]
        for sid in ids:
            await store.save(
                SessionState(session_id=sid, scenario="t", active_agent="a", created_at=now, updated_at=now), 0
            )
        done = dict.fromkeys(ids, 0)
        latencies: list[tuple[float, float]] = []  # (start, seconds)
        stop = asyncio.Event()
        progress = asyncio.Condition()

        async def writer(sid: str) -> None:
            while not stop.is_set():
                started = time.monotonic()
                loaded = await store.load(sid)
                assert loaded is not None
                state, revision = loaded
                await store.save(
                    state.model_copy(update={"turns": state.turns + 1, "updated_at": time.time()}), revision
                )
                await audit.append(_decision(sid, done[sid]))
                done[sid] += 1
                latencies.append((started, time.monotonic() - started))
                async with progress:
                    progress.notify_all()

        async def until_each_did(n: int) -> None:
            base = dict(done)
            async with progress:
                await progress.wait_for(lambda: all(done[s] - base[s] >= n for s in ids))

        tasks = [asyncio.create_task(writer(sid)) for sid in ids]
        await until_each_did(3)
        killed_at = time.monotonic()
        cluster.kill(leader)
        new_leader = await asyncio.to_thread(cluster.wait_stream_leader, SESSIONS_STREAM, 30, not_=leader)
        elected_at = time.monotonic()
        await until_each_did(3)
        stop.set()
        await asyncio.gather(*tasks)

        during = [s for t, s in latencies if t <= elected_at and t + s >= killed_at]
        print(
            f"\nKV leader n{leader} killed; n{new_leader} leads after {elected_at - killed_at:.1f}s; "
            f"{len(during)} ops spanned the election, slowest {max(during, default=0):.1f}s"
        )
        await asyncio.to_thread(cluster.wait_leader, 30, not_=leader)  # reading the audit needs a consumer
        for sid in ids:  # every acknowledged write is there, exactly once
            loaded = await store.load(sid)
            assert loaded is not None and loaded[0].turns == done[sid]
            assert len(await audit.read_session(sid)) == done[sid]
