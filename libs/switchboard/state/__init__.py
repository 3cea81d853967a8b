"""Durable state: sessions in JetStream KV, the handoff audit stream."""

from .audit import AuditLog
from .sessions import SessionConflict, SessionStore

__all__ = ["AuditLog", "SessionConflict", "SessionStore"]
