"""A caller that stops listening stops the work: the responder running the request is told, and stops;
other replicas ignore it; a request that was answered sends nothing. A side effect already running when its
turn is stopped runs to its end and is recorded. Real nats-server, real ``QueueService``,
``StreamingClient`` and side-effect ledger."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import TypeAdapter

from switchboard.agents import AgentConfig
from switchboard.agents.tools import ToolContext, ToolRegistry
from switchboard.bus.rpc import QueueService, ReplySink, StreamingClient, message_headers
from switchboard.models.offline import OfflineProvider
from switchboard.runtime.loop import AgentLoop
from switchboard.schemas import CancelRequest, ConsultAsk, MessageItem, TurnDelta, TurnRequest, turn_reply_adapter
from switchboard.state.ledger import SideEffectLedger

pytestmark = pytest.mark.system

SUBJECT = "test.work"
CANCEL = "test.work.cancel"


def _last(reply: object) -> bool:
    return isinstance(reply, TurnDelta) and reply.text == "last"


async def test_a_caller_that_stops_listening_stops_the_request_on_the_replica_running_it(nc: Client) -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    async def handler(req: ConsultAsk, sink: ReplySink, msg: Msg) -> None:
        if req.note == "quick":
            await sink.send(TurnDelta(turn_id="q", seq=0, text="last"))
            return
        started.set()
        try:
            await asyncio.Event().wait()  # works until told to stop
        except asyncio.CancelledError:
            stopped.set()
            raise

    replicas = [
        QueueService(nc, SUBJECT, "q", TypeAdapter(ConsultAsk), handler, cancel_subject=CANCEL) for _ in range(2)
    ]
    for replica in replicas:
        await replica.start()
    cancels: list[CancelRequest] = []
    arrived = asyncio.Event()

    async def seen(msg: Msg) -> None:
        cancels.append(CancelRequest.model_validate_json(msg.data))
        arrived.set()

    await nc.subscribe(CANCEL, cb=seen)
    client = StreamingClient(nc)

    async def ask(note: str) -> None:
        async with client.stream(
            SUBJECT, ConsultAsk(note=note), turn_reply_adapter, _last, deadline=time.time() + 60, cancel=CANCEL
        ) as replies:
            async for reply in replies:
                if _last(reply):
                    return

    await ask("quick")  # answered: nothing to stop
    caller = asyncio.create_task(ask("slow"))
    await asyncio.wait_for(started.wait(), 10)
    caller.cancel()  # e.g. the caller's response.cancel: the edge stops reading
    await asyncio.gather(caller, return_exceptions=True)
    await asyncio.wait_for(stopped.wait(), 10)  # not at the deadline, a minute from now
    await asyncio.wait_for(arrived.wait(), 10)
    await nc.flush()
    assert len(cancels) == 1  # only the abandoned request's: the answered one sent none (it would have come first)
    assert sorted(r.cancelled for r in replicas) == [0, 1]  # its replica stopped it; the other had nothing to stop
    for replica in replicas:
        await replica.stop()
    await client.stop()


async def test_a_cancel_without_switchboard_headers_or_for_an_unknown_request_stops_nothing(nc: Client) -> None:
    started, stopped = asyncio.Event(), asyncio.Event()
    release = asyncio.Event()

    async def handler(req: ConsultAsk, sink: ReplySink, msg: Msg) -> None:
        started.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            stopped.set()
            raise
        await sink.send(TurnDelta(turn_id="x", seq=0, text="last"))

    service = QueueService(nc, SUBJECT, "q", TypeAdapter(ConsultAsk), handler, cancel_subject=CANCEL)
    await service.start()
    inbox = nc.new_inbox()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    async def got(msg: Msg) -> None:
        await answers.put(msg.data)

    await nc.subscribe(inbox, cb=got)
    await nc.publish(SUBJECT, ConsultAsk(note="n").to_bytes(), reply=inbox, headers=message_headers())
    await asyncio.wait_for(started.wait(), 10)
    await nc.publish(CANCEL, CancelRequest(reply_to=inbox).to_bytes())  # no Switchboard-Schema header
    await nc.publish(CANCEL, CancelRequest(reply_to=inbox + "x").to_bytes(), headers=message_headers())
    await nc.flush()
    release.set()
    while True:  # the request ran to its answer
        if json.loads(await asyncio.wait_for(answers.get(), 10)).get("text") == "last":
            break
    assert not stopped.is_set() and service.cancelled == 0
    await service.stop()


async def test_a_side_effect_running_when_its_turn_is_stopped_runs_to_its_end_and_is_recorded(nc: Client) -> None:
    ledger = await SideEffectLedger.open(nc.jetstream(), owner="agent-clerk", takeover_s=3.0)
    registry = ToolRegistry()
    inside, finish = asyncio.Event(), asyncio.Event()
    effects: list[str] = []

    @registry.tool(side_effect=True)
    async def refund(order: str, ctx: ToolContext) -> dict[str, Any]:
        """Refund an order."""
        inside.set()
        await finish.wait()  # the payment call is under way when the caller barges in
        effects.append(ctx.idempotency_key)
        return {"refunded": order}

    agent = AgentConfig.model_validate({
        "name": "clerk", "instructions": "test", "tools": ["refund"],
        "offline": {"rules": [{"call": "refund", "args": {"order": "A1"}}]},
    })  # fmt: skip
    loop = AgentLoop(agent, OfflineProvider(agent.offline, {}), registry)
    loop.ledger = ledger
    req = TurnRequest(session_id="s", turn_id="t", agent="clerk", history=[MessageItem(id="i", role="user", text="go")])

    async def sink(_: str) -> None:
        return None

    turn = asyncio.create_task(loop.run(req, sink))
    await asyncio.wait_for(inside.wait(), 10)
    turn.cancel()
    await asyncio.gather(turn, return_exceptions=True)
    assert turn.cancelled()  # the turn stopped at once
    finish.set()
    key = await _recorded_key(ledger)
    assert effects == [key] and key  # it ran to its end with its idempotency key, and the ledger has its output


async def _recorded_key(ledger: SideEffectLedger) -> str:
    """The one ledger entry, once recorded as done (the effect finishes after the turn was stopped)."""
    kv = ledger._kv
    async with asyncio.timeout(10):
        while True:
            keys = await kv.keys() if await _has_keys(ledger) else []
            for key in keys:
                entry = await kv.get(key)
                if json.loads(entry.value or b"{}").get("state") == "done":
                    return str(key)
            await asyncio.sleep(0.02)  # ok-sleep: polling the ledger's KV until the record lands


async def _has_keys(ledger: SideEffectLedger) -> bool:
    try:
        await ledger._kv.keys()
    except Exception:  # nats-py raises NoKeysError on an empty bucket
        return False
    return True
