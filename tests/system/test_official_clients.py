"""The official Realtime clients, unchanged, hold a conversation with a handoff through a real stack.

Python: the ``openai`` SDK without Switchboard's opt-in events, and the OpenAI Agents SDK's
``RealtimeRunner``. Node (``openai`` over ``wss://`` and ``@openai/agents-realtime``) lives in
``test_node_clients.py``; a browser-style client in ``test_sessions_and_auth.py``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner, RealtimeSession

from switchboard.local.stack import Stack
from switchboard.testing import ScriptedOpenAIServer

from .client import say, sdk_client
from .stacks import SlowModel, calls_client_tool, make_stack, two_edges_on_a_model

pytestmark = pytest.mark.system

CONVERSATION = ["I want a refund for order A1001", "jane@example.com, PIN 1234", "and what about my invoice?"]
"""triage -> auth (redirected_auth), auth -> returns (accepted), returns -> billing (accepted); read-only, so
the shared retail store is the same whatever ran before."""


async def test_openai_python_sdk_without_platform_events(retail: Stack) -> None:
    async with sdk_client(retail, events=False).realtime.connect(model="switchboard") as conn:
        created = await conn.recv()
        replies = [await say(conn, text) for text in CONVERSATION]
    assert created.type == "session.created"
    kinds = {e.type for r in replies for e in r.events}
    assert not [k for k in kinds if k.startswith("switchboard.")]
    assert [r.agent for r in replies] == ["auth", "returns", "billing"]
    assert [r.metadata["handoff_outcomes"] for r in replies] == ["redirected_auth", "accepted", "accepted"]
    assert all(r.status == "completed" and not r.errors for r in replies)


# --- the OpenAI Agents SDK's RealtimeRunner -------------------------------------------------------


class RunnerLog:
    """Everything a RealtimeSession surfaced, and the raw server events under it."""

    def __init__(self, session: RealtimeSession) -> None:
        self.session = session
        self.events: list[Any] = []
        self.raw: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for event in self.session:
            async with self.changed:
                self.events.append(event)
                if event.type == "raw_model_event" and event.data.type == "raw_server_event":
                    self.raw.append(event.data.data)
                self.changed.notify_all()

    @property
    def errors(self) -> list[Any]:
        return [e.error for e in self.events if e.type == "error"]

    def dones(self) -> list[dict[str, Any]]:
        return [e["response"] for e in self.raw if e["type"] == "response.done"]

    async def wait(self, predicate: Any, timeout_s: float = 20) -> None:
        async with asyncio.timeout(timeout_s), self.changed:
            await self.changed.wait_for(predicate)

    async def turn(self, text: str) -> dict[str, Any]:
        before = len(self.dones())
        await self.session.send_message(text)
        await self.wait(lambda: len(self.dones()) > before)
        return self.dones()[-1]

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


TEXT_CLIENT: Any = {"modalities": ["text"], "turn_detection": None}
"""Model settings of a text client: text answers, no server VAD (spoken turns: test_voice.py)."""


@asynccontextmanager
async def runner_session(
    stack: Stack, agent: RealtimeAgent, port: int | None = None, settings: Any = TEXT_CLIENT
) -> AsyncIterator[RunnerLog]:
    """``settings``: the runner's model settings; ``{}`` keeps the SDK's defaults (audio in and out, VAD)."""
    base = f"ws://127.0.0.1:{port}/v1" if port else stack.ws_base
    runner = RealtimeRunner(agent, config={"model_settings": settings})
    config = {"url": f"{base}/realtime?model=switchboard", "api_key": stack.api_key}
    async with await runner.run(model_config=config) as session:  # type: ignore[arg-type]
        log = RunnerLog(session)
        try:
            await log.wait(lambda: any(e["type"] == "session.created" for e in log.raw))
            yield log
        finally:
            await log.stop()


async def test_agents_sdk_realtime_runner_holds_a_conversation_with_handoffs(retail: Stack) -> None:
    agent = RealtimeAgent(name="caller", instructions="Help the caller.")
    async with runner_session(retail, agent) as log:
        dones = [await log.turn(text) for text in CONVERSATION]
        history = next(e.history for e in reversed(log.events) if e.type == "history_updated")
    assert log.errors == []  # before the fix every switchboard.* event surfaced here as an error
    assert [d["metadata"]["agent"] for d in dones] == ["auth", "returns", "billing"]
    assert [d["metadata"]["handoff_outcomes"] for d in dones] == ["redirected_auth", "accepted", "accepted"]
    said = [
        part.text or ""
        for item in history
        if item.type == "message" and item.role == "assistant"
        for part in item.content
        if part.type == "text"
    ]
    assert len(said) == 3 and "A1001" in said[1] and "Your balance is" in said[2]
    kinds = {e.type for e in log.events}
    assert {"agent_start", "agent_end", "history_updated"} <= kinds


@function_tool
def order_note(order_id: str) -> str:
    """Return the caller app's private note on an order."""
    return f"note for {order_id}: gift wrapped"


@asynccontextmanager
async def runner_on_scripted_model(tmp: Path, responder: Any, agent: RealtimeAgent) -> AsyncIterator[RunnerLog]:
    async with ScriptedOpenAIServer(responder=responder) as model:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": model.base_url}
        with make_stack(tmp, agents=["triage", "generalist"], env=env) as stack:
            async with runner_session(stack, agent) as log:
                yield log


async def test_agents_sdk_runs_a_local_function_tool(tmp_path: Path) -> None:
    agent = RealtimeAgent(name="caller", instructions="Help the caller.", tools=[order_note])
    async with runner_on_scripted_model(tmp_path, calls_client_tool("order_note", {"order_id": "A1001"}), agent) as log:
        await log.session.send_message("what is the note on order A1001?")
        await log.wait(lambda: any(e.type == "tool_end" for e in log.events), timeout_s=5)
        done = await log.turn("thanks")
    assert [e.output for e in log.events if e.type == "tool_end"] == ["note for A1001: gift wrapped"]
    assert "gift wrapped" in str(done["output"])


async def test_agents_sdk_client_side_handoff(tmp_path: Path) -> None:
    billing = RealtimeAgent(name="billing_desk", instructions="Answer billing questions.")
    agent = RealtimeAgent(name="caller", instructions="Help the caller.", handoffs=[billing])
    async with runner_on_scripted_model(tmp_path, calls_client_tool("transfer_to_billing_desk", {}), agent) as log:
        await log.session.send_message("a question about my invoice")
        await log.wait(lambda: any(e.type == "handoff" for e in log.events), timeout_s=5)
    handoff = next(e for e in log.events if e.type == "handoff")
    assert (handoff.from_agent.name, handoff.to_agent.name) == ("caller", "billing_desk")


async def test_agents_sdk_interrupt_cancels_a_running_response(tmp_path: Path) -> None:
    slow = SlowModel("a long answer the caller cuts short", 5)
    async with two_edges_on_a_model(tmp_path, slow) as (stack, _):
        agent = RealtimeAgent(name="caller", instructions="Help the caller.")
        async with runner_session(stack, agent) as log:
            await log.session.send_message("hello")
            await log.wait(lambda: any(e["type"] == "response.created" for e in log.raw))
            await asyncio.wait_for(slow.asked.wait(), 20)  # the response is inside the agent, nothing streamed yet
            await log.session.interrupt()
            await log.wait(lambda: len(log.dones()) == 1, timeout_s=3)  # well before the model's 5 s
            cancelled = log.dones()[0]
    assert cancelled["status"] == "cancelled"
    assert log.errors == []


class InterruptAt:
    """A listener on the SDK's model that calls ``interrupt()`` the moment the SDK receives a server event of
    type ``kind``, before it reads the next one. At ``response.output_item.done`` the SDK still holds the
    response as running, so it sends ``response.cancel``, which reaches the edge while the response commits
    its turn (between its last item and its ``response.done``): the race of issue 12."""

    def __init__(self, session: RealtimeSession, kind: str) -> None:
        self.session = session
        self.kind = kind
        self.interrupts = 0

    async def on_event(self, event: Any) -> None:
        if event.type == "raw_server_event" and event.data.get("type") == self.kind:
            self.interrupts += 1
            await self.session.interrupt()


async def test_agents_sdk_interrupt_right_after_the_answer_never_hangs(retail: Stack) -> None:
    agent = RealtimeAgent(name="caller", instructions="Help the caller.")
    async with runner_session(retail, agent) as log:
        interrupter = InterruptAt(log.session, "response.output_item.done")
        log.session.model.add_listener(interrupter)
        for i in range(20):
            before = len(log.dones())
            await log.session.send_message(f"hello {i}")
            await log.wait(lambda b=before: len(log.dones()) > b, timeout_s=5)  # interrupt() never hangs it
        log.session.model.remove_listener(interrupter)
        after = await log.turn("hello again")
    assert interrupter.interrupts == 20
    created = Counter(e["response"]["id"] for e in log.raw if e["type"] == "response.created")
    assert Counter(d["id"] for d in log.dones()) == created  # each response: exactly one response.done
    assert after["status"] == "completed"
    assert log.errors == []  # no session_conflict: no cancel cut the session's commit in half
