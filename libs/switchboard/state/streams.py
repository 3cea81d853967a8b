"""Creating a JetStream stream on first use, riding out leader elections."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from .retry import StateRetry


async def ensure_stream(js: JetStreamContext, name: str, subjects: str, *, replicas: int, retry: StateRetry) -> None:
    """Create stream ``name`` over ``subjects`` unless it exists (two processes racing is harmless)."""

    async def ensure() -> None:
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(StreamConfig(name=name, subjects=[subjects], num_replicas=replicas))

    await retry.run(f"{name}.open", ensure)
