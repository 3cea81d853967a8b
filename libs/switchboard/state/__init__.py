"""Durable state: sessions in JetStream KV, the handoff audit stream, the side-effect ledger, the tools' store."""

from .audit import AuditLog
from .control import ControlAudit
from .errors import StateError
from .history import ArchiveBroken, HistoryArchive, HistoryWindow, full_history
from .ledger import LEDGER_BUCKET, SideEffectLedger, idempotency_key
from .retry import StateRetry, is_transient
from .sessions import SessionConflict, SessionStore
from .store import (
    Collection,
    CorruptDocument,
    Document,
    DocumentExists,
    InvalidId,
    RevisionConflict,
    StoreError,
    ToolStore,
    store_bucket,
    token_for,
)

__all__ = [
    "LEDGER_BUCKET",
    "ArchiveBroken",
    "AuditLog",
    "HistoryArchive",
    "HistoryWindow",
    "Collection",
    "ControlAudit",
    "CorruptDocument",
    "Document",
    "DocumentExists",
    "InvalidId",
    "RevisionConflict",
    "SessionConflict",
    "SessionStore",
    "SideEffectLedger",
    "StateError",
    "StateRetry",
    "StoreError",
    "ToolStore",
    "full_history",
    "idempotency_key",
    "is_transient",
    "store_bucket",
    "token_for",
]
