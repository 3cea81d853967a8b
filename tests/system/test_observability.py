"""Metrics endpoints and structured logs of real processes."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from switchboard.local.stack import Stack

from .client import edge_log_lines, open_session, say, sdk_client

pytestmark = pytest.mark.system


async def test_edge_and_agents_export_prometheus_metrics(retail: Stack) -> None:
    async with sdk_client(retail).realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        await say(conn, "I'd like a refund for A2001")
        async with httpx.AsyncClient() as http:
            during = (await http.get(f"{retail.edge_url}/metrics")).text
    assert re.search(r"^switchboard_active_sessions [1-9]", during, re.MULTILINE), "the open session is not counted"
    async with httpx.AsyncClient() as http:
        deadline = asyncio.get_running_loop().time() + 10
        edge = (await http.get(f"{retail.edge_url}/metrics")).text
        while re.search(r"^switchboard_active_sessions 0\.0$", edge, re.MULTILINE) is None:  # its close is async
            assert asyncio.get_running_loop().time() < deadline, "the closed session is still counted"
            await asyncio.sleep(0.05)  # ok-sleep: poll interval
            edge = (await http.get(f"{retail.edge_url}/metrics")).text
        ready = next(line for line in retail.proc("agent:triage").lines if '"msg": "agent ready"' in line)
        port = json.loads(ready)["metrics_port"]
        agent = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert re.search(
        r'switchboard_handoffs_total\{from_agent="triage",outcome="redirected_auth",to_agent="auth"\} [1-9]', edge
    )
    assert re.search(r"switchboard_response_seconds_count [1-9]", edge)
    assert re.search(r'switchboard_agent_turn_seconds_count\{agent="triage"\} [1-9]', agent)
    assert "session" not in " ".join(line for line in edge.splitlines() if line.startswith("switchboard_handoffs"))


async def test_log_lines_are_json_with_session_and_trace_ids(retail: Stack) -> None:
    async with sdk_client(retail).realtime.connect(model="switchboard") as conn:
        session_id = (await open_session(conn))["session_id"]
        await say(conn, "refund for A1001 please")

    handoffs = await edge_log_lines(retail, "handoff", session_id)
    assert handoffs, "no handoff log line for the session"
    assert {"ts", "level", "service", "logger", "trace_id", "span_id"} <= set(handoffs[0])
    assert handoffs[0]["service"] == "edge"
    assert "refund" not in json.dumps(handoffs[0])  # content-free: what the caller said is not logged
