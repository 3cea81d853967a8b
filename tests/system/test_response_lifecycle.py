"""Every response ends with exactly one ``response.done``, whenever the client's cancel lands, a cancel
never cuts the session's commit in half (the next write never gets ``session_conflict``), and it stops
the agent's work too."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from switchboard.local.stack import Stack
from switchboard.testing import ScriptedOpenAIServer, ScriptedReply

from .client import RawClient, log_lines, user_message
from .stacks import make_stack

pytestmark = pytest.mark.system

POINTS = ["response.created", "response.output_text.delta", "response.output_item.done", "response.done"]
"""Where the cancel is sent: right after the client sees this event of the response."""


def dones_by_response(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["response"]["id"] for e in events if e["type"] == "response.done")


async def test_a_cancel_at_any_point_of_a_response_ends_it_with_one_response_done(retail: Stack) -> None:
    async with RawClient(retail) as client:
        await client.open()
        statuses: Counter[str] = Counter()
        for i in range(40):  # 10 cancels at each point; half of those at output_item.done land in the commit
            point = POINTS[i % len(POINTS)]
            start = len(client.events)
            await client.send({"type": "conversation.item.create", "item": user_message(f"hello {i}")})
            await client.send({"type": "response.create"})
            await client.next(point)
            await client.send({"type": "response.cancel", "event_id": f"cancel_{i}"})
            if point != "response.done":
                done = await client.next("response.done")
                statuses[done["response"]["status"]] += 1
                if done["response"]["status"] == "cancelled":
                    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
                else:  # the cancel landed while the turn committed: it finished whole
                    assert done["response"]["status"] == "completed", done
            # a second cancel now has nothing to cancel: the GA error, with the event id echoed
            await client.send({"type": "response.cancel", "event_id": f"again_{i}"})
            error = await client.next("error")
            assert error["error"]["code"] == "response_cancel_not_active", error
            assert error["error"]["event_id"] == f"again_{i}"
            events = client.events[start:]
            created = [e["response"]["id"] for e in events if e["type"] == "response.created"]
            assert len(created) == 1 and dones_by_response(events) == Counter({created[0]: 1}), events
            assert not [
                e for e in events if e["type"] == "error" and e["error"]["code"] != "response_cancel_not_active"
            ]
        # the session was never left with a half-written commit: the next turn commits cleanly
        start = len(client.events)
        await client.turn("and now a full answer")
        after = client.events[start:]
        assert [e["response"]["status"] for e in after if e["type"] == "response.done"] == ["completed"]
        assert not [e for e in after if e["type"] == "error"], after
    assert statuses["cancelled"] >= 1, statuses


async def test_a_cancel_with_nothing_running_gets_the_ga_error(retail: Stack) -> None:
    async with RawClient(retail) as client:
        await client.open()
        await client.send({"type": "response.cancel", "event_id": "evt_idle"})
        error = await client.next("error")
        assert error["error"]["type"] == "invalid_request_error"
        assert (error["error"]["code"], error["error"]["event_id"]) == ("response_cancel_not_active", "evt_idle")
        async with asyncio.timeout(20):
            await client.turn("hello")


async def test_a_cancelled_response_stops_the_agents_model_call(tmp_path: Path) -> None:
    """The caller barges in while the model thinks: the agent is told and stops, instead of paying for an
    answer nobody will hear and holding its slot until the turn's deadline (30 s)."""
    asked = asyncio.Event()

    def responder(body: dict[str, Any]) -> ScriptedReply:
        asked.set()
        return ScriptedReply(text="an answer nobody hears", delay_s=25)

    async with ScriptedOpenAIServer(responder=responder) as model:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": model.base_url}
        with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:
            async with RawClient(stack) as client:
                session_id = (await client.open())["session_id"]
                await client.send({"type": "conversation.item.create", "item": user_message("hello")})
                await client.send({"type": "response.create"})
                await asyncio.wait_for(asked.wait(), 15)  # the agent's model call is under way
                await client.send({"type": "response.cancel"})
                assert (await client.next("response.done"))["response"]["status"] == "cancelled"
                assert await log_lines(stack, "agent:triage", "request stopped by its caller", session_id)
