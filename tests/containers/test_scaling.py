"""Per-specialist scaling in containers: a second container of the specialist on a slow model (0.3 s a
call, 2 turns at once per replica) roughly doubles its throughput, while the other specialist, one
container running alongside, is neither slowed nor scaled. The same measurement as
tests/system/test_scaling.py, with every agent in its own container of the image (host network,
read-only root filesystem, the bench's scenario mounted read-only)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from switchboard.bus import Bus
from switchboard.local.nats_server import NatsServer
from switchboard.testing.turns import AgentDriver, second_replica_run

from .podman import ROOT, Containers

pytestmark = [pytest.mark.containers, pytest.mark.timeout(300, func_only=True)]

DELAY_S, INFLIGHT, CALLERS, TURNS = 0.3, 2, 4, 12


async def test_a_second_container_of_one_specialist_doubles_its_throughput(
    tmp_path: Path, containers: Containers
) -> None:
    nats = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log")
    nats.start()
    try:
        env = {"SWITCHBOARD_NATS_URL": nats.url, "SWITCHBOARD_SCENARIOS_DIR": "/scenarios",
               "SWITCHBOARD_SCENARIO": "scaling", "SWITCHBOARD_AGENT_MAX_INFLIGHT": str(INFLIGHT),
               "SWITCHBOARD_METRICS_PORT": "-1"}  # fmt: skip
        options = ["--read-only", "-v", f"{ROOT / 'bench' / 'scenarios'}:/scenarios:ro"]

        def agent(name: str, label: str) -> None:
            containers.run(label, ["agent", "--name", name], env, options=options).wait_log('"msg": "agent ready"')

        agent("quick", "quick")
        agent("slow", "slow-1")
        async with Bus([nats.url], name="scaling-test") as bus:
            driver = AgentDriver(bus.nc)
            try:
                run = await second_replica_run(
                    driver, "slow", "quick", lambda: asyncio.to_thread(agent, "slow", "slow-2"),
                    callers=CALLERS, turns=TURNS,
                )  # fmt: skip
            finally:
                await driver.aclose()
    finally:
        containers.close()
        nats.stop()
    print(f"\ncontainers: {run.line()}", file=sys.stderr)
    problems = run.problems(turns=TURNS, inflight=INFLIGHT, delay_s=DELAY_S)
    assert not problems, problems
