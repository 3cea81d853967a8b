"""The conversation every container test holds: triage -> auth -> returns, with tool calls."""

from __future__ import annotations

from openai import AsyncOpenAI
from system.client import open_session, say, sdk_at

from switchboard.agents import load_scenario

from .podman import ROOT

RETAIL_AGENTS = load_scenario("retail", ROOT / "scenarios").config.agent_names


def roles(scenario: str) -> dict[str, str]:
    """Each agent of a shipped scenario and its role (``agent`` or ``supervisor``)."""
    config = load_scenario(scenario, ROOT / "scenarios").config
    return {name: agent.role for name in config.agent_names if (agent := config.agent(name))}


def client(port: int, key: str) -> AsyncOpenAI:
    """The official SDK's realtime client, pointed at an edge on this host, with platform events on."""
    return sdk_at(f"ws://127.0.0.1:{port}/v1", key)


async def greet(sdk: AsyncOpenAI) -> str | None:
    """Say hello; returns the agent that answered."""
    async with sdk.realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        greeting = await say(conn, "hello")
        assert greeting.status == "completed", greeting.text
        return greeting.agent


async def balance_through_the_supervisor(sdk: AsyncOpenAI) -> None:
    """The chat-supervisor pattern: the front desk consults the supervisor, which runs the tools."""
    async with sdk.realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        asked = await say(conn, "what's my balance?")
        assert asked.agent == "frontdesk" and asked.metadata["supervisor"] == "consulted", asked.text
        answered = await say(conn, "jane@example.com 1234")
        assert "Your balance is $42.5" in answered.text and answered.metadata["supervisor"] == "consulted"


async def refund(sdk: AsyncOpenAI, order: str, *, confirm: bool) -> str:
    """Ask triage for a refund of one of Jane's orders, verify with auth, reach returns; with
    ``confirm`` open the return (``create_return`` writes tool data). Returns what returns said last."""
    async with sdk.realtime.connect(model="switchboard") as conn:
        await open_session(conn)
        asked = await say(conn, f"I want a refund for order {order}")
        assert asked.agent == "auth" and [(h["from"], h["to"]) for h in asked.handoffs] == [("triage", "auth")]
        verified = await say(conn, "It's jane@example.com and my PIN is 1234")  # a tool call in auth
        assert verified.agent == "returns", (verified.agent, verified.text, verified.handoffs)
        assert [(h["from"], h["to"], h["outcome"]) for h in verified.handoffs] == [("auth", "returns", "accepted")]
        if not confirm:
            return verified.text
        assert "can be returned" in verified.text, verified.text
        done = await say(conn, "yes please")
        assert done.agent == "returns" and "return R-" in done.text, (done.agent, done.text)
        return done.text
