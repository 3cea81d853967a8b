"""One caller turn is one trace across every process it touches, exported over real OTLP/HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from switchboard.bus import subjects
from switchboard.schemas import TurnRequest
from switchboard.telemetry.otlp_receiver import OTLPReceiver, ReceivedSpan
from switchboard.testing import ScriptedOpenAIServer

from .client import collect, edge_log_lines, open_session, say, sdk_client, user_message
from .stacks import make_stack
from .test_supervisor import SlowSupervisorModel

pytestmark = pytest.mark.system


def _by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.span_id: s for s in spans}


def _ancestors(span: ReceivedSpan, index: dict[str, ReceivedSpan]) -> list[str]:
    names = []
    while span.parent_span_id is not None:
        span = index[span.parent_span_id]
        names.append(span.name)
    return names


async def test_a_turn_with_a_handoff_is_one_connected_trace(tmp_path: Path) -> None:
    async with OTLPReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with make_stack(tmp_path, env=env) as stack:
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                session_id = (await open_session(conn))["session_id"]
                reply = await say(conn, "I want a refund for order A1001")
            assert reply.agent == "auth"

            def complete(spans: list[ReceivedSpan]) -> bool:
                services = {s.service_name for s in spans if s.name == "agent.turn"}
                return {"agent-triage", "agent-auth"} <= services and any(s.name == "edge.response" for s in spans)

            await receiver.wait_for(complete, timeout_s=20)
            logged = await edge_log_lines(stack, "handoff", session_id)
            command = [sys.executable, "-m", "switchboard", "trace", session_id, "--nats-url", stack.nats.url]
            timeline = await asyncio.to_thread(subprocess.run, [*command, "--json"], capture_output=True, text=True)
            table = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)

    root = next(s for s in receiver.spans if s.name == "edge.response")
    assert root.parent_span_id is None and root.service_name == "edge"
    assert root.attributes["switchboard.session.id"] == session_id
    trace = [s for s in receiver.spans if s.trace_id == root.trace_id]
    index = _by_id(trace)
    assert {s.service_name for s in trace} >= {"edge", "agent-triage", "agent-auth"}

    turns = {s.service_name: s for s in trace if s.name == "agent.turn"}
    for service in ("agent-triage", "agent-auth"):
        turn = turns[service]
        assert turn.kind == "consumer"
        # agent.turn (agent process) <- conductor.hop <- edge.response (edge): the parent crosses processes
        assert _ancestors(turn, index) == ["conductor.hop", "edge.response"]
        hop = index[turn.parent_span_id]  # type: ignore[index]
        assert hop.service_name == "edge" and hop.attributes["messaging.system"] == "nats"
        agent = service.removeprefix("agent-")
        assert hop.attributes["messaging.destination.name"] == f"switchboard.v1.agent.{agent}.turn"
    handoff = next(s for s in trace if s.name == "handoff")
    assert handoff.attributes["switchboard.handoff.from"] == "triage"
    assert handoff.attributes["switchboard.handoff.to"] == "auth"
    assert handoff.attributes["switchboard.handoff.outcome"] == "redirected_auth"
    assert "switchboard.handoff.reason" not in handoff.attributes  # content stays off spans by default
    assert [line["trace_id"] for line in logged] == [root.trace_id]  # the edge's log line joins the trace
    model_calls = [s for s in trace if s.name == "model.call"]
    assert {index[s.parent_span_id].service_name for s in model_calls if s.parent_span_id} >= {
        "agent-triage",
        "agent-auth",
    }
    assert all(s.attributes["gen_ai.system"] == "switchboard.offline" for s in model_calls)

    assert timeline.returncode == 0, timeline.stderr
    records = json.loads(timeline.stdout)
    kinds = [r["type"] for r in records]
    assert "switchboard.v1.handoff_decision" in kinds and "switchboard.v1.turn_record" in kinds
    turn_record = next(r for r in records if r["type"] == "switchboard.v1.turn_record")
    assert turn_record["trace_id"] == root.trace_id
    assert turn_record["agents"] == ["triage", "auth"]
    assert "handoff #1" in table.stdout and "triage -> auth (asked returns)" in table.stdout
    assert "redirected_auth" in table.stdout and root.trace_id in table.stdout


async def test_a_consult_retried_on_another_supervisor_replica_is_one_trace(tmp_path: Path) -> None:
    """The supervisor replica holding a consult is killed; the other answers. One trace: edge.response ->
    supervisor.consult (its retry an event on it) -> supervisor.answer (the replica that answered) -> model.call,
    and the timeline says the consult was answered after a retry."""
    model = SlowSupervisorModel(first_delay_s=30)
    async with OTLPReceiver() as receiver, ScriptedOpenAIServer(responder=model) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url,
               "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}  # fmt: skip
        agents = ["frontdesk", "supervisor", "generalist"]
        with make_stack(tmp_path, scenario="supervisor", agents=agents, env=env) as stack:
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                session_id = (await open_session(conn))["session_id"]
                await conn.conversation.item.create(item=user_message("why X?"))
                await conn.response.create()
                await asyncio.wait_for(model.supervisor_seen.wait(), 20)  # the consult is inside replica 1
                stack.start_agent("supervisor", wait=True)
                stack.kill("supervisor:supervisor", signal.SIGKILL)
                reply = await collect(conn)
            assert reply.metadata["supervisor"] == "consulted"

            def complete(spans: list[ReceivedSpan]) -> bool:
                names = {s.name for s in spans}
                return {"edge.response", "supervisor.consult", "supervisor.answer"} <= names

            await receiver.wait_for(complete, timeout_s=20)
            command = [sys.executable, "-m", "switchboard", "trace", session_id, "--nats-url", stack.nats.url]
            table = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)

    root = next(s for s in receiver.spans if s.name == "edge.response")
    trace = [s for s in receiver.spans if s.trace_id == root.trace_id]
    index = _by_id(trace)
    consult = next(s for s in trace if s.name == "supervisor.consult")
    assert _ancestors(consult, index) == ["edge.response"] and consult.service_name == "edge"
    assert consult.attributes["switchboard.consult.outcome"] == "answered"
    assert consult.attributes["switchboard.consult.attempts"] == 2
    assert consult.events == ["retry"]  # the killed replica's attempt, retried on the other
    answer = next(s for s in trace if s.name == "supervisor.answer")
    assert _ancestors(answer, index) == ["supervisor.consult", "edge.response"]
    assert answer.service_name == "supervisor-supervisor" and answer.kind == "consumer"
    supervisor_calls = [s for s in trace if s.name == "model.call" and s.service_name == "supervisor-supervisor"]
    assert supervisor_calls and all(index[s.parent_span_id].name == "supervisor.answer" for s in supervisor_calls)  # type: ignore[index]
    assert table.returncode == 0, table.stderr
    assert "consult answered" in table.stdout and "1 retries" in table.stdout and root.trace_id in table.stdout


async def test_an_agent_hop_retried_past_a_replica_that_did_not_acknowledge_is_one_trace(tmp_path: Path) -> None:
    """The only triage replica is frozen (SIGSTOP: it keeps its subscription and acknowledges nothing) when a
    turn reaches it, and thawed once the edge sends the turn again. One trace: edge.response -> conductor.hop
    (a ``retry`` event on it per unacknowledged attempt, with the attempt and the reason, as on a consult's
    span) -> agent.turn of the replica that answered."""
    async with OTLPReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "SWITCHBOARD_RETRY_ATTEMPTS": "5",  # room for an attempt or two while the thawed replica wakes up
        }
        with make_stack(tmp_path, env=env) as stack:
            replica = stack.proc("agent:triage").popen
            sent: list[str] = []  # turn ids of the requests on triage's subject, each attempt of each turn

            async def on_request(msg: Msg) -> None:
                sent.append(TurnRequest.model_validate_json(msg.data).turn_id)
                if len(sent) >= 2 and sent[-1] == sent[-2]:  # the edge sent the turn again: thaw the replica
                    replica.send_signal(signal.SIGCONT)

            nc = await nats.connect(stack.nats.url)
            try:
                await nc.subscribe(subjects.agent_turn("triage"), cb=on_request)
                await nc.flush()
                async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                    session_id = (await open_session(conn))["session_id"]
                    replica.send_signal(signal.SIGSTOP)
                    try:
                        reply = await say(conn, "hello")
                    finally:
                        replica.send_signal(signal.SIGCONT)
            finally:
                await nc.drain()
            assert reply.agent == "triage" and reply.handoffs == []  # answered by triage, not the fallback
            assert len(sent) >= 2 and len(set(sent)) == 1, sent  # one turn, sent again

            def complete(spans: list[ReceivedSpan]) -> bool:
                return any(s.name == "agent.turn" and s.service_name == "agent-triage" for s in spans) and any(
                    s.name == "edge.response" for s in spans
                )

            await receiver.wait_for(complete, timeout_s=20)

    root = next(s for s in receiver.spans if s.name == "edge.response")
    assert root.attributes["switchboard.session.id"] == session_id
    trace = [s for s in receiver.spans if s.trace_id == root.trace_id]
    index = _by_id(trace)
    (hop,) = [s for s in trace if s.name == "conductor.hop"]
    assert _ancestors(hop, index) == ["edge.response"] and hop.status != "error"
    assert hop.attributes["switchboard.agent"] == "triage"
    retries = hop.event_details
    assert [e.name for e in retries] == ["retry"] * (len(sent) - 1)  # one per attempt that was sent again
    for n, event in enumerate(retries, start=1):
        assert event.attributes == {"switchboard.retry.attempt": n, "switchboard.retry.reason": "ReplyTimeout"}
        assert hop.start_ns <= event.time_ns <= hop.end_ns
    answered = [s for s in trace if s.name == "agent.turn" and s.parent_span_id == hop.span_id]
    assert answered and all(s.service_name == "agent-triage" for s in answered)
