"""Operator-side changes to the rollouts bucket, each a compare-and-set write (two operators cannot both win)."""

from __future__ import annotations

import time

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from ..bus.subjects import ROLLOUTS_BUCKET, check_token
from ..schemas import Rollout, RolloutState
from ..state.retry import StateRetry, cas_write
from .errors import BadWeight, NoCanary, RolloutError


async def open_bucket(js: JetStreamContext, *, replicas: int = 1, retry: StateRetry | None = None) -> KeyValue:
    retry = retry or StateRetry()

    async def bucket() -> KeyValue:
        try:
            return await js.key_value(ROLLOUTS_BUCKET)
        except BucketNotFoundError:
            return await js.create_key_value(KeyValueConfig(bucket=ROLLOUTS_BUCKET, history=5, replicas=replicas))

    return await retry.run("rollouts.open", bucket)


def check_weight(weight: int) -> int:
    if not 0 <= weight <= 100:
        raise BadWeight(f"weight {weight} is outside 0-100 (percent of new sessions sent to the canary)")
    return weight


class RolloutStore:
    def __init__(self, kv: KeyValue, retry: StateRetry | None = None) -> None:
        self._kv = kv
        self.retry = retry or StateRetry()

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int = 1) -> RolloutStore:
        return cls(await open_bucket(js, replicas=replicas))

    async def get(self, agent: str) -> tuple[Rollout | None, int]:
        """The agent's rollout (None when there is none) and the revision to write against (0 = create)."""
        try:
            entry = await self.retry.run("rollouts.get", lambda: self._kv.get(check_token(agent, "agent name")))
        except KeyNotFoundError:  # none, or deleted (kv.create writes over a tombstone)
            return None, 0
        if not entry.value:
            return None, entry.revision or 0
        return Rollout.model_validate_json(entry.value), entry.revision or 0

    async def all(self) -> dict[str, Rollout]:
        try:
            keys = await self._kv.keys()
        except Exception:  # nats-py raises NoKeysError (a NotFoundError) on an empty bucket
            return {}
        out = {}
        for key in sorted(keys):
            rollout, _ = await self.get(key)
            if rollout is not None:
                out[key] = rollout
        return out

    async def _write(self, agent: str, rollout: Rollout, revision: int) -> Rollout:
        await cas_write(self._kv, agent, rollout.to_bytes(), revision, self.retry, "rollouts.write")
        return rollout

    async def set_weight(self, agent: str, weight: int, *, version: str = "") -> Rollout:
        """Start a canary (a new generation) or change the weight of the running one."""
        check_weight(weight)
        current, revision = await self.get(agent)
        if current is not None and current.state == RolloutState.PROMOTED:
            raise RolloutError(f"agent {agent!r} is being promoted: finish it (promote --finish) or abort it first")
        now = time.time()
        if current is not None and current.state == RolloutState.CANARY:
            changes = {"weight": weight, "updated_at": now, "version": version or current.version}
            rollout = current.model_copy(update=changes)
        else:
            generation = (current.generation + 1) if current is not None else 1
            rollout = Rollout(
                agent=agent, state=RolloutState.CANARY, weight=weight, generation=generation, version=version,
                started_at=now, updated_at=now,
            )  # fmt: skip
        return await self._write(agent, rollout, revision)

    async def running(self, agent: str, *, states: tuple[RolloutState, ...] = (RolloutState.CANARY,)) -> Rollout:
        current, _ = await self.get(agent)
        if current is None or current.state not in states:
            what = "no rollout" if current is None else f"its rollout is {current.state.value}"
            raise NoCanary(f"agent {agent!r} has no canary running ({what}); start one with set-weight")
        return current

    async def promote(self, agent: str) -> Rollout:
        """Every session of the agent goes to the canary track (see ``router``)."""
        current, revision = await self.get(agent)
        if current is None or current.state not in (RolloutState.CANARY, RolloutState.PROMOTED):
            await self.running(agent)  # raises NoCanary with the reason
        assert current is not None
        rollout = current.model_copy(update={"state": RolloutState.PROMOTED, "weight": 100, "updated_at": time.time()})
        return await self._write(agent, rollout, revision)

    async def finish(self, agent: str) -> Rollout:
        """After a promotion, once stable runs the canary's version: back to one track."""
        current, revision = await self.get(agent)
        if current is None or current.state != RolloutState.PROMOTED:
            raise NoCanary(f"agent {agent!r} has no promoted canary to finish")
        rollout = current.model_copy(update={"state": RolloutState.FINISHED, "weight": 0, "updated_at": time.time()})
        return await self._write(agent, rollout, revision)

    async def abort(self, agent: str) -> Rollout:
        current, revision = await self.get(agent)
        if current is None or current.state not in (RolloutState.CANARY, RolloutState.PROMOTED):
            await self.running(agent)
        assert current is not None
        rollout = current.model_copy(update={"state": RolloutState.ABORTED, "weight": 0, "updated_at": time.time()})
        return await self._write(agent, rollout, revision)
