"""A side effect that counts its executions, keyed by the platform's idempotency key, in the test's own
witness database (``EFFECTS_DB``, a path the test chooses), which the test reads to count them."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from switchboard.agents import ToolContext, ToolRegistry

registry = ToolRegistry()


@registry.tool(side_effect=True)
def record_effect(label: str, ctx: ToolContext) -> dict[str, Any]:
    """Record one effect."""
    path = Path(os.environ["EFFECTS_DB"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=10) as db:
        db.execute("CREATE TABLE IF NOT EXISTS executions (key TEXT, pid INTEGER)")
        db.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, label TEXT)")
        db.execute("INSERT INTO executions VALUES (?, ?)", (ctx.idempotency_key, os.getpid()))
        db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (ctx.idempotency_key, label))
        runs = db.execute("SELECT COUNT(*) FROM executions WHERE key = ?", (ctx.idempotency_key,)).fetchone()[0]
        effects = db.execute("SELECT COUNT(*) FROM effects").fetchone()[0]
    if runs == 1:  # the first run lingers after its effect: the window a crash test kills into
        time.sleep(float(os.environ.get("EFFECTS_LINGER_S", "0")))
    return {"effects": effects, "executions": runs}
