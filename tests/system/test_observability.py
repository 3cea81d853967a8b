"""Metrics endpoints and structured logs of real processes."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import httpx
import pytest

from switchboard.local.stack import Stack

from .client import open_session, say, sdk_client

pytestmark = pytest.mark.system


async def test_edge_and_agents_export_prometheus_metrics(retail: Stack) -> None:
    async with sdk_client(retail).realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        await say(conn, "I'd like a refund for A2001")
    async with httpx.AsyncClient() as http:
        edge = (await http.get(f"{retail.edge_url}/metrics")).text
        ready = next(line for line in retail.proc("agent:triage").lines if '"msg": "agent ready"' in line)
        port = json.loads(ready)["metrics_port"]
        agent = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert re.search(
        r'switchboard_handoffs_total\{from_agent="triage",outcome="redirected_auth",to_agent="auth"\} [1-9]', edge
    )
    assert re.search(r"switchboard_response_seconds_count [1-9]", edge)
    assert "switchboard_active_sessions" in edge
    assert re.search(r'switchboard_agent_turn_seconds_count\{agent="triage"\} [1-9]', agent)
    assert "session" not in " ".join(line for line in edge.splitlines() if line.startswith("switchboard_handoffs"))


async def test_log_lines_are_json_with_session_and_trace_ids(retail: Stack) -> None:
    async with sdk_client(retail).realtime.connect(model="switchboard") as conn:
        session_id = (await open_session(conn))["session_id"]
        await say(conn, "refund for A1001 please")
    handoffs: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5
    while not handoffs and time.monotonic() < deadline:  # the edge's stdout is read by a pump thread
        records = [json.loads(line) for line in list(retail.proc("edge").lines) if line.startswith("{")]
        handoffs = [r for r in records if r.get("msg") == "handoff" and r.get("session_id") == session_id]
        await asyncio.sleep(0.05)  # ok-sleep: poll interval
    assert handoffs, "no handoff log line for the session"
    assert {"ts", "level", "service", "logger", "trace_id", "span_id"} <= set(handoffs[0])
    assert handoffs[0]["service"] == "edge"
    assert "refund" not in json.dumps(handoffs[0])  # content-free: what the caller said is not logged
