"""NATS connection, subject names, headers and streaming request/reply."""

from . import headers, subjects
from .connection import Bus
from .errors import BadReply, BusError, BusUnreachable, NoResponders, RemoteError, ReplyTimeout
from .rpc import QueueService, ReplySink, StreamingClient, deadline_of, message_headers, version_error

__all__ = [
    "BadReply",
    "Bus",
    "BusError",
    "BusUnreachable",
    "NoResponders",
    "QueueService",
    "RemoteError",
    "ReplySink",
    "ReplyTimeout",
    "StreamingClient",
    "deadline_of",
    "headers",
    "message_headers",
    "subjects",
    "version_error",
]
