"""One client connection: Realtime events in, conductor turns, Realtime events out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import SpanKind
from starlette.websockets import WebSocket, WebSocketDisconnect

from switchboard.guardrails import Action, Boundary, check
from switchboard.orchestration import (
    AgentFinished,
    Conductor,
    ConductorEvent,
    HandoffMade,
    TextDelta,
    TurnFailed,
    TurnOutcome,
)
from switchboard.schemas import MessageItem, SessionState, TurnRecord
from switchboard.settings import Settings
from switchboard.state import AuditLog, SessionConflict, SessionStore
from switchboard.telemetry import current_trace_id, mark_error, metrics, names, span

from .protocol import (
    ConversationItemCreate,
    ProtocolError,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
    assistant_item,
    encode_event,
    error_event,
    new_id,
    parse_client_event,
    server_event,
    session_config,
    user_item,
)

log = logging.getLogger(__name__)


@dataclass
class EdgeDeps:
    settings: Settings
    conductor: Conductor
    store: SessionStore
    instructions: str
    active_sessions: set[str] = field(default_factory=set)
    responses: int = 0
    """Completed responses of this process (the routing rate's denominator)."""
    sessions: set[EdgeSession] = field(default_factory=set)
    draining: bool = False
    audit: AuditLog | None = None
    _records: set[asyncio.Task[None]] = field(default_factory=set)

    def record_turn(self, record: TurnRecord) -> None:
        """Append a turn record to the audit stream off the response's critical path."""
        if self.audit is None:
            return
        task = asyncio.create_task(self._append(record))
        self._records.add(task)
        task.add_done_callback(self._records.discard)

    async def _append(self, record: TurnRecord) -> None:
        assert self.audit is not None
        try:
            await self.audit.append_turn(record)
        except Exception:
            log.warning("turn record not stored", extra={"session_id": record.session_id}, exc_info=True)

    async def flush_records(self) -> None:
        if self._records:
            await asyncio.wait(set(self._records), timeout=5)

    async def drain(self, grace_s: float) -> None:
        """Refuse new connections; let each session finish its response, then ask it to reconnect."""
        self.draining = True
        if self.sessions:
            await asyncio.wait([asyncio.create_task(s.drain(grace_s)) for s in set(self.sessions)], timeout=grace_s + 1)


@dataclass
class _OpenItem:
    item_id: str
    output_index: int
    agent: str
    text: list[str] = field(default_factory=list)


class EdgeSession:
    def __init__(
        self, ws: WebSocket, deps: EdgeDeps, state: SessionState, revision: int, resumed: bool,
        platform_events: bool = False,
    ):  # fmt: skip
        self.ws = ws
        self.platform_events = platform_events
        """Send ``switchboard.*`` events (opt-in: standard clients such as the Agents SDK reject unknown events)."""
        self._closed = False
        self.deps = deps
        self.state = state
        self.revision = revision
        self.resumed = resumed
        self._send_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._response: asyncio.Task[None] | None = None
        self._response_id: str | None = None
        self._config = session_config(state.session_id, state.scenario, deps.instructions)

    async def send(self, event: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.ws.send_text(encode_event(event))

    async def run(self) -> None:
        await self.send(server_event("session.created", session=self._config))
        if self.platform_events:
            await self.send(
                server_event(
                    "switchboard.session", session_id=self.state.session_id, resumed=self.resumed,
                    active_agent=self.state.active_agent,
                    history_items=self.state.archived_items + len(self.state.history),
                )
            )  # fmt: skip
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                if raw is None:
                    raw = message.get("bytes") or b""
                await self._on_raw(raw)
        except WebSocketDisconnect:
            pass
        finally:
            await self._cancel_response()

    async def drain(self, grace_s: float) -> None:
        """Finish the response in flight (up to ``grace_s``), tell the client to reconnect, close (1012).

        The session is committed in KV, so the client resumes on any other edge with its history.
        """
        task = self._response
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=grace_s)
        try:
            if self.platform_events:
                await self.send(
                    server_event("switchboard.reconnect", reason="edge draining", session_id=self.state.session_id)
                )
            await self.ws.close(code=1012, reason="edge draining; reconnect with session_id")
        except Exception:  # the client is already gone
            log.debug("drain: client already gone", exc_info=True)

    async def close(self, code: int, reason: str, error: dict[str, Any] | None = None) -> None:
        """End the response in flight (it still gets its ``response.done``), send ``error`` if given, close."""
        self._closed = True
        await self._cancel_response()
        try:
            if error is not None:
                await self.send(error)
            await self.ws.close(code=code, reason=reason)
        except Exception:  # the client is already gone
            log.debug("close: client already gone", exc_info=True)

    async def _on_raw(self, raw: str | bytes) -> None:
        if self._closed:
            return
        try:
            event = parse_client_event(raw, self.deps.settings.max_event_bytes)
            if isinstance(event, SessionUpdate):
                await self._session_update(event)
            elif isinstance(event, ConversationItemCreate):
                await self._item_create(event)
            elif isinstance(event, ResponseCreate):
                await self._response_create(event)
            elif isinstance(event, ResponseCancel):
                await self._cancel_response()
        except ProtocolError as err:
            await self.send(error_event(err))

    async def _session_update(self, event: SessionUpdate) -> None:
        if event.session.get("type", "realtime") != "realtime":
            raise ProtocolError("invalid_event", "session.type must be 'realtime'", param="session.type")
        instructions = event.session.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise ProtocolError("invalid_event", "session.instructions must be a string", param="session.instructions")
        # Agents own their instructions; client settings are acknowledged and echoed.
        allowed = {k: v for k, v in event.session.items() if k in {"instructions", "metadata", "tracing"}}
        self._config = self._config | allowed
        await self.send(server_event("session.updated", session=self._config))

    async def _item_create(self, event: ConversationItemCreate) -> None:
        item_id = event.item.id or new_id("item")
        if event.item.id and any(i.id == item_id for i in self.state.history):
            raise ProtocolError(
                "item_id_exists", f"an item with id {item_id!r} already exists", param="item.id",
                event_id=event.event_id,
            )  # fmt: skip
        text = "".join(part.text for part in event.item.content)
        scenario = self.deps.conductor.scenario
        verdict = check(scenario.guardrails.at(Boundary.INPUT), text) if event.item.role == "user" else None
        if verdict is not None and verdict.blocked:
            raise ProtocolError(
                "guardrail_blocked", f"the message was refused by guardrail {verdict.rules[0]!r}",
                param="item.content", event_id=event.event_id,
            )  # fmt: skip
        text = verdict.text if verdict is not None else text  # redacted before anything stores it
        to_fallback = verdict is not None and verdict.action is Action.FALLBACK
        previous = self.state.history[-1].id if self.state.history else None
        item = MessageItem(id=item_id, role=event.item.role, text=text)

        def add(current: SessionState) -> SessionState:
            update: dict[str, object] = {"history": [*current.history, item]}
            if to_fallback:
                update["active_agent"] = scenario.fallback_agent
            return current.model_copy(update=update)

        await self._commit(add)
        payload = user_item(item_id, text) | {"role": event.item.role}
        await self.send(server_event("conversation.item.added", previous_item_id=previous, item=payload))
        await self.send(server_event("conversation.item.done", previous_item_id=previous, item=payload))

    async def _commit(self, change: Callable[[SessionState], SessionState]) -> None:
        """Apply ``change`` to the current state and save it; commits of one connection never interleave."""
        async with self._commit_lock:
            state = change(self.state).model_copy(update={"updated_at": time.time()})
            try:
                state, self.revision = await self.deps.store.commit(state, self.revision)
            except SessionConflict:
                loaded = await self.deps.store.load(self.state.session_id)
                if loaded is not None:
                    self.state, self.revision = loaded
                raise ProtocolError(
                    "session_conflict", "the session was changed by another connection; state reloaded, retry"
                ) from None
            self.state = state

    async def _response_create(self, event: ResponseCreate) -> None:
        if self._response is not None and not self._response.done():
            raise ProtocolError(
                "conversation_already_has_active_response",
                f"response {self._response_id} is still in progress", event_id=event.event_id,
            )  # fmt: skip
        self._response_id = new_id("resp")
        self._response = asyncio.create_task(self._respond(self._response_id))

    async def _cancel_response(self) -> None:
        task = self._response
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _respond(self, response_id: str) -> None:
        """One response, traced as the root span of the caller turn, then recorded for the audit timeline."""
        started = time.perf_counter()
        attrs = {names.SESSION_ID: self.state.session_id, names.RESPONSE_ID: response_id}
        status, outcome, error = "cancelled", None, None
        with span(names.SPAN_EDGE_RESPONSE, attrs, kind=SpanKind.SERVER) as sp:
            trace_id = current_trace_id()
            try:
                status, outcome, error = await self._run_response(response_id)
                if error:
                    mark_error(sp, "turn_failed")
            finally:
                latency = time.perf_counter() - started
                consult = outcome.consult if outcome else None
                metrics().record_response(latency, consulted=consult is not None)
                record = TurnRecord(
                    session_id=self.state.session_id, response_id=response_id, status=status,
                    agents=outcome.agents if outcome else [], agent=self.state.active_agent,
                    latency_ms=latency * 1000, handoffs=len(outcome.decisions) if outcome else 0,
                    retries=outcome.retries if outcome else 0, consulted=consult is not None,
                    consult_outcome=consult.detail.split(":", 1)[0] or "answered" if consult else None,
                    consult_ms=consult.ms if consult else None, error=error, trace_id=trace_id, ts=time.time(),
                )  # fmt: skip
                self.deps.record_turn(record)

    async def _run_response(self, response_id: str) -> tuple[str, TurnOutcome | None, str | None]:
        output: list[dict[str, Any]] = []
        open_item: _OpenItem | None = None
        handoffs: list[str] = []
        base = {"id": response_id, "object": "realtime.response", "output_modalities": ["text"]}
        await self.send(server_event("response.created", response=base | {"status": "in_progress", "output": []}))

        async def close_item(ok: bool) -> None:
            nonlocal open_item
            if open_item is None:
                return
            item, open_item = open_item, None
            text = "".join(item.text)
            ids = {"response_id": response_id, "item_id": item.item_id, "output_index": item.output_index}
            done = assistant_item(item.item_id, text, "completed" if ok else "incomplete")
            await self.send(server_event("response.output_text.done", **ids, content_index=0, text=text))
            await self.send(
                server_event("response.content_part.done", **ids, content_index=0, part={"type": "text", "text": text})
            )
            await self.send(server_event("response.output_item.done", response_id=response_id,
                                         output_index=item.output_index, item=done))  # fmt: skip
            output.append(done)

        async def on_event(ev: ConductorEvent) -> None:
            nonlocal open_item
            if isinstance(ev, TextDelta):
                if open_item is None or open_item.agent != ev.agent:
                    await close_item(True)
                    open_item = _OpenItem(new_id("item"), len(output), ev.agent)
                    ids = {"response_id": response_id, "output_index": open_item.output_index}
                    await self.send(server_event(
                        "response.output_item.added", **ids, item=assistant_item(open_item.item_id, "", "in_progress")
                    ))  # fmt: skip
                    await self.send(server_event(
                        "response.content_part.added", **ids, item_id=open_item.item_id, content_index=0,
                        part={"type": "text", "text": ""},
                    ))  # fmt: skip
                open_item.text.append(ev.text)
                await self.send(server_event(
                    "response.output_text.delta", response_id=response_id, item_id=open_item.item_id,
                    output_index=open_item.output_index, content_index=0, delta=ev.text,
                ))  # fmt: skip
            elif isinstance(ev, AgentFinished):
                await close_item(ev.ok)
            elif isinstance(ev, HandoffMade) and self.platform_events:
                d = ev.decision
                handoffs.append(d.final_target)
                await self.send(server_event(
                    "switchboard.handoff", response_id=response_id, **{"from": d.source}, to=d.final_target,
                    requested=d.requested_target, reason=d.reason, outcome=d.outcome.value, detail=d.detail,
                    depth=d.depth,
                ))  # fmt: skip

        deadline = time.time() + self.deps.settings.turn_timeout_s
        known = {i.id for i in self.state.history}  # by id: a commit mid-turn may archive the oldest items
        try:
            outcome = await self.deps.conductor.run_turn(self.state, response_id, on_event, deadline=deadline)
        except TurnFailed as exc:
            await close_item(False)
            await self.send(error_event(code="turn_failed", message=str(exc)))
            await self.send(server_event("response.done", response=base | {
                "status": "failed", "output": output, "status_details": {"type": "failed", "reason": "error"},
                "metadata": {"agent": self.state.active_agent, "session_id": self.state.session_id},
            }))  # fmt: skip
            return "failed", None, str(exc)
        except asyncio.CancelledError:
            try:
                await close_item(False)
                await self.send(server_event("response.done", response=base | {
                    "status": "cancelled", "output": output, "status_details": {"type": "cancelled"},
                }))  # fmt: skip
            except Exception:  # the client is already gone
                log.debug("could not report cancellation", exc_info=True)
            raise

        def finish(current: SessionState) -> SessionState:
            if current.archived_items == outcome.state.archived_items and len(current.history) == len(known):
                return outcome.state  # nothing was committed meanwhile
            window = {i.id for i in current.history}
            archived_meanwhile = known - window  # a mid-turn commit moved them to the history stream
            added_meanwhile = [i for i in current.history if i.id not in known]  # the client's, mid-turn
            history = [i for i in outcome.state.history if i.id not in archived_meanwhile] + added_meanwhile
            return outcome.state.model_copy(update={"history": history, "archived_items": current.archived_items})

        try:
            await self._commit(finish)
        except ProtocolError as err:  # not stored: the caller must not be told the turn completed
            await self.send(error_event(err))
            await self.send(server_event("response.done", response=base | {
                "status": "failed", "output": output, "status_details": {"type": "failed", "reason": err.code},
                "metadata": {"agent": self.state.active_agent, "session_id": self.state.session_id},
            }))  # fmt: skip
            return "failed", outcome, err.message
        metadata = {
            "agent": outcome.state.active_agent,
            "agents": ",".join(outcome.agents),
            "handoffs": str(len(outcome.decisions)),
            "handoff_outcomes": ",".join(d.outcome.value for d in outcome.decisions),
            "session_id": outcome.state.session_id,
        }
        if outcome.replica:
            metadata["replica"] = outcome.replica
        state = outcome.state
        metadata["supervisor"] = "no"
        if outcome.consult is not None:
            metadata["supervisor"] = "consulted" if outcome.consult.ok else "failed"
            metadata["consult_ms"] = f"{outcome.consult.ms:.1f}"
            metadata["consult_tokens"] = str(outcome.consult.tokens)
        metadata["routing_rate"] = f"{state.consults / state.turns:.2f}" if state.turns else "0.00"
        self.deps.responses += 1
        usage = outcome.usage
        await self.send(server_event("response.done", response=base | {
            "status": "completed", "output": output, "metadata": metadata,
            "usage": {
                "input_tokens": usage.get("input_tokens", 0), "output_tokens": usage.get("output_tokens", 0),
                "total_tokens": usage.get("input_tokens", 0) + usage.get("output_tokens", 0),
            },
        }))  # fmt: skip
        return "completed", outcome, None
