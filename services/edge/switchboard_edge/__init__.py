"""The realtime edge service: OpenAI Realtime protocol over WebSocket, backed by the conductor."""

from .app import create_app

__all__ = ["create_app"]
