"""The upstream agent's turn: one response of the OpenAI Realtime model, as the conductor's local agent.

The conductor calls it where it would call an agent service on the bus (same ``TurnRequest``, same
``TurnResult``), so everything around the turn is Switchboard's: the hop span and this turn's
``upstream.response`` span, the handoff guardrails (contract, graph, depth, moderation), the audit record,
and the next agent answering over the bus. A ``transfer_to_<target>`` call becomes a handoff request and
``consult_supervisor`` a consult, exactly as an agent process reports them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from opentelemetry.trace import SpanKind

from switchboard.agents import CONSULT_TOOL, TRANSFER_PREFIX, AgentConfig
from switchboard.guardrails import Boundary, check
from switchboard.models import ToolCall
from switchboard.runtime.loop import (
    agent_instructions,
    consult_note,
    handoff_request,
    must_consult_pattern,
    policy_consult,
)
from switchboard.schemas import (
    ConsultAsk,
    ConversationItem,
    FunctionCallItem,
    MessageItem,
    TurnRequest,
    TurnResult,
    Usage,
)
from switchboard.telemetry import names, set_attributes, span

from ..orchestration import AudioDelta, EventSink, TextDelta
from .link import Event, UpstreamError, UpstreamLink


class UpstreamAgent:
    """Runs the upstream agent's turns over the session's :class:`UpstreamLink`."""

    def __init__(self, link: UpstreamLink, agent: AgentConfig) -> None:
        self.link = link
        self.agent = agent
        self.must_consult = must_consult_pattern(agent.consult.must_consult) if agent.consult else None

    async def __call__(self, req: TurnRequest, emit: EventSink, deadline: float) -> TurnResult:
        link = self.link
        ask = policy_consult(self.must_consult, req)
        if ask is not None:  # the routing policy consults at once, without asking the upstream model
            return TurnResult(turn_id=req.turn_id, agent=req.agent, outcome="consult", consult=ask)
        await link.connect()
        attrs: dict[str, str | int] = {
            names.AGENT: req.agent, names.TURN_ID: req.turn_id, names.SESSION_ID: req.session_id,
            names.GEN_AI_SYSTEM: "openai", names.GEN_AI_REQUEST_MODEL: link.config.model,
        }  # fmt: skip
        with span(names.SPAN_UPSTREAM_RESPONSE, attrs, kind=SpanKind.CLIENT) as sp:
            await link.sync(req.history)
            queue = link.open_response()
            try:
                await link.send({"type": "response.create", "response": {"instructions": agent_instructions(
                    self.agent, req)}})  # fmt: skip
                done = await self._stream(queue, emit, req.agent, deadline)
            except asyncio.CancelledError:  # barge-in or the caller's cancel: the upstream stops too
                if link.up:
                    await asyncio.shield(self._cancel())
                raise
            finally:
                link.close_response()
            usage = done.get("usage") or {}
            set_attributes(sp, {
                names.UPSTREAM_RESPONSE_ID: str(done.get("id")), names.UPSTREAM_STATUS: str(done.get("status")),
                names.GEN_AI_USAGE_INPUT_TOKENS: int(usage.get("input_tokens", 0)),
                names.GEN_AI_USAGE_OUTPUT_TOKENS: int(usage.get("output_tokens", 0)),
            })  # fmt: skip
        return self._result(req, done)

    async def _cancel(self) -> None:
        try:
            await self.link.send({"type": "response.cancel"})
        except UpstreamError:
            pass  # gone already: nothing left to stop

    async def _stream(
        self, queue: asyncio.Queue[Event | UpstreamError], emit: EventSink, agent: str, deadline: float
    ) -> Event:
        """Relay the response's speech as it comes; its ``response.done`` at the end."""
        response_id: str | None = None
        try:
            async with asyncio.timeout(max(deadline - time.time(), 0.0)):
                while True:
                    event = await queue.get()
                    if isinstance(event, UpstreamError):
                        raise event
                    kind = event["type"]
                    if kind == "error":
                        error = event.get("error") or {}
                        raise UpstreamError("upstream_error", f"the OpenAI Realtime API: {error.get('message')}")
                    if kind == "response.created":
                        response_id = response_id or event["response"]["id"]
                        continue
                    if (event.get("response_id") or event.get("response", {}).get("id")) != response_id:
                        continue  # a cancelled response's late events
                    if kind == "response.output_audio.delta":
                        await emit(AudioDelta(agent, event["item_id"], audio=event["delta"]))
                    elif kind == "response.output_audio_transcript.delta":
                        await emit(AudioDelta(agent, event["item_id"], transcript=event["delta"]))
                    elif kind == "response.output_text.delta":
                        await emit(TextDelta(agent, event["delta"], item_id=event["item_id"]))
                    elif kind == "response.done":
                        response: Event = event["response"]
                        if response.get("status") == "failed":
                            detail = (response.get("status_details") or {}).get("error") or {}
                            raise UpstreamError("upstream_error", f"the upstream response failed: {detail}")
                        return response
        except TimeoutError:
            raise UpstreamError(
                "upstream_timeout", "the OpenAI Realtime API did not finish its response in time"
            ) from None

    def _result(self, req: TurnRequest, done: Event) -> TurnResult:
        agent = req.agent
        rules = self.link.session.deps.conductor.scenario.guardrails.at(Boundary.OUTPUT)
        items: list[ConversationItem] = []
        said: list[str] = []
        call: ToolCall | None = None
        for out in done.get("output") or []:
            if out.get("type") == "message":
                text = "".join(_part_text(p) for p in out.get("content") or [])
                text = check(rules, text).text if rules else text  # stored redacted, like an agent's output
                if text:
                    items.append(MessageItem(id=out["id"], role="assistant", text=text, agent=agent))
                    said.append(text)
            elif out.get("type") == "function_call":
                args = str(out.get("arguments") or "{}")
                items.append(FunctionCallItem(id=out["id"], call_id=out["call_id"], name=out["name"], arguments=args,
                                              agent=agent))  # fmt: skip
                call = call or ToolCall(out["call_id"], out["name"], args)
        usage = done.get("usage") or {}
        result: dict[str, Any] = {
            "turn_id": req.turn_id, "agent": agent, "text": " ".join(said), "items": items, "outcome": "answer",
            "usage": Usage(input_tokens=int(usage.get("input_tokens", 0)),
                           output_tokens=int(usage.get("output_tokens", 0)), model_calls=1),
            "replica": "openai-realtime",
        }  # fmt: skip
        if call is not None and call.name.startswith(TRANSFER_PREFIX):
            result |= {"outcome": "handoff", "handoff": handoff_request(agent, call)}
        elif call is not None and call.name == CONSULT_TOOL and self.agent.consult is not None:
            result |= {"outcome": "consult", "consult": ConsultAsk(note=consult_note(call.arguments),
                                                                   call_id=call.call_id)}  # fmt: skip
        return TurnResult(**result)


def _part_text(part: Event) -> str:
    return str(part.get("transcript") or part.get("text") or "")
