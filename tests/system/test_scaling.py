"""Per-specialist scaling with real processes: a second replica of a specialist on a slow model
(0.3 s a call, 2 turns at once per replica) roughly doubles that specialist's throughput, and a
specialist on a fast model, running alongside, is neither slowed nor scaled. The figures are relative
to each other in the same run (bench/scaling.py measures them at more replicas)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from switchboard.bus import Bus
from switchboard.local.stack import Stack
from switchboard.testing.turns import AgentDriver, alongside

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
                for agent in ("quick", "slow"):  # warm both up: first turns pay for connections and imports
                    await driver.turn(agent, ["hi"])
                slow1, quick1 = await alongside(driver, "slow", "quick", ["hi"], callers=CALLERS, turns=TURNS)
                stack.start_agent("slow", wait=True)
                slow2, quick2 = await alongside(driver, "slow", "quick", ["hi"], callers=CALLERS, turns=TURNS)
            finally:
                await driver.aclose()
    assert slow1.turns == slow2.turns == TURNS
    # one replica holds INFLIGHT turns of DELAY_S at once: the limit is real, so the load saturates it
    assert slow1.elapsed_s >= TURNS / INFLIGHT * DELAY_S * 0.95, slow1.elapsed_s
    assert len(set(slow1.replicas)) == 1 and len(set(slow2.replicas)) == 2
    speedup = slow1.elapsed_s / slow2.elapsed_s
    assert speedup >= 1.5, (slow1.elapsed_s, slow2.elapsed_s)  # ~2x expected; 1.5 leaves room for noise
    # the other specialist: same single replica, every turn answered, not slowed
    assert len(set(quick1.replicas + quick2.replicas)) == 1
    assert quick1.turns >= 5 and quick2.turns >= 3, (quick1.turns, quick2.turns)
    assert quick2.p50_s <= 2 * quick1.p50_s + 0.05, (quick1.p50_s, quick2.p50_s)
    print(
        f"\nslow: {slow1.turns_per_s:.1f} -> {slow2.turns_per_s:.1f} turns/s (x{speedup:.2f}); "
        f"quick p50 {quick1.p50_s * 1000:.1f} -> {quick2.p50_s * 1000:.1f} ms"
    )
