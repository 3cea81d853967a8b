"""NATS header names carried by every Switchboard message."""

from __future__ import annotations

SCHEMA = "Switchboard-Schema"
"""Schema version of the payload, e.g. ``1.0``; a consumer refuses another major."""
SESSION = "Switchboard-Session"
"""Session id, so a consumer can log and route without parsing the body."""
DEADLINE = "Switchboard-Deadline"
"""Absolute deadline of the work, Unix time in milliseconds."""
TRACEPARENT = "traceparent"
"""W3C trace context."""
