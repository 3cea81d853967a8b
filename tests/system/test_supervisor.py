"""Chat-supervisor across processes: filler, streamed answer, fallback, breaker, killed replica, fidelity."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchboard.bus import Bus
from switchboard.local.stack import Stack
from switchboard.schemas import MessageItem, TurnRecord
from switchboard.state import AuditLog, SessionStore
from switchboard.testing import ScriptedOpenAIServer, ScriptedReply

from .client import (
    RawClient,
    Reply,
    collect,
    done_of,
    log_lines,
    open_session,
    say,
    sdk_client,
    text_of,
    user_message,
)
from .stacks import SECOND_TENANT_KEY, make_stack, probe

pytestmark = pytest.mark.system

FILLERS = ("One moment while I look into that.", "Let me check that for you.", "Give me a second to pull that up.")
FALLBACK = "I'm having trouble reaching the right person for that right now, so let me transfer you."


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_stack(tmp_path_factory.mktemp("supervisor"), scenario="supervisor") as stack:
        yield stack


async def test_consult_streams_a_filler_then_the_supervisors_answer(supervised: Stack) -> None:
    async with sdk_client(supervised).realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        hello = await say(conn, "hello")
        assert hello.agent == "frontdesk" and hello.metadata["supervisor"] == "no"

        asked = await say(conn, "what's my balance?")
        deltas = [e.delta for e in asked.events if e.type == "response.output_text.delta"]
        assert deltas[0].strip() in FILLERS  # the filler comes first, before the supervisor answers
        assert len(deltas) >= 2  # the answer follows the filler (what the model produces at once is one delta)
        assert "".join(deltas[1:]) in asked.text
        assert "verify" in asked.text
        assert asked.agent == "frontdesk" and asked.metadata["supervisor"] == "consulted"
        assert float(asked.metadata["consult_ms"]) > 0
        assert asked.metadata["routing_rate"] == "0.50"

        answered = await say(conn, "jane@example.com 1234")
        assert "Your balance is $42.5" in answered.text
        assert answered.metadata["supervisor"] == "consulted"
        assert answered.metadata["routing_rate"] == "0.67"


async def test_front_desk_keeps_small_talk_and_details_and_consults_for_the_account(supervised: Stack) -> None:
    async with sdk_client(supervised).realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        # none of these has a keyword the front desk's rules list: its intents keep them
        for text in ("Good afternoon!", "How's your day been?", "The order is B1234"):
            own = await say(conn, text)
            assert (own.agent, own.metadata["supervisor"]) == ("frontdesk", "no"), (text, own.text)
            assert not own.text.startswith(FILLERS), own.text  # no filler: nothing was consulted
        asked = await say(conn, "How much do I owe at the moment?")  # no must_consult word either
        assert (asked.agent, asked.metadata["supervisor"]) == ("frontdesk", "consulted")
        assert "verify" in asked.text  # the supervisor's answer, spoken by the front desk
        assert asked.metadata["routing_rate"] == "0.25"


async def test_a_greeting_is_not_consulted_for_a_must_consult_word_inside_another_word(supervised: Stack) -> None:
    """``must_consult`` names words: "bill" is not in "Billy", nor "account" in "accountant" (these greetings
    were sent to the supervisor, and the caller heard a filler and "To look into your account ...")."""
    for text in ("Hello, I'm Billy", "Good morning! I'm an accountant."):
        async with sdk_client(supervised).realtime.connect(model="switchboard") as conn:
            await open_session(conn)
            greeted = await say(conn, text)
        assert (greeted.agent, greeted.metadata["supervisor"]) == ("frontdesk", "no"), (text, greeted.text)
        assert not greeted.text.startswith(FILLERS), greeted.text


async def test_patterns_compose_handoff_then_specialist_consults(supervised: Stack) -> None:
    async with sdk_client(supervised).realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        moved = await say(conn, "I want to return something")
        assert [(h["from"], h["to"], h["outcome"]) for h in moved.handoffs] == [("frontdesk", "returns", "accepted")]
        assert moved.agent == "returns" and moved.metadata["supervisor"] == "no"
        policy = await say(conn, "what is the warranty policy?")
        assert policy.agent == "returns" and policy.metadata["supervisor"] == "consulted"
        assert "12 months" in policy.text


async def test_global_routing_rate_is_exposed(supervised: Stack) -> None:
    import httpx

    async def stats() -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            url, key = f"{supervised.edge_url}/v1/switchboard/stats", supervised.api_key
            got: dict[str, Any] = (await http.get(url, headers={"Authorization": f"Bearer {key}"})).json()
            return got

    before = await stats()
    async with sdk_client(supervised).realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        assert (await say(conn, "hello")).metadata["supervisor"] == "no"
        assert (await say(conn, "what's my balance?")).metadata["supervisor"] == "consulted"
    after = await stats()
    assert (after["responses"] - before["responses"], after["consulted_responses"] - before["consulted_responses"]) == (
        2,
        1,
    )
    assert after["routing_rate"] == round(after["consulted_responses"] / after["responses"], 4)
    answered = after["consult_outcomes"].get("answered", 0) - before["consult_outcomes"].get("answered", 0)
    assert answered == 1


async def test_each_key_sees_its_own_tenants_sessions_and_consults_only(tmp_path: Path) -> None:
    """``/info`` and ``/stats`` give the caller's tenant's figures: with two tenants on one edge, each sees its
    own sessions and consults (both saw the edge's, the other tenant's traffic included)."""

    async def figures(key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        info = await asyncio.to_thread(probe, f"{stack.edge_url}/v1/switchboard/info", key)
        stats = await asyncio.to_thread(probe, f"{stack.edge_url}/v1/switchboard/stats", key)
        assert (info[0], stats[0]) == (200, 200)
        return info[1], stats[1]

    with make_stack(tmp_path, scenario="supervisor") as stack:
        async with (
            sdk_client(stack).realtime.connect(model="switchboard") as asks,
            sdk_client(stack).realtime.connect(model="switchboard") as greets,
            sdk_client(stack, key=SECOND_TENANT_KEY).realtime.connect(model="switchboard") as other,
        ):
            for conn in (asks, greets, other):
                await open_session(conn)
            assert (await say(asks, "what's my balance?")).metadata["supervisor"] == "consulted"
            assert (await say(greets, "hello")).metadata["supervisor"] == "no"
            assert (await say(other, "hello")).metadata["supervisor"] == "no"
            (info_a, stats_a), (info_b, stats_b) = await figures(stack.api_key), await figures(SECOND_TENANT_KEY)
    assert (info_a["active_sessions"], info_a["connections"]) == (2, 2)
    assert (info_b["active_sessions"], info_b["connections"]) == (1, 1)
    assert (stats_a["responses"], stats_a["consulted_responses"], stats_a["routing_rate"]) == (2, 1, 0.5)
    assert stats_a["consult_outcomes"] == {"answered": 1} and stats_a["consult_ms_avg"] > 0
    assert (stats_b["responses"], stats_b["consulted_responses"], stats_b["routing_rate"]) == (1, 0, 0.0)
    assert stats_b["consult_outcomes"] == {} and (stats_b["consult_ms_avg"], stats_b["consult_tokens"]) == (0.0, 0)


async def test_missing_supervisor_falls_back_within_two_seconds(tmp_path: Path) -> None:
    with make_stack(tmp_path, scenario="supervisor", agents=["frontdesk", "generalist"]) as stack:
        async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
            await open_session(conn)
            started = time.monotonic()
            reply = await say(conn, "what's my balance?")
            elapsed = time.monotonic() - started
    assert elapsed < 2.0, elapsed
    assert FALLBACK in reply.text
    assert [(h["from"], h["to"], h["outcome"]) for h in reply.handoffs] == [("frontdesk", "generalist", "unavailable")]
    assert "no responders" in reply.handoffs[0]["detail"]
    assert reply.agent == "generalist" and reply.status == "completed"


async def _fresh_turn(stack: Stack, text: str) -> Reply:
    return (await _fresh_session_turn(stack, text))[1]


async def _fresh_session_turn(stack: Stack, text: str) -> tuple[str, Reply]:
    async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
        session_id = str((await open_session(conn))["session_id"])
        return session_id, await say(conn, text)


async def _consult_outcome(stack: Stack, session_id: str) -> str | None:
    """The consult outcome the edge recorded for the session's first turn (waits for its record)."""
    async with Bus(stack.nats_urls, name="test-audit") as bus:
        audit = AuditLog(bus.js)
        deadline = time.monotonic() + 10
        while True:
            records = await audit.read_timeline(session_id, timeout_s=2)
            turns = [r for r in records if isinstance(r, TurnRecord)]
            if turns or time.monotonic() > deadline:
                assert turns, f"no turn record for {session_id}"
                return turns[0].consult_outcome
            await asyncio.sleep(0.1)  # ok-sleep: poll interval while the edge writes its record


async def test_breaker_opens_then_recovers(tmp_path: Path) -> None:
    env = {"SWITCHBOARD_BREAKER_THRESHOLD": "2", "SWITCHBOARD_BREAKER_COOLDOWN_S": "1.0"}
    with make_stack(tmp_path, scenario="supervisor", agents=["frontdesk", "generalist"], env=env) as stack:
        for _ in range(2):  # two consults fail after their retries: the breaker opens
            failed_session, failed = await _fresh_session_turn(stack, "my balance please")
            assert "no responders" in failed.handoffs[0]["detail"]
        started = time.monotonic()
        refused_session, second = await _fresh_session_turn(stack, "my balance please")
        assert second.handoffs[0]["detail"].startswith("breaker_open")  # refused at once, no waiting
        assert time.monotonic() - started < 1.0
        # the edge's turn record carries the consult's typed outcome
        assert await _consult_outcome(stack, failed_session) == "unavailable"
        assert await _consult_outcome(stack, refused_session) == "breaker_open"
        stack.start_agent("supervisor", wait=True)
        outcomes = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # each try is a real turn; the breaker half-opens after 1 s
            reply = await _fresh_turn(stack, "my balance please")
            outcomes.append(reply.metadata["supervisor"])
            if reply.metadata["supervisor"] == "consulted":
                break
    assert outcomes[-1] == "consulted", outcomes
    assert reply.agent == "frontdesk" and "verify" in reply.text


def _role(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"]
    if "supervisor behind" in system:
        return "supervisor"
    if "voice front desk" in system:
        return "frontdesk"
    return "other"


class SlowSupervisorModel:
    """Frontdesk consults; the supervisor's first answer is slow (so a kill can land inside it)."""

    def __init__(self, first_delay_s: float, later_delay_s: float = 0.0) -> None:
        self.first_delay_s = first_delay_s
        self.later_delay_s = later_delay_s
        self.supervisor_calls = 0
        self.supervisor_seen = asyncio.Event()

    def __call__(self, body: dict[str, Any]) -> ScriptedReply:
        role = _role(body)
        last_user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        if role == "frontdesk":
            if body["messages"][-1]["role"] == "tool":
                return ScriptedReply(text="(frontdesk should not speak after a consult)")
            return ScriptedReply(tool_calls=[("consult_supervisor", {"note": f"caller asks: {last_user}"})])
        if role == "supervisor":
            self.supervisor_calls += 1
            self.supervisor_seen.set()
            delay = self.first_delay_s if self.supervisor_calls == 1 else self.later_delay_s
            return ScriptedReply(text=f"The supervisor's careful answer to: {last_user}", delay_s=delay)
        return ScriptedReply(text="generalist here")


async def test_supervisor_killed_mid_consult_another_replica_answers(tmp_path: Path) -> None:
    model = SlowSupervisorModel(first_delay_s=30)
    async with ScriptedOpenAIServer(responder=model) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        with make_stack(
            tmp_path, scenario="supervisor", agents=["frontdesk", "supervisor", "generalist"], env=env
        ) as stack:
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                await open_session(conn)
                await conn.conversation.item.create(
                    item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "why X?"}]}
                )
                await conn.response.create()
                await asyncio.wait_for(model.supervisor_seen.wait(), 20)  # the consult is inside replica 1
                stack.start_agent("supervisor", wait=True)
                stack.kill("supervisor:supervisor", signal.SIGKILL)
                reply = await collect(conn)
    assert reply.status == "completed" and reply.agent == "frontdesk"
    assert reply.metadata["supervisor"] == "consulted"
    assert "The supervisor's careful answer to: why X?" in reply.text
    assert model.supervisor_calls == 2


async def test_a_cancelled_consult_stops_the_supervisor(tmp_path: Path) -> None:
    """The caller barges in on the filler: the supervisor is told and stops its model call."""
    model = SlowSupervisorModel(first_delay_s=25)
    async with ScriptedOpenAIServer(responder=model) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        with make_stack(tmp_path, scenario="supervisor", env=env) as stack:
            async with RawClient(stack) as client:
                session_id = (await client.open())["session_id"]
                await client.send({"type": "conversation.item.create", "item": user_message("why X?")})
                await client.send({"type": "response.create"})
                await asyncio.wait_for(model.supervisor_seen.wait(), 20)  # the consult is inside the supervisor
                await client.send({"type": "response.cancel"})
                assert (await client.next("response.done"))["response"]["status"] == "cancelled"
                assert await log_lines(stack, "supervisor:supervisor", "request stopped by its caller", session_id)


async def test_consult_deadline_exceeded_falls_back(tmp_path: Path) -> None:
    model = SlowSupervisorModel(first_delay_s=60, later_delay_s=60)
    async with ScriptedOpenAIServer(responder=model) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url, "SWITCHBOARD_TURN_TIMEOUT_S": "3"}
        with make_stack(tmp_path, scenario="supervisor", env=env) as stack:
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                await open_session(conn)
                started = time.monotonic()
                reply = await say(conn, "a hard question")
                elapsed = time.monotonic() - started
    assert reply.status == "completed"
    assert FALLBACK in reply.text and reply.agent == "generalist"
    assert "deadline" in reply.handoffs[0]["detail"]
    assert elapsed < 6, elapsed  # the consult gave up before the 3 s turn deadline left no room to answer


async def test_supervisor_sees_exactly_what_the_caller_said(tmp_path: Path) -> None:
    model = SlowSupervisorModel(first_delay_s=0)
    said = ["Hi, I'm calling about my account.", "My email is jane@example.com.", "Why was I charged twice?"]
    async with ScriptedOpenAIServer(responder=model) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        with make_stack(tmp_path, scenario="supervisor", env=env) as stack:
            async with sdk_client(stack).realtime.connect(model="switchboard") as conn:
                await open_session(conn)
                for text in said:
                    reply = await say(conn, text)
                    assert reply.metadata["supervisor"] == "consulted"
    supervisor_requests = [r for r in server.requests if _role(r) == "supervisor"]
    last = supervisor_requests[-1]["messages"]
    assert [m["content"] for m in last if m["role"] == "user"] == said
    # earlier consults are in the history too, answered, in order
    spoken = [m["content"] for m in last if m["role"] == "assistant" and m.get("content")]
    assert len(spoken) == 2 and all("careful answer" in s for s in spoken)
    # "charged" is a must-consult word: the platform consulted without a front-model call, note = the words
    assert "Its note on what the caller just asked: Why was I charged twice?" in last[0]["content"]


async def test_what_a_supervisor_said_before_going_silent_stays_in_the_conversation(tmp_path: Path) -> None:
    """The supervisor streams part of its answer, then goes silent past the consult's deadline: the caller
    heard the filler, those words and the fallback line, and the session stores exactly that, under the
    ids the client was shown, after the consult's call and its output (which the model needs paired)."""
    partial = "Thanks for waiting. I looked at your account, and the charge you are asking about was made "

    def respond(body: dict[str, Any]) -> ScriptedReply:
        if _role(body) == "supervisor":
            return ScriptedReply(text=partial + "on the third.", stall_after=len(partial), stall_s=60)
        return SlowSupervisorModel(0)(body)

    async with ScriptedOpenAIServer(responder=respond) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url, "SWITCHBOARD_TURN_TIMEOUT_S": "3"}
        with make_stack(tmp_path, scenario="supervisor", env=env) as stack:
            async with RawClient(stack, timeout_s=15) as client:
                session_id = (await client.open())["session_id"]
                events = await client.turn("why was I charged twice?")
            async with Bus(stack.nats_urls, name="check") as bus:
                transcript = await (await SessionStore.open(bus.js)).transcript(session_id)
    heard = text_of(events)
    assert FALLBACK in heard and partial[:20] in heard  # the supervisor's first words were released
    output = done_of(events)["output"]
    shown = [(o["id"], o["content"][0]["text"]) for o in output if o["type"] == "message"]
    turn = transcript[next(n for n, i in enumerate(transcript) if isinstance(i, MessageItem) and i.role == "user") :]
    said = [(i.id, i.text) for i in turn if isinstance(i, MessageItem) and i.role == "assistant"]
    assert said == shown and "".join(text for _, text in said) == heard
    kinds = [i.type for i in turn]
    assert kinds.index("function_call_output") == kinds.index("function_call") + 1


async def test_a_supervisor_killed_mid_answer_leaves_what_it_said_before_the_retrys_answer(tmp_path: Path) -> None:
    """The supervisor replica streams part of its answer and is killed; another replica answers in full. The
    caller heard the filler and those words (an incomplete item), then the answer: the session stores both."""
    partial = "Thanks for waiting. I looked at your account, and the charge you are asking about was made "
    answer = "The supervisor's careful answer: it was charged twice by mistake."
    supervisor_calls: list[int] = []

    def respond(body: dict[str, Any]) -> ScriptedReply:
        if _role(body) == "supervisor":
            supervisor_calls.append(1)
            if len(supervisor_calls) == 1:
                return ScriptedReply(text=partial + "on the third.", stall_after=len(partial), stall_s=60)
            return ScriptedReply(text=answer)
        return SlowSupervisorModel(0)(body)

    async with ScriptedOpenAIServer(responder=respond) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        with make_stack(
            tmp_path, scenario="supervisor", agents=["frontdesk", "supervisor", "generalist"], env=env
        ) as stack:
            async with RawClient(stack, timeout_s=30) as client:
                session_id = (await client.open())["session_id"]
                await client.send({"type": "conversation.item.create", "item": user_message("why twice?")})
                await client.send({"type": "response.create"})
                await client.next("response.output_text.delta")
                while partial[:20] not in text_of(client.events):  # the supervisor's first words reached the caller
                    await client.next("response.output_text.delta")
                stack.start_agent("supervisor", wait=True)
                stack.kill("supervisor:supervisor", signal.SIGKILL)
                await client.next("response.done")
            async with Bus(stack.nats_urls, name="check") as bus:
                transcript = await (await SessionStore.open(bus.js)).transcript(session_id)
    output = done_of(client.events)["output"]
    assert [o["status"] for o in output] == ["incomplete", "completed"] and answer in text_of(client.events)
    shown = [(o["id"], o["content"][0]["text"]) for o in output]
    said = [(i.id, i.text) for i in transcript if isinstance(i, MessageItem) and i.role == "assistant"]
    assert said == shown and "".join(text for _, text in said) == text_of(client.events)
    assert len(supervisor_calls) == 2


async def test_what_the_front_agent_says_before_it_consults_is_stored_as_heard(tmp_path: Path) -> None:
    """A real model often speaks and calls a tool in one response ("Sure, ..." + consult_supervisor): the caller
    hears those words as an item of their own, before the filler and the answer, and the session stores both
    items, under the ids the client was shown (before, the front agent's words were dropped from the session)."""
    preamble = "Sure, I can help with that."

    def respond(body: dict[str, Any]) -> ScriptedReply:
        if _role(body) == "frontdesk" and body["messages"][-1]["role"] != "tool":
            return ScriptedReply(text=preamble, tool_calls=[("consult_supervisor", {"note": "sky colour"})])
        return SlowSupervisorModel(0)(body)

    async with ScriptedOpenAIServer(responder=respond) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        with make_stack(tmp_path, scenario="supervisor", env=env) as stack:
            async with RawClient(stack, timeout_s=15) as client:
                session_id = (await client.open())["session_id"]
                events = await client.turn("why is the sky blue?")
            async with Bus(stack.nats_urls, name="check") as bus:
                transcript = await (await SessionStore.open(bus.js)).transcript(session_id)
    heard = text_of(events)
    assert heard.startswith(preamble) and "The supervisor's careful answer to: why is the sky blue?" in heard
    shown = [(o["id"], o["content"][0]["text"]) for o in done_of(events)["output"] if o["type"] == "message"]
    said = [(i.id, i.text) for i in transcript if isinstance(i, MessageItem) and i.role == "assistant"]
    assert said == shown and said[0][1] == preamble
    kinds = [i.type for i in transcript]  # the words, then the call they came with, its output, the answer
    assert kinds == ["message", "message", "function_call", "function_call_output", "message"]
