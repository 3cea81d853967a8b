"""The session conductor: sends a caller turn to the active agent and carries out handoffs.

One caller turn may visit several agents (A answers, or hands off to B who answers ...). Every
handoff goes through the guardrails, is announced to the caller, and is appended to the audit
stream with its latency (time from the request to the target's first reply). A target that does
not answer, fails, or is refused sends the turn to the scenario's fallback agent.

A turn's handoffs are logged and appended by :meth:`Conductor.record`: by the caller once the turn's
answer is out (a completed turn returns them in ``TurnOutcome.decisions``), by ``run_turn`` itself when
the turn fails or is cancelled. Neither the log line nor the append then delays what the caller hears.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from switchboard.agents.config import ScenarioConfig
from switchboard.bus import BusError, StreamingClient, subjects
from switchboard.errors import SwitchboardError
from switchboard.guardrails import redact_pii
from switchboard.guardrails.moderation import Moderator
from switchboard.resilience import BreakerOpen, Breakers, RetryPolicy, call_with_retry
from switchboard.rollout import TrackRouter
from switchboard.runtime import new_item_id
from switchboard.schemas import (
    CallerIdentity,
    ClientTool,
    ConsultAsk,
    ConversationItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    HandoffDecision,
    HandoffOutcome,
    HandoffRequest,
    MessageItem,
    SessionState,
    TrackPin,
    TurnDelta,
    TurnRequest,
    TurnResult,
    turn_reply_adapter,
)
from switchboard.state import AuditLog
from switchboard.telemetry import current_trace_id, mark_error, metrics, names, set_content, span

from ..configs import ConfigWatch
from .consult import ConsultDone, SupervisorConsults
from .events import AgentFinished, ConductorEvent, EventSink, HandoffMade, TextDelta
from .guardrails import decide, moderate
from .local import LocalAgent, LocalAgentError

log = logging.getLogger(__name__)

FALLBACK_GRACE_S = 3.0
"""Time the fallback agent gets even when the turn's deadline has (nearly) passed: never silence."""
CANT_TRANSFER = "I'm sorry, I can't transfer you right now. Is there anything else I can help you with?"


class TurnFailed(SwitchboardError):
    """Even the fallback agent could not answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.tracks: dict[str, str] = {}
        """Per agent that ran, the version track that served it (set by ``run_turn``)."""


@dataclass(frozen=True)
class TurnOptions:
    """What the Realtime client asked of one response, carried to every agent that runs in it."""

    client_tools: list[ClientTool] = field(default_factory=list)
    """The client's function tools (a call of one ends the turn, pending, on that agent)."""
    instructions: str | None = None
    """Added to each agent's own instructions for this response."""
    tool_choice: str = "auto"
    """``auto``, ``none``, ``required`` or one function's name."""
    max_output_tokens: int | None = None


@dataclass
class TurnOutcome:
    state: SessionState
    agents: list[str]
    """Agents that ran, in order."""
    decisions: list[HandoffDecision]
    """The turn's handoffs, not yet logged nor audited: the caller passes them to ``Conductor.record``."""
    replica: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    consult: ConsultDone | None = None
    """Set when the supervisor was consulted in this turn."""
    retries: int = 0
    """Retried agent and supervisor calls in this turn."""
    tracks: dict[str, str] = field(default_factory=dict)
    """Per agent that ran, the version track that served it."""
    client_call: FunctionCallItem | None = None
    """Set when the turn ended on a call of a client tool: the client runs it and asks for a new response."""


@dataclass
class _Turn:
    """Mutable working copy of the session while one caller turn runs."""

    state: SessionState
    response_id: str
    history: list[ConversationItem]
    context: dict[str, Any]
    caller: CallerIdentity
    handoffs: int
    agents: list[str] = field(default_factory=list)
    decisions: list[HandoffDecision] = field(default_factory=list)
    tokens: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})
    replica: str | None = None
    consult: ConsultDone | None = None
    retries: int = 0
    anchor: str = ""
    """Id of the caller message this turn answers: the stable part of every agent turn id."""
    pins: dict[str, TrackPin] = field(default_factory=dict)
    """The session's track per agent (``rollout``), pinned at its first visit."""
    options: TurnOptions = field(default_factory=TurnOptions)
    client_call: FunctionCallItem | None = None
    local: Mapping[str, LocalAgent] = field(default_factory=dict)
    """Agents this session runs inside the edge (an upstream Realtime agent), by name."""
    tenant: str = ""
    """The tenant whose session this is (whose counters its consults join)."""

    def tracks(self) -> dict[str, str]:
        return {a: self.pins[a].track for a in self.agents if a in self.pins}

    def agent_turn_id(self, agent: str) -> str:
        """Stable across re-asks: the caller's message and the agent (plus a count should the fallback run
        twice), not the hop index, which shifts when a re-ask starts where a committed handoff left off."""
        runs = self.agents.count(agent)
        return f"{self.anchor}-{agent}" + (f"-{runs}" if runs > 1 else "")


class Conductor:
    def __init__(
        self,
        scenario: ScenarioConfig,
        client: StreamingClient,
        audit: AuditLog,
        *,
        hop_timeout_s: float = 10.0,
        consults: SupervisorConsults | None = None,
        breakers: Breakers | None = None,
        retry: RetryPolicy | None = None,
        idle_timeout_s: float = 0.75,
        ack_timeout_s: float = 0.25,
        tracks: TrackRouter | None = None,
        moderator: Moderator | None = None,
        configs: ConfigWatch | None = None,
    ) -> None:
        self.scenario = scenario
        self.moderator = moderator
        self.configs = configs
        """Audits the first turn each agent configuration serves (``TurnResult.config``)."""
        """Asks the moderation model of the scenario's moderation guardrails (None: none, or no key)."""
        self.tracks = tracks or TrackRouter()
        """Chooses each agent's version track for a session (``switchboard.rollout``)."""
        self._client = client
        self._audit = audit
        self.consults = consults
        self._breakers = breakers or Breakers()
        self.retry = retry or RetryPolicy()
        self.idle_timeout_s = idle_timeout_s
        self.ack_timeout_s = ack_timeout_s
        """A replica that has not acknowledged a call this long is taken for lost (frozen or gone)."""
        """An agent silent this long (no delta, no heartbeat) is taken for dead and the turn retried."""
        self.retries = 0
        self._audits: set[asyncio.Task[None]] = set()
        self.hop_timeout_s = hop_timeout_s
        """One agent's share of the turn: a hung agent costs this long, then the fallback answers."""

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait for audit appends still in flight (at shutdown)."""
        if self._audits:
            await asyncio.wait(set(self._audits), timeout=timeout_s)

    async def run_turn(
        self, state: SessionState, response_id: str, emit: EventSink, *, deadline: float, tenant: str,
        options: TurnOptions | None = None, local: Mapping[str, LocalAgent] | None = None,
    ) -> TurnOutcome:  # fmt: skip
        """Run one caller turn with the client's ``options`` for this response; ``local`` agents answer
        inside the edge instead of on the bus (the same guardrails, audit and spans around them). ``tenant``:
        whose session it is (its consults are counted as that tenant's, see ``SupervisorConsults.stats``)."""
        turn = _Turn(state, response_id, list(state.history), dict(state.context), state.caller, state.handoff_count)
        turn.options = options or TurnOptions()
        turn.local = local or {}
        turn.tenant = tenant
        turn.anchor = next(
            (i.id for i in reversed(state.history) if isinstance(i, MessageItem) and i.role == "user"), response_id
        )
        turn.pins = dict(state.tracks)
        try:
            final = await self._hops(turn, state.active_agent, emit, deadline)
        except BaseException as exc:  # failed or cancelled: what was decided is audited now
            self.record(turn.decisions)
            if isinstance(exc, TurnFailed):
                exc.tracks = turn.tracks()
            raise
        consult = turn.consult
        new_state = state.model_copy(
            update={
                "active_agent": final, "history": turn.history, "context": turn.context,
                "caller": turn.caller, "handoff_count": turn.handoffs, "turns": state.turns + 1, "tracks": turn.pins,
                "consults": state.consults + (consult is not None),
                "consult_ms": state.consult_ms + (consult.ms if consult else 0.0),
                "consult_tokens": state.consult_tokens + (consult.tokens if consult else 0),
                "updated_at": time.time(),
            }
        )  # fmt: skip
        retries = turn.retries + (consult.attempts - 1 if consult else 0)
        return TurnOutcome(
            new_state, turn.agents, turn.decisions, turn.replica, turn.tokens, consult, retries, turn.tracks(),
            turn.client_call,
        )  # fmt: skip

    async def _hops(self, turn: _Turn, agent: str, emit: EventSink, deadline: float) -> str:
        """Run agents until one answers. Handoffs are capped at ``max_hops_per_turn`` agents per caller
        turn (past it the caller stays with the agent that asked, which says so); the fallback agent
        always gets its turn when an agent fails, so a turn never ends in silence."""
        pending: tuple[HandoffDecision, float] | None = None
        request_from: HandoffDecision | None = None
        fallback = self.scenario.fallback_agent
        for hop in itertools.count():
            turn.agents.append(agent)
            req = TurnRequest.model_construct(  # built from validated parts: validating ~40 items again costs ~3x
                session_id=turn.state.session_id, turn_id=turn.agent_turn_id(agent), agent=agent,
                history=list(turn.history), context=dict(turn.context), caller=turn.caller, handoff_depth=turn.handoffs,
                handoff_from=request_from.source if request_from else None,
                handoff_reason=request_from.reason if request_from else None, client_tools=turn.options.client_tools,
                response_instructions=turn.options.instructions, tool_choice=turn.options.tool_choice,
                max_output_tokens=turn.options.max_output_tokens, tail_in_result=True,
            )  # fmt: skip
            hop_deadline = min(deadline, time.time() + self.hop_timeout_s)
            if agent == fallback:  # the fallback always gets a chance to answer, even late
                hop_deadline = max(hop_deadline, time.time() + FALLBACK_GRACE_S)
            hop_attrs: dict[str, str | int] = {names.AGENT: agent, names.HOP: hop, names.TURN_ID: req.turn_id,
                         names.SESSION_ID: req.session_id}  # fmt: skip
            with span(names.SPAN_CONDUCTOR_HOP, hop_attrs) as hop_span:
                result, failure, first_reply = await self._call_agent(turn, req, emit, hop_deadline)
                if failure is not None:
                    mark_error(hop_span, type(failure).__name__)
            if pending is not None:
                decision, asked_at = pending
                latency = (first_reply - asked_at) * 1000 if first_reply else None
                ok = result is not None
                turn.decisions.append(decision.model_copy(update={"latency_ms": latency, "target_ok": ok}))
                pending = None
            if result is None:
                if agent == fallback:
                    raise TurnFailed(f"fallback agent {fallback} failed: {failure}")
                request_from = self._decision(
                    turn, HandoffRequest(source=agent, target=agent, reason="agent did not answer"),
                    HandoffOutcome.UNAVAILABLE, fallback, str(failure), {},
                )  # fmt: skip
                turn.context = {}
                await emit(HandoffMade(request_from))
                pending, agent = (request_from, time.time()), fallback
                continue
            turn.history.extend(result.items)
            turn.replica = result.replica
            turn.tokens["input_tokens"] += result.usage.input_tokens
            turn.tokens["output_tokens"] += result.usage.output_tokens
            if result.caller is not None:
                turn.caller = result.caller
            if result.outcome == "consult" and result.consult is not None:
                done = await self._consult(turn, agent, result.consult, emit, deadline)
                if done.transfer_to is None:
                    return agent
                request_from = self._decision(
                    turn, HandoffRequest(source=agent, target=done.transfer_to, reason="supervisor unavailable"),
                    HandoffOutcome.UNAVAILABLE, done.transfer_to, done.detail, {},
                )  # fmt: skip
                turn.context = {}
                await emit(HandoffMade(request_from))
                pending, agent = (request_from, time.time()), done.transfer_to
                continue
            if result.outcome == "client_tool" and result.items and isinstance(result.items[-1], FunctionCallItem):
                turn.client_call = result.items[-1]
                return agent
            if result.outcome == "answer" or result.handoff is None:
                return agent
            verdict = decide(
                self.scenario, result.handoff, handoff_count=turn.handoffs, visited=turn.agents,
                authenticated=turn.caller.authenticated, received=turn.context,
                max_hops=self.scenario.max_hops_per_turn,
            )  # fmt: skip
            if self.moderator is not None:
                verdict = await moderate(self.scenario, verdict, self.moderator)
            self._answer_transfer_call(turn, result.handoff, verdict.final_target, verdict.outcome)
            handoff = result.handoff.model_copy(update={"reason": verdict.reason})  # never a blocked reason
            if verdict.refused and verdict.final_target == agent:  # the caller stays: say so, truthfully
                refusal = self._decision(turn, handoff, verdict.outcome, agent, verdict.detail, {})
                turn.decisions.append(refusal)
                await emit(HandoffMade(refusal))
                await self._platform_answer(turn, agent, CANT_TRANSFER, emit)
                return agent
            turn.context = dict(verdict.context)  # exactly what the target receives, nothing older
            request_from = self._decision(
                turn, handoff, verdict.outcome, verdict.final_target, verdict.detail, verdict.context
            )
            await emit(HandoffMade(request_from))
            pending, agent = (request_from, time.time()), verdict.final_target
        raise AssertionError("unreachable: every hop returns, raises or moves to another agent")

    async def _consult(self, turn: _Turn, agent: str, ask: ConsultAsk, emit: EventSink, deadline: float) -> ConsultDone:
        config = self.scenario.agent(agent)
        if self.consults is None or config is None or config.consult is None:
            raise TurnFailed(f"agent {agent} asked to consult but has no supervisor configured")
        done = await self.consults.consult(
            agent=config, ask=ask, session_id=turn.state.session_id, consult_id=f"{turn.anchor}-c-{agent}",
            history=turn.history, context=turn.context, caller=turn.caller, emit=emit, deadline=deadline,
            tenant=turn.tenant,
        )  # fmt: skip
        turn.history.extend(done.items)
        if done.caller is not None:
            turn.caller = done.caller
        turn.consult = done
        return done

    @staticmethod
    def _answer_transfer_call(turn: _Turn, request: HandoffRequest, final: str, outcome: HandoffOutcome) -> None:
        """Close the transfer tool call in the history, so models never see a dangling call."""
        if request.call_id:
            output = json.dumps({"transferred_to": final, "outcome": outcome.value})
            turn.history.append(
                FunctionCallOutputItem(id=new_item_id(), call_id=request.call_id, output=output, agent=request.source)
            )

    async def _call_agent(
        self, turn: _Turn, req: TurnRequest, emit: EventSink, deadline: float
    ) -> tuple[TurnResult | None, Exception | None, float | None]:
        """One agent turn: retried with jitter on retryable failures, guarded by the agent's breaker.

        A retry re-sends the same turn (same ``turn_id``), so the runner's side-effect ledger can
        recognise tool calls that already ran. The turn id is anchored on the caller's message, not
        on the response, so a client that asks again after losing its edge replays rather than repeats.
        Text the caller heard from a failed attempt is closed as incomplete before the next attempt speaks.
        """
        first_reply: float | None = None
        local = turn.local.get(req.agent)
        if local is not None:
            return await self._call_local(local, req, emit, deadline)
        text: list[str] = []
        subject = self.tracks.pin(turn.pins, req.agent)  # the session's version track of this agent
        # one breaker per track (named like its queue group): a failing canary must not send stable's callers
        # to the fallback, nor a failing stable its canary's
        breaker = subjects.agent_queue(req.agent, turn.pins[req.agent].track)

        async def attempt(n: int) -> TurnResult:
            nonlocal first_reply
            if text:  # the caller heard it: it stays in the conversation, closed as incomplete
                keep_heard(turn, req.agent, text)
                await emit(AgentFinished(req.agent, "".join(text), ok=False))
                text.clear()
            async with self._client.stream(
                subject, req, turn_reply_adapter, lambda r: isinstance(r, TurnResult),
                deadline=deadline, session_id=req.session_id, idle_timeout=self.idle_timeout_s,
                ack_timeout=self.ack_timeout_s, cancel=subjects.agent_cancel(req.agent),
            ) as replies:  # fmt: skip
                async for reply in replies:
                    first_reply = first_reply or time.time()
                    if isinstance(reply, TurnDelta):
                        text.append(reply.text)
                        await emit(TextDelta(req.agent, reply.text))
                    elif isinstance(reply, TurnResult):
                        heard = "".join(text)
                        if len(reply.text) > len(heard) and reply.text.startswith(heard):  # see tail_in_result
                            text.append(reply.text[len(heard) :])
                            await emit(TextDelta(req.agent, text[-1]))
                        return reply
            raise BusError("reply stream ended without a result")

        def on_retry(n: int, exc: BaseException) -> None:
            self.retries += 1
            turn.retries += 1
            metrics().retries.labels(target=f"agent.{req.agent}", reason=type(exc).__name__).inc()
            trace.get_current_span().add_event(
                "retry", {names.RETRY_ATTEMPT: n, names.RETRY_REASON: type(exc).__name__}
            )
            log.info("agent turn retry", extra={"agent": req.agent, "session_id": req.session_id,
                                                "attempt": n, "error": str(exc)})  # fmt: skip

        try:  # the breaker counts calls that failed after their retries, not single attempts:
            # one hung replica among healthy ones must not open the whole agent's breaker
            async with self._breakers.guard(breaker):
                result = await call_with_retry(attempt, self.retry, deadline=deadline, on_retry=on_retry)
        except (BusError, BreakerOpen) as exc:
            log.warning(
                "agent turn failed", extra={"agent": req.agent, "session_id": req.session_id, "error": str(exc)}
            )
            keep_heard(turn, req.agent, text)
            await emit(AgentFinished(req.agent, "".join(text), ok=False))
            return None, exc, first_reply
        if self.configs is not None:
            pin = turn.pins.get(req.agent)
            self.configs.seen(req.agent, pin.track if pin else "stable", result.config)
        await emit(AgentFinished(req.agent, result.text, ok=True))
        return result, None, first_reply

    async def _call_local(
        self, agent: LocalAgent, req: TurnRequest, emit: EventSink, deadline: float
    ) -> tuple[TurnResult | None, Exception | None, float | None]:
        """One turn of an agent inside the edge; its failure sends the turn to the fallback like a bus agent's."""
        first_reply: float | None = None

        async def relay(ev: ConductorEvent) -> None:
            nonlocal first_reply
            first_reply = first_reply or time.time()
            await emit(ev)

        try:
            result = await agent(req, relay, deadline)
        except LocalAgentError as exc:
            log.warning("local agent turn failed", extra={"agent": req.agent, "session_id": req.session_id,
                                                          "error": str(exc)})  # fmt: skip
            await emit(AgentFinished(req.agent, "", ok=False))
            return None, exc, first_reply
        await emit(AgentFinished(req.agent, result.text, ok=True))
        return result, None, first_reply or time.time()

    def _decision(
        self,
        turn: _Turn,
        request: HandoffRequest,
        outcome: HandoffOutcome,
        final: str,
        detail: str,
        context: dict[str, Any],
    ) -> HandoffDecision:
        turn.handoffs += 1
        attrs = {
            names.HANDOFF_FROM: request.source, names.HANDOFF_TO: final, names.HANDOFF_REQUESTED: request.target,
            names.HANDOFF_OUTCOME: outcome.value, names.HANDOFF_DEPTH: turn.handoffs,
            names.SESSION_ID: turn.state.session_id,
        }  # fmt: skip
        with span(names.SPAN_HANDOFF, attrs) as sp:
            set_content(sp, names.HANDOFF_REASON, request.reason)
        metrics().record_handoff(request.source, final, outcome.value, turn.handoffs)
        return HandoffDecision(  # an audit record never holds PII, whatever the agents said
            session_id=turn.state.session_id, response_id=turn.response_id, source=request.source,
            requested_target=request.target, final_target=final, outcome=outcome, reason=redact_pii(request.reason),
            detail=redact_pii(detail), context_keys=sorted(context), depth=turn.handoffs, ts=time.time(),
            trace_id=current_trace_id(),
        )  # fmt: skip

    def record(self, decisions: list[HandoffDecision]) -> None:
        """Log each handoff and append it to the audit stream (in the background, retried inside)."""
        for decision in decisions:
            log.info(
                "handoff",
                extra={
                    "session_id": decision.session_id, "from": decision.source, "to": decision.final_target,
                    "outcome": decision.outcome.value, "detail": decision.detail,
                },
            )  # fmt: skip
            task = asyncio.create_task(self._append(decision))
            self._audits.add(task)
            task.add_done_callback(self._audits.discard)

    async def _append(self, decision: HandoffDecision) -> None:
        try:
            await self._audit.append(decision)
        except Exception:
            log.exception("audit append failed", extra={"session_id": decision.session_id})

    async def _platform_answer(self, turn: _Turn, agent: str, text: str, emit: EventSink) -> None:
        await emit(TextDelta(agent, text))
        await emit(AgentFinished(agent, text, ok=True))
        turn.history.append(MessageItem(id=new_item_id(), role="assistant", text=text, agent=agent))


def keep_heard(turn: _Turn, agent: str, text: list[str]) -> None:
    """What a failed attempt had streamed joins the conversation as the agent's message: the caller heard it
    (the client was shown it as an ``incomplete`` item), so the history, later agents and the audit must
    have it too. Nothing when it had said nothing."""
    if text:
        turn.history.append(MessageItem(id=new_item_id(), role="assistant", text="".join(text), agent=agent))
