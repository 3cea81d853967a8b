"""The side-effect ledger: a side-effecting tool call runs once per turn, even when the turn is retried.

Each call is keyed by (session, turn id, tool, canonical arguments). The first runner claims the
key (KV create), runs the tool and records its output; a retried or redelivered turn that makes
the same call gets the recorded output instead of running it again. If the claimant died before
recording (a crash inside the tool), a later runner takes the claim over once it has not been
refreshed for ``takeover_s`` (a live runner refreshes it every ``takeover_s / 3``) and runs the tool
again with the same ``idempotency_key``, which the tool passes to whatever it changes so that the
effect itself cannot double.

Every KV operation rides out JetStream leader elections (see ``retry``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from .retry import StateRetry, cas_write

log = logging.getLogger(__name__)

LEDGER_BUCKET = "switchboard_ledger"


def idempotency_key(session_id: str, turn_id: str, tool: str, arguments: str) -> str:
    try:
        canonical = json.dumps(json.loads(arguments or "{}"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = arguments
    digest = hashlib.sha256(f"{turn_id}|{tool}|{canonical}".encode()).hexdigest()[:40]
    return f"{session_id}.{digest}"


class EffectPending(Exception):
    """Another runner holds a live claim on this call and has not recorded its output by the deadline."""


DEADLINE_MARGIN_S = 0.2
"""Stop waiting on another runner's claim this long before the deadline, to report why in time."""


class SideEffectLedger:
    def __init__(
        self, kv: KeyValue, *, takeover_s: float = 3.0, poll_s: float = 0.1, retry: StateRetry | None = None
    ) -> None:
        self._kv = kv
        self.takeover_s = takeover_s
        self.poll_s = poll_s
        self.retry = retry or StateRetry()
        self.replayed = 0

    @classmethod
    async def open(cls, js: JetStreamContext, *, replicas: int = 1, takeover_s: float = 3.0) -> SideEffectLedger:
        async def bucket() -> KeyValue:
            try:
                return await js.key_value(LEDGER_BUCKET)
            except BucketNotFoundError:
                config = KeyValueConfig(bucket=LEDGER_BUCKET, history=1, replicas=replicas, ttl=24 * 3600)
                return await js.create_key_value(config)

        return cls(await StateRetry().run("ledger.open", bucket), takeover_s=takeover_s)

    async def once(self, key: str, run: Callable[[], Awaitable[str]], *, deadline: float | None = None) -> str:
        """The recorded output for ``key``, or ``run()``'s output after recording it.

        Raises ``EffectPending`` when another runner's live claim neither ends nor goes stale before
        ``deadline`` (less a margin, so the reason reaches the caller before its own timeout)."""
        claim = json.dumps({"state": "running", "at": time.time()}).encode()
        while True:
            try:
                revision = await cas_write(self._kv, key, claim, 0, self.retry, "ledger.claim")
                break
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await self.retry.run("ledger.get", lambda: self._kv.get(key))
            except KeyNotFoundError:
                continue  # deleted between create and get: try to claim again
            record = json.loads(entry.value or b"{}")
            if record.get("state") == "done":
                self.replayed += 1
                log.info("side effect replayed from the ledger", extra={"key": key})
                return str(record["output"])
            if time.time() - float(record.get("at", 0)) >= self.takeover_s:
                try:  # the claimant is presumed dead: take the claim over
                    last = entry.revision or 0
                    revision = await cas_write(self._kv, key, claim, last, self.retry, "ledger.takeover")
                    log.warning("taking over a stale side-effect claim", extra={"key": key})
                    break
                except KeyWrongLastSequenceError:
                    continue
            if deadline is not None and time.time() + self.poll_s >= deadline - DEADLINE_MARGIN_S:
                age = time.time() - float(record.get("at", 0))
                raise EffectPending(
                    f"tool call {key} is still claimed by another runner (claim {age:.1f}s old, "
                    f"taken over after {self.takeover_s}s)"
                )
            await asyncio.sleep(self.poll_s)  # another runner is executing this very call: wait for its record
        current = revision
        lost_claim = False

        async def keep_claim() -> None:
            """Refresh the claim while the tool runs, so only a dead runner's claim goes stale."""
            nonlocal current, lost_claim
            while True:
                await asyncio.sleep(self.takeover_s / 3)
                fresh = json.dumps({"state": "running", "at": time.time()}).encode()
                try:
                    current = await self._kv.update(key, fresh, last=current)
                except KeyWrongLastSequenceError:
                    lost_claim = True  # someone took it over (we were presumed dead): stop refreshing
                    return
                except Exception:  # a transient failure: the next refresh tries again
                    log.debug("claim refresh failed", exc_info=True)

        refresher = asyncio.create_task(keep_claim())
        try:
            output = await run()
        except BaseException:
            refresher.cancel()
            # nothing recorded: a retry may run the call again
            await self.retry.run("ledger.release", lambda: self._kv.delete(key))
            raise
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
        done = json.dumps({"state": "done", "output": output}).encode()
        if lost_claim:
            log.warning("side-effect claim was taken over while running", extra={"key": key})
        await cas_write(self._kv, key, done, current, self.retry, "ledger.record")
        return output
