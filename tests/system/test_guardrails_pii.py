"""PII a caller says never lands in a log, a trace, an audit record, or (per the scenario's rules) the transcript."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchboard.bus import Bus
from switchboard.state import AuditLog, SessionStore
from switchboard.telemetry.otlp_receiver import OTLPReceiver, ReceivedSpan

from .client import open_session, say, sdk_client
from .stacks import make_stack

pytestmark = pytest.mark.system

CARD = "4111 1111 1111 1111"


async def test_a_card_number_is_redacted_at_every_boundary(tmp_path: Path) -> None:
    async with OTLPReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
            "SWITCHBOARD_TRACE_CONTENT": "1",  # even with content on spans, PII stays off them
            "SWITCHBOARD_LOG_LEVEL": "DEBUG",
        }  # fmt: skip
        with make_stack(tmp_path, env=env) as stack:
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                session_id = (await open_session(conn))["session_id"]
                reply = await say(conn, f"I want a refund for order A1001, my card is {CARD}")
                assert reply.agent == "auth"
                added = [e for e in reply.events if e.type == "conversation.item.added"]
                verified = await say(conn, "jane@example.com 1234")
                assert verified.agent == "returns"

            def complete(spans: list[ReceivedSpan]) -> bool:
                return sum(s.name == "edge.response" for s in spans) >= 2

            await receiver.wait_for(complete, timeout_s=20)
            async with Bus(stack.nats_urls, name="check") as bus:
                store = await SessionStore.open(bus.js)
                transcript = await store.transcript(session_id)
                records = await AuditLog(bus.js).read_timeline(session_id)
    said = next(i for i in transcript if getattr(i, "role", "") == "user")
    assert "[CARD]" in said.text and CARD not in said.text  # the transcript holds the redacted text
    assert added and CARD not in json.dumps(added[0].item.model_dump())  # so does what the client is told
    assert records and all(CARD not in r.model_dump_json() for r in records)
    spans = json.dumps([s.attributes for s in receiver.spans], default=str)
    # with content on, the verification tool's arguments are on a span: the email in them is redacted
    assert CARD not in spans and "jane@example.com" not in spans and "[EMAIL]" in spans
    logs = "".join(p.read_text() for p in (tmp_path / "log").glob("*.log"))
    assert logs and CARD not in logs and "jane@example.com" not in logs
