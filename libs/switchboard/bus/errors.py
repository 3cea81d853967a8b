"""Errors of the bus layer; each says whether trying again may help."""

from __future__ import annotations

from ..schemas import ErrorReply


class BusError(Exception):
    """Base of every bus failure."""

    retryable: bool = False


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
