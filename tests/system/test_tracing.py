"""One caller turn is one trace across every process it touches, exported over real OTLP/HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from switchboard.telemetry.otlp_receiver import OTLPReceiver, ReceivedSpan

from .client import edge_log_lines, open_session, say, sdk_client
from .stacks import make_stack

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
