"""Session state in JetStream KV, written with compare-and-set so two writers cannot both win."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ..bus.subjects import SESSIONS_BUCKET, check_token
from ..schemas import SessionState

log = logging.getLogger(__name__)


class SessionConflict(Exception):
    """Another writer committed this session since it was loaded."""


class SessionStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int = 1, history: int = 1) -> SessionStore:
        try:
            kv = await js.key_value(SESSIONS_BUCKET)
        except BucketNotFoundError:
            kv = await js.create_key_value(KeyValueConfig(bucket=SESSIONS_BUCKET, history=history, replicas=replicas))
        return cls(kv)

    async def load(self, session_id: str) -> tuple[SessionState, int] | None:
        """The session and its revision, or None when there is no such session."""
        try:
            entry = await self._kv.get(check_token(session_id, "session id"))
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return SessionState.model_validate_json(entry.value), entry.revision or 0

    async def save(self, state: SessionState, revision: int) -> int:
        """Write if nobody else did since ``revision`` (0 = create); return the new revision."""
        data = state.to_bytes()
        try:
            if revision == 0:
                return await self._kv.create(state.session_id, data)
            return await self._kv.update(state.session_id, data, last=revision)
        except KeyWrongLastSequenceError as exc:
            raise SessionConflict(f"session {state.session_id} changed since revision {revision}") from exc
