"""One live connection per session: the newer connection takes over, on this edge or on any other.

The rule: when a client connects with ``?session_id=<id>`` while another connection holds that session,
the older connection's response in flight is cancelled (it still ends with ``response.done``), it gets an
``error`` event with code ``session_taken_over``, and it is closed with WebSocket code
:data:`TAKEOVER_CLOSE_CODE`. Only then does the newer connection load the session and get its
``session.created``: no work is done by a connection that is about to lose.

Across edges: the edge holding a connection listens on ``switchboard.v1.edge.session.<id>.takeover``
(:func:`switchboard.bus.subjects.session_takeover`); a newer connection on another edge sends a request
there and waits for the reply, sent once the old connection is closed. No responders means nobody holds
the session. A request without Switchboard's headers is ignored: only edges may publish there, but an agent
may name the subject as the reply of a write to its ledger, and JetStream's acknowledgement (no headers)
would otherwise close a session the agent knows the id of.

Connections to one session arriving together on one edge claim one after the other (:meth:`Takeovers.arriving`),
so the last one holds the session. Two arriving in the same instant on two different edges are not ordered: both
can hold it until the next takeover, and their writes then meet as ``session_conflict`` (reported, never silent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from switchboard.bus import message_headers, subjects, version_error

log = logging.getLogger(__name__)

TAKEOVER_CLOSE_CODE = 4409
"""WebSocket close code of a connection that lost its session to a newer one (4409: like HTTP 409)."""
TAKEOVER_ERROR_CODE = "session_taken_over"
TAKEOVER_REASON = "session taken over by a newer connection"

Closer = Callable[[], Awaitable[None]]


@dataclass
class Hold:
    """One connection's hold on its session, from accept until the connection has ended."""

    session_id: str
    close: Closer
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    subscription: Subscription | None = None

    async def give_up(self, wait_s: float) -> None:
        """Close the connection and wait (bounded) until its handler has finished."""
        await self.close()
        try:
            await asyncio.wait_for(self.ended.wait(), wait_s)
        except TimeoutError:
            log.warning("taken-over connection did not end in time", extra={"session_id": self.session_id})


class Takeovers:
    """The holds of this edge, and the takeover requests between edges."""

    def __init__(self, nc: Client, *, wait_s: float = 1.0) -> None:
        self.nc = nc
        self.wait_s = wait_s
        self._holds: dict[str, Hold] = {}
        self._answers: set[asyncio.Task[None]] = set()
        self._arriving: dict[str, tuple[asyncio.Lock, int]] = {}
        """Sessions with a connection between :meth:`claim` and :meth:`hold`, and how many wait to get there."""

    @asynccontextmanager
    async def arriving(self, session_id: str) -> AsyncIterator[None]:
        """Hold this around a new connection's :meth:`claim` and :meth:`hold`: connections to one session arriving
        together on this edge then claim one after the other, each taking over the one before it (both would
        otherwise claim the same older one, and both stay live)."""
        lock, waiting = self._arriving.get(session_id, (asyncio.Lock(), 0))
        self._arriving[session_id] = (lock, waiting + 1)
        try:
            async with lock:
                yield
        finally:
            lock, waiting = self._arriving[session_id]
            if waiting > 1:
                self._arriving[session_id] = (lock, waiting - 1)
            else:
                del self._arriving[session_id]

    async def claim(self, session_id: str) -> bool:
        """Close any other live connection on ``session_id``; True if there was one."""
        local = self._holds.get(session_id)
        if local is not None:
            await local.give_up(self.wait_s)
            return True
        try:
            await self.nc.request(
                subjects.session_takeover(session_id), b"", timeout=self.wait_s + 1,
                headers=message_headers(session_id),
            )  # fmt: skip
        except NoRespondersError:
            return False
        except NatsTimeout:
            log.warning("takeover request unanswered", extra={"session_id": session_id})
            return False
        return True

    async def hold(self, session_id: str, close: Closer) -> Hold:
        """Register the connection now holding ``session_id`` and listen for takeovers from other edges."""
        hold = Hold(session_id, close)

        async def on_request(msg: Msg) -> None:
            if version_error(msg.headers) is not None:  # not an edge's request (a JetStream ack aimed here)
                log.warning("takeover request without Switchboard headers ignored", extra={"session_id": session_id})
                return
            # answered in a task of its own: releasing the hold unsubscribes, which cancels this callback
            task = asyncio.create_task(self._answer(hold, msg))
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)

        hold.subscription = await self.nc.subscribe(subjects.session_takeover(session_id), cb=on_request)
        self._holds[session_id] = hold
        return hold

    async def _answer(self, hold: Hold, msg: Msg) -> None:
        await hold.give_up(self.wait_s)
        try:
            await msg.respond(b"closed")
        except Exception:
            log.warning("takeover reply not sent", extra={"session_id": hold.session_id}, exc_info=True)

    async def release(self, hold: Hold) -> None:
        """The connection has ended: stop listening; safe to call twice."""
        hold.ended.set()
        if self._holds.get(hold.session_id) is hold:
            del self._holds[hold.session_id]
        sub, hold.subscription = hold.subscription, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is closing
                log.debug("takeover unsubscribe failed", exc_info=True)
