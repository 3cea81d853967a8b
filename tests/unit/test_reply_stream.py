"""A reply stream ends where its caller's block ends: a caller that returns on the terminal reply leaves no
suspended generator for the event loop's finalizer (a cross-thread wake-up and a task per request) and no
reply slot behind. Real nats-server, real ``QueueService`` and ``StreamingClient``."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from pydantic import TypeAdapter

from switchboard.bus.rpc import QueueService, ReplySink, StreamingClient
from switchboard.local import NatsServer
from switchboard.schemas import ConsultAsk, TurnDelta, turn_reply_adapter

pytestmark = pytest.mark.system

SUBJECT = "test.reply_stream"


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[Client]:
    with NatsServer(tmp_path / "nats") as server:
        client = await nats.connect(server.url)
        yield client
        await client.drain()


async def test_a_caller_that_returns_on_the_terminal_reply_closes_the_stream_there(nc: Client) -> None:
    async def handler(req: ConsultAsk, sink: ReplySink, _msg: object) -> None:
        for seq, text in enumerate(("first", "last")):
            await sink.send(TurnDelta(turn_id=req.note, seq=seq, text=text))

    service = QueueService(nc, SUBJECT, "q", TypeAdapter(ConsultAsk), handler)
    await service.start()
    client = StreamingClient(nc)
    finalized: list[Any] = []
    hooks = sys.get_asyncgen_hooks()

    def finalizer(agen: Any) -> None:  # what the loop does with a generator dropped while suspended
        finalized.append(agen)
        assert hooks.finalizer is not None
        hooks.finalizer(agen)

    def last(reply: object) -> bool:
        return isinstance(reply, TurnDelta) and reply.text == "last"

    async def ask(n: int) -> TurnDelta:
        async with client.stream(
            SUBJECT, ConsultAsk(note=f"t{n}"), turn_reply_adapter, last, deadline=time.time() + 10
        ) as replies:
            async for reply in replies:
                if isinstance(reply, TurnDelta) and last(reply):
                    return reply
        raise AssertionError("the stream ended without its terminal reply")

    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
    try:
        for n in range(20):
            assert (await ask(n)).turn_id == f"t{n}"
            assert client._waiting == {}  # freed before the caller moved on, not by a later task
        await asyncio.sleep(0)  # a generator dropped by the last call would be finalized by now
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert finalized == []
    await client.stop()
    await service.stop()
