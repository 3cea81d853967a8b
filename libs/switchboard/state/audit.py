"""The durable handoff audit stream (JetStream)."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Annotated

from nats.js import JetStreamContext
from nats.js.api import Header
from pydantic import Field, TypeAdapter

from ..bus.rpc import message_headers
from ..bus.subjects import AUDIT_STREAM, AUDIT_SUBJECTS, audit_handoff, audit_session, audit_turn
from ..schemas import HandoffDecision, TurnRecord
from .retry import StateRetry
from .streams import ensure_stream

log = logging.getLogger(__name__)

AuditRecord = Annotated[HandoffDecision | TurnRecord, Field(discriminator="type")]
audit_record_adapter: TypeAdapter[AuditRecord] = TypeAdapter(AuditRecord)


class AuditLog:
    def __init__(self, js: JetStreamContext, retry: StateRetry | None = None) -> None:
        self._js = js
        self.retry = retry or StateRetry()

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int = 1, retry: StateRetry | None = None) -> AuditLog:
        retry = retry or StateRetry()

        await ensure_stream(js, AUDIT_STREAM, AUDIT_SUBJECTS, replicas=replicas, retry=retry)
        return cls(js, retry)

    async def append(self, decision: HandoffDecision) -> None:
        """Publish and wait for the stream's ack, so an acknowledged decision is durable.

        Transient failures (a leader election) are retried; every attempt carries the same
        ``Nats-Msg-Id``, so the stream keeps one record even when an attempt's ack was lost.
        """
        headers = message_headers(decision.session_id) | {Header.MSG_ID.value: f"audit-{uuid.uuid4().hex}"}
        subject, data = audit_handoff(decision.session_id), decision.to_bytes()
        await self.retry.run("audit.append", lambda: self._js.publish(subject, data, headers=headers))

    async def append_turn(self, record: TurnRecord) -> None:
        """Publish one turn record (same durability and retry rules as decisions)."""
        headers = message_headers(record.session_id) | {Header.MSG_ID.value: f"audit-{uuid.uuid4().hex}"}
        subject, data = audit_turn(record.session_id), record.to_bytes()
        await self.retry.run("audit.append", lambda: self._js.publish(subject, data, headers=headers))

    async def read_session(self, session_id: str, *, timeout_s: float = 2.0) -> list[HandoffDecision]:
        """Every handoff decision recorded for a session, oldest first."""
        records = await self.read_timeline(session_id, timeout_s=timeout_s)
        return [r for r in records if isinstance(r, HandoffDecision)]

    async def read_timeline(self, session_id: str, *, timeout_s: float = 2.0) -> list[AuditRecord]:
        """Every audit record of a session (turns and handoff decisions) in the order they were stored.

        Retried from the start on transient errors (an election; an ordered consumer needs a meta leader).
        """
        retry = dataclasses.replace(self.retry, attempt_timeout_s=max(self.retry.attempt_timeout_s, 15 * timeout_s))
        return await retry.run("audit.read", lambda: self._read_timeline(session_id, timeout_s))

    async def _read_timeline(self, session_id: str, timeout_s: float) -> list[AuditRecord]:
        subject = audit_session(session_id)
        out: list[AuditRecord] = []
        info = await self._js.stream_info(AUDIT_STREAM, subjects_filter=subject)
        expected = sum((info.state.subjects or {}).values())
        if expected == 0:
            return out
        sub = await self._js.subscribe(subject, ordered_consumer=True, stream=AUDIT_STREAM)
        try:
            while len(out) < expected:
                msg = await sub.next_msg(timeout=timeout_s)
                out.append(audit_record_adapter.validate_json(msg.data))
        finally:
            await sub.unsubscribe()
        return out
