"""Session state in JetStream KV, written with compare-and-set so two writers cannot both win.

Reads and writes ride out JetStream leader elections (see ``retry``): transient failures are
retried for up to ``StateRetry.budget_s``; a conflict is never retried. The value stays bounded
however long the conversation: ``commit`` moves items past the ``HistoryWindow`` to the history
stream first, as a batch that only the saved state makes part of the conversation (see ``history``).
"""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ..bus.subjects import SESSIONS_BUCKET, check_token
from ..schemas import ConversationItem, SessionState
from .errors import StateError
from .history import HistoryArchive, HistoryWindow, full_history
from .retry import StateRetry, cas_write

log = logging.getLogger(__name__)


class SessionConflict(StateError):
    """Another writer committed this session since it was loaded."""


class SessionStore:
    def __init__(
        self,
        kv: KeyValue,
        retry: StateRetry | None = None,
        *,
        archive: HistoryArchive | None = None,
        window: HistoryWindow | None = None,
    ) -> None:
        self._kv = kv
        self.retry = retry or StateRetry()
        self.archive = archive
        self.window = window or HistoryWindow()

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        *,
        replicas: int = 1,
        history: int = 1,
        retry: StateRetry | None = None,
        window: HistoryWindow | None = None,
    ) -> SessionStore:
        retry = retry or StateRetry()
        archive = await HistoryArchive.open(js, replicas=replicas, retry=retry)

        async def bucket() -> KeyValue:
            try:
                return await js.key_value(SESSIONS_BUCKET)
            except BucketNotFoundError:
                config = KeyValueConfig(bucket=SESSIONS_BUCKET, history=history, replicas=replicas)
                return await js.create_key_value(config)

        return cls(await retry.run("sessions.open", bucket), retry, archive=archive, window=window)

    async def ping(self, timeout_s: float = 1.0) -> None:
        """Raise unless the bucket answers within ``timeout_s`` (one JetStream API request, no retry)."""
        await asyncio.wait_for(self._kv.status(), timeout_s)

    async def load(self, session_id: str) -> tuple[SessionState, int] | None:
        """The session and its revision, or None when there is no such session."""
        key = check_token(session_id, "session id")
        try:
            entry = await self.retry.run("sessions.load", lambda: self._kv.get(key))
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return SessionState.model_validate_json(entry.value), entry.revision or 0

    async def save(self, state: SessionState, revision: int) -> int:
        """Write if nobody else did since ``revision`` (0 = create); return the new revision."""
        data = state.to_bytes()
        try:
            return await cas_write(self._kv, state.session_id, data, revision, self.retry, "sessions.save")
        except KeyWrongLastSequenceError as exc:
            raise SessionConflict(f"session {state.session_id} changed since revision {revision}") from exc

    async def commit(self, state: SessionState, revision: int) -> tuple[SessionState, int]:
        """``save`` after moving what exceeds the history window to the archive; returns the state as
        stored (the window) and its revision. The archived items are one batch after the state's
        ``archive_head``, and the saved state names it: if the save loses its compare-and-set, no stored
        state names the batch and readers never see it (a redo archives a batch of its own)."""
        to_archive, window = self.window.split(state.history)
        if to_archive:
            if self.archive is None:
                raise RuntimeError("this session store has no history archive: open it with SessionStore.open")
            head = await self.archive.append(state.session_id, to_archive, after=state.archive_head)
            archived = state.archived_items + len(to_archive)
            state = state.model_copy(update={"history": window, "archived_items": archived, "archive_head": head})
        return state, await self.save(state, revision)

    async def transcript(self, session_id: str) -> list[ConversationItem]:
        """The whole conversation of a session (archive and window); empty when there is no such session."""
        loaded = await self.load(session_id)
        if loaded is None:
            return []
        if self.archive is None:
            return list(loaded[0].history)
        return await full_history(loaded[0], self.archive)
