"""The edge's live view of every agent's rollout: the ``switchboard_rollouts`` KV bucket, watched.

The turn path never reads KV: a watcher keeps an in-memory copy current (changes land within
milliseconds), and choosing a track is a dict lookup and a random draw.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from types import TracebackType
from typing import Self

from nats.js import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import ValidationError

from ..bus import subjects
from ..errors import ConfigError
from ..schemas import Rollout, RolloutState, TrackPin
from ..state.retry import StateRetry
from .router import STABLE_PIN, choose
from .store import open_bucket

log = logging.getLogger(__name__)


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

    def __init__(self, kv: KeyValue, *, rng: random.Random | None = None) -> None:
        self._kv = kv
        self._rollouts: dict[str, Rollout] = {}
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()

    @classmethod
    async def open(
        cls, js: JetStreamContext, *, replicas: int = 1, seed: dict[str, int] | None = None,
        retry: StateRetry | None = None,
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
        table = cls(kv)
        await table.start()
        return table

    async def start(self, timeout_s: float = 10.0) -> None:
        watcher = await self._kv.watchall()
        self._task = asyncio.create_task(self._watch(watcher))
        await asyncio.wait_for(self._synced.wait(), timeout_s)

    async def _watch(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            async for entry in watcher:
                if entry is None:  # every current value delivered
                    self._synced.set()
                    continue
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    self._rollouts.pop(entry.key, None)
                else:
                    try:
                        self._rollouts[entry.key] = Rollout.model_validate_json(entry.value)
                    except ValidationError:
                        log.warning("unreadable rollout record ignored", extra={"agent": entry.key})
                        continue
                log.info("rollout changed", extra={"agent": entry.key, "rollout": self._describe(entry.key)})
                self._synced.set()
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated

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
