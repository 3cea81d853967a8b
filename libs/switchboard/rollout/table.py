"""The edge's live view of every agent's rollout: the ``switchboard_rollouts`` KV bucket, watched.

The turn path never reads KV: a watcher keeps an in-memory copy current (changes land within
milliseconds), and choosing a track is a dict lookup and a random draw.

A watch can be lost without a word from nats-py: a restarted nats-server forgets the watch's
consumer (the client re-creates it only after missed heartbeats, ~20 s), a bucket deleted and
re-created leaves it waiting for sequence numbers the new stream reaches much later or never, and
JetStream may not answer for a while. So the table checks its watch against the bucket every
``check_s`` seconds and replaces a watch that ended, failed, stopped delivering or outlived its bucket,
with jittered backoff; the new watch re-reads every current value. Meanwhile routing goes on with the
last weights seen, and the loss shows in the log, in ``watch_status()`` (the edge's
``/v1/switchboard/info``) and in the ``switchboard_watch_following{bucket="switchboard_rollouts"}`` gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Self

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import ValidationError

from ..bus import subjects
from ..bus.subjects import ROLLOUTS_BUCKET
from ..errors import ConfigError
from ..resilience.retry import RetryPolicy, call_with_retry
from ..schemas import Rollout, RolloutState, TrackPin
from ..state.retry import StateRetry
from ..telemetry import metrics
from .router import STABLE_PIN, choose
from .store import open_bucket

log = logging.getLogger(__name__)

CHECK_S = 2.0
"""How often the watch is checked against the bucket: a lost watch is noticed within two checks of a change."""
REWATCH = RetryPolicy(attempts=None, base_s=0.25, max_backoff_s=5.0, retry_if=lambda exc: True)
"""Re-establishing a lost watch: full jitter (every edge loses its watch at once when nats-server restarts),
up to 5 s apart, never giving up (any error is retried: the alternative is routing on stale weights forever)."""


def parse_weights(spec: str) -> dict[str, int]:
    """``returns=10,billing=5`` -> {"returns": 10, "billing": 5}; a bad entry raises ValueError."""
    weights: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        agent, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit() or not 0 <= int(value) <= 100:
            raise ConfigError(f"canary weight {part!r}: expected agent=percent with percent 0-100")
        weights[subjects.check_token(agent.strip(), "agent name")] = int(value)
    return weights


@dataclass(frozen=True)
class WatchStatus:
    """How current the edge's rollout weights are."""

    following: bool
    """Every change the bucket held at the last check has reached the table (False before the first read too)."""
    stale_s: float | None
    """Seconds since the watch was lost (routing on the weights last seen since); None while following."""
    losses: int
    """Times a watch was lost since the table started."""


class TrackRouter:
    """Routes every agent to stable (a conductor without rollouts)."""

    def pin(self, pins: dict[str, TrackPin], agent: str) -> str:
        """Choose the track for this turn to ``agent``, record it in the session's ``pins``, return the subject."""
        chosen = self.route(pins, agent)
        pins[agent] = chosen
        return subjects.agent_turn(agent, chosen.track)

    def route(self, pins: dict[str, TrackPin], agent: str) -> TrackPin:
        return STABLE_PIN

    def snapshot(self) -> dict[str, Rollout]:
        return {}


class RolloutTable(TrackRouter):
    """Watches the rollouts bucket; ``route`` chooses (and the caller pins) a session's track for an agent."""

    def __init__(self, kv: KeyValue, *, rng: random.Random | None = None, check_s: float = CHECK_S) -> None:
        self._kv = kv
        self._rollouts: dict[str, Rollout] = {}
        self._rng = rng or random.Random()
        self._check_s = check_s
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        """Set once the first watch has read every current value."""
        self._revision = 0
        """The stream sequence of the last entry the current watch delivered."""
        self._checked = False
        """The current watch has passed a check."""
        self._created: datetime | None = None
        """When the bucket's stream was created, as read just before the current watch was opened."""
        self._lost_at: float | None = time.monotonic()
        """``time.monotonic()`` when the watch was lost (or the table made, before its first read); None while
        following."""
        self._losses = 0

    @classmethod
    async def open(
        cls, js: JetStreamContext, *, replicas: int = 1, seed: dict[str, int] | None = None,
        retry: StateRetry | None = None, check_s: float = CHECK_S,
    ) -> RolloutTable:  # fmt: skip
        """Open the bucket, write ``seed`` weights for agents with no rollout yet, and start watching."""
        kv = await open_bucket(js, replicas=replicas, retry=retry)
        now = time.time()
        for agent, weight in (seed or {}).items():
            if weight <= 0:
                continue
            record = Rollout(
                agent=agent, state=RolloutState.CANARY, weight=weight, generation=1, version="helm values",
                started_at=now, updated_at=now,
            )  # fmt: skip
            data = record.to_bytes()
            with contextlib.suppress(KeyWrongLastSequenceError):  # there already: the operator's weight wins
                await (retry or StateRetry()).run("rollouts.seed", functools.partial(kv.create, agent, data))
        table = cls(kv, check_s=check_s)
        await table.start()
        return table

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start following the bucket; return once every current value is read (or raise ``TimeoutError``)."""
        self._task = asyncio.create_task(self._follow())
        try:
            await asyncio.wait_for(self._synced.wait(), timeout_s)
        except BaseException:
            await self.stop()
            raise

    def watch_status(self) -> WatchStatus:
        """Whether the table follows the bucket now; if not, for how long it has routed on the weights it last saw."""
        stale = None if self._lost_at is None else round(time.monotonic() - self._lost_at, 3)
        return WatchStatus(following=self._lost_at is None, stale_s=stale, losses=self._losses)

    async def _follow(self) -> None:
        """Keep a watch on the bucket while the table runs, replacing each one that is lost."""
        losses_in_row = 0
        while True:
            watcher = await call_with_retry(self._open, REWATCH, on_retry=self._open_failed)
            reason = await self._run(watcher)
            losses_in_row = 1 if self._checked else losses_in_row + 1  # a watch that passed a check was healthy
            self._lost(reason)
            await asyncio.sleep(REWATCH.backoff(losses_in_row))  # ok-sleep: jittered backoff before re-watching

    async def _open(self, attempt: int) -> KeyValue.KeyWatcher:
        self._created = (await self._kv.status()).stream_info.created  # before: a re-creation meanwhile is seen
        return await self._kv.watchall()

    def _open_failed(self, attempt: int, exc: BaseException) -> None:
        log.warning("rollouts watch not re-established; retrying", extra={"attempt": attempt, "error": repr(exc)})

    def _lost(self, reason: str) -> None:
        self._losses += 1
        if self._lost_at is None:
            self._lost_at = time.monotonic()
        metrics().watch_following.labels(bucket=ROLLOUTS_BUCKET).set(0)
        metrics().watch_losses.labels(bucket=ROLLOUTS_BUCKET).inc()
        log.warning(
            "rollouts watch lost: routing on the last weights seen until it is re-established",
            extra={"reason": reason, "rollouts": len(self._rollouts)},
        )

    async def _run(self, watcher: KeyValue.KeyWatcher) -> str:
        """Read ``watcher`` until it ends, fails or stalls; return why it was given up."""
        self._revision = 0
        self._checked = False
        reader = asyncio.create_task(self._read(watcher))
        checker = asyncio.create_task(self._check())
        try:
            done, _ = await asyncio.wait({reader, checker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, checker):
                task.cancel()
            await asyncio.gather(reader, checker, return_exceptions=True)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
        ended = done.pop()
        exc = ended.exception()
        return f"the watch failed: {exc!r}" if exc is not None else ended.result()

    async def _read(self, watcher: KeyValue.KeyWatcher) -> str:
        """Apply the watch's entries: the current values first, swapped in whole once all are read (a
        re-watch thus also drops the rollouts deleted while the watch was lost), then each change."""
        current: dict[str, Rollout] = {}
        synced = False
        async for entry in watcher:
            if entry is None:  # every current value delivered
                if not synced:
                    synced = True
                    self._take(current)
                continue
            self._revision = max(self._revision, entry.revision or 0)
            target = self._rollouts if synced else current
            if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                target.pop(entry.key, None)
            else:
                try:
                    target[entry.key] = Rollout.model_validate_json(entry.value)
                except ValidationError:
                    log.warning("unreadable rollout record ignored", extra={"agent": entry.key})
                    continue
            if synced:
                log.info("rollout changed", extra={"agent": entry.key, "rollout": self._describe(entry.key)})
        return "the watch ended"

    def _take(self, current: dict[str, Rollout]) -> None:
        """A watch has read every current value: they replace what the table held."""
        changed = sorted(a for a in set(current) | set(self._rollouts) if current.get(a) != self._rollouts.get(a))
        self._rollouts = current
        for agent in changed:
            log.info("rollout changed", extra={"agent": agent, "rollout": self._describe(agent)})
        if self._lost_at is not None and self._synced.is_set():
            log.warning(  # as loud as the loss it closes
                "rollouts watch re-established; routing on the current weights again",
                extra={"stale_s": round(time.monotonic() - self._lost_at, 3), "changed": changed},
            )
        self._lost_at = None
        self._synced.set()
        metrics().watch_following.labels(bucket=ROLLOUTS_BUCKET).set(1)

    async def _check(self) -> str:
        """Every ``check_s``: is the watch still delivering what the bucket holds? Return when it is not."""
        behind = 0  # a sequence the bucket held at the last check that the watch had not delivered
        unanswered = 0
        while True:
            await asyncio.sleep(self._check_s)  # ok-sleep: the check interval
            try:
                async with asyncio.timeout(self._check_s):
                    info = (await self._kv.status()).stream_info
            except Exception as exc:  # one slow or failed answer is no loss yet; two in a row are
                unanswered += 1
                if unanswered >= 2:
                    return f"the bucket did not answer two checks in a row: {exc!r}"
                continue
            unanswered = 0
            last = info.state.last_seq
            if info.created != self._created or last < self._revision:
                return "the bucket was re-created"
            if behind and self._revision < behind:
                return f"the watch stopped delivering (the bucket is at {last}, the watch at {self._revision})"
            behind = last if last > self._revision else 0
            self._checked = True

    def _describe(self, agent: str) -> str:
        r = self._rollouts.get(agent)
        return "none" if r is None else f"{r.state.value} weight={r.weight} generation={r.generation}"

    def route(self, pins: dict[str, TrackPin], agent: str) -> TrackPin:
        return choose(pins.get(agent), self._rollouts.get(agent), self._rng.random())

    def snapshot(self) -> dict[str, Rollout]:
        return dict(self._rollouts)

    async def stop(self) -> None:
        """Stop watching. Safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
