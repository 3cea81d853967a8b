"""Least privilege on the bus, enforced by a real nats-server: what a specialist may and may not do."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from pydantic import TypeAdapter

from switchboard.bus import NoResponders, QueueService, StreamingClient, subjects
from switchboard.bus.connection import without_login
from switchboard.bus.rpc import message_headers
from switchboard.bus.subjects import AUDIT_STREAM
from switchboard.local import NatsServer
from switchboard.rollout.table import RolloutTable
from switchboard.schemas import CancelRequest, MessageItem, TurnDelta, TurnRequest, TurnResult, turn_reply_adapter
from switchboard.security.api_keys import KeyRing
from switchboard.security.bus_access import ADMIN, BusCredentials, agent_identity, edge_identity, inbox_prefix
from switchboard.state import LEDGER_BUCKET, AuditLog, SessionStore, SideEffectLedger, ToolStore, store_bucket
from switchboard.state.history import HistoryArchive
from switchboard.state.ledger import LEDGER_STREAM, idempotency_key
from switchboard.testing.bus_identity import Refusals, connect_as
from switchboard_edge.client_secrets import ClientSecrets
from switchboard_edge.signing import shared_secret
from switchboard_edge.takeover import Takeovers

SCENARIO = "retail"
RETURNS_KEYS = f"$KV.{LEDGER_BUCKET}.agent-returns"
"""The subject of returns's side-effect records (a write there is a write it is allowed)."""


@dataclass
class Rig:
    server: NatsServer
    creds: BusCredentials
    refusals: dict[str, Refusals]

    async def connect(self, identity: str) -> Client:
        nc, self.refusals[identity] = await connect_as(self.server.client_url, identity, self.creds.seed_file(identity))
        return nc

    async def violation(self, identity: str, needle: str) -> str:
        """Wait for the server to report a permissions violation for ``identity`` naming ``needle``."""
        return await self.refusals[identity].wait(needle)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    identities = [
        edge_identity(),
        agent_identity("returns", SCENARIO),
        agent_identity("billing", SCENARIO),
        ADMIN,
    ]
    creds = BusCredentials(tmp_path / "keys", identities)
    creds.write()
    with NatsServer(tmp_path / "nats", authorization=creds.server_config()) as server:
        yield Rig(server, creds, {})


async def _serve(nc: Client, agent: str) -> QueueService[TurnRequest]:
    async def handle(req: TurnRequest, sink, msg) -> None:  # type: ignore[no-untyped-def]
        await sink.send(TurnDelta(turn_id=req.turn_id, seq=0, text="hi"))
        await sink.send(TurnResult(turn_id=req.turn_id, agent=agent, outcome="answer", text="hi"))

    service = QueueService(
        nc, subjects.agent_turn(agent), subjects.agent_queue(agent), TypeAdapter(TurnRequest), handle
    )
    await service.start()
    return service


async def test_the_edge_and_an_agent_do_their_work_with_their_own_keys(rig: Rig) -> None:
    edge, agent = await rig.connect("edge"), await rig.connect("agent-returns")
    try:
        await SessionStore.open(edge.jetstream())
        await AuditLog.open(edge.jetstream())
        signing = await shared_secret("", edge.jetstream())  # the edges' signing secret, and single-use marks
        used = await ClientSecrets.open(edge.jetstream(), signing, KeyRing(), max_s=600)
        assert await used.consume("ek-id") and not await used.consume("ek-id")
        await SideEffectLedger.open(agent.jetstream(), owner="agent-returns")
        await ToolStore.open(agent.jetstream(), store_bucket(SCENARIO))
        service = await _serve(agent, "returns")
        await agent.flush()  # the subscription is registered before the edge sends
        client = StreamingClient(edge)
        request = TurnRequest(session_id="s1", turn_id="t1", agent="returns", history=[])
        replies = []
        for _ in range(50):  # until the server routes the subject to the agent (its SUB was flushed above)
            try:
                async with client.stream(
                    subjects.agent_turn("returns"), request, turn_reply_adapter,
                    lambda r: isinstance(r, TurnResult), deadline=time.time() + 5, idle_timeout=1, ack_timeout=1,
                ) as stream:  # fmt: skip
                    replies = [r async for r in stream]
                break
            except NoResponders:
                await asyncio.sleep(0.05)  # ok-sleep: polling for the subscription to be routed
        assert [type(r).__name__ for r in replies] == ["TurnDelta", "TurnResult"]
        await service.stop()
        await client.stop()
    finally:
        await edge.close()
        await agent.close()
    assert not rig.refusals["edge"].permission_errors() + rig.refusals["agent-returns"].permission_errors()


async def test_every_state_operation_of_each_service_is_allowed_and_nothing_more(rig: Rig) -> None:
    """What the services do with JetStream, each with its own key: the edge seeds and watches rollouts,
    appends and replays history; an agent runs a tool once through the ledger and scans its store."""
    edge, agent = await rig.connect("edge"), await rig.connect("agent-returns")
    try:
        table = await RolloutTable.open(edge.jetstream(), seed={"returns": 10})
        assert table.snapshot()["returns"].weight == 10  # the watch saw its own write
        await table.stop()
        archive = await HistoryArchive.open(edge.jetstream())
        head = await archive.append("s1", [MessageItem(id="i1", role="user", text="hello")], after=None)
        assert [i.id for i in await archive.read("s1", head=head)] == ["i1"]
        ledger = await SideEffectLedger.open(agent.jetstream(), owner="agent-returns")

        async def refund() -> str:
            return "refunded"

        assert await ledger.once("agent-returns.s1.t1", refund) == "refunded"
        assert await ledger.once("agent-returns.s1.t1", refund) == "refunded"  # the second time from the ledger
        store = await ToolStore.open(agent.jetstream(), store_bucket(SCENARIO))
        await store.kv.put("orders.A1", b"{}")
        assert list(await store.scan("orders.>")) == ["orders.A1"]
    finally:
        await edge.close()
        await agent.close()
    assert rig.refusals["edge"].permission_errors() + rig.refusals["agent-returns"].permission_errors() == []


async def test_the_edge_cannot_read_the_audit_or_touch_an_agents_ledger(rig: Rig) -> None:
    edge = await rig.connect("edge")
    try:
        await AuditLog.open(edge.jetstream())
        await edge.jetstream().publish(subjects.audit_turn("s1"), b"{}")  # appending is its job
        with pytest.raises(Exception):  # noqa: B017 - the request is dropped: a timeout or a JetStream error
            await edge.jetstream(timeout=1).subscribe(
                subjects.audit_turn("s1"), ordered_consumer=True, stream=AUDIT_STREAM
            )
        await rig.violation("edge", "CONSUMER.CREATE.SWITCHBOARD_AUDIT")
        with pytest.raises(Exception):  # noqa: B017
            await edge.jetstream(timeout=1).key_value(LEDGER_BUCKET)
        await rig.violation("edge", f"KV_{LEDGER_BUCKET}")
    finally:
        await edge.close()


async def test_every_replica_of_an_agent_replays_its_records(rig: Rig) -> None:
    """Two replicas (or the stable and canary tracks) of returns connect with its one identity: a turn retried
    on the second gets the output the first recorded, and the call does not run again."""
    first, second = await rig.connect("agent-returns"), await rig.connect("agent-returns")
    runs: list[str] = []

    async def refund() -> str:
        runs.append("refund")
        return "refunded A1"

    key = idempotency_key("agent-returns", "s1", "t1", "refund", '{"order": "A1"}')
    try:
        recorded = await SideEffectLedger.open(first.jetstream(), owner="agent-returns")
        assert await recorded.once(key, refund) == "refunded A1"
        retry = await SideEffectLedger.open(second.jetstream(), owner="agent-returns")
        assert await retry.once(key, refund) == "refunded A1"
        assert runs == ["refund"] and retry.replayed == 1
    finally:
        await first.close()
        await second.close()
    assert rig.refusals["agent-returns"].permission_errors() == []


async def test_an_agent_cannot_fake_read_or_delete_another_agents_side_effect_records(rig: Rig) -> None:
    """A compromised returns agent against billing's record of a charge: a fake "done" record would make
    billing skip the charge and answer with the faked output, a deleted claim would let it run twice. The
    server refuses every way to the key (writes, deletes, direct and stream gets, a get by sequence, a
    consumer), and a rollup on returns's own key, which would purge the whole stream, is refused too."""
    returns, billing = await rig.connect("agent-returns"), await rig.connect("agent-billing")
    charges: list[str] = []

    async def charge() -> str:
        charges.append("charge")
        return "charged 42.00"

    async def never() -> str:
        raise AssertionError("billing ran a recorded charge again")

    key = idempotency_key("agent-billing", "s1", "t1", "charge", '{"amount": 42}')
    subject = f"$KV.{LEDGER_BUCKET}.{key}"
    try:
        victim = await SideEffectLedger.open(billing.jetstream(), owner="agent-billing")
        assert await victim.once(key, charge) == "charged 42.00"
        js = returns.jetstream(timeout=0.5)
        kv = await js.key_value(LEDGER_BUCKET)  # the bucket itself it may use: its own records are there
        fake = json.dumps({"state": "done", "output": "charged 0.00"}).encode()
        attempts: dict[str, tuple[Callable[[], Awaitable[object]], str]] = {  # what it tries, what is refused
            "read": (lambda: kv.get(key), f'publish to "$JS.API.DIRECT.GET.{LEDGER_STREAM}.{subject}"'),
            "stream get": (
                lambda: js.get_msg(LEDGER_STREAM, subject=subject),
                f'publish to "$JS.API.STREAM.MSG.GET.{LEDGER_STREAM}"',
            ),
            "get by sequence": (
                lambda: js.get_msg(LEDGER_STREAM, seq=1, direct=True),
                f'publish to "$JS.API.DIRECT.GET.{LEDGER_STREAM}"',
            ),
            "consumer": (
                lambda: js.subscribe(subject, ordered_consumer=True, stream=LEDGER_STREAM),
                f"$JS.API.CONSUMER.CREATE.{LEDGER_STREAM}",
            ),
            "delete": (lambda: kv.delete(key), f'publish to "{subject}"'),
            "claim": (lambda: kv.create(key, fake), f'publish to "{subject}"'),
            "overwrite": (lambda: kv.put(key, fake), f'publish to "{subject}"'),
        }
        reached: dict[str, str] = {}
        for what, (attempt, refused) in attempts.items():
            try:
                await attempt()
            except nats.errors.TimeoutError:  # the server dropped the request: it says why
                assert await rig.violation("agent-returns", refused), what
            except Exception as exc:  # noqa: BLE001 - JetStream answered: the request got through
                reached[what] = repr(exc)
            else:
                reached[what] = "done"
        assert reached == {}
        with pytest.raises(nats.js.errors.APIError, match="(?i)rollup"):  # its own key, but the whole stream
            await js.publish(f"{RETURNS_KEYS}.x", b"", headers={"Nats-Rollup": "all"})
        assert await victim.once(key, never) == "charged 42.00"  # the record is intact, the charge ran once
        assert charges == ["charge"] and victim.replayed == 1
    finally:
        await returns.close()
        await billing.close()
    assert rig.refusals["agent-billing"].permission_errors() == []


def test_an_agent_and_a_supervisor_of_one_name_keep_apart_records() -> None:
    def ledger_keys(role: str) -> list[str]:
        return [s for s in agent_identity("desk", SCENARIO, role=role).publish if s.startswith(f"$KV.{LEDGER_BUCKET}.")]

    assert ledger_keys("agent") == [f"$KV.{LEDGER_BUCKET}.agent-desk.>"]
    assert ledger_keys("supervisor") == [f"$KV.{LEDGER_BUCKET}.supervisor-desk.>"]


async def test_a_specialist_cannot_publish_to_another_specialists_subject(rig: Rig) -> None:
    admin, agent = await rig.connect("admin"), await rig.connect("agent-returns")
    try:
        seen = await admin.subscribe(subjects.agent_turn("billing"))
        await admin.flush()
        await agent.publish(subjects.agent_turn("billing"), b"{}")
        await agent.flush()
        await rig.violation("agent-returns", subjects.agent_turn("billing"))
        await admin.flush()
        with pytest.raises(nats.errors.TimeoutError):
            await seen.next_msg(timeout=0.2)
    finally:
        await admin.close()
        await agent.close()


async def test_a_specialist_cannot_subscribe_to_another_agent_or_the_edge_inbox(rig: Rig) -> None:
    agent = await rig.connect("agent-returns")
    try:
        await agent.subscribe(subjects.agent_turn("billing"))
        await rig.violation("agent-returns", subjects.agent_turn("billing"))
        await agent.subscribe(f"{inbox_prefix('edge')}.>")
        await rig.violation("agent-returns", inbox_prefix("edge"))
    finally:
        await agent.close()


async def test_a_specialist_cannot_read_the_edges_signing_secret(rig: Rig) -> None:
    edge, agent = await rig.connect("edge"), await rig.connect("agent-returns")
    try:
        await shared_secret("", edge.jetstream())
        with pytest.raises(Exception):  # noqa: B017 - the request is dropped: a timeout or a JetStream error
            await agent.jetstream().key_value("switchboard_edge")
        await rig.violation("agent-returns", "KV_switchboard_edge")
    finally:
        await edge.close()
        await agent.close()


async def test_a_specialist_cannot_read_session_state(rig: Rig) -> None:
    edge, agent = await rig.connect("edge"), await rig.connect("agent-returns")
    try:
        await SessionStore.open(edge.jetstream())
        with pytest.raises(Exception):  # noqa: B017 - the request is dropped: a timeout or a JetStream error
            await agent.jetstream(timeout=1).key_value("switchboard_sessions")
        await rig.violation("agent-returns", "KV_switchboard_sessions")
    finally:
        await edge.close()
        await agent.close()


async def test_a_specialist_cannot_forge_an_audit_record(rig: Rig) -> None:
    edge, agent = await rig.connect("edge"), await rig.connect("agent-returns")
    try:
        await AuditLog.open(edge.jetstream())
        await agent.publish(subjects.audit_handoff("s1"), b'{"type":"switchboard.v1.handoff_decision"}')
        await agent.flush()
        await rig.violation("agent-returns", "switchboard.v1.audit.handoff.s1")
        info = await edge.jetstream().stream_info("SWITCHBOARD_AUDIT")
        assert info.state.messages == 0
    finally:
        await edge.close()
        await agent.close()


async def test_no_credentials_no_connection(rig: Rig) -> None:
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(rig.server.url, max_reconnect_attempts=0, allow_reconnect=False)


def test_a_login_in_the_nats_urls_stays_out_of_messages() -> None:
    urls = ["nats://operator:s3cr%2Ft@10.0.0.1:4222", "tls://n2:4222"]
    assert without_login(urls) == "nats://10.0.0.1:4222, tls://n2:4222"


def _successors(token: str) -> list[str]:
    """What would follow ``token`` were it a counter, decimal or hexadecimal."""
    after = [str(int(token) + n) for n in (1, 2, 3)] if token.isdigit() else []
    try:
        return after + [format(int(token, 16) + n, f"0{len(token)}x") for n in (1, 2, 3)]
    except ValueError:
        return after


async def test_a_specialist_cannot_aim_a_reply_at_another_agents_turn(rig: Rig) -> None:
    """An agent sees the reply subject of each turn it is sent. It may not publish to the edge's inbox, but
    it may publish with a reply subject of its choice to a subject it is allowed (its ledger): JetStream then
    sends its acknowledgement there. Had the edge's next reply subject been guessable from one it saw, that
    acknowledgement would end another session's turn, on another agent, with a bad reply."""
    edge, returns, billing = [await rig.connect(i) for i in ("edge", "agent-returns", "agent-billing")]
    seen: list[str] = []
    billing_has_it, billing_may_answer = asyncio.Event(), asyncio.Event()

    async def compromised(req: TurnRequest, sink, msg) -> None:  # type: ignore[no-untyped-def]
        seen.append(msg.reply)
        await sink.send(TurnResult(turn_id=req.turn_id, agent="returns", outcome="answer", text="hi"))

    async def slow(req: TurnRequest, sink, msg) -> None:  # type: ignore[no-untyped-def]
        billing_has_it.set()
        await billing_may_answer.wait()
        await sink.send(TurnResult(turn_id=req.turn_id, agent="billing", outcome="answer", text="paid"))

    services = [
        QueueService(nc, subjects.agent_turn(a), subjects.agent_queue(a), TypeAdapter(TurnRequest), handler)
        for nc, a, handler in ((returns, "returns", compromised), (billing, "billing", slow))
    ]
    client = StreamingClient(edge)

    async def turn(agent: str) -> list[str]:
        request = TurnRequest(session_id=f"s-{agent}", turn_id="t1", agent=agent, history=[])
        async with client.stream(
            subjects.agent_turn(agent), request, turn_reply_adapter, lambda r: isinstance(r, TurnResult),
            deadline=time.time() + 5,
        ) as stream:  # fmt: skip
            return [type(r).__name__ async for r in stream]

    try:
        for service in services:
            await service.start()
        await returns.flush()
        await billing.flush()
        await SideEffectLedger.open(returns.jetstream(), owner="agent-returns")  # the compromised agent's own keys
        assert await turn("returns") == ["TurnResult"]
        victim = asyncio.create_task(turn("billing"))
        await asyncio.wait_for(billing_has_it.wait(), 5)
        prefix, _, last = seen[0].rpartition(".")
        guesses = [f"{prefix}.{token}" for token in _successors(last)]
        for guess in guesses:  # allowed: a write to its ledger, acknowledged to the subject it names
            await returns.publish(f"{RETURNS_KEYS}.x", b"{}", reply=guess)
        await returns.jetstream().publish(f"{RETURNS_KEYS}.y", b"{}")  # acked after those: all answered
        await edge.flush()
        billing_may_answer.set()
        assert await asyncio.wait_for(victim, 5) == ["TurnResult"]
    finally:
        for service in services:
            await service.stop()
        await client.stop()
        for nc in (edge, returns, billing):
            await nc.close()
    assert rig.refusals["agent-returns"].permission_errors() == []  # nothing stopped it but the subject


async def test_a_specialist_cannot_close_a_session_with_a_takeover(rig: Rig) -> None:
    """An agent knows the ids of the sessions it serves. Only edges may publish a takeover, but an agent may
    name a session's takeover subject as the reply of a write to its ledger: JetStream's acknowledgement
    then lands there. The edge holding the session must not take that for a newer connection's request."""
    holder, newer, agent = [await rig.connect(i) for i in ("edge", "edge", "agent-returns")]
    takeovers = Takeovers(holder, wait_s=0.1)
    closes: list[str] = []

    async def close() -> None:
        closes.append("closed")

    try:
        await SideEffectLedger.open(agent.jetstream(), owner="agent-returns")
        hold = await takeovers.hold("s1", close)
        await holder.flush()
        await agent.publish(f"{RETURNS_KEYS}.x", b"{}", reply=subjects.session_takeover("s1"))
        await agent.jetstream().publish(f"{RETURNS_KEYS}.y", b"{}")  # acked after it: it was answered
        assert await Takeovers(newer).claim("s1")  # a real takeover, served after whatever came before it
        assert closes == ["closed"]
        await takeovers.release(hold)
    finally:
        for nc in (holder, newer, agent):
            await nc.close()
    assert rig.refusals["agent-returns"].permission_errors() == []  # nothing stopped it but the edge


async def test_the_edge_stops_an_agents_request_and_no_agent_can_stop_another_agents(rig: Rig) -> None:
    edge, returns, billing = (
        await rig.connect("edge"),
        await rig.connect("agent-returns"),
        await rig.connect("agent-billing"),
    )
    try:
        heard: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_cancel(msg: nats.aio.msg.Msg) -> None:
            await heard.put(msg.data)

        await returns.subscribe(subjects.agent_cancel("returns"), cb=on_cancel)  # its own: allowed
        await returns.flush()
        stop = CancelRequest(reply_to="_INBOX.x.1").to_bytes()
        await edge.publish(subjects.agent_cancel("returns"), stop, headers=message_headers())
        assert await asyncio.wait_for(heard.get(), 5) == stop
        await billing.subscribe(subjects.agent_cancel("returns"))  # another agent's: refused
        await rig.violation("agent-billing", f'subscription to "{subjects.agent_cancel("returns")}"')
        await billing.publish(subjects.agent_cancel("returns"), stop)  # stopping another agent's work: refused
        await billing.flush()
        await rig.violation("agent-billing", f'publish to "{subjects.agent_cancel("returns")}"')
        assert rig.refusals["agent-returns"].permission_errors() == [] and heard.empty()
    finally:
        for nc in (edge, returns, billing):
            await nc.close()
