"""Supervisor service: the chat-supervisor pattern's reasoning side (N replicas = one queue group)."""

from .service import SupervisorService

__all__ = ["SupervisorService"]
