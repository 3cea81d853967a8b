"""The chat-supervisor consult: filler at once, the supervisor's streamed answer, or a declared fallback.

The conductor calls :meth:`SupervisorConsults.consult` when a front agent's turn ends in a
consult. The caller hears a filler phrase immediately; the supervisor gets the full history; its
answer streams through as the front agent's speech. Retryable failures are retried with jittered
backoff within the consult's deadline, a dead replica is detected by its missing heartbeats, and
a breaker per supervisor stops calling one that keeps failing. When no answer can be had, the
front agent says its declared fallback line and either stays (``degraded``) or transfers.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry import trace

from switchboard.agents.config import CONSULT_TOOL, AgentConfig
from switchboard.bus import BusError, StreamingClient, subjects
from switchboard.resilience import BreakerOpen, Breakers, RetryPolicy, call_with_retry
from switchboard.runtime import new_item_id
from switchboard.schemas import (
    CallerIdentity,
    ConsultAsk,
    ConsultRequest,
    ConsultResult,
    ConversationItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    TurnDelta,
    consult_reply_adapter,
)
from switchboard.telemetry import mark_error, metrics, names, set_attributes, set_content, span

from .events import AgentFinished, EventSink, TextDelta

log = logging.getLogger(__name__)

FALLBACK_RESERVE_S = 1.0
"""Part of the turn's remaining time kept back from the consult for the fallback path."""


ConsultOutcome = Literal["answered", "unavailable", "breaker_open"]
"""How a consult ended: the supervisor answered, could not be reached (after retries), or its breaker is open."""


@dataclass
class ConsultDone:
    ok: bool
    """True when the supervisor answered."""
    items: list[ConversationItem]
    """What to append to the history: the consult call and output, the supervisor's tool work, and
    the assistant message the caller heard."""
    ms: float
    tokens: int = 0
    caller: CallerIdentity | None = None
    detail: str = ""
    transfer_to: str | None = None
    """Set when the fallback transfers the caller."""
    attempts: int = 1
    outcome: ConsultOutcome = "answered"


@dataclass
class ConsultStats:
    """One tenant's consult counters on this edge process (shown to its keys at ``/v1/switchboard/stats``;
    the edge-wide figures are the ``switchboard_supervisor_consults`` and ``switchboard_retries`` metrics)."""

    consults: int = 0
    failed: int = 0
    retries: int = 0
    total_ms: float = 0.0
    tokens: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)


class SupervisorConsults:
    def __init__(
        self,
        client: StreamingClient,
        breakers: Breakers,
        *,
        fallback_agent: str,
        idle_timeout_s: float = 0.75,
        ack_timeout_s: float = 0.25,
    ) -> None:
        self._client = client
        self._breakers = breakers
        self._fallback_agent = fallback_agent
        self.idle_timeout_s = idle_timeout_s
        self.ack_timeout_s = ack_timeout_s
        """A replica that has not acknowledged a call this long is taken for lost (frozen or gone)."""
        self._stats: dict[str, ConsultStats] = {}

    def stats(self, tenant: str) -> ConsultStats:
        """The consults of ``tenant``'s sessions on this edge (zero for a tenant that has none)."""
        return self._stats.get(tenant) or ConsultStats()

    async def consult(
        self,
        *,
        agent: AgentConfig,
        ask: ConsultAsk,
        session_id: str,
        consult_id: str,
        history: list[ConversationItem],
        context: dict[str, Any],
        caller: CallerIdentity,
        emit: EventSink,
        deadline: float,
        tenant: str,
    ) -> ConsultDone:
        """``tenant``: whose session consults (its counters, see :meth:`stats`)."""
        cfg = agent.consult
        if cfg is None:
            raise ValueError(f"agent {agent.name} has no consult configuration")
        started = time.time()
        filler = cfg.fillers[len(history) % len(cfg.fillers)] + " "
        await emit(TextDelta(agent.name, filler))
        call_id = ask.call_id or f"call_{consult_id}"
        items: list[ConversationItem] = []
        if ask.call_id is None:  # a policy consult: record it as the call the model did not make
            args = json.dumps({"note": ask.note})
            items.append(FunctionCallItem(id=new_item_id(), call_id=call_id, name=CONSULT_TOOL, arguments=args,
                                          agent=agent.name))  # fmt: skip
        request = ConsultRequest(
            session_id=session_id, consult_id=consult_id, agent=agent.name, supervisor=cfg.supervisor,
            history=[i for i in history if not (isinstance(i, FunctionCallItem) and i.call_id == ask.call_id)],
            note=ask.note, context=context, caller=caller,
        )  # fmt: skip
        # leave the fallback line time to be said within the turn's deadline
        consult_deadline = max(min(deadline - FALLBACK_RESERVE_S, started + cfg.timeout_s), started + 0.5)
        streamed: list[str] = []
        cut: list[ConversationItem] = []
        """What attempts that died mid-answer had said: the caller heard it, so it stays (as closed items)."""
        attempts = 0

        def opening() -> str:
            """How the open output item starts: with the filler, unless a cut attempt's item took it."""
            return "" if cut else filler

        async def attempt(n: int) -> ConsultResult:
            nonlocal attempts
            attempts = n
            if streamed:  # a replica died mid-answer: close what the caller heard, start afresh
                heard = opening() + "".join(streamed)
                cut.append(MessageItem(id=new_item_id(), role="assistant", text=heard, agent=agent.name))
                await emit(AgentFinished(agent.name, heard, ok=False))
                streamed.clear()
            async with self._client.stream(
                subjects.supervisor_consult(cfg.supervisor), request, consult_reply_adapter,
                lambda r: isinstance(r, ConsultResult), deadline=consult_deadline, session_id=session_id,
                idle_timeout=self.idle_timeout_s,
                ack_timeout=self.ack_timeout_s, cancel=subjects.supervisor_cancel(cfg.supervisor),
            ) as replies:  # fmt: skip
                async for reply in replies:
                    if isinstance(reply, TurnDelta):
                        streamed.append(reply.text)
                        await emit(TextDelta(agent.name, reply.text))
                    elif isinstance(reply, ConsultResult):
                        return reply
            raise BusError(f"consult stream from {cfg.supervisor} ended without a result")

        stats = self._stats.setdefault(tenant, ConsultStats())

        def on_retry(n: int, exc: BaseException) -> None:
            stats.retries += 1
            metrics().retries.labels(target=f"supervisor.{cfg.supervisor}", reason=type(exc).__name__).inc()
            trace.get_current_span().add_event(  # the consult's span, as an agent hop's retry is its hop's
                "retry", {names.RETRY_ATTEMPT: n, names.RETRY_REASON: type(exc).__name__}
            )
            log.info("consult retry", extra={"session_id": session_id, "attempt": n, "error": str(exc)})

        stats.consults += 1
        attrs = {names.CONSULT_ID: consult_id, names.CONSULT_SUPERVISOR: cfg.supervisor, names.AGENT: agent.name,
                 names.SESSION_ID: session_id}  # fmt: skip
        with span(names.SPAN_SUPERVISOR_CONSULT, attrs) as sp:
            set_content(sp, names.CONSULT_NOTE, ask.note)
            try:  # the breaker counts consults that failed after their retries
                async with self._breakers.guard(f"supervisor.{cfg.supervisor}"):
                    result = await call_with_retry(
                        attempt, RetryPolicy(attempts=cfg.attempts), deadline=consult_deadline, on_retry=on_retry
                    )
            except (BusError, BreakerOpen) as exc:
                said = opening() + "".join(streamed)  # the open item: the fallback line is added to it
                done = await self._fallback(agent, said, call_id, items, cut, exc, emit, started, attempts, stats)
                set_attributes(sp, {names.CONSULT_OUTCOME: done.outcome,
                                    names.CONSULT_ATTEMPTS: attempts})  # fmt: skip
                mark_error(sp, type(exc).__name__)
                return done
            set_attributes(sp, {names.CONSULT_OUTCOME: "answered", names.CONSULT_ATTEMPTS: attempts})
        answer = "".join(streamed) or result.text
        output = json.dumps({"answer": result.text, "supervisor": result.supervisor})
        items += [
            *result.items,
            FunctionCallOutputItem(id=new_item_id(), call_id=call_id, output=output, agent=agent.name),
            *cut,
            MessageItem(id=new_item_id(), role="assistant", text=opening() + answer, agent=agent.name),
        ]
        await emit(AgentFinished(agent.name, opening() + answer, ok=True))
        ms = (time.time() - started) * 1000
        tokens = result.usage.input_tokens + result.usage.output_tokens
        self._count(stats, "answered", ms, tokens, agent.name)
        return ConsultDone(True, items, ms, tokens, result.caller, attempts=attempts)

    async def _fallback(
        self,
        agent: AgentConfig,
        said: str,
        call_id: str,
        items: list[ConversationItem],
        cut: list[ConversationItem],
        exc: BaseException,
        emit: EventSink,
        started: float,
        attempts: int,
        stats: ConsultStats,
    ) -> ConsultDone:
        assert agent.consult is not None
        fallback = agent.consult.fallback
        outcome: ConsultOutcome = "breaker_open" if isinstance(exc, BreakerOpen) else "unavailable"
        log.warning("consult failed", extra={"agent": agent.name, "outcome": outcome, "error": str(exc)})
        await emit(TextDelta(agent.name, fallback.say))
        await emit(AgentFinished(agent.name, said + fallback.say, ok=True))
        output = json.dumps({"error": str(exc), "outcome": outcome})
        items += [
            FunctionCallOutputItem(id=new_item_id(), call_id=call_id, output=output, agent=agent.name),
            *cut,
            MessageItem(id=new_item_id(), role="assistant", text=said + fallback.say, agent=agent.name),
        ]
        ms = (time.time() - started) * 1000
        stats.failed += 1
        self._count(stats, outcome, ms, 0, agent.name)
        transfer_to = (fallback.target or self._fallback_agent) if fallback.mode == "transfer" else None
        return ConsultDone(
            False, items, ms, detail=f"{outcome}: {exc}", transfer_to=transfer_to, attempts=attempts, outcome=outcome
        )

    @staticmethod
    def _count(stats: ConsultStats, outcome: str, ms: float, tokens: int, agent: str = "") -> None:
        metrics().supervisor_consults.labels(agent=agent, outcome=outcome).inc()
        stats.total_ms += ms
        stats.tokens += tokens
        stats.by_outcome[outcome] = stats.by_outcome.get(outcome, 0) + 1
