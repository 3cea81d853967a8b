"""Side-effecting tools run once per turn: the ledger replays recorded results; a crash mid-tool is
taken over with the same idempotency key."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest

from switchboard.bus import Bus
from switchboard.local import NatsServer
from switchboard.state import SideEffectLedger

from .client import collect, open_session, sdk_client
from .stacks import make_stack

pytestmark = pytest.mark.system


async def test_ledger_runs_a_call_once_and_replays_its_output() -> None:
    with NatsServer(Path(tempfile.mkdtemp())) as server:
        async with Bus([server.url], name="test") as bus:
            ledger = await SideEffectLedger.open(bus.js, owner="agent-clerk")
            runs = 0

            async def effect() -> str:
                nonlocal runs
                runs += 1
                return f"done {runs}"

            first = await ledger.once("agent-clerk.s1.k1", effect)
            again = await ledger.once("agent-clerk.s1.k1", effect)
            other = await ledger.once("agent-clerk.s1.k2", effect)
    assert (first, again, other, runs) == ("done 1", "done 1", "done 2", 2)
    assert ledger.replayed == 1


async def test_concurrent_claims_run_the_call_once() -> None:
    with NatsServer(Path(tempfile.mkdtemp())) as server:
        async with Bus([server.url], name="test") as bus:
            ledger = await SideEffectLedger.open(bus.js, owner="agent-clerk")
            runs = 0
            release, started = asyncio.Event(), asyncio.Event()

            async def slow_effect() -> str:
                nonlocal runs
                runs += 1
                started.set()
                await release.wait()
                return "once"

            first = asyncio.create_task(ledger.once("agent-clerk.s1.k", slow_effect))
            second = asyncio.create_task(ledger.once("agent-clerk.s1.k", slow_effect))
            await asyncio.wait_for(started.wait(), 5)
            release.set()
            assert await asyncio.gather(first, second) == ["once", "once"]
    assert runs == 1


def _counts(path: Path) -> tuple[int, int]:
    if not path.exists():
        return 0, 0
    with sqlite3.connect(path) as db:
        try:
            executions = db.execute("SELECT COUNT(*) FROM executions").fetchone()[0]
            effects = db.execute("SELECT COUNT(*) FROM effects").fetchone()[0]
        except sqlite3.OperationalError:
            return 0, 0
    return executions, effects


async def test_replica_killed_inside_a_side_effect_does_not_double_it(tmp_path: Path) -> None:
    db = tmp_path / "effects.sqlite"
    env = {"EFFECTS_LINGER_S": "60", "SWITCHBOARD_LEDGER_TAKEOVER_S": "1", "EFFECTS_DB": str(db)}
    with make_stack(tmp_path, scenario="effects", env=env) as stack:
        async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
            await open_session(conn)
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "effect A"}]}
            )
            await conn.response.create()
            deadline = time.monotonic() + 20
            while _counts(db)[0] < 1:  # wait until the effect happened inside replica 1
                assert time.monotonic() < deadline, "the tool never ran"
                await asyncio.sleep(0.05)  # ok-sleep: polling the tool's database for the effect
            stack.start_agent("front", wait=True)
            stack.kill("agent:front")
            reply = await collect(conn)
    assert reply.status == "completed" and reply.agent == "front", reply.text
    assert "recorded 1 effect(s) after 2 execution(s)" in reply.text
    assert _counts(db) == (2, 1)
