"""Errors of the bus layer; each says whether trying again may help."""

from __future__ import annotations

from ..errors import SwitchboardError
from ..schemas import ErrorCode, ErrorReply


class BusError(SwitchboardError):
    """Base of every bus failure. ``local`` is set when the failure came from this process's own
    connection (a reconnect), not from the responder."""


class BusUnreachable(BusError):
    """A command could not connect to NATS in time: no server answers, or it refuses the credentials."""


class NoResponders(BusError):
    """Nobody subscribes to the subject (no replica of the agent is running)."""

    retryable = True


class ReplyTimeout(BusError):
    """The responder did not finish before the deadline."""

    retryable = True


class BadReply(BusError):
    """A reply could not be parsed."""


class RemoteError(BusError):
    """The responder answered with a typed ``ErrorReply``."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(f"{reply.code}: {reply.message}")
        self.reply = reply
        self.retryable = reply.retryable
        self.backpressure = reply.code == ErrorCode.BUSY
