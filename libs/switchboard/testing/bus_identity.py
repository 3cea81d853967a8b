"""Connect to NATS as one service's bus identity and watch what the server refuses it (least-privilege tests)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client

from ..security.bus_access import inbox_prefix


@dataclass
class Refusals:
    """The asynchronous errors the server sent one connection (a ``Permissions Violation`` is one)."""

    identity: str
    errors: list[str] = field(default_factory=list)

    def permission_errors(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e.lower()]

    async def wait(self, needle: str, timeout_s: float = 5.0) -> str:
        """The first permissions violation naming ``needle``; AssertionError if none arrives in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [e for e in self.permission_errors() if needle.lower() in e.lower()]
            if found:
                return found[0]
            await asyncio.sleep(0.01)  # ok-sleep: polling the error callback's list
        raise AssertionError(f"no permissions violation for {needle!r} on {self.identity}: {self.errors}")


async def connect_as(servers: str | list[str], identity: str, seed_file: Path) -> tuple[Client, Refusals]:
    """A connection with ``identity``'s seed and inbox prefix, as its service connects, and its refusals."""
    refusals = Refusals(identity)

    async def on_error(exc: Exception) -> None:
        refusals.errors.append(str(exc))

    nc = await nats.connect(
        servers, nkeys_seed=str(seed_file), inbox_prefix=inbox_prefix(identity), error_cb=on_error,
        max_reconnect_attempts=0, allow_reconnect=False,
    )  # fmt: skip
    return nc, refusals
