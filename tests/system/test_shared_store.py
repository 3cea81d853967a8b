"""Tool data lives in the shared store, not on a replica's disk: two replicas of `returns`, each in its
own working directory (no shared files), see each other's returns, and racing creates make one return."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from switchboard.bus import Bus
from switchboard.local.stack import Proc, Stack
from switchboard.schemas import CallerIdentity, FunctionCallOutputItem
from switchboard.testing.turns import AgentDriver

from .client import open_session, say, sdk_client
from .stacks import make_stack

pytestmark = pytest.mark.system

OTHERS = ["triage", "auth", "billing", "generalist"]


def _replica(stack: Stack, tmp: Path, n: int) -> Proc:
    """A replica of `returns` with a working directory, HOME and TMPDIR of its own."""
    home = tmp / f"replica-{n}"
    home.mkdir()
    env = {"HOME": str(home), "TMPDIR": str(home)}
    return stack.start_agent("returns", wait=True, env=env, cwd=home)


def _replica_id(proc: Proc) -> str:
    """The ``replica`` a process stamps on its results (host:pid)."""
    line = next(line for line in proc.lines if '"msg": "agent ready"' in line)
    return str(json.loads(line)["replica"])


async def _refund_a1001(stack: Stack) -> tuple[str, str | None]:
    """A new caller asks for a refund of A1001 and confirms: (the returns agent's last words, replica)."""
    async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        await say(conn, "I want a refund for order A1001")
        looked_up = await say(conn, "jane@example.com, PIN 1234")
        assert looked_up.agent == "returns", looked_up.text
        if "cannot be returned" in looked_up.text:
            return looked_up.text, looked_up.metadata.get("replica")
        done = await say(conn, "yes please")
        assert done.agent == "returns", done.text
        return done.text, done.metadata.get("replica")


async def test_a_return_opened_through_one_replica_is_seen_through_the_other(tmp_path: Path) -> None:
    with make_stack(tmp_path / "stack", agents=OTHERS) as stack:
        first = _replica(stack, tmp_path, 1)
        opened, by = await _refund_a1001(stack)
        assert opened.startswith("Done: return R-"), opened
        assert by == _replica_id(first)

        second = _replica(stack, tmp_path, 2)
        stack.kill(first.name, signal.SIGTERM)  # only the second replica is left
        seen, by = await _refund_a1001(stack)
    assert by == _replica_id(second)
    assert seen == "Sorry, order A1001 cannot be returned: already returned.", seen
    assert not list((tmp_path / "replica-2").iterdir())  # nothing was written to the replica's own disk


async def test_racing_creates_through_two_replicas_open_one_return(tmp_path: Path) -> None:
    with make_stack(tmp_path / "stack", agents=["generalist"]) as stack:
        replicas = {_replica_id(_replica(stack, tmp_path, n)) for n in (1, 2)}
        omar = CallerIdentity(authenticated=True, customer_id="C002")
        async with Bus(stack.nats_urls, name="racer") as bus:
            driver = AgentDriver(bus.nc)
            try:  # 16 callers, each in its own session, confirm a return of the same order at once
                turns = await asyncio.gather(
                    *(driver.turn("returns", ["order A2001", "yes"], caller=omar) for _ in range(16))
                )
            finally:
                await driver.aclose()
    outputs = [
        json.loads(item.output)
        for result, _ in turns
        for item in result.items
        if isinstance(item, FunctionCallOutputItem)
    ]
    assert len(outputs) == 16 and all("return_id" in out for out in outputs), outputs
    assert {result.replica for result, _ in turns} == replicas  # the race ran through both replicas
    assert len({out["return_id"] for out in outputs}) == 1, outputs  # and made one return
