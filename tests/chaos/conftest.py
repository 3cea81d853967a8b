"""Chaos fixtures: the retail system on a 3-node JetStream cluster (R3 sessions, audit and ledger)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.local.stack import Stack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Retail on ``nats_cluster=3``; each test leaves every node running and healthy again."""
    stack = Stack(
        tmp_path_factory.mktemp("chaos"), scenario="retail", api_key=f"test-{secrets.token_hex(8)}", nats_cluster=3,
        env={"SWITCHBOARD_SCENARIOS_DIR": str(ROOT / "scenarios"), "OPENAI_API_KEY": ""},
    )  # fmt: skip
    with stack:
        yield stack
