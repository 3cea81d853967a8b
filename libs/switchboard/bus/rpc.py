"""Request/reply with streamed replies over NATS, and the queue-group service that answers.

A request is published with a reply subject under this process's private inbox; the
responder publishes any number of replies (deltas) to it and ends with a terminal one.
Replies are routed to the waiting caller by the inbox's last token, so one subscription
serves every concurrent request of the process.

Those tokens, and the inbox under the process's prefix, are random: a responder sees the reply subject of
each request it is sent, and although the bus lets it publish only to those, it may name any subject as
the reply of a message it is allowed to send (JetStream then answers there). A reply subject it could
guess from one it saw would let it end another session's request, on another agent, with that answer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Generic, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import trace
from pydantic import BaseModel, TypeAdapter, ValidationError

from ..schemas import SCHEMA_MAJOR, SCHEMA_VERSION, CancelRequest, ErrorCode, ErrorReply, Heartbeat, WireModel
from ..telemetry import inject, metrics, names, process_span, session_context, set_attributes, tracing_enabled
from . import headers as h
from .errors import BadReply, NoResponders, RemoteError, ReplyTimeout

log = logging.getLogger(__name__)

R = TypeVar("R")
Req = TypeVar("Req", bound=BaseModel)


def message_headers(session_id: str | None = None, deadline: float | None = None) -> dict[str, str]:
    """The headers every Switchboard message carries (``deadline`` is Unix time in seconds)."""
    out = {h.SCHEMA: SCHEMA_VERSION}
    if session_id:
        out[h.SESSION] = session_id
    if deadline is not None:
        out[h.DEADLINE] = str(int(deadline * 1000))
    return out


def version_error(headers: dict[str, str] | None) -> ErrorReply | None:
    """An ``unsupported_version`` error unless the message speaks our major version."""
    version = (headers or {}).get(h.SCHEMA)
    if version is None:
        return ErrorReply(
            code=ErrorCode.UNSUPPORTED_VERSION,
            message=f"missing {h.SCHEMA} header",
            supported_versions=[SCHEMA_VERSION],
        )
    if version.split(".", 1)[0] != str(SCHEMA_MAJOR):
        return ErrorReply(
            code=ErrorCode.UNSUPPORTED_VERSION,
            message=f"schema version {version!r} is not supported; this consumer speaks {SCHEMA_VERSION}",
            supported_versions=[SCHEMA_VERSION],
        )
    return None


def remaining(deadline: float) -> float:
    return deadline - time.time()


class AckTimes:
    """How long each subject's responders take to acknowledge, so the ack timeout follows the load.

    A frozen replica never acknowledges; a busy one does, late. When every responder of a subject is
    slow (a saturated machine), the timeout grows to a multiple of their recent p90 acknowledgement
    time, so a slow replica is not taken for a lost one; a frozen replica among healthy ones is still
    noticed at the configured timeout. Only acknowledgements that arrived are counted.
    """

    WINDOW = 64
    FACTOR = 4.0

    def __init__(self) -> None:
        self._seen: dict[str, collections.deque[float]] = {}

    def record(self, subject: str, seconds: float) -> None:
        self._seen.setdefault(subject, collections.deque(maxlen=self.WINDOW)).append(seconds)

    def timeout(self, subject: str, configured: float) -> float:
        seen = self._seen.get(subject)
        if not seen or len(seen) < 8:
            return configured
        p90 = sorted(seen)[int(len(seen) * 0.9)]
        return max(configured, self.FACTOR * p90)


class _ReplyTokens:
    """Unguessable reply tokens (64 random bits each), drawn from the OS a batch at a time: a system call
    per request would cost a turn ~0.5 us; a slice of the batch costs what a counter did."""

    BATCH = 512

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> str:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(8 * self.BATCH), 0
        token = self._pool[self._at : self._at + 8].hex()
        self._at += 8
        return token


class StreamingClient:
    """Sends requests and yields their streamed replies until a terminal one arrives."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        # not new_inbox() itself: a NUID, from which the inboxes of the connection's JetStream requests follow
        self._prefix = f"{nc.new_inbox().rpartition('.')[0]}.{os.urandom(12).hex()}"
        self._waiting: dict[str, asyncio.Queue[Msg]] = {}
        self._sub: Subscription | None = None
        self._tokens = _ReplyTokens()
        self._acks = AckTimes()

    async def start(self) -> None:
        if self._sub is None:
            self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._route)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()

    async def _route(self, msg: Msg) -> None:
        queue = self._waiting.get(msg.subject.rsplit(".", 1)[-1])
        if queue is not None:  # late replies of abandoned requests are dropped
            queue.put_nowait(msg)

    def stream(
        self,
        subject: str,
        request: WireModel,
        reply_adapter: TypeAdapter[R],
        is_terminal: Callable[[R], bool],
        *,
        deadline: float,
        session_id: str | None = None,
        extra_headers: dict[str, str] | None = None,
        idle_timeout: float | None = None,
        ack_timeout: float | None = None,
        cancel: str | None = None,
    ) -> aclosing[AsyncGenerator[R, None]]:
        """``async with client.stream(...) as replies: async for reply in replies: ...``: publish
        ``request`` and yield parsed replies; raise a ``BusError`` on failure.

        With ``cancel`` (the responders' cancel subject), a stream left before its terminal reply (the caller
        was cancelled, the deadline passed, the responder was taken for lost) tells the responder to stop:
        a model call the caller will never hear costs nothing more, and its replica's slot is free.

        The replies are read inside the ``async with``: leaving it (a caller returns as soon as it has the
        terminal reply) closes the stream there and then. A bare generator left suspended would be closed
        later by the event loop's finalizer hook: a cross-thread wake-up and a task per request, and its
        reply slot held until then.
        """
        return aclosing(
            self._replies(subject, request, reply_adapter, is_terminal, deadline, session_id, extra_headers,
                          idle_timeout, ack_timeout, cancel)
        )  # fmt: skip

    async def _replies(
        self,
        subject: str,
        request: WireModel,
        reply_adapter: TypeAdapter[R],
        is_terminal: Callable[[R], bool],
        deadline: float,
        session_id: str | None,
        extra_headers: dict[str, str] | None,
        idle_timeout: float | None,
        ack_timeout: float | None,
        cancel: str | None = None,
    ) -> AsyncGenerator[R, None]:
        """The replies of :meth:`stream`.

        ``ErrorReply`` replies are raised as ``RemoteError``; the deadline bounds the whole stream.
        A ``QueueService`` acknowledges a request within ``ack_after_s`` (its first reply, or a heartbeat
        if it has none by then), then beats while it works: with ``ack_timeout``, a responder that has
        not acknowledged within that long (a frozen replica still holding its subscription) is taken for
        lost; with ``idle_timeout``, one that then sends nothing for that long (killed mid-turn) is.
        Either way the caller knows in well under a second instead of at the deadline. Heartbeats and
        unknown reply types are skipped.
        """
        await self.start()
        token = self._tokens.next()
        while token in self._waiting:  # 64 random bits: never in practice
            token = self._tokens.next()
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._waiting[token] = queue
        hdrs = message_headers(session_id, deadline) | (extra_headers or {})
        reconnects = self._nc.stats["reconnects"]
        sent = None  # set once published; the responder then runs it until it answers, or is told to stop
        ended = False
        """The responder is done with it: a terminal reply or an error came back, or nobody took it."""
        try:
            if tracing_enabled():  # the caller's span (a conductor hop, a consult) is the sending span
                inject(hdrs)
                set_attributes(trace.get_current_span(), {names.MESSAGING_SYSTEM: names.MESSAGING_SYSTEM_NATS,
                               names.MESSAGING_DESTINATION_NAME: subject,
                               names.MESSAGING_OPERATION_TYPE: names.MESSAGING_OPERATION_SEND})  # fmt: skip
            await self._nc.publish(subject, request.to_bytes(), reply=f"{self._prefix}.{token}", headers=hdrs)
            sent = time.monotonic()
            acked = False
            ack_limit = self._acks.timeout(subject, ack_timeout) if ack_timeout is not None else None
            while True:
                left = remaining(deadline)
                if left <= 0:
                    raise ReplyTimeout(f"no complete reply from {subject} before the deadline")
                limit = idle_timeout if acked or ack_limit is None else ack_limit
                wait = left if limit is None else min(left, limit)
                try:
                    msg = queue.get_nowait() if not queue.empty() else None
                    if msg is None:
                        async with asyncio.timeout(wait):  # a timer handle, not a task per message
                            msg = await queue.get()
                except TimeoutError:
                    late = await _late(queue)
                    if late is None and wait < left:
                        what = "went silent for" if acked else "did not acknowledge within"
                        raise ReplyTimeout(f"{subject} {what} {limit:.2g}s (responder lost)") from None
                    if late is None:
                        raise ReplyTimeout(f"no complete reply from {subject} before the deadline") from None
                    msg = late
                if not acked:
                    self._acks.record(subject, time.monotonic() - sent)
                acked = True
                if msg.headers and msg.headers.get("Status") == "503":
                    ended = True
                    raise NoResponders(f"no responders on {subject}")
                reply = _parse(reply_adapter, msg)
                if reply is None or isinstance(reply, Heartbeat):
                    continue
                if isinstance(reply, ErrorReply):
                    ended = True
                    raise RemoteError(reply)
                ended = is_terminal(reply)
                yield reply
                if ended:
                    return
        except ReplyTimeout as exc:
            # Our own connection dropped while waiting: the responder is not to blame (breakers skip it).
            exc.local = self._nc.stats["reconnects"] != reconnects or not self._nc.is_connected
            raise
        finally:
            del self._waiting[token]
            if cancel is not None and sent is not None and not ended:
                await self._cancel(cancel, f"{self._prefix}.{token}", session_id)

    async def _cancel(self, subject: str, reply_to: str, session_id: str | None) -> None:
        try:
            await self._nc.publish(subject, CancelRequest(reply_to=reply_to).to_bytes(),
                                   headers=message_headers(session_id))  # fmt: skip
        except Exception:  # best effort: a responder not told runs the request to its end, as it always could
            log.debug("cancel not sent", extra={"subject": subject}, exc_info=True)


async def _late(queue: asyncio.Queue[Msg]) -> Msg | None:
    """A reply that reached the socket by the time a timer fired but was not routed yet: an edge whose
    event loop lags must not take a live responder for dead. Gives the loop two turns to route it."""
    for _ in range(2):
        if not queue.empty():
            break
        await asyncio.sleep(0)
    return None if queue.empty() else queue.get_nowait()


def _parse(adapter: TypeAdapter[R], msg: Msg) -> R | None:
    """The parsed reply; None for a well-formed reply of a type this version does not know."""
    bad_version = version_error(msg.headers)
    if bad_version is not None:
        raise BadReply(bad_version.message)
    try:
        return adapter.validate_json(msg.data)
    except ValidationError as exc:
        if any(e["type"] == "union_tag_invalid" for e in exc.errors()):
            log.debug("skipping reply of unknown type", extra={"subject": msg.subject})
            return None
        raise BadReply(f"unparseable reply: {exc.errors(include_url=False)[:3]}") from exc


class ReplySink:
    """Where a handler sends its replies for one request."""

    def __init__(self, nc: Client, reply: str, session_id: str | None) -> None:
        self._nc = nc
        self._reply = reply
        self._headers = message_headers(session_id)
        self.sent = 0
        """Replies sent so far (the keep-alive beats only into silence)."""

    async def send(self, message: WireModel) -> None:
        if self._reply:
            self.sent += 1
            await self._nc.publish(self._reply, message.to_bytes(), headers=self._headers)


_HEARTBEAT = Heartbeat()


class _KeepAlive:
    """Acknowledges a request and beats while its handler works, but only into silence.

    Any reply tells the caller the request was taken and the responder is alive, so a handler that
    answers within ``first`` seconds (the common case: a turn's first delta) costs no heartbeat message
    at all. When the handler has sent nothing by then, a heartbeat acknowledges it; after that one goes
    out every ``every`` seconds in which the handler sent nothing. Timers, not a task per request.
    """

    def __init__(self, sink: ReplySink, first: float, every: float) -> None:
        self._sink = sink
        self._every = every
        self._seen = sink.sent
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(first, self._fire)

    def _fire(self) -> None:
        silent = self._sink.sent == self._seen
        if silent:  # nothing went out since the last check: the caller needs a sign of life
            self._loop.create_task(self._beat())
        self._seen = self._sink.sent + silent  # the beat counts itself when it goes out
        self._timer = self._loop.call_later(self._every, self._fire)

    async def _beat(self) -> None:
        try:
            await self._sink.send(_HEARTBEAT)
        except Exception:  # the connection is gone: the caller will notice the silence
            log.debug("heartbeat not sent", exc_info=True)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


Handler = Callable[[Req, ReplySink, Msg], Awaitable[None]]


class QueueService(Generic[Req]):
    """Serves one subject in a queue group: parse, version-check, run the handler concurrently.

    At most ``max_inflight`` requests run at once; beyond that the caller gets a retryable
    ``busy`` error at once instead of queueing without bound. ``stop()`` stops taking new
    requests, waits up to ``grace_s`` for the ones in flight, and is safe to call twice.
    With ``cancel_subject``, a :class:`CancelRequest` there stops the request it names, when it runs here.
    """

    COLD_REQUESTS = 8
    """Requests acknowledged before their handler runs, while the process is cold."""

    def __init__(
        self,
        nc: Client,
        subject: str,
        queue: str,
        request_adapter: TypeAdapter[Req],
        handler: Handler[Req],
        *,
        max_inflight: int = 256,
        heartbeat_s: float | None = 0.25,
        ack_after_s: float = 0.05,
        span_name: str | None = None,
        service: str = "",
        cancel_subject: str | None = None,
    ) -> None:
        self._nc = nc
        self.subject = subject
        self.cancel_subject = cancel_subject
        self.queue = queue
        self._adapter = request_adapter
        self._handler = handler
        self._max_inflight = max_inflight
        self._heartbeat_s = heartbeat_s
        self._ack_after_s = min(ack_after_s, heartbeat_s or ack_after_s)
        self._started = 0
        self._span_name = span_name
        self._service_label = service or queue
        self._tasks: set[asyncio.Task[None]] = set()
        self._by_reply: dict[str, asyncio.Task[None]] = {}
        self._sub: Subscription | None = None
        self._cancels: Subscription | None = None
        self.handled = 0
        self.cancelled = 0
        """Requests stopped because their caller said so."""

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        if self.cancel_subject is not None:  # first: a request is never taken before its cancel can be
            self._cancels = await self._nc.subscribe(self.cancel_subject, cb=self._on_cancel)
        self._sub = await self._nc.subscribe(self.subject, queue=self.queue, cb=self._on_msg)

    async def stop(self, grace_s: float = 10.0) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in set(self._tasks):
            task.cancel()
        cancels, self._cancels = self._cancels, None
        if cancels is not None:
            await cancels.unsubscribe()

    async def _on_cancel(self, msg: Msg) -> None:
        if version_error(msg.headers) is not None:  # not a caller's (e.g. a JetStream ack aimed here)
            return
        try:
            reply_to = CancelRequest.model_validate_json(msg.data).reply_to
        except ValidationError:
            log.warning("unreadable cancel request ignored", extra={"subject": msg.subject})
            return
        task = self._by_reply.get(reply_to)
        if task is None:  # another replica's request, or one already done
            return
        self.cancelled += 1
        task.cancel()
        log.info(
            "request stopped by its caller",
            extra={"subject": self.subject, "session_id": (msg.headers or {}).get(h.SESSION)},
        )

    async def _on_msg(self, msg: Msg) -> None:
        if len(self._tasks) >= self._max_inflight:
            metrics().busy_rejections.labels(service=self._service_label).inc()
            await self._error(msg, ErrorCode.BUSY, "service is at its concurrency limit", retryable=True)
            return
        bad_version = version_error(msg.headers)
        if bad_version is not None:
            await ReplySink(self._nc, msg.reply, None).send(bad_version)
            return
        try:
            request = self._adapter.validate_json(msg.data)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
            await self._error(msg, ErrorCode.BAD_REQUEST, f"invalid request: {detail}")
            return
        session_id = (msg.headers or {}).get(h.SESSION)
        sink = ReplySink(self._nc, msg.reply, session_id)
        keepalive = None
        if self._heartbeat_s and msg.reply:
            cold = self._started < self.COLD_REQUESTS
            if cold:
                # A cold process's first handlers may block the loop a while (first-call imports, a cold
                # model client): acknowledge before the handler runs, so the caller does not take a slow
                # start for a lost replica. Published first, the ack is flushed before the handler's
                # first step. Once warm, the first reply is the acknowledgement (see _KeepAlive).
                await sink.send(_HEARTBEAT)
            keepalive = _KeepAlive(sink, self._heartbeat_s if cold else self._ack_after_s, self._heartbeat_s)
        self._started += 1
        task = asyncio.create_task(self._handle(request, sink, msg, keepalive))
        self._tasks.add(task)
        reply = msg.reply
        if reply:
            self._by_reply[reply] = task
        inflight = metrics().inflight.labels(service=self._service_label)
        inflight.inc()

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if reply:
                self._by_reply.pop(reply, None)
            inflight.dec()

        task.add_done_callback(done)

    async def _handle(self, request: Req, sink: ReplySink, msg: Msg, keepalive: _KeepAlive | None) -> None:
        session_id = (msg.headers or {}).get(h.SESSION)
        with (
            process_span(self.subject, msg.headers, name=self._span_name, consumer_group=self.queue),
            session_context(session_id),
        ):
            try:
                await self._handler(request, sink, msg)
                self.handled += 1
            except Exception as exc:
                log.exception("handler failed", extra={"subject": self.subject})
                await self._error(msg, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            finally:
                if keepalive is not None:
                    keepalive.stop()

    async def _error(self, msg: Msg, code: ErrorCode, message: str, *, retryable: bool = False) -> None:
        err = ErrorReply(code=code, message=message, retryable=retryable)
        try:
            await ReplySink(self._nc, msg.reply, None).send(err)
        except Exception:
            log.warning("could not send error reply", exc_info=True)


def deadline_of(msg: Msg, default_s: float) -> float:
    """The request's absolute deadline (seconds), or now + ``default_s`` when absent."""
    raw = (msg.headers or {}).get(h.DEADLINE)
    try:
        return int(raw) / 1000 if raw else time.time() + default_s
    except ValueError:
        return time.time() + default_s
