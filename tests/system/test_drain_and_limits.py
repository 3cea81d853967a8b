"""Graceful drain of an edge (SIGTERM) and the per-edge session cap."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
import websockets

from switchboard.testing import ScriptedOpenAIServer

from .client import RawClient, collect, open_session, say, sdk_client
from .stacks import SlowModel, make_stack, two_edges_on_a_model

pytestmark = pytest.mark.system


async def test_sigterm_lets_the_response_finish_then_the_client_resumes_elsewhere(tmp_path: Path) -> None:
    slow = SlowModel("a slow but complete answer", 1.5)
    async with two_edges_on_a_model(tmp_path, slow) as (stack, other_port):
        async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
            session_id = (await open_session(conn))["session_id"]
            await conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
            )
            await conn.response.create()
            await asyncio.wait_for(slow.asked.wait(), 20)  # the turn is inside the agent
            stack.proc("edge").popen.send_signal(signal.SIGTERM)
            reply = await collect(conn)
            reconnect = await conn.recv()
        assert stack.proc("edge").popen.wait(15) == 0
        async with sdk_client(stack, port=other_port).realtime.connect(
            model="switchboard", extra_query={"session_id": session_id}
        ) as conn:
            info = await open_session(conn)
    assert reply.status == "completed" and reply.text == "a slow but complete answer"
    assert reconnect.type == "switchboard.reconnect"
    assert info["resumed"] is True and info["history_items"] == 2  # the question and the answer


async def test_edge_refuses_sessions_beyond_its_cap(tmp_path: Path) -> None:
    with make_stack(tmp_path, agents=["triage", "generalist"], env={"SWITCHBOARD_MAX_SESSIONS": "2"}) as stack:
        async with RawClient(stack) as first, RawClient(stack) as second:
            for client in (first, second):
                assert (await client.recv())["type"] == "session.created"
            with pytest.raises(websockets.InvalidStatus) as excinfo:
                async with RawClient(stack):
                    pass
            assert excinfo.value.response.status_code == 503
            assert excinfo.value.response.headers["Retry-After"] == "1"
        async with sdk_client(stack).realtime.connect(model="switchboard") as conn:  # room again
            await open_session(conn)
            assert (await say(conn, "hello")).status == "completed"


async def test_sigterm_on_an_agent_finishes_its_turn_in_flight(tmp_path: Path) -> None:
    slow = SlowModel("a slow but complete answer", 1.5)
    async with ScriptedOpenAIServer(responder=slow) as model:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": model.base_url}
        with make_stack(tmp_path, agents=["triage", "generalist"], env=env) as stack:
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                await open_session(conn)
                await conn.conversation.item.create(
                    item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
                )
                await conn.response.create()
                await asyncio.wait_for(slow.asked.wait(), 20)
                stack.proc("agent:triage").popen.send_signal(signal.SIGTERM)  # stops taking turns, finishes this one
                reply = await collect(conn)
                assert await asyncio.to_thread(stack.proc("agent:triage").popen.wait, 15) == 0
                after = await say(conn, "hello again")  # no triage left: the fallback answers
    assert reply.agent == "triage" and reply.text == "a slow but complete answer" and reply.handoffs == []
    assert [h["outcome"] for h in after.handoffs] == ["unavailable"] and after.agent == "generalist"
