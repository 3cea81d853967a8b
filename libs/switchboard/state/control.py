"""The control-plane audit stream: who created or revoked a key, who moved a rollout, and when."""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from collections.abc import Mapping

from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import NotFoundError

from ..bus.subjects import CONTROL_STREAM, CONTROL_SUBJECTS, control_action
from ..schemas import ControlAction, ControlRecord
from .retry import StateRetry
from .streams import ensure_stream


def actor() -> str:
    """Who is acting: ``SWITCHBOARD_ACTOR`` when set (CI, an operator's name), else ``user@host``."""
    return os.environ.get("SWITCHBOARD_ACTOR", "").strip() or f"{getpass.getuser()}@{socket.gethostname()}"


class ControlAudit:
    def __init__(self, js: JetStreamContext, retry: StateRetry | None = None) -> None:
        self._js = js
        self.retry = retry or StateRetry()

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int = 1) -> ControlAudit:
        audit = cls(js)
        await ensure_stream(js, CONTROL_STREAM, CONTROL_SUBJECTS, replicas=replicas, retry=audit.retry)
        return audit

    async def record(
        self,
        action: ControlAction,
        target: str,
        details: Mapping[str, str | int | float | bool | None] | None = None,
        *,
        by: str | None = None,
    ) -> ControlRecord:
        """Append one change and wait for the stream's ack (one record even if an ack was lost and retried).
        ``by`` names the actor when it is not this process's user (see :func:`actor`)."""
        entry = ControlRecord(
            action=action, actor=by or actor(), target=target, details=dict(details or {}), ts=time.time()
        )  # fmt: skip
        headers = {Header.MSG_ID.value: f"control-{uuid.uuid4().hex}"}
        subject, data = control_action(action), entry.to_bytes()
        await self.retry.run("control.append", lambda: self._js.publish(subject, data, headers=headers))
        return entry

    async def read(self, *, timeout_s: float = 2.0) -> list[ControlRecord]:
        """Every control-plane record, oldest first (empty when no change was ever recorded)."""
        try:
            info = await self._js.stream_info(CONTROL_STREAM)
        except NotFoundError:
            return []
        out: list[ControlRecord] = []
        if info.state.messages == 0:
            return out
        sub = await self._js.subscribe(CONTROL_SUBJECTS, ordered_consumer=True, stream=CONTROL_STREAM)
        try:
            while len(out) < info.state.messages:
                msg = await sub.next_msg(timeout=timeout_s)
                out.append(ControlRecord.model_validate_json(msg.data))
        finally:
            await sub.unsubscribe()
        return out
