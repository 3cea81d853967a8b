"""The OpenAI Realtime (GA) event protocol at the edge: typed client events, server event builders.

Text and audio turns are served (audio: ``voice.py``); ``output_audio_buffer.clear`` (WebRTC only) is
recognised and answered with a clear ``unsupported_event`` error.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any

import orjson
from pydantic import ValidationError

from switchboard.errors import SwitchboardError

from .client_events import (
    SUPPORTED,
    TAGS,
    ClientEvent,
    ConversationItemCreate,
    ResponseCancel,
    ResponseCreate,
    SessionUpdate,
    client_event_adapter,
)
from .server_events import Error, ErrorBody, ServerEvent

__all__ = [
    "ClientEvent", "ConversationItemCreate", "ProtocolError", "ResponseCancel", "ResponseCreate", "SessionUpdate",
    "assistant_item", "encode_event", "error_event", "field_path", "function_call_item", "new_event_id", "new_id",
    "parse_client_event", "session_config", "user_item",
]  # fmt: skip


KNOWN_UNSUPPORTED = frozenset({"output_audio_buffer.clear"})
"""Realtime client events we know but do not serve (WebRTC/SIP output buffers: this edge speaks WebSocket)."""


class ProtocolError(SwitchboardError):
    """A client event the edge cannot accept; becomes an ``error`` server event."""

    def __init__(self, code: str, message: str, *, param: str | None = None, event_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id


def parse_client_event(raw: str | bytes, max_bytes: int) -> ClientEvent:
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise ProtocolError("event_too_large", f"event of {size} bytes exceeds the limit of {max_bytes} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("invalid_json", f"event is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", "event must be a JSON object")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_event", "event has no string 'type'", param="type", event_id=event_id)
    if kind in KNOWN_UNSUPPORTED:
        raise ProtocolError(
            "unsupported_event",
            f"'{kind}' is for WebRTC/SIP connections; over WebSocket, truncate with conversation.item.truncate",
            event_id=event_id,
        )
    if kind not in SUPPORTED:
        raise ProtocolError(
            "unknown_event", f"unknown event type '{kind}'; supported: {', '.join(SUPPORTED)}",
            param="type", event_id=event_id,
        )  # fmt: skip
    try:
        return client_event_adapter.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = field_path(data, first["loc"][1:])
        code = "unknown_parameter" if first["type"] == "extra_forbidden" else "invalid_event"
        raise ProtocolError(
            code, f"invalid '{kind}' event: {loc or '<event>'}: {first['msg'].removeprefix('Value error, ')}",
            param=loc or None, event_id=event_id,
        ) from None  # fmt: skip


_ID_PREFIX = secrets.token_hex(6)
_ID_COUNTER = itertools.count(1)


def field_path(data: Any, loc: tuple[int | str, ...]) -> str:
    """The field an error is about, as a dotted path into the client's event: steps of pydantic's
    location that are not keys or indexes of the event (union tags, member types) are dropped."""
    path: list[str] = []
    node = data
    for step in loc:
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            node = node[step]
        elif isinstance(node, dict) and isinstance(step, str) and step.isidentifier() and step not in _NOT_FIELDS:
            node = None  # a required field that is missing: name it
        else:
            continue
        path.append(str(step))
    return ".".join(path)


_NOT_FIELDS = TAGS | {"int", "str", "bool", "float", "dict", "list", "none"}


def new_id(prefix: str) -> str:
    """A unique id for an event, item or response: this process's random prefix and a counter
    (no system call per id; ids of two edge processes never collide in practice)."""
    return f"{prefix}_{_ID_PREFIX}{next(_ID_COUNTER):010x}"


def new_event_id() -> str:
    """The ``event_id`` of a server event (each event's TypedDict in ``server_events`` requires one)."""
    return new_id("event")


def encode_event(event: ServerEvent) -> bytes:
    """A server event as the UTF-8 text of one WebSocket frame."""
    return orjson.dumps(event)


def error_event(
    err: ProtocolError | None = None, *, code: str = "", message: str = "", kind: str = "server_error"
) -> Error:
    body: ErrorBody = {
        "type": "invalid_request_error" if err else kind,
        "code": err.code if err else code,
        "message": err.message if err else message,
    }
    if err and err.param:
        body["param"] = err.param
    if err and err.event_id:
        body["event_id"] = err.event_id
    return {"type": "error", "event_id": new_event_id(), "error": body}


def user_item(item_id: str, text: str) -> dict[str, Any]:
    return {
        "id": item_id, "type": "message", "object": "realtime.item", "status": "completed",
        "role": "user", "content": [{"type": "input_text", "text": text}],
    }  # fmt: skip


def assistant_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id, "type": "message", "object": "realtime.item", "status": status,
        "role": "assistant", "content": [{"type": "output_text", "text": text}],
    }  # fmt: skip


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id, "type": "function_call", "object": "realtime.item", "status": status,
        "call_id": call_id, "name": name, "arguments": arguments,
    }  # fmt: skip


def session_config(session_id: str, scenario: str, instructions: str) -> dict[str, Any]:
    return {
        "type": "realtime", "id": session_id, "object": "realtime.session", "model": f"switchboard-{scenario}",
        "output_modalities": ["text"], "instructions": instructions, "tools": [], "tool_choice": "auto",
    }  # fmt: skip
