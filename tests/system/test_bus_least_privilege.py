"""Least privilege on the bus of the real stack (``make run``'s): each service connects with its own NKey
and may touch only its own subjects; the server refuses the rest, and the conversation still works."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest

from switchboard.bus import subjects
from switchboard.local.stack import Stack
from switchboard.security.bus_access import public_key
from switchboard.state import LEDGER_BUCKET, AuditLog
from switchboard.testing.bus_identity import connect_as

from .client import open_session, say, sdk_client, session_audit
from .stacks import make_stack

pytestmark = pytest.mark.system

SERVICES = ["edge", "agent-triage", "agent-auth", "agent-returns", "agent-billing", "agent-generalist"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_stack(tmp_path_factory.mktemp("least-privilege")) as stack:
        assert violations(stack) == []  # every service started with the rights it was given
        yield stack


def seed(stack: Stack, identity: str) -> Path:
    """A service's own seed, from the files the stack generated (as ``make run`` does)."""
    return stack.var_dir / "bus" / f"{identity}.nk"


async def refund_conversation(stack: Stack) -> str:
    """triage -> auth -> returns, with the handoffs: the session id."""
    async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
        session_id = str((await open_session(conn))["session_id"])
        refund = await say(conn, "I want a refund for order A1001")
        assert refund.agent == "auth" and [h["to"] for h in refund.handoffs] == ["auth"]
        verified = await say(conn, "It's jane@example.com and my PIN is 1234")
        assert verified.agent == "returns" and "89.99" in verified.text
    return session_id


def violations(stack: Stack) -> list[str]:
    """The permission violations nats-server logged (``Publish Violation``, ``Subscription Violation``)."""
    return [line for line in (stack.var_dir / "log" / "nats.log").read_text().splitlines() if "Violation" in line]


def public_key_of(stack: Stack, identity: str) -> str:
    return public_key(seed(stack, identity).read_bytes())


def test_every_service_has_its_own_seed_readable_only_by_its_owner(stack: Stack) -> None:
    folder = stack.var_dir / "bus"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for identity in SERVICES:
        assert stat.S_IMODE(seed(stack, identity).stat().st_mode) == 0o600
    assert len({seed(stack, i).read_bytes() for i in SERVICES}) == len(SERVICES)
    for proc in stack.procs:  # each process got its own seed and no operator login
        identity = "edge" if proc.is_edge else proc.name.split("#")[0].split("@")[0].replace(":", "-")
        assert proc.env["SWITCHBOARD_NATS_SEED_FILE"] == str(seed(stack, identity))
        assert "@" not in proc.env["SWITCHBOARD_NATS_URL"]


async def test_a_conversation_with_handoffs_runs_with_no_permission_refused(stack: Stack) -> None:
    before = violations(stack)
    session_id = await refund_conversation(stack)
    audit = await session_audit(stack, session_id, 2)  # read with the operator login
    assert [(d.source, d.final_target) for d in audit] == [("triage", "auth"), ("auth", "returns")]
    assert violations(stack) == before
    for proc in stack.procs:
        assert not [line for line in proc.lines if "Permissions Violation" in line], proc.name


async def test_without_a_credential_no_connection(stack: Stack) -> None:
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(stack.nats.client_url, max_reconnect_attempts=0, allow_reconnect=False)


async def test_a_specialist_cannot_publish_to_another_specialists_subject(stack: Stack) -> None:
    operator = await nats.connect(stack.nats.url)
    returns, refused = await connect_as(stack.nats.client_url, "agent-returns", seed(stack, "agent-returns"))
    try:
        watch = await operator.subscribe(subjects.agent_turn("billing"))
        await operator.flush()
        await returns.publish(subjects.agent_turn("billing"), b"{}")
        await returns.flush()
        await refused.wait(subjects.agent_turn("billing"))
        with pytest.raises(nats.errors.TimeoutError):
            await watch.next_msg(timeout=0.3)  # billing never got it
        # nor can it take billing's turns by subscribing to its subject
        await returns.subscribe(subjects.agent_turn("billing"), queue=subjects.agent_queue("billing"))
        await refused.wait(f'subscription to "{subjects.agent_turn("billing")}"')
    finally:
        await returns.close()
        await operator.close()
    logged = [line for line in violations(stack) if public_key_of(stack, "agent-returns") in line]
    assert any('Publish Violation - Subject "switchboard.v1.agent.billing.turn"' in line for line in logged)


async def test_a_side_effect_is_recorded_under_its_agents_identity_with_no_permission_refused(stack: Stack) -> None:
    """Omar returns his order A2001 (the other tests stop short of returning Jane's A1001): ``create_return``
    runs through the returns agent's ledger records, which the bus lets it write under its identity only."""
    before = violations(stack)
    async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        await say(conn, "I want a refund for order A2001")
        verified = await say(conn, "It's omar@example.com and my PIN is 5678")
        assert verified.agent == "returns"
        done = await say(conn, "yes please")
        assert done.agent == "returns" and "return R-" in done.text
    assert violations(stack) == before
    operator = await nats.connect(stack.nats.url)
    try:
        records = await (await operator.jetstream().key_value(LEDGER_BUCKET)).keys()
    finally:
        await operator.close()
    assert records and all(key.startswith("agent-returns.") for key in records)


async def test_a_specialist_cannot_read_session_state(stack: Stack) -> None:
    session_id = await refund_conversation(stack)
    returns, refused = await connect_as(stack.nats.client_url, "agent-returns", seed(stack, "agent-returns"))
    try:
        with pytest.raises(Exception):  # noqa: B017 - the request is dropped: a timeout or a JetStream error
            await returns.jetstream().key_value("switchboard_sessions")
        await refused.wait("KV_switchboard_sessions")
        direct = f"$JS.API.DIRECT.GET.KV_switchboard_sessions.$KV.switchboard_sessions.{session_id}"
        with pytest.raises(nats.errors.TimeoutError):  # refused, so nothing answers
            await returns.request(direct, b"", timeout=0.5)
        await refused.wait(direct)
    finally:
        await returns.close()


async def test_a_specialist_cannot_forge_an_audit_record(stack: Stack) -> None:
    session_id = await refund_conversation(stack)
    returns, refused = await connect_as(stack.nats.client_url, "agent-returns", seed(stack, "agent-returns"))
    forged = b'{"type":"switchboard.v1.handoff_decision","source":"returns","final_target":"billing"}'
    try:
        await returns.publish(subjects.audit_handoff(session_id), forged)
        await returns.flush()
        await refused.wait(subjects.audit_handoff(session_id))
        with pytest.raises(Exception):  # noqa: B017 - through JetStream too: the ack never comes
            await returns.jetstream().publish(subjects.audit_handoff(session_id), forged, timeout=0.5)
    finally:
        await returns.close()
    operator = await nats.connect(stack.nats.url)
    try:
        audit = await AuditLog(operator.jetstream()).read_session(session_id)
    finally:
        await operator.close()
    assert [(d.source, d.final_target) for d in audit] == [("triage", "auth"), ("auth", "returns")]
