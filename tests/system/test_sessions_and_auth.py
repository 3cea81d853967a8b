"""Browser-style authentication (WebSocket subprotocols) and the rule for two connections on one session:
the newer connection takes over, the older one is told why and closed before it does more work."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from switchboard.local.stack import Stack

from .client import RawClient, done_of, text_of, user_message
from .stacks import SlowModel, two_edges_on_a_model

pytestmark = pytest.mark.system

TAKEOVER_CLOSE_CODE = 4409


async def test_browser_style_client_authenticates_with_subprotocols(retail: Stack) -> None:
    async with RawClient(retail, auth="subprotocol", events=False) as browser:
        assert browser.ws.subprotocol == "realtime"  # a browser fails the upgrade unless one is selected
        created = await browser.open()
        turns = [await browser.turn(t) for t in ("I want a refund for order A1001", "jane@example.com, PIN 1234")]
    assert created["session"]["id"].startswith("sess_")
    assert [done_of(t)["metadata"]["agent"] for t in turns] == ["auth", "returns"]
    assert [done_of(t)["metadata"]["handoff_outcomes"] for t in turns] == ["redirected_auth", "accepted"]
    assert "A1001" in text_of(turns[1])


@pytest.mark.parametrize(
    "subprotocols",
    [["realtime", "openai-insecure-api-key.wrong"], ["realtime"], ["realtime", "openai-insecure-api-key."]],
)
async def test_bad_subprotocol_credentials_are_rejected_before_the_upgrade(
    retail: Stack, subprotocols: list[str]
) -> None:
    with pytest.raises(websockets.InvalidStatus) as excinfo:
        async with RawClient(retail, auth="none", subprotocols=subprotocols):
            pass
    assert excinfo.value.response.status_code == 401


async def _taken_over(old: RawClient) -> tuple[list[str], dict[str, Any], int | None]:
    """What the older connection saw until it was closed: event types, the error, the close code."""
    kinds, error = [], {}
    try:
        while True:
            event = await old.recv()
            kinds.append(event["type"])
            if event["type"] == "error":
                error = event["error"]
    except ConnectionClosed as closed:
        return kinds, error, closed.rcvd.code if closed.rcvd else None


async def test_newer_connection_takes_over_the_session_on_the_same_edge(retail: Stack) -> None:
    async with RawClient(retail) as old:
        session_id = (await old.open())["session_id"]
        await old.turn("I want a refund for order A1001")
        async with RawClient(retail, session_id=session_id) as new:
            info = await new.open()
            kinds, error, code = await asyncio.wait_for(_taken_over(old), 10)
            reply = done_of(await new.turn("jane@example.com, PIN 1234"))
    assert kinds == ["error"] and error["code"] == "session_taken_over" and code == TAKEOVER_CLOSE_CODE
    assert info["resumed"] is True and info["history_items"] == 4  # question, transfer call + output, answer
    assert reply["status"] == "completed" and reply["metadata"]["agent"] == "returns"


async def test_takeover_from_another_edge_cancels_the_losing_response_at_once(tmp_path: Path) -> None:
    slow = SlowModel("an answer nobody will hear", 5)
    async with two_edges_on_a_model(tmp_path, slow) as (stack, other_port):
        async with RawClient(stack) as old:
            session_id = (await old.open())["session_id"]
            await old.send({"type": "conversation.item.create", "item": user_message("hello")})
            await old.send({"type": "response.create"})
            await asyncio.wait_for(slow.asked.wait(), 20)  # the losing response is inside the agent
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with RawClient(stack, port=other_port, session_id=session_id) as new:
                info = await new.open()
                took = loop.time() - started
                kinds, error, code = await asyncio.wait_for(_taken_over(old), 10)
    done = next(e for e in old.events if e["type"] == "response.done")["response"]
    assert done["status"] == "cancelled"  # every response still ends with its response.done
    assert kinds.index("response.done") < kinds.index("error")
    assert error["code"] == "session_taken_over" and code == TAKEOVER_CLOSE_CODE
    assert info["resumed"] is True and info["history_items"] == 1  # the question; no answer was committed
    assert took < 3, f"the newer connection waited {took:.1f}s: the older response was not cut short"


async def test_two_connections_resuming_at_once_leave_one_live(retail: Stack) -> None:
    """Two reconnects of one session racing on an edge (a client retrying its connect): the later one takes
    the earlier one over, as if they had come one after the other. Both stayed live and wrote the session
    in turn, each losing the other's changes to ``session_conflict``."""
    async with RawClient(retail) as old:
        session_id = (await old.open())["session_id"]
        await old.turn("hello")
        first, second = RawClient(retail, session_id=session_id), RawClient(retail, session_id=session_id)
        await asyncio.gather(first.__aenter__(), second.__aenter__())
        try:
            ends = {asyncio.ensure_future(_taken_over(c)): c for c in (first, second)}
            done, pending = await asyncio.wait(ends, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:  # the live one: stop reading its events here
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            assert len(done) == 1, "neither connection was taken over: both hold the session"
            lost, live = (first, second) if ends[done.pop()] is first else (second, first)
            kinds, error, code = next(t.result() for t, c in ends.items() if c is lost)
            assert error["code"] == "session_taken_over" and code == TAKEOVER_CLOSE_CODE, kinds
            reply = done_of(await live.turn("jane@example.com, PIN 1234"))
            assert reply["status"] == "completed", live.events[-5:]
        finally:
            await asyncio.gather(first.__aexit__(None, None, None), second.__aexit__(None, None, None))
