"""Fixtures shared by the unit tests that need a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from switchboard.local import NatsServer


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[Client]:
    """A connection to a nats-server of the test's own (JetStream on, no authorization)."""
    with NatsServer(tmp_path / "nats") as server:
        client = await nats.connect(server.url)
        yield client
        await client.drain()
