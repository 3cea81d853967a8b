"""The model call's retries, breaker and deadline come from Settings (a real HTTP client against the
shipped scripted OpenAI-compatible server, failing every call with a 503)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchboard.agents import AgentConfig, ToolRegistry
from switchboard.models import ModelError
from switchboard.models.openai_chat import OpenAIChatProvider
from switchboard.runtime.loop import AgentLoop, ModelCallPolicy
from switchboard.schemas import MessageItem, TurnRequest
from switchboard.settings import Settings
from switchboard.testing import ScriptedOpenAIServer, ScriptedReply

AGENT = AgentConfig(name="talker", instructions="test", model={"provider": "openai", "name": "scripted-model"})
REQ = TurnRequest(session_id="s", turn_id="t", agent="talker", history=[MessageItem(id="i", role="user", text="hi")])


@pytest.fixture
async def failing() -> AsyncIterator[tuple[ScriptedOpenAIServer, list[int]]]:
    calls: list[int] = []

    def responder(_body: dict[str, Any]) -> ScriptedReply:
        calls.append(1)
        return ScriptedReply(status=503)

    server = ScriptedOpenAIServer(responder=responder)
    await server.start()
    try:
        yield server, calls
    finally:
        await server.stop()


def _loop(server: ScriptedOpenAIServer, settings: Settings) -> AgentLoop:
    provider = OpenAIChatProvider(
        "scripted-model", api_key="sk-test", base_url=server.base_url, timeout_s=settings.model_timeout_s
    )
    return AgentLoop(AGENT, provider, ToolRegistry(), policy=ModelCallPolicy.from_settings(settings))


async def _quiet(_: str) -> None:
    return None


async def test_model_retries_and_breaker_follow_settings(
    failing: tuple[ScriptedOpenAIServer, list[int]],
) -> None:
    server, calls = failing
    settings = Settings(model_retry_attempts=2, model_backoff_s=0.001, breaker_threshold=3, breaker_cooldown_s=60)
    loop = _loop(server, settings)
    with pytest.raises(ModelError):
        await loop.run(REQ, _quiet)
    assert len(calls) == 2  # SWITCHBOARD_MODEL_RETRY_ATTEMPTS tries, not the built-in 3
    for _ in range(3):
        with pytest.raises(ModelError):
            await loop.run(REQ, _quiet)
    assert len(calls) == 3  # SWITCHBOARD_BREAKER_THRESHOLD failures opened the breaker: no more calls go out
    assert await loop.breakers.state(loop.model_key) == "opened"


async def test_model_retries_stop_at_the_turns_deadline(failing: tuple[ScriptedOpenAIServer, list[int]]) -> None:
    server, calls = failing
    settings = Settings(model_retry_attempts=5, model_backoff_s=1.0)
    loop = _loop(server, settings)
    started = time.monotonic()
    with pytest.raises(ModelError):
        await loop.run(REQ, _quiet, deadline=time.time() + 0.5)
    assert len(calls) < 5 and time.monotonic() - started < 1.5, (len(calls), time.monotonic() - started)


@pytest.fixture
async def rate_limited() -> AsyncIterator[tuple[ScriptedOpenAIServer, list[float]]]:
    """Answers 429 with ``Retry-After: 1`` to every call made less than a second after the first."""
    calls: list[float] = []

    def responder(_body: dict[str, Any]) -> ScriptedReply:
        calls.append(time.monotonic())
        if calls[-1] - calls[0] < 1.0:
            return ScriptedReply(status=429, retry_after="1")
        return ScriptedReply(text="Back in a second.")

    async with ScriptedOpenAIServer(responder=responder) as server:
        yield server, calls


async def test_model_retry_waits_out_retry_after(rate_limited: tuple[ScriptedOpenAIServer, list[float]]) -> None:
    server, calls = rate_limited
    loop = _loop(server, Settings(model_retry_attempts=2, model_backoff_s=0.2))  # backoffs up to 2 s
    result = await loop.run(REQ, _quiet, deadline=time.time() + 10)
    assert result.text == "Back in a second."
    assert len(calls) == 2 and calls[1] - calls[0] >= 1.0  # the retry waited as long as the server asked


async def test_model_retry_after_past_the_deadline_fails_at_once(
    rate_limited: tuple[ScriptedOpenAIServer, list[float]],
) -> None:
    server, calls = rate_limited
    loop = _loop(server, Settings(model_retry_attempts=3, model_backoff_s=0.2))
    with pytest.raises(ModelError) as info:
        await loop.run(REQ, _quiet, deadline=time.time() + 0.5)
    assert info.value.status == 429
    assert len(calls) == 1  # no retry the server said would be refused: it would end after the turn's deadline


async def test_model_retry_after_beyond_the_longest_backoff_fails_at_once(
    rate_limited: tuple[ScriptedOpenAIServer, list[float]],
) -> None:
    server, calls = rate_limited
    loop = _loop(server, Settings(model_retry_attempts=3, model_backoff_s=0.05))  # backoffs up to 0.5 s
    started = time.monotonic()
    with pytest.raises(ModelError) as info:
        await loop.run(REQ, _quiet, deadline=time.time() + 10)
    assert info.value.status == 429
    assert len(calls) == 1 and time.monotonic() - started < 0.9  # the fallback answers instead of a 1 s silence
