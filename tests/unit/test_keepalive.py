"""A queue service acknowledges and beats only into silence: a handler that answers at once costs no
heartbeat message; one that works silently is acknowledged within ``ack_after_s`` and beats while it
works (replies read raw off the reply inbox). A reply stream ends where its caller's block ends: a caller
that returns on the terminal reply leaves no suspended generator for the event loop's finalizer (a
cross-thread wake-up and a task per request) and no reply slot behind. Real nats-server, real
``QueueService`` and ``StreamingClient``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from pydantic import TypeAdapter

from switchboard.bus.rpc import QueueService, ReplySink, StreamingClient, message_headers
from switchboard.schemas import ConsultAsk, TurnDelta, turn_reply_adapter

pytestmark = pytest.mark.system

SUBJECT = "test.keepalive"
STREAM_SUBJECT = "test.reply_stream"
HEARTBEAT = "switchboard.v1.heartbeat"


async def ask(nc: Client, body: ConsultAsk, replies: asyncio.Queue[str], n: int) -> None:
    inbox = nc.new_inbox()

    async def got(msg: nats.aio.msg.Msg) -> None:
        await replies.put(json.loads(msg.data)["type"])

    await nc.subscribe(inbox, cb=got)
    await nc.publish(SUBJECT, body.to_bytes(), reply=inbox, headers=message_headers(f"s{n}"))


async def until(replies: asyncio.Queue[str], last: str) -> list[str]:
    seen: list[str] = []
    while not seen or seen[-1] != last:
        seen.append(await asyncio.wait_for(replies.get(), 5))
    return seen


async def test_a_prompt_answer_is_its_own_acknowledgement_and_silence_gets_heartbeats(nc: Client) -> None:
    release = asyncio.Event()

    async def handler(req: ConsultAsk, sink: ReplySink, _msg: object) -> None:
        if req.note == "slow":
            await release.wait()
        await sink.send(TurnDelta(turn_id=req.note, seq=0, text="done"))

    service = QueueService(
        nc, SUBJECT, "q", TypeAdapter(ConsultAsk), handler, heartbeat_s=0.1, ack_after_s=0.02
    )  # fmt: skip
    await service.start()
    cold = QueueService.COLD_REQUESTS
    for n in range(cold + 3):
        replies: asyncio.Queue[str] = asyncio.Queue()
        await ask(nc, ConsultAsk(note="fast"), replies, n)
        seen = await until(replies, "switchboard.v1.turn_delta")
        if n < cold:  # a cold process acknowledges before its handler runs
            assert seen == [HEARTBEAT, "switchboard.v1.turn_delta"]
        else:  # warm: the answer acknowledges, no heartbeat message at all
            assert seen == ["switchboard.v1.turn_delta"]

    replies = asyncio.Queue()
    await ask(nc, ConsultAsk(note="slow"), replies, 99)
    beats = [await asyncio.wait_for(replies.get(), 5) for _ in range(3)]  # ack, then one per silent period
    assert beats == [HEARTBEAT] * 3
    release.set()
    assert (await until(replies, "switchboard.v1.turn_delta"))[-1] == "switchboard.v1.turn_delta"
    await service.stop()


async def test_a_caller_that_returns_on_the_terminal_reply_closes_the_stream_there(nc: Client) -> None:
    async def handler(req: ConsultAsk, sink: ReplySink, _msg: object) -> None:
        for seq, text in enumerate(("first", "last")):
            await sink.send(TurnDelta(turn_id=req.note, seq=seq, text=text))

    service = QueueService(nc, STREAM_SUBJECT, "q", TypeAdapter(ConsultAsk), handler)
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
            STREAM_SUBJECT, ConsultAsk(note=f"t{n}"), turn_reply_adapter, last, deadline=time.time() + 10
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
        await asyncio.sleep(0)  # ok-sleep: one loop step, in which a dropped generator would be finalized
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert finalized == []
    await client.stop()
    await service.stop()
