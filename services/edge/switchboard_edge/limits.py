"""Limits the edge enforces: per key (connection rate, open sessions) and per session (duration, turns, audio).

A key's own limits (the key file) win over the edge's defaults (``SWITCHBOARD_KEY_*``,
``SWITCHBOARD_SESSION_*``). Key limits are counted per edge process: with N replicas behind a balancer a
key may reach N times its rate. A session over a cap gets an ``error`` event (``invalid_request_error``,
code ``session_expired``, ``session_turn_limit_reached`` or ``session_audio_limit_reached``) and is
closed with 1008 (policy violation); its committed state stays resumable. So is a session whose key was
revoked with ``--close-sessions`` (``api_key_revoked``), within :data:`REVOCATION_CHECK_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from switchboard.security.api_keys import KeyLimits, KeyRing
from switchboard.settings import Settings

from .client_events import ResponseCreate
from .protocol import error_event
from .session import EdgeSession

log = logging.getLogger(__name__)

LIMIT_CLOSE_CODE = 1008
REVOCATION_CHECK_S = 2.0
"""How often an edge looks for keys revoked with ``close_sessions`` among its open sessions' keys."""


@dataclass(frozen=True)
class Limits:
    """One key's limits, its own or the edge's defaults."""

    connects_per_minute: int
    max_sessions: int
    session_max_s: float
    session_max_turns: int
    session_max_audio_s: float

    @classmethod
    def of(cls, key: KeyLimits, settings: Settings) -> Limits:
        def pick(name: str, default: Any) -> Any:
            value = getattr(key, name)
            return default if value is None else value

        return cls(
            pick("connects_per_minute", settings.key_connects_per_minute),
            pick("max_sessions", settings.key_max_sessions),
            pick("session_max_s", settings.session_max_s),
            pick("session_max_turns", settings.session_max_turns),
            pick("session_max_audio_s", settings.session_max_audio_s),
        )


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class KeyLimiter:
    """Per key: a token bucket of connection attempts (refilled at ``per_minute / 60`` a second, holding at
    most ``per_minute``) and a count of open sessions."""

    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _open: dict[str, int] = field(default_factory=dict)

    def attempt(self, key_id: str, per_minute: int) -> float:
        """Take one attempt: 0 when allowed, else the seconds until the next one is."""
        now = self.clock()
        bucket = self._buckets.setdefault(key_id, _Bucket(float(per_minute), now))
        bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.at) * per_minute / 60)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) * 60 / per_minute

    def open(self, key_id: str, max_sessions: int) -> bool:
        """Count one more open session of ``key_id``; False, counting nothing, when at its limit."""
        if self._open.get(key_id, 0) >= max_sessions:
            return False
        self._open[key_id] = self._open.get(key_id, 0) + 1
        return True

    def close(self, key_id: str) -> None:
        left = self._open.get(key_id, 0) - 1
        if left > 0:
            self._open[key_id] = left
        else:
            self._open.pop(key_id, None)


class CappedSession(EdgeSession):
    """A connection held to its key's session caps: duration, turns (responses) and audio seconds."""

    def __init__(self, *args: Any, limits: Limits, key_id: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.key_id = key_id
        """The API key the session was opened with (or that minted its client secret)."""
        self.turns = 0
        self.audio_s = 0.0
        self._ending: asyncio.Task[None] | None = None

    async def run(self) -> None:
        timer = asyncio.get_running_loop().call_later(
            self.limits.session_max_s, self._end, "session_expired",
            f"the session reached its maximum duration of {self.limits.session_max_s:g} seconds",
        )  # fmt: skip
        try:
            await super().run()
        finally:
            timer.cancel()
            if self._ending is not None:
                await asyncio.gather(self._ending, return_exceptions=True)

    async def _response_create(self, event: ResponseCreate) -> None:
        if self.turns >= self.limits.session_max_turns:
            self._end(
                "session_turn_limit_reached",
                f"the session reached its limit of {self.limits.session_max_turns} responses",
            )  # fmt: skip
            return
        self.turns += 1
        await super()._response_create(event)

    def add_audio_seconds(self, seconds: float) -> None:
        self.audio_s += seconds
        if self.audio_s > self.limits.session_max_audio_s:
            self._end(
                "session_audio_limit_reached",
                f"the session reached its limit of {self.limits.session_max_audio_s:g} seconds of audio",
            )  # fmt: skip

    def _end(self, code: str, message: str) -> None:
        """Send the limit's ``error`` event and close with 1008 (once, whichever limit came first)."""
        if self._ending is not None:
            return
        log.info("session limit reached", extra={"session_id": self.state.session_id, "limit": code})
        error = error_event(code=code, message=message, kind="invalid_request_error")
        self._ending = asyncio.get_running_loop().create_task(self.close(LIMIT_CLOSE_CODE, code, error))


async def end_revoked_sessions(sessions: set[EdgeSession], keys: KeyRing) -> None:
    """Run while the edge serves: end the open sessions whose key was revoked with ``close_sessions``."""
    while True:
        await asyncio.sleep(REVOCATION_CHECK_S)  # a period: the key file is re-read only when it changed
        capped = [s for s in sessions if isinstance(s, CappedSession)]
        if not capped:
            continue
        revoked = keys.sessions_closed({s.key_id for s in capped})
        for session in capped:
            if session.key_id in revoked:
                session._end("api_key_revoked", "the API key of this session was revoked; this connection is closed")
