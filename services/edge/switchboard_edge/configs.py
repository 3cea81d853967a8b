"""Agent configurations as the edge meets them: the first turn each one serves goes to the control audit.

Every agent turn result names the configuration that ran it (``TurnResult.config``, a fingerprint of the
agent's prompt, model, tools, handoffs and offline rules). A configuration no edge has seen before on
that agent's track is appended to the control-plane audit stream (``agent.config_changed``, listed by
``switchboard audit``) when it first answers a caller: a redeploy, a new canary, an edited prompt. The
fingerprints already recorded live in the edges' KV bucket, and a key is created only once, so N edges
and M replicas record one change once, and a rolling update that mixes old and new replicas records
the new configuration once, not at every alternation. Returning to a configuration recorded before
(a rollback) is not recorded again: the rollout commands audit their own rollbacks.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from switchboard.state import StateRetry
from switchboard.state.control import ControlAudit
from switchboard.state.retry import cas_write

log = logging.getLogger(__name__)


class ConfigWatch:
    """Records, once across the edges, each agent configuration the first time it serves a turn."""

    def __init__(self, kv: KeyValue, control: ControlAudit, retry: StateRetry | None = None) -> None:
        self._kv = kv
        self._control = control
        self._retry = retry or StateRetry()
        self._known: set[tuple[str, str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.by = f"deployment (seen by edge {socket.gethostname()})"
        """Who the record names: the edge cannot know who deployed the configuration."""

    def seen(self, agent: str, track: str, config: str | None) -> None:
        """A turn of ``agent`` on ``track`` ran ``config``; recorded off the turn's path, once."""
        if not config or (agent, track, config) in self._known:
            return
        self._known.add((agent, track, config))
        task = asyncio.create_task(self._record(agent, track, config))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, agent: str, track: str, config: str) -> None:
        key = f"config.{agent}.{track}.{config}"
        try:
            await cas_write(self._kv, key, b"1", 0, self._retry, "edge.config.seen")
        except KeyWrongLastSequenceError:
            return  # recorded before, by this or another edge
        except Exception:
            self._known.discard((agent, track, config))  # try again at its next turn
            log.warning("agent configuration not recorded", extra={"agent": agent, "track": track}, exc_info=True)
            return
        try:
            await self._control.record("agent.config_changed", agent, {"track": track, "config": config}, by=self.by)
        except Exception:  # undo the marker, so that the next turn of this configuration tries again
            log.warning("agent configuration change not audited", extra={"agent": agent, "track": track}, exc_info=True)
            self._known.discard((agent, track, config))
            try:
                await self._kv.delete(key)
            except Exception:
                log.warning("agent configuration marker not removed", extra={"agent": agent}, exc_info=True)

    async def flush(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
