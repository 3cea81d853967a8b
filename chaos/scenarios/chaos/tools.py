"""The chaos scenario's side effect: one row per idempotency key, labelled with what the caller asked.

The rows go to a witness database on the harness's disk (``CHAOS_EFFECTS_DB``), not to the platform's
store: the harness counts effects with an instrument that the faults it injects (NATS nodes killed,
agents frozen) cannot touch, and every process of a chaos run is on this one machine.

``effects`` has one row per idempotency key (``INSERT OR IGNORE``), so a takeover that re-runs a call
with the same key cannot double it; ``executions`` has one row per run. The chaos harness counts
``effects`` rows per *label*: a second row for the same label means the effect happened twice under
two different keys, which is a duplicated side effect whatever the ledger thought.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from switchboard.agents import ToolContext, ToolRegistry
from switchboard.testing.chaos.effects import EFFECTS_DB_ENV, open_witness

registry = ToolRegistry()


@registry.tool(side_effect=True)
def record_effect(label: str, ctx: ToolContext) -> dict[str, Any]:
    """Record one effect for what the caller asked (the label)."""
    db = open_witness(Path(os.environ[EFFECTS_DB_ENV]))
    try:
        with db:
            now = time.time()
            db.execute("INSERT INTO executions VALUES (?, ?, ?, ?, ?)", (ctx.idempotency_key, label, ctx.agent,
                                                                         os.getpid(), now))  # fmt: skip
            db.execute(
                "INSERT OR IGNORE INTO effects VALUES (?, ?, ?, ?)", (ctx.idempotency_key, label, ctx.agent, now)
            )
    finally:
        db.close()
    return {"label": label}
