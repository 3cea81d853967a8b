"""Graceful drain of an edge (SIGTERM) and the per-edge session cap."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from switchboard.local.stack import Proc
from switchboard.testing import ScriptedOpenAIServer

from .client import RawClient, collect, open_session, say, sdk_client
from .stacks import SlowModel, make_stack, probe, two_edges_on_a_model

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
            drained = await asyncio.to_thread(_reasons_while_alive, stack.proc("edge"))
            reply = await collect(conn)
            reconnect = await conn.recv()
        assert stack.proc("edge").popen.wait(15) == 0
        async with sdk_client(stack, port=other_port).realtime.connect(
            model="switchboard", extra_query={"session_id": session_id}
        ) as conn:
            info = await open_session(conn)
    assert reply.status == "completed" and reply.text == "a slow but complete answer"
    assert "draining" in drained  # /readyz said 503 while the response finished
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


async def test_the_session_cap_counts_sessions_not_connections(tmp_path: Path) -> None:
    with make_stack(tmp_path, agents=["triage", "generalist"], env={"SWITCHBOARD_MAX_SESSIONS": "2"}) as stack:

        def connect(session_id: str | None = None) -> RawClient:
            return RawClient(stack, session_id=session_id, events=False)

        def info() -> dict[str, Any]:
            return probe(f"{stack.edge_url}/v1/switchboard/info", key=stack.api_key)[1]

        async with connect() as first, connect() as second:  # at the cap
            created = [await ws.recv() for ws in (first, second)]
            assert [c["type"] for c in created] == ["session.created"] * 2
            async with connect(
                created[0]["session"]["id"]
            ) as again:  # a reconnect takes sess_a over: not a new session
                assert (await again.recv())["type"] == "session.created"
                await asyncio.to_thread(_wait, lambda: info()["connections"] == 2)  # the older one was closed
                assert info()["active_sessions"] == 2
                with pytest.raises(websockets.InvalidStatus) as excinfo:
                    async with connect():
                        pass
                assert excinfo.value.response.status_code == 503
        await asyncio.to_thread(_wait, lambda: info()["connections"] == 0)
        assert info()["active_sessions"] == 0

        release = asyncio.Event()

        async def try_open(n: int) -> bool:  # a burst: the cap must hold while others are being admitted
            try:
                async with connect() as ws:
                    await ws.recv()
                    await release.wait()  # every admitted connection stays open until the count was seen
                    return True
            except websockets.InvalidStatus:
                return False

        burst = [asyncio.create_task(try_open(n)) for n in range(5)]
        await asyncio.to_thread(_wait, lambda: info()["connections"] >= 2 and sum(t.done() for t in burst) == 3)
        assert info()["active_sessions"] == 2
        release.set()
        assert sorted(await asyncio.gather(*burst)) == [False, False, False, True, True]


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
                drained = await asyncio.to_thread(_reasons_while_alive, stack.proc("agent:triage"))
                reply = await collect(conn)
                assert await asyncio.to_thread(stack.proc("agent:triage").popen.wait, 15) == 0
                after = await say(conn, "hello again")  # no triage left: the fallback answers
    assert reply.agent == "triage" and reply.text == "a slow but complete answer" and reply.handoffs == []
    assert "draining" in drained  # /readyz said 503 while the turn finished
    assert [h["outcome"] for h in after.handoffs] == ["unavailable"] and after.agent == "generalist"


def _reasons_while_alive(proc: Proc) -> set[str]:
    """The reasons ``/readyz`` gave for 503 until the process exited."""
    reasons = set()
    while proc.alive():
        status, body = probe(proc.ready_url)
        if status == 503:
            reasons.add(str(body.get("reason")))
        time.sleep(0.02)  # ok-sleep: probe interval
    return reasons


def _wait(check: Callable[[], bool], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)  # ok-sleep: poll interval
