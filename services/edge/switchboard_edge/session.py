"""One client connection: Realtime events in, conductor turns, Realtime events out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from opentelemetry.trace import SpanKind
from starlette.websockets import WebSocket, WebSocketDisconnect

from switchboard.guardrails import Action, Boundary, check
from switchboard.guardrails.moderation import check_moderated
from switchboard.schemas import ConversationItem, MessageItem, SessionState, TurnRecord
from switchboard.settings import Settings
from switchboard.state import AuditLog, SessionConflict, SessionStore
from switchboard.telemetry import current_trace_id, mark_error, metrics, names, span

from . import items
from .client_events import (
    ClientEvent,
    ConversationItemCreate,
    ConversationItemDelete,
    ConversationItemRetrieve,
    ConversationItemTruncate,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    ResponseCancel,
    ResponseCreate,
    ResponseOptions,
    SessionConfig,
    SessionUpdate,
    UserMessage,
)
from .orchestration import (
    Conductor,
    LocalAgent,
    TurnFailed,
    TurnOutcome,
)
from .plans import ClientSettings, ResponsePlan, checked_modalities, plan_response, response_metadata
from .protocol import (
    ProtocolError,
    encode_event,
    error_event,
    new_event_id,
    new_id,
    parse_client_event,
    session_config,
)
from .response import ResponseWriter
from .server_events import (
    Error,
    ServerEvent,
)
from .ws_transport import TEXT_FRAMES, DirectFrames

if TYPE_CHECKING:  # the voice extra is imported only when a session uses audio
    from .audio_turns import AudioTurns
    from .upstream import UpstreamLink

log = logging.getLogger(__name__)

COMMIT_HOLD_S = 0.02
"""The longest a text answer's frames wait for its turn's commit, to leave with ``response.done`` in one write."""

ECHOED_SESSION_FIELDS = {"instructions", "metadata", "tracing", "tool_choice", "max_output_tokens"}
"""``session.update`` fields echoed in ``session.updated`` (acknowledged; agents own instructions and models)."""


@dataclass
class EdgeDeps:
    settings: Settings
    conductor: Conductor
    store: SessionStore
    instructions: str
    active_sessions: dict[tuple[str, str], int] = field(default_factory=dict)
    """Sessions open on this edge, as (tenant, session id) -> their connections (a client may reconnect
    before its old socket closes). ``SWITCHBOARD_MAX_SESSIONS`` caps the sessions, not the connections."""
    responses: dict[str, int] = field(default_factory=dict)
    """Completed responses on this edge, per tenant (the denominator of the tenant's routing rate)."""
    sessions: set[EdgeSession] = field(default_factory=set)
    draining: bool = False
    audit: AuditLog | None = None
    _records: set[asyncio.Task[None]] = field(default_factory=set)

    def admit(self, tenant: str, session_id: str) -> bool:
        """Count one more connection to ``tenant``'s ``session_id`` (another tenant naming the same id opens
        another session); False, counting nothing, if it would open a session beyond the cap. Call
        :meth:`release` when it ends."""
        key = (tenant, session_id)
        if key not in self.active_sessions and len(self.active_sessions) >= self.settings.max_sessions:
            return False
        self.active_sessions[key] = self.active_sessions.get(key, 0) + 1
        metrics().active_sessions.set(len(self.active_sessions))
        return True

    def release(self, tenant: str, session_id: str) -> None:
        """One connection to ``tenant``'s ``session_id`` ended; the session closes with its last connection."""
        key = (tenant, session_id)
        left = self.active_sessions.get(key, 0) - 1
        if left > 0:
            self.active_sessions[key] = left
        else:
            self.active_sessions.pop(key, None)
        metrics().active_sessions.set(len(self.active_sessions))

    def open_of(self, tenant: str) -> tuple[int, int]:
        """``tenant``'s sessions open on this edge and their connections (the edge-wide count of sessions is
        the ``switchboard_active_sessions`` metric)."""
        sessions = sum(1 for owner, _ in self.active_sessions if owner == tenant)
        return sessions, sum(1 for s in self.sessions if s.tenant == tenant)

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


def check_session_config(config: SessionConfig) -> None:
    """Refuse (``ProtocolError``) what :meth:`EdgeSession.apply_session` would refuse of ``config``, without a
    session: a client secret's configuration is checked when it is minted, not when its browser connects."""
    ClientSettings().updated(config)
    modalities = None
    if config.output_modalities is not None:
        modalities = checked_modalities(config.output_modalities, "session.output_modalities")
    if config.audio is not None or modalities == ["audio"]:
        try:
            from .voice import VoiceState
        except ImportError as exc:  # the voice extra is not installed in this image
            raise ProtocolError(
                "voice_model_unavailable", f"this edge has no speech support installed: {exc}"
            ) from None
        VoiceState().apply(config.audio or {})


def new_audio_turns(session: EdgeSession) -> AudioTurns:
    try:
        from .audio_turns import AudioTurns
    except ImportError as exc:  # the voice extra is not installed in this image
        raise ProtocolError("voice_model_unavailable", f"this edge has no speech support installed: {exc}") from None
    return AudioTurns(session)


class EdgeSession:
    def __init__(
        self, ws: WebSocket, deps: EdgeDeps, state: SessionState, revision: int, resumed: bool,
        platform_events: bool = False, tenant: str = "",
    ):  # fmt: skip
        self.ws = ws
        self.tenant = tenant
        """The tenant of the API key that opened this connection: its figures count this session's."""
        self.platform_events = platform_events
        """Send ``switchboard.*`` events (opt-in: standard clients such as the Agents SDK reject unknown events)."""
        self._closed = False
        self.deps = deps
        self.state = state
        self.revision = revision
        self.resumed = resumed
        self._send_lock = asyncio.Lock()
        self._slow_sends = 0
        """Sends on the ASGI path not finished yet: while any is, later events queue behind it (order kept)."""
        self._frames: DirectFrames | None = ws.scope.get("extensions", {}).get(TEXT_FRAMES)
        self._commit_lock = asyncio.Lock()
        self._response: asyncio.Task[None] | None = None
        self._writer: ResponseWriter | None = None
        self._seen_after_done = False
        """A client event arrived after the last response ended (a later cancel cannot be meant for it)."""
        self._committing = False
        """True while the response in flight commits its turn: a client's cancel must not cut it."""
        self._turn_commit: asyncio.Future[None] | None = None
        """That commit, while it is in flight (see ``_shielded_commit``)."""
        self._unsaved = False
        """``self.state`` holds staged changes (a client's items) that the session KV has not stored yet."""
        self._save_timer: asyncio.TimerHandle | None = None
        self._saves: set[asyncio.Task[None]] = set()
        self._archived_ids: set[str] | None = None
        """Ids of the session's archived items, read from the archive the first time a client names an item id
        of its own (ids are unique in the whole conversation), then kept current by this connection's commits."""
        self.client = ClientSettings()
        """What the client's ``session.update`` set for this connection (tools, tool choice, token cap)."""
        self._config = session_config(state.session_id, state.scenario, deps.instructions)
        self._failed_tracks: dict[str, str] = {}
        """Tracks that served a turn that failed (a completed turn's are on its outcome)."""
        self.modalities = ["text"]
        """The session's ``output_modalities``: ``["audio"]`` speaks every response."""
        self.audio: AudioTurns | None = None
        """Set once the session uses audio (``session.update`` audio fields); None for text-only sessions."""
        self.pending_input: asyncio.Task[None] | None = None
        """The caller's latest spoken item while it is transcribed; a response waits for it."""
        self.upstream: UpstreamLink | None = None
        """The link to the OpenAI Realtime API when the scenario's front agent runs there (upstream mode)."""
        self.local_agents: dict[str, LocalAgent] = {}
        """Agents answered inside the edge for this session (the upstream agent), by name."""
        if any(a.upstream for a in deps.conductor.scenario.agents):
            from .upstream import upstream_for  # imported only by sessions of an upstream scenario

            found = upstream_for(self)
            if found is not None:
                self.upstream, self.local_agents = found

    async def send(self, event: ServerEvent) -> None:
        data = encode_event(event)
        if not self._slow_sends and self._frames is not None and self._frames.text(data):
            return  # written as a frame directly (see ``ws_transport``)
        self._slow_sends += 1
        try:
            async with self._send_lock:
                await self.ws.send_text(data.decode())
        finally:
            self._slow_sends -= 1

    async def run(self) -> None:
        await self.send({"type": "session.created", "event_id": new_event_id(), "session": self._config})
        if self.platform_events:
            await self.send(
                {
                    "type": "switchboard.session", "event_id": new_event_id(), "session_id": self.state.session_id,
                    "resumed": self.resumed, "active_agent": self.state.active_agent,
                    "history_items": self.state.archived_items + len(self.state.history),
                }
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
            await self.save()  # before the connection's hold ends: a takeover loads what it stored
            if self.audio is not None:
                await self.audio.aclose()
            if self.upstream is not None:
                await self.upstream.aclose()

    async def drain(self, grace_s: float) -> None:
        """Finish the response in flight (up to ``grace_s``), tell the client to reconnect, close (1012).

        The session is committed in KV, so the client resumes on any other edge with its history.
        """
        task = self._response
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=grace_s)
        await self.save()
        try:
            if self.platform_events:
                await self.send({
                    "type": "switchboard.reconnect", "event_id": new_event_id(), "reason": "edge draining",
                    "session_id": self.state.session_id,
                })  # fmt: skip
            await self.ws.close(code=1012, reason="edge draining; reconnect with session_id")
        except Exception:  # the client is already gone
            log.debug("drain: client already gone", exc_info=True)

    async def close(self, code: int, reason: str, error: Error | None = None) -> None:
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
        event: ClientEvent | None = None
        try:
            event = parse_client_event(raw, self.deps.settings.max_event_bytes)
            if self._writer is not None and self._writer.done and not isinstance(event, ResponseCancel):
                self._seen_after_done = True
            if isinstance(event, SessionUpdate):
                await self._session_update(event)
            elif isinstance(event, ConversationItemCreate):
                await self._item_create(event)
            elif isinstance(event, ConversationItemRetrieve):
                item = self.state.history[items.find(self.state.history, event.item_id)]
                await self.send({
                    "type": "conversation.item.retrieved", "event_id": new_event_id(), "item": items.to_realtime(item)
                })  # fmt: skip
            elif isinstance(event, ConversationItemDelete):
                await self._item_delete(event)
            elif isinstance(event, ConversationItemTruncate):
                await self._item_truncate(event)
            elif isinstance(event, ResponseCreate):
                await self._response_create(event)
            elif isinstance(event, ResponseCancel):
                await self._response_cancel(event)
            elif isinstance(event, InputAudioBufferAppend | InputAudioBufferCommit | InputAudioBufferClear):
                await self.voice().on_buffer_event(event)
        except ProtocolError as err:
            if err.event_id is None and event is not None:
                err.event_id = event.event_id
            await self.send(error_event(err))

    async def _response_cancel(self, event: ResponseCancel) -> None:
        writer = self._writer
        running = writer is not None and not writer.done and self._response is not None
        if running and event.response_id and writer is not None and event.response_id != writer.response_id:
            raise ProtocolError(
                "response_cancel_not_active", f"response {event.response_id!r} is not in progress",
                param="response_id", event_id=event.event_id,
            )  # fmt: skip
        if await self._cancel_response():
            self._seen_after_done = True  # that cancel is answered by this response's response.done
            return
        if self._writer is not None and self._writer.done and not self._seen_after_done:
            # It crossed that response's response.done on the wire: the client could not know it had ended.
            self._seen_after_done = True
            return
        raise ProtocolError(
                "response_cancel_not_active", "Cancellation failed: no active response found",
                event_id=event.event_id,
            )  # fmt: skip

    def voice(self) -> AudioTurns:
        """The session's audio; a text-only session (no audio configured yet) refuses audio clearly."""
        if self.audio is None:
            raise ProtocolError(
                "audio_not_enabled", "this session is text-only: enable audio first with session.update "
                "(session.audio.input.format / turn_detection, or output_modalities ['audio'])",
            )  # fmt: skip
        return self.audio

    async def _session_update(self, event: SessionUpdate) -> None:
        self.apply_session(event.session)
        await self.send({"type": "session.updated", "event_id": new_event_id(), "session": self._config})

    def apply_session(self, session: SessionConfig) -> None:
        """Take a session configuration (a ``session.update``'s, or a client secret's at connect).

        Agents own their instructions and models: these are acknowledged and echoed. Client function
        tools are kept for this connection and offered to the active agent's model at every response.
        """
        client = self.client.updated(session)  # checked before anything changes
        update = session.model_dump(exclude_unset=True, include=ECHOED_SESSION_FIELDS)
        if session.audio is not None or session.output_modalities is not None:
            asked = self.modalities if session.output_modalities is None else session.output_modalities
            modalities = checked_modalities(asked, "session.output_modalities")  # [] too, as response.create
            if session.audio is not None or modalities == ["audio"] or self.audio is not None:
                audio = self.audio or new_audio_turns(self)
                audio.config.apply(session.audio or {})  # checked whole before anything changes
                self.audio = audio
                update["audio"] = audio.config.echo()
                if modalities == ["audio"]:
                    audio.preload()
                if self.upstream is not None:  # connect now (or send the new settings): it hears the caller
                    self.upstream.start()
            self.modalities = modalities
            update["output_modalities"] = modalities
        self.client = client
        if session.tools is not None:
            update["tools"] = [t.model_dump(exclude_none=True) for t in session.tools]
        self._config = self._config | update

    def add_audio_seconds(self, seconds: float) -> None:
        """Hook for the voice path: count audio this connection sent or received (the edge's session
        limits override it to enforce ``session_max_audio_s``)."""

    async def _item_create(self, event: ConversationItemCreate) -> None:
        item_id = event.item.id or new_id("item")
        if event.item.id and await self._id_taken(item_id):
            raise ProtocolError("item_id_exists", f"an item with id {item_id!r} already exists", param="item.id")
        scenario = self.deps.conductor.scenario
        text: str | None = None
        to_fallback = False
        spoken = isinstance(event.item, UserMessage) and bool(event.item.audio)
        if isinstance(event.item, UserMessage) and event.item.role == "user":
            said = await self.voice().transcribe_parts(event.item) if spoken else event.item.text
            text, to_fallback = await self.screen(said)
        item = items.from_client(event.item, item_id, text)
        items.position(self.state.history, event.previous_item_id, self.state.archived_items)  # fail early
        previous: str | None = None

        def add(current: SessionState) -> SessionState:
            nonlocal previous
            at = items.position(current.history, event.previous_item_id, current.archived_items)
            previous = items.previous_id(current.history, at)
            update: dict[str, object] = {"history": [*current.history[:at], item, *current.history[at:]]}
            if to_fallback:
                update["active_agent"] = scenario.fallback_agent
            return current.model_copy(update=update)

        await self._stage(add)
        payload = items.to_realtime(item)
        if spoken:
            payload["content"] = [{"type": "input_audio", "transcript": text}]
        await self.send({
            "type": "conversation.item.added", "event_id": new_event_id(), "previous_item_id": previous, "item": payload
        })  # fmt: skip
        await self.send({
            "type": "conversation.item.done", "event_id": new_event_id(), "previous_item_id": previous, "item": payload
        })  # fmt: skip

    async def _id_taken(self, item_id: str) -> bool:
        """Whether an item of the conversation, in the window or archived, has ``item_id``: a second one would
        be acknowledged and then shown twice in the transcript, or lost from it (a session archived before
        schema 1.4 is read one item per id)."""
        if any(i.id == item_id for i in self.state.history):
            return True
        archive = self.deps.store.archive
        if not self.state.archived_items or archive is None:
            return False
        if self._archived_ids is None:
            head, count = self.state.archive_head, self.state.archived_items
            self._archived_ids = {i.id for i in await archive.read(self.state.session_id, head=head, count=count)}
        return item_id in self._archived_ids

    async def _screened(self, plan: ResponsePlan) -> ResponsePlan:
        """A response's own ``input`` through the input guardrails, as the conversation's items went: the caller's
        messages redacted, a blocked one refusing the response, a fallback rule handing it to the fallback agent."""
        given: list[ConversationItem] = []
        to_fallback = False
        for i, item in enumerate(plan.input or ()):
            if isinstance(item, MessageItem) and item.role == "user":
                try:
                    text, fallback = await self.screen(item.text)
                except ProtocolError as err:
                    err.param = f"response.input.{i}.content"
                    raise
                to_fallback = to_fallback or fallback
                item = item if text == item.text else item.model_copy(update={"text": text})
            given.append(item)
        agent = self.deps.conductor.scenario.fallback_agent if to_fallback else None
        return replace(plan, input=given, agent=agent)

    async def screen(self, text: str) -> tuple[str, bool]:
        """The caller's words through the input guardrails (and the moderation model, when one is
        configured): the text to store (redacted) and whether the fallback agent takes over; a blocked
        message is refused. Pattern rules alone stay synchronous: no added cost without a moderator."""
        rules, moderator = self.deps.conductor.scenario.guardrails.at(Boundary.INPUT), self.deps.conductor.moderator
        verdict = await check_moderated(rules, text, moderator) if moderator else check(rules, text)
        if verdict.blocked:
            raise ProtocolError(
                "guardrail_blocked", f"the message was refused by guardrail {verdict.rules[0]!r}",
                param="item.content",
            )  # fmt: skip
        return verdict.text, verdict.action is Action.FALLBACK

    async def _item_delete(self, event: ConversationItemDelete) -> None:
        items.find(self.state.history, event.item_id)  # not found: an error, nothing committed

        def delete(current: SessionState) -> SessionState:
            at = items.find(current.history, event.item_id)
            return current.model_copy(update={"history": [*current.history[:at], *current.history[at + 1 :]]})

        await self._commit(delete)
        await self.send({"type": "conversation.item.deleted", "event_id": new_event_id(), "item_id": event.item_id})

    async def _item_truncate(self, event: ConversationItemTruncate) -> None:
        """GA truncation cuts an assistant item's audio at ``audio_end_ms`` (what the caller heard). Text
        items have no audio: the item is checked and acknowledged, its text kept (voice will cut it)."""
        item = self.state.history[items.find(self.state.history, event.item_id)]
        if not items.is_assistant_message(item):
            raise ProtocolError("invalid_value", "only assistant message items can be truncated", param="item_id")
        if event.content_index != 0:
            raise ProtocolError("invalid_value", "the item has one content part (index 0)", param="content_index")
        if self.audio is not None and await self.audio.truncate(event.item_id, event.audio_end_ms):
            return  # a spoken item: its stored text is cut to the words heard
        await self.send({
            "type": "conversation.item.truncated", "event_id": new_event_id(), "item_id": event.item_id,
            "content_index": 0, "audio_end_ms": event.audio_end_ms,
        })  # fmt: skip

    async def _stage(self, change: Callable[[SessionState], SessionState]) -> None:
        """Apply ``change`` now; the session KV stores it with the next commit (a response's, usually
        within milliseconds), or ``item_save_ms`` from now. One change at a time is staged, and only while
        the window has room: a second one, or one that would make the window archive, is stored at once
        (with the first), so what a turn request carries stays within the window's bounds."""
        delay_ms = self.deps.settings.item_save_ms
        if delay_ms <= 0 or self._unsaved or len(self.state.history) >= self.deps.store.window.max_items:
            await self._commit(change)
            return
        async with self._commit_lock:
            self.state = change(self.state)
            self._unsaved = True
        if self._save_timer is None:
            self._save_timer = asyncio.get_running_loop().call_later(delay_ms / 1000, self._save_due)

    def _save_due(self) -> None:
        self._save_timer = None
        task = asyncio.create_task(self.save())
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)

    async def save(self) -> None:
        """Store staged changes that no commit has stored yet. When another connection changed the session
        meanwhile, they are lost and the client is told (``session_conflict``)."""
        if not self._unsaved:
            return
        try:
            await self._commit(lambda state: state)
        except ProtocolError as err:
            try:
                await self.send(error_event(err))
            except Exception:  # the client is already gone
                log.debug("save: client already gone", exc_info=True)

    async def _commit(self, change: Callable[[SessionState], SessionState]) -> None:
        """Apply ``change`` to the current state and save it, with any staged change; commits of one
        connection never interleave."""
        async with self._commit_lock:
            if self._save_timer is not None:
                self._save_timer.cancel()
                self._save_timer = None
            state = change(self.state).model_copy(update={"updated_at": time.time()})
            try:
                stored, self.revision = await self.deps.store.commit(state, self.revision)
            except SessionConflict:
                self._unsaved = False  # staged changes are lost with the rest: the error says so
                self._archived_ids = None  # the other writer may have archived items: read again when asked
                loaded = await self.deps.store.load(self.state.session_id)
                if loaded is not None:
                    self.state, self.revision = loaded
                raise ProtocolError(
                    "session_conflict", "the session was changed by another connection; state reloaded, retry"
                ) from None
            if self._archived_ids is not None and stored.archived_items != state.archived_items:
                kept = {i.id for i in stored.history}
                self._archived_ids.update(i.id for i in state.history if i.id not in kept)
            self.state = stored
            self._unsaved = False

    async def _response_create(self, event: ResponseCreate) -> None:
        await self.start_response(event.response or ResponseOptions(), event.event_id)

    async def start_response(self, options: ResponseOptions, event_id: str | None = None) -> None:
        """A response: the client's ``response.create``, or server VAD's at the end of the caller's speech."""
        if self._response is not None and not self._response.done():
            raise ProtocolError(
                "conversation_already_has_active_response",
                f"response {self._writer.response_id if self._writer else ''} is still in progress",
                event_id=event_id,
            )  # fmt: skip
        plan = plan_response(options, self.client)
        if plan.input is not None:
            plan = await self._screened(plan)
        previous = self.state.history[-1].id if self.state.history else None
        kwargs: dict[str, Any] = {
            "platform_events": self.platform_events, "previous_item_id": previous, "metadata": plan.metadata,
            "in_conversation": not plan.out_of_band,
        }  # fmt: skip
        if (plan.modalities or self.modalities) == ["audio"]:
            audio = self.audio or new_audio_turns(self)
            self.audio = audio
            writer = await audio.writer(new_id("resp"), **kwargs)
        else:
            writer = ResponseWriter(self.send, new_id("resp"), **kwargs)
        self._writer, self._seen_after_done = writer, False
        await writer.start()  # response.created before anything can cancel it
        self._response = asyncio.create_task(self._respond(writer, plan))
        if self.audio is not None:  # server VAD's idle timeout counts from the end of this response
            self.audio.on_response(self._response, writer)

    async def _cancel_response(self, reason: str = "client_cancelled") -> bool:
        """Stop the response in flight, if any, and wait until it has sent its ``response.done``.

        A response that is committing its turn is not interrupted: the commit is shielded and the
        response ends with the status it reaches. Returns False when nothing was running.
        """
        task, writer = self._response, self._writer
        if task is None or writer is None or task.done():
            return False
        running = not writer.done
        writer.cancel_reason = reason
        if not self._committing:
            task.cancel()
        elif type(writer) is not ResponseWriter and self._turn_commit is not None:
            await asyncio.wait([self._turn_commit])  # a spoken answer would speak on for seconds: once its turn
            task.cancel()  # is stored, it stops (a text answer is all sent by then, and completes)
        await asyncio.gather(task, return_exceptions=True)
        await writer.cancelled()  # a task cancelled before it ran never reached its own finally
        return running

    async def _respond(self, writer: ResponseWriter, plan: ResponsePlan) -> None:
        """One response, traced as the root span of the caller turn, then recorded for the audit timeline."""
        started = time.perf_counter()
        response_id = writer.response_id
        attrs = {names.SESSION_ID: self.state.session_id, names.RESPONSE_ID: response_id}
        outcome, error = None, None
        with span(names.SPAN_EDGE_RESPONSE, attrs, kind=SpanKind.SERVER) as sp:
            trace_id = current_trace_id()
            try:
                outcome, error = await self._run_response(writer, plan)
                if error:
                    mark_error(sp, "turn_failed")
            except Exception as exc:  # a bug, not a cancel: the response still ends, as failed
                log.exception("response failed", extra={"session_id": self.state.session_id})
                error = f"{type(exc).__name__}: {exc}"
                mark_error(sp, "internal_error")
                meta = {"agent": self.state.active_agent, "session_id": self.state.session_id}
                await writer.failed("internal_error", "the response failed inside the edge", meta)
            finally:
                await writer.cancelled()  # whatever stopped it, the response ends with its response.done
                latency = time.perf_counter() - started
                consult = outcome.consult if outcome else None
                metrics().record_response(latency, consulted=consult is not None)
                record = TurnRecord(
                    session_id=self.state.session_id, response_id=response_id, status=writer.status or "cancelled",
                    agents=outcome.agents if outcome else [], agent=self.state.active_agent,
                    latency_ms=latency * 1000, handoffs=len(outcome.decisions) if outcome else 0,
                    retries=outcome.retries if outcome else 0, consulted=consult is not None,
                    consult_outcome=consult.outcome if consult else None,
                    consult_ms=consult.ms if consult else None, error=error, trace_id=trace_id, ts=time.time(),
                    tracks=outcome.tracks if outcome else self._failed_tracks,
                )  # fmt: skip
                self.deps.record_turn(record)

    async def _run_response(self, writer: ResponseWriter, plan: ResponsePlan) -> tuple[TurnOutcome | None, str | None]:
        pending = self.pending_input
        if pending is not None and not pending.done():  # the caller's spoken words join the conversation first
            await asyncio.wait([pending])
            writer.follows(self.state.history[-1].id if self.state.history else None)
        deadline = time.time() + self.deps.settings.turn_timeout_s
        base = items.TurnBase(self.state.history)
        failed_meta = {"agent": self.state.active_agent, "session_id": self.state.session_id}
        state = self.state
        if plan.input is not None:
            update: dict[str, object] = {"history": plan.input}
            if plan.agent is not None:
                update["active_agent"] = plan.agent
            state = state.model_copy(update=update)
        try:
            outcome = await self.deps.conductor.run_turn(
                state, writer.response_id, writer.on_event, deadline=deadline, tenant=self.tenant,
                options=plan.options, local=self.local_agents,
            )  # fmt: skip
        except TurnFailed as exc:
            self._failed_tracks = exc.tracks
            await writer.failed("turn_failed", str(exc), failed_meta)
            return None, str(exc)
        try:
            return await self._settle(writer, plan, outcome, base, failed_meta)
        finally:  # the handoffs happened whatever the commit did; logged and audited once the answer is out
            self.deps.conductor.record(outcome.decisions)

    async def _settle(
        self, writer: ResponseWriter, plan: ResponsePlan, outcome: TurnOutcome, base: items.TurnBase,
        failed_meta: dict[str, str],
    ) -> tuple[TurnOutcome, str | None]:  # fmt: skip
        """Commit the turn's outcome (``base``: the history it started from) and complete the response."""
        if plan.input is not None:  # the turn ran on the client's input: only what it produced joins the session
            given = {i.id for i in plan.input}
            produced = [i for i in outcome.state.history if i.id not in given]
        else:
            produced = [outcome.state.history[i] for i in base.added(outcome.state.history)]
        produced = items.adopt_ids(produced, writer.message_ids())

        def finish(current: SessionState) -> SessionState:
            history = items.merged(current.history, base, produced)
            archive = {"archived_items": current.archived_items, "archive_head": current.archive_head}
            return outcome.state.model_copy(update={"history": history, **archive})

        with self._held_frames(writer):  # the answer's frames and response.done leave in one write
            try:
                if not plan.out_of_band:  # conversation "none": nothing is committed, the session is as it was
                    await self._shielded_commit(finish)
            except ProtocolError as err:  # not stored: the caller must not be told the turn completed
                await writer.failed(err.code, err.message, failed_meta, client_error=True)
                return outcome, err.message
            self.deps.responses[self.tenant] = self.deps.responses.get(self.tenant, 0) + 1
            call = outcome.client_call
            if call is not None:  # committed with the turn: the client runs it and answers with its output
                await writer.function_call(call.id, call.call_id, call.name, call.arguments)
            await writer.completed(response_metadata(outcome), outcome.usage, plan.options.max_output_tokens)
        return outcome, None

    def _held_frames(self, writer: ResponseWriter) -> AbstractContextManager[object]:
        """Hold a text response's frames while its turn commits (see ``ws_transport``), at most
        ``COMMIT_HOLD_S``; a spoken response's audio is never held."""
        if self._frames is None or type(writer) is not ResponseWriter:
            return nullcontext()
        return cast(AbstractContextManager[object], self._frames.held(COMMIT_HOLD_S))

    async def _shielded_commit(self, change: Callable[[SessionState], SessionState]) -> None:
        """Commit the turn so that no cancel cuts it in half: a cancel arriving meanwhile waits for it.

        ``_committing`` tells a client's cancel not to interrupt; a cancel from elsewhere (a disconnect,
        shutdown) still cannot stop the shielded write, and is re-raised once the write has landed.
        """
        self._committing = True
        commit = self._turn_commit = asyncio.ensure_future(self._commit(change))
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            await asyncio.gather(commit, return_exceptions=True)  # the write lands (or fails) whole
            raise
        finally:
            self._committing, self._turn_commit = False, None
