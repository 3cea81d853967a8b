"""The agent loop: model -> tools -> model ..., capped, ending in an answer or a handoff request."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import SpanKind

from ..agents.config import CONSULT_TOOL, TRANSFER_PREFIX, AgentConfig
from ..agents.tools import ToolContext, ToolError, ToolRegistry, ToolSpec
from ..errors import SwitchboardError
from ..models.base import ModelError, ModelProvider, ModelRequest, ModelResponse, ToolCall
from ..models.offline import OfflineProvider
from ..resilience import BreakerOpen, Breakers, RetryPolicy, call_with_retry
from ..schemas import (
    ConsultAsk,
    ConversationItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    HandoffRequest,
    MessageItem,
    TurnRequest,
    TurnResult,
    Usage,
)
from ..settings import Settings
from ..state.ledger import SideEffectLedger, idempotency_key
from ..state.store import ToolStore
from ..telemetry import metrics, names, set_attributes, set_content, span

log = logging.getLogger(__name__)

CONSULT_DESCRIPTION = (
    "Ask the supervisor, an expert with the domain tools, to answer what the caller just asked. "
    "Use it for anything beyond greetings, small talk and collecting details."
)
CONSULT_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"note": {"type": "string", "description": "What the caller asked, with the details collected"}},
    "required": ["note"],
    "additionalProperties": False,
}


class IterationCapError(SwitchboardError):
    """The model kept calling tools past the agent's ``max_iterations``."""


@dataclass(frozen=True)
class ModelCallPolicy:
    """How an agent calls its model: retries, the provider's breaker, and the deadline of a call
    made outside a turn. Built from :class:`Settings` like every other hop's policy."""

    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=3, base_s=0.2, max_backoff_s=2.0))
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 10.0
    deadline_s: float = 30.0
    """Retries stop at the turn's deadline; a call without one (a test) gets this long."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelCallPolicy:
        retry = RetryPolicy(
            attempts=settings.model_retry_attempts,
            base_s=settings.model_backoff_s,
            max_backoff_s=10 * settings.model_backoff_s,
        )
        return cls(retry, settings.breaker_threshold, settings.breaker_cooldown_s, settings.turn_timeout_s)


def agent_instructions(agent: AgentConfig, req: TurnRequest, note: str | None = None) -> str:
    """An agent's instructions for one turn: its own, then what the platform knows (handoff, context, caller)."""
    notes = [agent.instructions.strip()]
    if note:
        notes.append(f"The front agent consults you. Its note on what the caller just asked: {note}")
    if req.handoff_from:
        notes.append(f"You took over from the {req.handoff_from} agent. Reason: {req.handoff_reason}.")
    if req.context:
        notes.append(f"Context transferred to you: {json.dumps(req.context, sort_keys=True)}")
    if req.response_instructions:
        notes.append(f"For this response: {req.response_instructions}")
    verified = f"yes (customer {req.caller.customer_id})" if req.caller.authenticated else "no"
    notes.append(f"Caller verified: {verified}.")
    return "\n\n".join(notes)


def must_consult_pattern(words: Sequence[str]) -> re.Pattern[str] | None:
    """What a caller's line must contain for the routing policy to consult: one of ``words`` as a word of its
    own, or in a plain inflection ("charged", "bills", "invoicing"), never inside another word: "bill" is not
    in "Billy", nor "account" in "accountant" (a greeting that named either was sent to the supervisor)."""
    forms = []
    for word in (w.strip().lower() for w in words):
        if word:
            ing = f"|{re.escape(word[:-1])}ing" if word.endswith("e") else ""
            forms.append(f"{re.escape(word)}(?:s|es|d|ed|ing)?{ing}")
    return re.compile(rf"(?<!\w)(?:{'|'.join(forms)})(?!\w)") if forms else None


def policy_consult(must_consult: re.Pattern[str] | None, req: TurnRequest) -> ConsultAsk | None:
    """A consult the routing policy requires: the caller's latest message names one of the ``must_consult``
    words (:func:`must_consult_pattern`), so the supervisor answers without a model call."""
    if must_consult is None or not req.history:
        return None
    last = req.history[-1]
    if not isinstance(last, MessageItem) or last.role != "user":
        return None
    if must_consult.search(last.text.lower()):
        return ConsultAsk(note=last.text, policy=True)
    return None


def platform_tools(agent: AgentConfig) -> list[ToolSpec]:
    """The tools the platform gives an agent: ``transfer_to_<target>`` per handoff, and the consult tool."""
    specs = [
        ToolSpec(
            f"{TRANSFER_PREFIX}{h.target}", h.description or f"Transfer the caller to the {h.target} agent",
            h.parameters_schema(),
        )
        for h in agent.handoffs
    ]  # fmt: skip
    if agent.consult is not None and CONSULT_TOOL in agent.tools:
        specs.append(ToolSpec(CONSULT_TOOL, CONSULT_DESCRIPTION, CONSULT_PARAMETERS))
    return specs


def new_item_id() -> str:
    return f"item_{uuid.uuid4().hex[:20]}"


class AgentLoop:
    """Runs turns for one agent with its model and tools."""

    def __init__(
        self,
        agent: AgentConfig,
        model: ModelProvider,
        registry: ToolRegistry,
        ledger: SideEffectLedger | None = None,
        store: ToolStore | None = None,
        *,
        policy: ModelCallPolicy | None = None,
    ) -> None:
        self.agent = agent
        self.model = model
        self.ledger = ledger
        self.store = store
        """The scenario's shared data store, handed to tools as ``ToolContext.store``."""
        self.policy = policy or ModelCallPolicy()
        self.breakers = Breakers(threshold=self.policy.breaker_threshold, cooldown_s=self.policy.breaker_cooldown_s)
        self.provider_name = "switchboard.offline" if isinstance(model, OfflineProvider) else "openai"
        self.model_key = f"model.{self.provider_name}.{agent.model.name}"
        self.model_retries = 0
        self.tools = {name: registry.get(name) for name in agent.tools}
        self.specs = [t.spec() for t in self.tools.values() if t is not None] + platform_tools(agent)
        self._must_consult = must_consult_pattern(agent.consult.must_consult) if agent.consult else None

    def instructions(self, req: TurnRequest, note: str | None = None) -> str:
        return agent_instructions(self.agent, req, note)

    def policy_consult(self, req: TurnRequest) -> ConsultAsk | None:
        """The platform's routing policy: declared topics go to the supervisor without a model call."""
        return policy_consult(self._must_consult, req)

    async def run(
        self,
        req: TurnRequest,
        on_text: Callable[[str], Awaitable[None]],
        *,
        note: str | None = None,
        deadline: float | None = None,
    ) -> TurnResult:
        policy = self.policy_consult(req)
        if policy is not None:
            return TurnResult(turn_id=req.turn_id, agent=self.agent.name, outcome="consult", consult=policy)
        ctx = ToolContext(
            req.session_id,
            self.agent.name,
            req.caller,
            identity_tool=False,
            turn_id=req.turn_id,
            deadline=deadline,
            tool_store=self.store,
        )
        turn_items: list[ConversationItem] = []
        usage = Usage()
        instructions = self.instructions(req, note)
        own = {spec.name for spec in self.specs}
        client = {t.name for t in req.client_tools if t.name not in own}  # the agent's own tools win
        specs = [*self.specs, *(ToolSpec(t.name, t.description, t.parameters) for t in req.client_tools
                                if t.name in client)] if req.tool_choice != "none" else []  # fmt: skip
        said = ""  # all the turn's model calls said so far, before their tool calls too: the caller heard it
        tool_choice = req.tool_choice
        for _ in range(self.agent.max_iterations):
            request = ModelRequest(
                instructions=instructions,
                items=[*req.history, *turn_items],
                tools=specs,
                context=req.context,
                caller_authenticated=ctx.caller.authenticated,
                tool_choice=tool_choice,
                max_output_tokens=req.max_output_tokens,
            )
            response = await self._complete(request, on_text, deadline)
            usage = Usage(
                input_tokens=usage.input_tokens + response.input_tokens,
                output_tokens=usage.output_tokens + response.output_tokens,
                model_calls=usage.model_calls + 1,
            )
            said += response.text
            if not response.tool_calls:
                msg = MessageItem(id=new_item_id(), role="assistant", text=said, agent=self.agent.name)
                return TurnResult(
                    turn_id=req.turn_id, agent=self.agent.name, outcome="answer", text=said,
                    items=[*turn_items, msg], caller=ctx.verified, usage=usage,
                )  # fmt: skip
            for call in response.tool_calls:
                turn_items.append(
                    FunctionCallItem(
                        id=new_item_id(),
                        call_id=call.call_id,
                        name=call.name,
                        arguments=call.arguments,
                        agent=self.agent.name,
                    )  # fmt: skip
                )
                if call.name in client:  # the client runs it: the turn ends with the call pending
                    return TurnResult(
                        turn_id=req.turn_id, agent=self.agent.name, outcome="client_tool", text=said,
                        items=self._spoken(said, turn_items), caller=ctx.verified, usage=usage,
                    )  # fmt: skip
                if call.name.startswith(TRANSFER_PREFIX):
                    handoff = handoff_request(self.agent.name, call)
                    return TurnResult(
                        turn_id=req.turn_id, agent=self.agent.name, outcome="handoff", text=said,
                        items=self._spoken(said, turn_items), handoff=handoff, caller=ctx.verified, usage=usage,
                    )  # fmt: skip
                if call.name == CONSULT_TOOL and self.agent.consult is not None:
                    ask = ConsultAsk(note=consult_note(call.arguments), call_id=call.call_id)
                    return TurnResult(
                        turn_id=req.turn_id, agent=self.agent.name, outcome="consult", text=said,
                        items=self._spoken(said, turn_items), consult=ask, caller=ctx.verified, usage=usage,
                    )  # fmt: skip
                output = await self._call_tool(call.name, call.arguments, ctx)
                turn_items.append(
                    FunctionCallOutputItem(id=new_item_id(), call_id=call.call_id, output=output, agent=self.agent.name)
                )
            # A tool ran, so a choice that forces one (required, a named function) is met: kept, it would make the
            # model call tools again and again until the iteration cap, never answering (the Agents SDK resets it too)
            tool_choice = "auto"
        raise IterationCapError(f"{self.agent.name} made {self.agent.max_iterations} model calls without answering")

    def _spoken(self, said: str, turn_items: list[ConversationItem]) -> list[ConversationItem]:
        """A turn that ends on a call (a handoff, a consult, a client's tool) with what the caller heard of it
        as the agent's message just before that call: the client was shown it as an item, the session keeps it."""
        if not said:
            return turn_items
        msg = MessageItem(id=new_item_id(), role="assistant", text=said, agent=self.agent.name)
        return [*turn_items[:-1], msg, turn_items[-1]]

    async def _complete(
        self, request: ModelRequest, on_text: Callable[[str], Awaitable[None]], deadline: float | None
    ) -> ModelResponse:
        """One model call: retryable errors (429, 5xx, connection) retried with jitter until the turn's
        ``deadline``, unless text already reached the caller; the provider's breaker refuses calls while
        it keeps failing."""
        spoke = False

        async def speak(text: str) -> None:
            nonlocal spoke
            spoke = True
            await on_text(text)

        async def attempt(n: int) -> ModelResponse:
            attrs: dict[str, str | int] = {
                names.GEN_AI_OPERATION_NAME: names.GEN_AI_OPERATION_CHAT, names.GEN_AI_SYSTEM: self.provider_name,
                names.GEN_AI_REQUEST_MODEL: self.agent.model.name, names.GEN_AI_AGENT_NAME: self.agent.name,
                names.RETRY_ATTEMPT: n,
            }  # fmt: skip
            with span(names.SPAN_MODEL_CALL, attrs, kind=SpanKind.CLIENT) as sp:
                async with self.breakers.guard(self.model_key):
                    try:
                        response = await self.model.complete(request, speak)
                    except ModelError as exc:
                        exc.retryable = exc.retryable and not spoke
                        raise
                set_attributes(sp, {names.GEN_AI_USAGE_INPUT_TOKENS: response.input_tokens,
                                    names.GEN_AI_USAGE_OUTPUT_TOKENS: response.output_tokens})  # fmt: skip
                return response

        def on_retry(n: int, exc: BaseException) -> None:
            self.model_retries += 1
            metrics().retries.labels(target=self.model_key, reason=type(exc).__name__).inc()
            log.info("model call retry", extra={"agent": self.agent.name, "attempt": n, "error": str(exc)})

        try:
            deadline = deadline if deadline is not None else time.time() + self.policy.deadline_s
            return await call_with_retry(attempt, self.policy.retry, deadline=deadline, on_retry=on_retry)
        except BreakerOpen as exc:
            raise ModelError(str(exc), retryable=True) from exc

    async def _call_tool(self, name: str, arguments: str, ctx: ToolContext) -> str:
        attrs = {names.GEN_AI_OPERATION_NAME: names.GEN_AI_OPERATION_EXECUTE_TOOL, names.GEN_AI_TOOL_NAME: name,
                 names.GEN_AI_AGENT_NAME: self.agent.name}  # fmt: skip
        with span(names.SPAN_TOOL_CALL, attrs) as sp:
            set_content(sp, names.GEN_AI_TOOL_CALL_ARGUMENTS, arguments)
            output = await self._run_tool(name, arguments, ctx)
            set_content(sp, names.GEN_AI_TOOL_CALL_RESULT, output)
            return output

    async def _run_tool(self, name: str, arguments: str, ctx: ToolContext) -> str:
        tool = self.tools.get(name)
        if tool is None:
            return json.dumps({"error": f"unknown tool {name!r}"})
        running_on = False  # a side effect still running after this turn was cancelled: ctx stays as it ran with
        try:
            args: Any = json.loads(arguments or "{}")
            if not isinstance(args, dict):
                raise ToolError("arguments must be a JSON object")
            ctx.identity_tool = tool.identity
            if tool.side_effect and self.ledger is not None:
                ctx.idempotency_key = idempotency_key(self.ledger.owner, ctx.session_id, ctx.turn_id, name, arguments)

                async def run() -> str:
                    return json.dumps(await tool.invoke(args, ctx), default=str)

                # A side effect, once started, runs to its end and is recorded, even when the turn is cancelled
                # meanwhile (its caller stopped it): cut short, it could have happened with nothing recorded,
                # and a later run of the same call would do it again.
                effect = asyncio.ensure_future(self.ledger.once(ctx.idempotency_key, run, deadline=ctx.deadline))
                try:
                    return await asyncio.shield(effect)
                except asyncio.CancelledError:
                    running_on = not effect.done()
                    raise
            result = await tool.invoke(args, ctx)
        except (ToolError, ValueError) as exc:
            log.info("tool refused", extra={"tool": name, "agent": self.agent.name, "error": str(exc)})
            return json.dumps({"error": str(exc)})
        finally:
            if not running_on:
                ctx.identity_tool = False
                ctx.idempotency_key = ""
        return json.dumps(result, default=str)


def consult_note(arguments: str) -> str:
    """The ``note`` of a ``consult_supervisor`` call."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return arguments
    return str(args.get("note", "")) if isinstance(args, dict) else str(args)


def handoff_request(source: str, call: ToolCall) -> HandoffRequest:
    """The transfer a ``transfer_to_<target>`` call asks for: its ``reason``, the rest as context."""
    try:
        args = json.loads(call.arguments or "{}")
    except ValueError:
        args = {}
    if not isinstance(args, dict):
        args = {}
    reason = str(args.pop("reason", "") or "no reason given")
    target = call.name[len(TRANSFER_PREFIX) :]
    return HandoffRequest(source=source, target=target, reason=reason, context=args, call_id=call.call_id)
