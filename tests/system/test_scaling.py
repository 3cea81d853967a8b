"""Per-specialist scaling with real processes: a second replica of a specialist on a slow model
(0.3 s a call, 2 turns at once per replica) roughly doubles that specialist's throughput, and a
specialist on a fast model, running alongside, is neither slowed nor scaled. The figures are relative
to each other in the same run (bench/scaling.py measures them at more replicas)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from switchboard.bus import Bus
from switchboard.local.stack import Stack
from switchboard.testing.turns import AgentDriver, second_replica_run

pytestmark = pytest.mark.system

SCENARIOS = Path(__file__).resolve().parents[2] / "bench" / "scenarios"
DELAY_S, INFLIGHT, CALLERS, TURNS = 0.3, 2, 4, 12


async def test_a_second_replica_doubles_the_slow_specialists_throughput_and_leaves_the_other_alone(
    tmp_path: Path,
) -> None:
    env = {"SWITCHBOARD_SCENARIOS_DIR": str(SCENARIOS), "OPENAI_API_KEY": "",
           "SWITCHBOARD_AGENT_MAX_INFLIGHT": str(INFLIGHT)}  # fmt: skip
    with Stack(tmp_path, scenario="scaling", agents=["quick", "slow"], api_key=secrets.token_hex(8), env=env) as stack:
        async with Bus(stack.nats_urls, name="scaling-test") as bus:
            driver = AgentDriver(bus.nc)
            try:
                run = await second_replica_run(
                    driver, "slow", "quick", lambda: asyncio.to_thread(stack.start_agent, "slow", wait=True),
                    callers=CALLERS, turns=TURNS,
                )  # fmt: skip
            finally:
                await driver.aclose()
    print("\n" + run.line())
    problems = run.problems(turns=TURNS, inflight=INFLIGHT, delay_s=DELAY_S)
    assert not problems, problems
