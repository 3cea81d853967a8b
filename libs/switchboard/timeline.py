"""``switchboard trace SESSION``: what happened in one session, from the durable audit stream."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from nats.js.errors import NotFoundError

from .bus import Bus
from .bus.connection import without_login
from .bus.subjects import AUDIT_STREAM
from .errors import SwitchboardError
from .schemas import HandoffDecision, TurnRecord
from .state.audit import AuditLog, AuditRecord

CONNECT_TIMEOUT_S = 10.0
"""How long a command waits for NATS before it says it cannot reach it."""


class NoAuditStream(SwitchboardError):
    """The NATS servers hold no audit stream: no Switchboard stack has used them (or another one is meant)."""


async def read(servers: list[str], session_id: str, *, seed_file: Path | None = None) -> list[AuditRecord]:
    """``seed_file``: the admin NKey, where the bus requires one (else the login in the URLs, or none)."""
    bus = Bus(servers, name="switchboard-trace", seed_file=seed_file)
    await bus.connect_within(CONNECT_TIMEOUT_S)
    async with bus:
        try:
            return await AuditLog(bus.js).read_timeline(session_id)
        except NotFoundError:
            raise NoAuditStream(
                f"no audit stream {AUDIT_STREAM} on {without_login(servers)}: "
                "is this the NATS a Switchboard stack uses?"
            ) from None


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def rows(records: Sequence[AuditRecord]) -> list[list[str]]:
    out = []
    for r in records:
        if isinstance(r, TurnRecord):
            extra = []
            if r.consulted:
                extra.append(f"consult {r.consult_outcome} {r.consult_ms or 0:.0f}ms")
            if r.retries:
                extra.append(f"{r.retries} retries")
            if r.error:
                extra.append(f"error: {r.error}")
            out.append([
                _clock(r.ts), "turn", " > ".join(r.agents) or r.agent, r.status, f"{r.latency_ms:.1f}ms",
                "; ".join(extra), r.trace_id or "",
            ])  # fmt: skip
        elif isinstance(r, HandoffDecision):
            latency = f"{r.latency_ms:.1f}ms" if r.latency_ms is not None else ""
            requested = "" if r.requested_target == r.final_target else f" (asked {r.requested_target})"
            detail = "; ".join(x for x in (r.reason, r.detail) if x)
            out.append([
                _clock(r.ts), f"handoff #{r.depth}", f"{r.source} -> {r.final_target}{requested}", r.outcome.value,
                latency, detail, r.trace_id or "",
            ])  # fmt: skip
    return out


def render(session_id: str, records: Sequence[AuditRecord]) -> str:
    """The records as a table (the command says itself when there are none)."""
    header = ["time", "what", "agents", "outcome", "latency", "detail", "trace id"]
    table = [header, *rows(records)]
    widths = [min(max(len(row[i]) for row in table), 60) for i in range(len(header))]
    lines = [f"session {session_id}: {len(records)} records"]
    for n, row in enumerate(table):
        lines.append("  ".join(cell[:60].ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def as_json(records: Sequence[AuditRecord]) -> str:
    return json.dumps([r.model_dump(mode="json") for r in records], indent=2)
