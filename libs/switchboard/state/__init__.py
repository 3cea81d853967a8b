"""Durable state: sessions in JetStream KV, the handoff audit stream."""

from .audit import AuditLog
from .ledger import LEDGER_BUCKET, SideEffectLedger, idempotency_key
from .retry import StateRetry, is_transient
from .sessions import SessionConflict, SessionStore

__all__ = [
    "LEDGER_BUCKET",
    "AuditLog",
    "SideEffectLedger",
    "SessionConflict",
    "SessionStore",
    "StateRetry",
    "idempotency_key",
    "is_transient",
]
