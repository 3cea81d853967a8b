"""An agent configuration is audited the first time it serves a caller: a redeploy with an edited prompt
shows in the control-plane audit (``switchboard audit``), once, however many turns it serves."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import nats
import pytest
import yaml

from switchboard.local.stack import Stack
from switchboard.schemas import ControlRecord
from switchboard.state.control import ControlAudit

from .client import open_session, say, sdk_client
from .stacks import ROOT, make_stack

pytestmark = pytest.mark.system


async def config_records(stack: Stack, agent: str, count: int, timeout_s: float = 15.0) -> list[ControlRecord]:
    """The ``agent.config_changed`` records of ``agent``, once there are ``count`` of them (recorded off the
    turn's path, so they may land a moment after the answer)."""
    nc = await nats.connect(stack.nats.url)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            records = [
                r for r in await ControlAudit(nc.jetstream()).read()
                if r.action == "agent.config_changed" and r.target == agent
            ]  # fmt: skip
            if len(records) >= count or time.monotonic() > deadline:
                return records
            await asyncio.sleep(0.1)  # ok-sleep: poll interval while the edge appends
    finally:
        await nc.close()


async def turns(stack: Stack, n: int) -> None:
    async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        for _ in range(n):
            assert (await say(conn, "Hi, what are your opening hours?")).agent == "triage"


async def test_a_changed_agent_configuration_is_audited_once_when_it_first_serves(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    shutil.copytree(ROOT / "scenarios" / "retail", scenarios / "retail")
    env = {"SWITCHBOARD_SCENARIOS_DIR": str(scenarios)}
    with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:
        await turns(stack, 3)
        [first] = await config_records(stack, "triage", 1)
        assert first.details["track"] == "stable" and first.actor.startswith("deployment")

        path = scenarios / "retail" / "scenario.yaml"
        scenario = yaml.safe_load(path.read_text())
        triage = next(a for a in scenario["agents"] if a["name"] == "triage")
        triage["instructions"] += "\nBe brief."  # an edited prompt, redeployed
        path.write_text(yaml.safe_dump(scenario, sort_keys=False))
        stack.kill("agent:triage")
        stack.start_agent("triage", wait=True)
        await turns(stack, 3)
        records = await config_records(stack, "triage", 2)
        assert len(records) == 2 and records[1].details["config"] != first.details["config"]

        await turns(stack, 2)  # the same configurations again: nothing new
        assert len(await config_records(stack, "triage", 3, timeout_s=1.0)) == 2
