"""Build a ``Stack`` (nats-server + edge + agent processes) for a test scenario."""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from switchboard.local.stack import Stack
from switchboard.testing import ScriptedOpenAIServer, ScriptedReply

ROOT = Path(__file__).resolve().parents[2]
TEST_SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SECOND_TENANT_KEY = f"tenant-b-{secrets.token_hex(8)}"
"""A second valid API key every test stack accepts, for isolation tests between two real keys."""


def make_stack(
    tmp: Path, *, scenario: str = "retail", agents: list[str] | None = None, env: dict[str, str] | None = None
) -> Stack:
    scenarios_dir = ROOT / "scenarios" if (ROOT / "scenarios" / scenario).is_dir() else TEST_SCENARIOS
    key = f"test-{secrets.token_hex(8)}"
    return Stack(
        tmp, scenario=scenario, agents=agents, api_key=key,
        env={"SWITCHBOARD_SCENARIOS_DIR": str(scenarios_dir), "OPENAI_API_KEY": "",
             "SWITCHBOARD_API_KEYS": f"{key},{SECOND_TENANT_KEY}"} | (env or {}),
    )  # fmt: skip


def probe(url: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a GET, with ``key`` as its bearer API key when given (``(0, {})`` when
    nothing answers)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


class SlowModel:
    """A scripted model that answers ``text`` after ``delay_s``; ``asked`` is set once a turn reaches it."""

    def __init__(self, text: str, delay_s: float) -> None:
        self.text = text
        self.delay_s = delay_s
        self.asked = asyncio.Event()

    def __call__(self, body: dict[str, Any]) -> ScriptedReply:
        self.asked.set()
        return ScriptedReply(text=self.text, delay_s=self.delay_s)


@asynccontextmanager
async def two_edges_on_a_model(tmp: Path, model: SlowModel) -> AsyncIterator[tuple[Stack, int]]:
    """triage + generalist on the scripted ``model``, and two edges: the stack's and one more (its port)."""
    async with ScriptedOpenAIServer(responder=model) as server:
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": server.base_url}
        with make_stack(tmp, agents=["triage", "generalist"], env=env) as stack:
            _, other_port = stack.start_edge()
            yield stack, other_port


def calls_client_tool(name: str, arguments: dict[str, Any]) -> Any:
    """A scripted model that calls the client's tool ``name`` once it reaches the model, then reports the
    tool's output; without the tool it says so."""

    def respond(body: dict[str, Any]) -> ScriptedReply:
        names = [t.get("function", {}).get("name") for t in body.get("tools") or []]
        outputs = [m for m in body.get("messages", []) if m.get("role") == "tool"]
        if outputs:
            return ScriptedReply(text=f"The tool said: {outputs[-1].get('content')}")
        if name in names:
            return ScriptedReply(tool_calls=[(name, arguments)])
        return ScriptedReply(text=f"{name} did not reach me")

    return respond
