"""Build a ``Stack`` (nats-server + edge + agent processes) for a test scenario."""

from __future__ import annotations

import secrets
from pathlib import Path

from switchboard.local.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
TEST_SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SECOND_TENANT_KEY = f"tenant-b-{secrets.token_hex(8)}"
"""A second valid API key every test stack accepts, for isolation tests between two real keys."""


def make_stack(
    tmp: Path, *, scenario: str = "retail", agents: list[str] | None = None, env: dict[str, str] | None = None
) -> Stack:
    scenarios_dir = ROOT / "scenarios" if (ROOT / "scenarios" / scenario).is_dir() else TEST_SCENARIOS
    key = f"test-{secrets.token_hex(8)}"
    return Stack(
        tmp, scenario=scenario, agents=agents, api_key=key,
        env={"SWITCHBOARD_SCENARIOS_DIR": str(scenarios_dir), "OPENAI_API_KEY": "",
             "SWITCHBOARD_API_KEYS": f"{key},{SECOND_TENANT_KEY}"} | (env or {}),
    )  # fmt: skip
