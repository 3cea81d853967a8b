"""The durable handoff audit stream (JetStream)."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from ..bus.rpc import message_headers
from ..bus.subjects import AUDIT_STREAM, AUDIT_SUBJECTS, audit_handoff
from ..schemas import HandoffDecision

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int = 1) -> AuditLog:
        try:
            await js.stream_info(AUDIT_STREAM)
        except NotFoundError:
            await js.add_stream(StreamConfig(name=AUDIT_STREAM, subjects=[AUDIT_SUBJECTS], num_replicas=replicas))
        return cls(js)

    async def append(self, decision: HandoffDecision) -> None:
        """Publish and wait for the stream's ack, so an acknowledged decision is durable."""
        await self._js.publish(
            audit_handoff(decision.session_id), decision.to_bytes(), headers=message_headers(decision.session_id)
        )

    async def read_session(self, session_id: str, *, timeout_s: float = 2.0) -> list[HandoffDecision]:
        """Every decision recorded for a session, oldest first."""
        subject = audit_handoff(session_id)
        out: list[HandoffDecision] = []
        sub = await self._js.subscribe(subject, ordered_consumer=True, stream=AUDIT_STREAM)
        try:
            info = await self._js.stream_info(AUDIT_STREAM, subjects_filter=subject)
            expected = (info.state.subjects or {}).get(subject, 0)
            while len(out) < expected:
                msg = await sub.next_msg(timeout=timeout_s)
                out.append(HandoffDecision.model_validate_json(msg.data))
        finally:
            await sub.unsubscribe()
        return out
