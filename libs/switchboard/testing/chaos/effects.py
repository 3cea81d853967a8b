"""The side-effect witness: ``record_effect`` writes one row per effect (and per execution) to SQLite.

The harness counts effects there, in the tool's own store, so a double execution shows even when
the idempotency key changed between the two.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .workload import ChaosTurn

EFFECTS_DB = "chaos_effects.sqlite"
EFFECTS_DB_ENV = "CHAOS_EFFECTS_DB"
"""Where the chaos scenario's ``record_effect`` writes its witness database (set by the harness)."""


WITNESS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS executions (key TEXT, label TEXT, agent TEXT, pid INTEGER, ts REAL)",
    "CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, label TEXT, agent TEXT, ts REAL)",
)


def create_witness(path: Path) -> Path:
    """Create the witness database before any process writes to it.

    The harness does this once, before the stack starts: switching a new database to WAL and creating
    its tables from several agent processes at once can fail with ``database is locked`` however long
    the busy timeout (changing the journal mode does not wait on the busy handler).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=30) as db:
        db.execute("PRAGMA journal_mode=WAL")
        for statement in WITNESS_SCHEMA:
            db.execute(statement)
    return path


def open_witness(path: Path) -> sqlite3.Connection:
    """A connection to a witness database that ``create_witness`` made (for the scenario's tool)."""
    if not path.exists():
        raise FileNotFoundError(f"the effects witness database {path} was not created by the harness")
    return sqlite3.connect(path, timeout=30)


def effect_labels(data_dir: Path) -> set[str]:
    """Labels whose effect ``record_effect`` has written."""
    path = data_dir / EFFECTS_DB
    if not path.exists():
        return set()
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return {row[0] for row in db.execute("SELECT label FROM effects")}
    except sqlite3.Error:
        return set()


@dataclass(frozen=True)
class EffectTally:
    """What the witness database says about the effects of a run's turns."""

    duplicated: dict[str, int]
    """Effects per label, for the labels that took effect more than once."""
    recorded: int
    """Effect rows of this run's turns."""
    missing: int
    """Completed effect turns whose effect is not in the store (the caller was told it happened)."""
    orphan: int
    """Effects of turns the caller was told failed or fell back (informational)."""
    re_executions: int
    """Runs of the tool beyond one per idempotency key (ledger takeovers; the effect did not double)."""


def tally_effects(data_dir: Path, turns: Sequence[ChaosTurn]) -> EffectTally:
    """Count the effects of ``turns`` in the witness database under ``data_dir``."""
    path = data_dir / EFFECTS_DB
    rows: dict[str, int] = {}
    executions: dict[str, int] = {}
    if path.exists():
        with sqlite3.connect(path, timeout=30) as db:
            try:
                rows = dict(db.execute("SELECT label, COUNT(*) FROM effects GROUP BY label").fetchall())
                executions = dict(db.execute("SELECT key, COUNT(*) FROM executions GROUP BY key").fetchall())
            except sqlite3.OperationalError:
                pass
    ours = {t.text: t for t in turns}
    mine = {label: n for label, n in rows.items() if label in ours}
    return EffectTally(
        duplicated={k: n for k, n in mine.items() if n > 1},
        recorded=sum(mine.values()),
        missing=sum(1 for t in turns if t.effect and t.outcome == "completed" and t.text not in mine),
        orphan=sum(1 for label in mine if ours[label].outcome != "completed"),
        re_executions=sum(n - 1 for n in executions.values() if n > 1),
    )
