"""Metrics endpoints and structured logs of real processes."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
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

    def handoff_lines() -> list[dict[str, Any]]:
        records = [json.loads(line) for line in list(retail.proc("edge").lines) if line.startswith("{")]
        return [r for r in records if r.get("msg") == "handoff" and r.get("session_id") == session_id]

    # the stack reads the edge's stdout on a thread of its own: the line may land just after response.done
    handoffs = await asyncio.to_thread(_eventually, handoff_lines, 10)
    assert handoffs, "no handoff log line for the session"
    assert {"ts", "level", "service", "logger", "trace_id", "span_id"} <= set(handoffs[0])
    assert handoffs[0]["service"] == "edge"
    assert "refund" not in json.dumps(handoffs[0])  # content-free: what the caller said is not logged


def _eventually(read: Callable[[], list[dict[str, Any]]], timeout_s: float) -> list[dict[str, Any]]:
    """``read()`` until it returns something or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not (found := read()) and time.monotonic() < deadline:
        time.sleep(0.02)  # ok-sleep: poll interval
    return found
