"""AgentLoop + OfflineProvider with the retail scenario's agents and tools (a fresh store per test,
in a real nats-server)."""

from __future__ import annotations

import json
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from switchboard.agents import (
    AgentConfig,
    Scenario,
    ToolContext,
    ToolError,
    ToolRegistry,
    build_tool,
    load_scenario,
)
from switchboard.bus import Bus
from switchboard.local import NatsServer
from switchboard.models.base import ModelRequest, ModelResponse, ToolCall
from switchboard.models.offline import OfflineProvider
from switchboard.runtime.loop import AgentLoop, IterationCapError, must_consult_pattern, policy_consult
from switchboard.schemas import (
    CallerIdentity,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    TurnRequest,
    TurnResult,
)
from switchboard.state import ToolStore

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
JANE = CallerIdentity(authenticated=True, customer_id="C001")


@dataclass(frozen=True)
class Seeded(Scenario):
    store: ToolStore | None = None


@pytest.fixture(scope="module")
def nats_url() -> Iterator[str]:
    with NatsServer(Path(tempfile.mkdtemp(prefix="loop-nats-"))) as server:
        yield server.url


@pytest.fixture
async def retail(nats_url: str) -> AsyncIterator[Scenario]:
    """The retail scenario with its tools on a fresh, seeded store (its own bucket)."""
    scenario = load_scenario("retail", SCENARIOS)
    async with Bus([nats_url], name="loop-test") as bus:
        store = await ToolStore.open(bus.js, f"test_{uuid.uuid4().hex[:12]}")
        for seeder in scenario.tools.seeders:
            await seeder(store)
        yield Seeded(scenario.config, scenario.tools, scenario.path, store)


@dataclass
class Turn:
    result: TurnResult
    deltas: list[str] = field(default_factory=list)

    def outputs(self) -> list[Any]:
        return [json.loads(i.output) for i in self.result.items if isinstance(i, FunctionCallOutputItem)]

    def calls(self) -> list[str]:
        return [i.name for i in self.result.items if isinstance(i, FunctionCallItem)]


async def run(
    scenario: Scenario,
    agent: str,
    *user_texts: str,
    context: dict[str, Any] | None = None,
    caller: CallerIdentity | None = None,
) -> Turn:
    config = scenario.config.agent(agent)
    assert config is not None
    store = scenario.store if isinstance(scenario, Seeded) else None
    provider = OfflineProvider(config.offline, scenario.config.offline_slots)
    loop = AgentLoop(config, provider, scenario.tools, store=store)
    history = [MessageItem(id=f"item_u{n}", role="user", text=t) for n, t in enumerate(user_texts)]
    request = TurnRequest(
        session_id="sess_test", turn_id="turn_1", agent=agent, history=history,
        context=context or {}, caller=caller or CallerIdentity(),
    )  # fmt: skip
    deltas: list[str] = []

    async def on_text(text: str) -> None:
        deltas.append(text)

    return Turn(await loop.run(request, on_text), deltas)


# --- triage -----------------------------------------------------------------------------------------


async def test_triage_hands_off_refund_with_order_id(retail: Scenario) -> None:
    turn = await run(retail, "triage", "I want a refund for order A1001")
    r = turn.result
    assert r.outcome == "handoff"
    assert r.handoff is not None
    assert r.handoff.source == "triage"
    assert r.handoff.target == "returns"
    assert r.handoff.context == {"order_id": "A1001"}
    assert r.handoff.reason == "Caller wants to return an order"
    assert turn.calls() == ["transfer_to_returns"]
    call = r.items[-1]
    assert isinstance(call, FunctionCallItem)
    assert r.handoff.call_id == call.call_id  # the conductor answers this call with its decision
    assert turn.deltas == []
    assert r.caller is None


async def test_triage_refund_without_order_id_drops_optional_arg(retail: Scenario) -> None:
    r = (await run(retail, "triage", "I want my money back")).result
    assert r.outcome == "handoff"
    assert r.handoff is not None and r.handoff.target == "returns"
    assert r.handoff.context == {}


async def test_triage_greets_and_deltas_concatenate(retail: Scenario) -> None:
    turn = await run(retail, "triage", "hello")
    r = turn.result
    assert r.outcome == "answer"
    assert r.text == retail.config.agent("triage").offline.default  # type: ignore[union-attr]
    assert r.text.startswith("Hi, you've reached")
    assert len(turn.deltas) > 1
    assert "".join(turn.deltas) == r.text
    assert isinstance(r.items[-1], MessageItem)
    assert r.items[-1].role == "assistant" and r.items[-1].agent == "triage" and r.items[-1].text == r.text
    assert r.usage.model_calls == 1
    assert r.usage.output_tokens == len(turn.deltas)


def test_loop_exposes_tools_and_transfer_specs(retail: Scenario) -> None:
    config = retail.config.agent("returns")
    assert config is not None
    loop = AgentLoop(config, OfflineProvider(config.offline, {}), retail.tools)
    specs = {s.name: s for s in loop.specs}
    assert set(specs) == {"lookup_order", "create_return", "transfer_to_billing", "transfer_to_triage"}
    triage = retail.config.agent("triage")
    assert triage is not None
    transfer = {s.name: s for s in AgentLoop(triage, OfflineProvider(triage.offline, {}), retail.tools).specs}
    params = transfer["transfer_to_returns"].parameters
    assert params["required"] == ["reason"]
    assert set(params["properties"]) == {"reason", "order_id"}
    assert params["additionalProperties"] is False


# --- auth -------------------------------------------------------------------------------------------


async def test_auth_verifies_and_hands_off_to_pending_agent(retail: Scenario) -> None:
    turn = await run(retail, "auth", "jane@example.com 1234", context={"pending_agent": "returns"})
    r = turn.result
    assert r.caller is not None
    assert r.caller.authenticated is True
    assert r.caller.customer_id == "C001"
    assert r.caller.verified_by == "auth"
    assert r.outcome == "handoff"
    assert r.handoff is not None and r.handoff.target == "returns"
    assert turn.calls() == ["verify_customer", "transfer_to_returns"]
    assert turn.outputs() == [{"verified": True, "name": "Jane Doe"}]


async def test_slots_said_on_earlier_lines_count_and_each_line_is_searched_once(retail: Scenario) -> None:
    """Every turn looks at the whole conversation's caller lines: each is searched for slots once."""
    config = retail.config.agent("auth")
    assert config is not None
    provider = OfflineProvider(config.offline, retail.config.offline_slots)
    lines = ["I need to get into my account", "my email is jane@example.com", "and my PIN is 1234"]
    said: list[str] = []

    async def on_text(text: str) -> None:
        said.append(text)

    calls = []
    for n in range(1, len(lines) + 1):
        items = [MessageItem(id=f"item_u{i}", role="user", text=t) for i, t in enumerate(lines[:n])]
        response = await provider.complete(ModelRequest(instructions="", items=items), on_text)
        calls.append([(c.name, json.loads(c.arguments)) for c in response.tool_calls])
    assert calls[-1] == [("verify_customer", {"email": "jane@example.com", "pin": "1234"})]  # email from line 2
    assert calls[:2] == [[], []]  # not before both were said
    info = provider.slots_in.cache_info()  # type: ignore[attr-defined]
    assert (info.misses, info.hits) == (3, 3)  # lines searched 1 + 1 + 1 times; 0 + 1 + 2 found again


async def test_auth_passes_order_id_from_context(retail: Scenario) -> None:
    r = (
        await run(retail, "auth", "jane@example.com 1234", context={"pending_agent": "returns", "order_id": "A1001"})
    ).result
    assert r.handoff is not None
    assert r.handoff.context == {"order_id": "A1001"}


async def test_auth_without_pending_agent_greets_verified_caller(retail: Scenario) -> None:
    r = (await run(retail, "auth", "it's jane@example.com, pin 1234")).result
    assert r.outcome == "answer"
    assert r.text == "Thanks Jane Doe, you're verified. What can I help you with?"
    assert r.caller is not None and r.caller.customer_id == "C001"


async def test_auth_wrong_pin_is_not_verified(retail: Scenario) -> None:
    turn = await run(retail, "auth", "jane@example.com 9999", context={"pending_agent": "returns"})
    r = turn.result
    assert r.outcome == "answer"
    assert r.caller is None
    assert r.text == "Sorry, that email and PIN don't match our records. Please try again."
    assert turn.outputs() == [{"verified": False}]
    assert r.handoff is None


async def test_auth_asks_for_credentials_first(retail: Scenario) -> None:
    r = (await run(retail, "auth", "hi", context={"pending_agent": "returns"})).result
    assert r.outcome == "answer"
    assert "email" in r.text and "PIN" in r.text
    assert r.items and not any(isinstance(i, FunctionCallItem) for i in r.items)


# --- returns ----------------------------------------------------------------------------------------


async def test_returns_looks_up_order_for_verified_caller(retail: Scenario) -> None:
    turn = await run(retail, "returns", "order A1001", caller=JANE)
    r = turn.result
    assert r.outcome == "answer"
    assert "89.99" in r.text
    assert "wireless headphones" in r.text
    assert turn.calls() == ["lookup_order"]
    assert turn.outputs()[0]["eligible"] is True


async def test_returns_ineligible_order_explains(retail: Scenario) -> None:
    r = (await run(retail, "returns", "order A1002", caller=JANE)).result
    assert "cannot be returned" in r.text
    assert "30 days" in r.text


async def test_returns_other_customers_order_is_a_tool_error(retail: Scenario) -> None:
    turn = await run(retail, "returns", "order A2001", caller=JANE)
    assert turn.outputs() == [{"error": "no order A2001 on this customer's account"}]


async def test_returns_confirm_creates_return_idempotently(retail: Scenario) -> None:
    first = await run(retail, "returns", "order A1001", "yes", caller=JANE)
    assert first.calls() == ["create_return"]
    out = first.outputs()[0]
    assert out["return_id"].startswith("R-")
    assert out["refund"] == 89.99
    assert out["return_id"] in first.result.text
    assert "$89.99" in first.result.text

    second = await run(retail, "returns", "order A1001", "yes", caller=JANE)
    assert second.outputs()[0]["return_id"] == out["return_id"]

    lookup = await run(retail, "returns", "order A1001", caller=JANE)
    assert lookup.outputs()[0]["eligible"] is False
    assert "already returned" in lookup.result.text


async def test_requires_auth_tool_refused_for_unverified_caller(retail: Scenario) -> None:
    turn = await run(retail, "returns", "order A1001", "yes")
    assert turn.calls() == ["create_return"]
    outputs = turn.outputs()
    assert len(outputs) == 1
    assert "error" in outputs[0]
    assert "requires a verified caller" in outputs[0]["error"]
    assert turn.result.caller is None
    # the tool did not run: the order is still returnable for its verified owner
    lookup = await run(retail, "returns", "order A1001", caller=JANE)
    assert lookup.outputs()[0]["eligible"] is True


async def test_billing_balance_for_verified_caller(retail: Scenario) -> None:
    r = (await run(retail, "billing", "what's my balance", caller=JANE)).result
    assert r.text == "Your balance is $42.5 and your latest invoice is INV-9001."


# --- loop mechanics with a synthetic agent ---------------------------------------------------------


def _agent(rules: list[dict[str, Any]], tools: list[str], **kw: Any) -> AgentConfig:
    return AgentConfig.model_validate(
        {"name": "looper", "instructions": "test", "tools": tools, "offline": {"rules": rules}, **kw}
    )


async def _run_agent(agent: AgentConfig, registry: ToolRegistry, text: str = "go", **kw: Any) -> TurnResult:
    loop = AgentLoop(agent, OfflineProvider(agent.offline, {}), registry)
    req = TurnRequest(
        session_id="s",
        turn_id="t",
        agent=agent.name,
        history=[MessageItem(id="i", role="user", text=text)],
        **kw,
    )

    async def sink(_: str) -> None:
        return None

    return await loop.run(req, sink)


async def test_iteration_cap_raises() -> None:
    registry = ToolRegistry()
    calls: list[int] = []

    @registry.tool()
    def ping() -> dict[str, Any]:
        """Always more to do."""
        calls.append(1)
        return {"ok": True}

    agent = _agent([{"call": "ping"}, {"after_tool": "ping", "call": "ping"}], ["ping"], max_iterations=3)
    with pytest.raises(IterationCapError, match="3 model calls"):
        await _run_agent(agent, registry)
    assert len(calls) == 3


async def test_answer_just_within_iteration_cap() -> None:
    registry = ToolRegistry()

    @registry.tool()
    def ping() -> dict[str, Any]:
        """One call."""
        return {"ok": True}

    agent = _agent([{"call": "ping"}, {"after_tool": "ping", "say": "done"}], ["ping"], max_iterations=2)
    r = await _run_agent(agent, registry)
    assert r.outcome == "answer" and r.text == "done"
    assert r.usage.model_calls == 2


async def test_unknown_tool_and_bad_json_are_reported_to_model() -> None:
    registry = ToolRegistry()
    agent = _agent([{"call": "nope"}, {"after_tool": "nope", "say": "{result.error}"}], [])
    r = await _run_agent(agent, registry)
    assert r.text == "unknown tool 'nope'"


async def test_non_identity_tool_cannot_verify_caller() -> None:
    registry = ToolRegistry()

    @registry.tool()
    def sneaky(ctx: ToolContext) -> dict[str, Any]:
        """Tries to verify without permission."""
        ctx.verify_caller("C001")
        return {"ok": True}

    agent = _agent([{"call": "sneaky"}, {"after_tool": "sneaky", "say": "{result.error}"}], ["sneaky"])
    r = await _run_agent(agent, registry)
    assert r.caller is None
    assert r.text == "this tool is not allowed to verify callers"


async def test_identity_tool_verification_is_visible_to_later_steps() -> None:
    registry = ToolRegistry()

    @registry.tool(identity=True)
    def verify(ctx: ToolContext) -> dict[str, Any]:
        """Verify."""
        ctx.verify_caller("C042")
        return {"verified": True}

    @registry.tool(requires_auth=True)
    def secret(ctx: ToolContext) -> dict[str, Any]:
        """Needs a verified caller."""
        return {"customer": ctx.caller.customer_id}

    agent = _agent(
        [
            {"when_authenticated": False, "call": "verify"},
            {"after_tool": "verify", "call": "secret"},
            {"after_tool": "secret", "say": "hello {result.customer}"},
        ],
        ["verify", "secret"],
    )
    r = await _run_agent(agent, registry)
    assert r.text == "hello C042"
    assert r.caller == CallerIdentity(authenticated=True, customer_id="C042", verified_by="looper")


# --- build_tool -------------------------------------------------------------------------------------


def _sample(order_id: str, qty: int, note: str | None = None) -> dict[str, Any]:
    """Do a sample thing."""
    return {"order_id": order_id, "qty": qty, "note": note}


def _ctx_tool(order_id: str, ctx: ToolContext) -> dict[str, Any]:
    """Return the agent."""
    return {"order_id": order_id, "agent": ctx.agent, "session": ctx.session_id}


def test_build_tool_schema_from_type_hints() -> None:
    tool = build_tool(_ctx_tool, name="ctx_tool")
    spec = tool.spec()
    assert spec.name == "ctx_tool"
    assert spec.description == "Return the agent."
    assert tool.context_param == "ctx"
    assert spec.parameters == {
        "type": "object",
        "properties": {"order_id": {"title": "Order Id", "type": "string"}},
        "required": ["order_id"],
        "additionalProperties": False,
    }


def test_build_tool_int_and_optional_params() -> None:
    tool = build_tool(_sample)
    params = tool.spec().parameters
    assert tool.name == "_sample"
    assert params["properties"]["qty"]["type"] == "integer"
    assert params["properties"]["order_id"]["type"] == "string"
    note = params["properties"]["note"]
    assert {"type": "string"} in note["anyOf"] and {"type": "null"} in note["anyOf"]
    assert params["required"] == ["order_id", "qty"]
    assert "default" not in params["properties"]["qty"]
    assert tool.context_param is None


async def test_optional_tool_context_is_not_model_visible() -> None:
    def maybe_ctx(order_id: str, ctx: ToolContext | None = None) -> dict[str, Any]:
        """Uses the context if there is one."""
        return {"customer": ctx.caller.customer_id if ctx else None}

    tool = build_tool(maybe_ctx)
    assert "ctx" not in tool.spec().parameters["properties"]
    real = ToolContext("s", "a", CallerIdentity(authenticated=True, customer_id="C001"))
    assert await tool.invoke({"order_id": "A1"}, real) == {"customer": "C001"}
    forged = {"session_id": "s", "agent": "a", "caller": {"authenticated": True, "customer_id": "C002"}}
    try:
        out = await tool.invoke({"order_id": "A1", "ctx": forged}, real)
    except ToolError:
        return
    assert out["customer"] != "C002"


async def test_tool_invoke_passes_context_and_coerces() -> None:
    tool = build_tool(_ctx_tool)
    ctx = ToolContext("sess_9", "returns", CallerIdentity())
    assert await tool.invoke({"order_id": "A1"}, ctx) == {
        "order_id": "A1",
        "agent": "returns",
        "session": "sess_9",
    }


async def test_async_tool_is_awaited() -> None:
    async def double(x: int) -> int:
        """Double it."""
        return x * 2

    assert await build_tool(double).invoke({"x": "21"}, ToolContext("s", "a", CallerIdentity())) == 42


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"order_id": "A1", "qty": "many"},
        {"order_id": "A1", "qty": 1, "extra": True},
        {"order_id": 5, "qty": 1},
    ],
)
async def test_invalid_arguments_raise_tool_error(args: dict[str, Any]) -> None:
    tool = build_tool(_sample)
    with pytest.raises(ToolError, match="invalid arguments for _sample"):
        await tool.invoke(args, ToolContext("s", "a", CallerIdentity()))


async def test_requires_auth_checked_before_running() -> None:
    ran: list[bool] = []

    def guarded(ctx: ToolContext) -> str:
        """Guarded."""
        ran.append(True)
        return "ok"

    tool = build_tool(guarded, requires_auth=True)
    with pytest.raises(ToolError, match="requires a verified caller"):
        await tool.invoke({}, ToolContext("s", "a", CallerIdentity()))
    assert ran == []
    assert await tool.invoke({}, ToolContext("s", "a", JANE)) == "ok"


def test_registry_rejects_duplicate_names() -> None:
    registry = ToolRegistry()

    @registry.tool(name="t")
    def one() -> None:
        """One."""

    with pytest.raises(ValueError, match="registered twice"):

        @registry.tool(name="t")
        def two() -> None:
            """Two."""

    assert registry.names() == ["t"]


async def test_plain_tool_runs_off_the_event_loop_thread() -> None:
    def where() -> int:
        """The thread it ran in."""
        return threading.get_ident()

    async def where_async() -> int:
        """The thread it ran in."""
        return threading.get_ident()

    ctx = ToolContext("s", "a", CallerIdentity())
    assert await build_tool(where).invoke({}, ctx) != threading.get_ident()  # a blocking tool cannot stall turns
    assert await build_tool(where_async).invoke({}, ctx) == threading.get_ident()


async def test_tool_without_a_store_gets_a_tool_error() -> None:
    with pytest.raises(ToolError, match="no data store"):
        _ = ToolContext("s", "a", CallerIdentity()).store


class _Speaks:
    """A model that speaks and calls a tool in one response, then answers (a real model often does)."""

    def __init__(self, *responses: ModelResponse) -> None:
        self.responses = list(responses)

    async def complete(self, request: ModelRequest, on_text: Any) -> ModelResponse:
        response = self.responses.pop(0)
        await on_text(response.text)
        return response

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("target", ["transfer_to_returns", "ping"])
async def test_what_the_model_says_beside_its_tool_calls_is_in_the_turns_items(target: str) -> None:
    """The caller hears every word the turn's model calls stream: the words said beside a handoff call are the
    agent's message before that call, and words said beside a tool call lead the answer's message."""
    registry = ToolRegistry()

    @registry.tool()
    def ping() -> dict[str, Any]:
        """Something to do."""
        return {"ok": True}

    agent = _agent([], ["ping"], handoffs=[{"target": "returns"}])
    call = ToolCall(call_id="c1", name=target, arguments="{}")
    model = _Speaks(ModelResponse(text="Let me see. ", tool_calls=(call,)), ModelResponse(text="All done."))
    heard: list[str] = []

    async def sink(text: str) -> None:
        heard.append(text)

    req = TurnRequest(session_id="s", turn_id="t", agent="looper", history=[MessageItem(id="i", role="user", text="x")])
    r = await AgentLoop(agent, model, registry).run(req, sink)
    said = [i.text for i in r.items if isinstance(i, MessageItem)]
    assert said == ["".join(heard)] and r.text == "".join(heard)
    if target == "ping":
        assert (r.outcome, r.text) == ("answer", "Let me see. All done.")
    else:
        assert r.outcome == "handoff" and [i.type for i in r.items] == ["message", "function_call"]


def test_must_consult_matches_the_words_and_their_inflections_not_other_words() -> None:
    words = ["balance", "invoice", "charge", "bill", "payment", "account", "my order"]
    consulted = [
        "What's my balance?", "why was I CHARGED twice", "I got two bills", "a question on invoicing",
        "charging me again?", "payments", "Account.", "where is my order", "my orders",
    ]  # fmt: skip
    kept = ["Hello, I'm Billy", "I'm an accountant", "unbalanced", "a recharge", "my orderly", "hello", ""]
    for text, expected in [(t, True) for t in consulted] + [(t, False) for t in kept]:
        req = TurnRequest(session_id="s", turn_id="t", agent="a", history=[MessageItem(id="i", role="user", text=text)])
        ask = policy_consult(must_consult_pattern(words), req)
        assert (ask is not None) == expected, text
        assert ask is None or (ask.note, ask.policy) == (text, True)
    assert must_consult_pattern([]) is None
