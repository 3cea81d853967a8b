"""A response's ``tool_choice`` and the agent loop, against the scripted OpenAI-compatible server over real HTTP."""

from __future__ import annotations

from typing import Any

from switchboard.agents import AgentConfig, ToolRegistry
from switchboard.models.openai_chat import OpenAIChatProvider
from switchboard.runtime.loop import AgentLoop
from switchboard.schemas import FunctionCallOutputItem, MessageItem, TurnRequest
from switchboard.testing import ScriptedOpenAIServer, ScriptedReply


def required_like_openai(body: dict[str, Any]) -> ScriptedReply:
    """As a real model does: with ``tool_choice: required`` it must call a tool; otherwise it answers."""
    if body.get("tool_choice") == "required":
        return ScriptedReply(tool_calls=[("check_order", {})])
    return ScriptedReply(text="Your order ships tomorrow.")


async def test_required_tool_choice_is_met_once_then_the_agent_answers() -> None:
    registry = ToolRegistry()

    @registry.tool()
    def check_order() -> dict[str, Any]:
        """The caller's order."""
        return {"ships": "tomorrow"}

    agent = AgentConfig(
        name="orders", instructions="Help with orders.", tools=["check_order"],
        model={"provider": "openai", "name": "scripted-model"}, max_iterations=4,
    )  # fmt: skip
    req = TurnRequest(
        session_id="s", turn_id="t", agent="orders", tool_choice="required",
        history=[MessageItem(id="i", role="user", text="where is my order?")],
    )  # fmt: skip

    async def quiet(_: str) -> None:
        return None

    async with ScriptedOpenAIServer(responder=required_like_openai) as server:
        provider = OpenAIChatProvider("scripted-model", api_key="sk-test", base_url=server.base_url)
        try:
            result = await AgentLoop(agent, provider, registry).run(req, quiet)
        finally:
            await provider.aclose()
    outputs = [i.output for i in result.items if isinstance(i, FunctionCallOutputItem)]
    assert (result.outcome, result.text, outputs) == ("answer", "Your order ships tomorrow.", ['{"ships": "tomorrow"}'])
    assert [body.get("tool_choice") for body in server.requests] == ["required", None]  # then the default, auto
