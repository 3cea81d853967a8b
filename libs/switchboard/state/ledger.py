"""The side-effect ledger: a side-effecting tool call runs once per turn, even when the turn is retried.

Each call is keyed by (session, turn id, tool, canonical arguments). The first runner claims the
key (KV create), runs the tool and records its output; a retried or redelivered turn that makes
the same call gets the recorded output instead of running it again. If the claimant died before
recording (a crash inside the tool), a later runner takes the claim over once it has not been
refreshed for ``takeover_s`` (a live runner refreshes it every ``takeover_s / 3``) and runs the tool
again with the same ``idempotency_key``, which the tool passes to whatever it changes so that the
effect itself cannot double.

The records of one agent or supervisor are its own: their keys start with its bus identity (its
``owner``, e.g. ``agent-returns.<session>.<digest>``), which every replica and track of it shares, so a
turn retried on another replica finds them, and the bus lets an identity touch only the keys under its
own name (``security.bus_access``: another agent can neither fake a record, so a tool is skipped, nor
delete a claim, so it runs twice). Permissions scope subjects, so every operation names its key in
the subject: writes publish to the key, and reads are *direct gets* (the bucket allows them), not
``STREAM.MSG.GET``, whose key travels in a JSON body. The bucket refuses rollup headers: a rollup on
one's own key could otherwise purge the whole stream, every agent's records with it.

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
from nats.js.api import DiscardPolicy, StreamConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from ..bus.subjects import check_token
from .errors import StateError
from .retry import StateRetry, cas_write

log = logging.getLogger(__name__)

LEDGER_BUCKET = "switchboard_ledger_v2"
"""``_v2``: records keyed by owner, in a bucket that serves direct gets and refuses rollups (the
``switchboard_ledger`` of earlier releases did neither; its records, 24 h at most, are not read)."""
LEDGER_STREAM = f"KV_{LEDGER_BUCKET}"
LEDGER_TTL_S = 24 * 3600


def owned_keys(owner: str) -> str:
    """The subject of every key ``owner`` may write (and, through a direct get, read)."""
    return f"$KV.{LEDGER_BUCKET}.{check_token(owner, 'ledger owner')}.>"


def ledger_stream(replicas: int) -> StreamConfig:
    """The bucket's stream: a KV bucket as nats-py makes one (one value per key, 24 h), except that reads
    are direct gets (the key in the subject, where a permission can scope it) and rollups are refused."""
    return StreamConfig(
        name=LEDGER_STREAM,
        subjects=[f"$KV.{LEDGER_BUCKET}.>"],
        allow_direct=True,
        allow_rollup_hdrs=False,
        deny_delete=True,
        discard=DiscardPolicy.NEW,
        duplicate_window=120,
        max_age=LEDGER_TTL_S,
        max_consumers=-1,
        max_msgs=-1,
        max_msgs_per_subject=1,
        num_replicas=replicas,
    )


def idempotency_key(owner: str, session_id: str, turn_id: str, tool: str, arguments: str) -> str:
    """The record of one call: ``<owner>.<session>.<digest>`` (the tool gets it to pass on)."""
    try:
        canonical = json.dumps(json.loads(arguments or "{}"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = arguments
    digest = hashlib.sha256(f"{turn_id}|{tool}|{canonical}".encode()).hexdigest()[:40]
    return f"{check_token(owner, 'ledger owner')}.{session_id}.{digest}"


class EffectPending(StateError):
    """Another runner holds a live claim on this call and has not recorded its output by the deadline."""


DEADLINE_MARGIN_S = 0.2
"""Stop waiting on another runner's claim this long before the deadline, to report why in time."""


class SideEffectLedger:
    """One owner's records (an agent's or a supervisor's bus identity: every replica and track of it)."""

    def __init__(
        self,
        kv: KeyValue,
        *,
        owner: str,
        takeover_s: float = 3.0,
        poll_s: float = 0.1,
        retry: StateRetry | None = None,
    ) -> None:
        self._kv = kv
        self.owner = check_token(owner, "ledger owner")
        self.takeover_s = takeover_s
        self.poll_s = poll_s
        self.retry = retry or StateRetry()
        self.replayed = 0

    @classmethod
    async def open(
        cls, js: JetStreamContext, *, owner: str, replicas: int = 1, takeover_s: float = 3.0
    ) -> SideEffectLedger:
        """The ledger of ``owner`` (the bus identity it connects as), creating the bucket on first use."""

        async def bucket() -> StreamConfig:
            try:
                info = await js.stream_info(LEDGER_STREAM)
            except NotFoundError:
                info = await js.add_stream(ledger_stream(replicas))  # two replicas racing: the same config
            return info.config

        config = await StateRetry().run("ledger.open", bucket)
        if not config.allow_direct or config.allow_rollup_hdrs:
            raise StateError(
                f"stream {LEDGER_STREAM} must allow direct gets and refuse rollups (as Switchboard creates it): "
                "delete it (it holds 24 h of retry records) and restart"
            )
        kv = KeyValue(name=LEDGER_BUCKET, stream=LEDGER_STREAM, pre=f"$KV.{LEDGER_BUCKET}.", js=js, direct=True)
        return cls(kv, owner=owner, takeover_s=takeover_s)

    async def once(self, key: str, run: Callable[[], Awaitable[str]], *, deadline: float | None = None) -> str:
        """The recorded output for ``key``, or ``run()``'s output after recording it.

        Raises ``EffectPending`` when another runner's live claim neither ends nor goes stale before
        ``deadline`` (less a margin, so the reason reaches the caller before its own timeout)."""
        if not key.startswith(f"{self.owner}."):
            raise ValueError(f"ledger key {key!r} is not {self.owner}'s (see idempotency_key)")
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
