"""After a run: what the system stored, compared with what the callers were told."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ...bus import Bus
from ...schemas import MessageItem, TurnRecord
from ...state import AuditLog, SessionStore
from .workload import ChaosTurn


async def lost_turns(
    nats_urls: Sequence[str], sessions: Mapping[int, str | None], turns: Sequence[ChaosTurn]
) -> list[str]:
    """Turns the caller saw complete whose message or reply is not in the stored history.

    ``sessions`` maps a client's index to its session id. Also marks the turns whose reply is stored
    twice (``answered_twice``: the first ask was committed, then asked again).
    """
    out: list[str] = []
    async with Bus(list(nats_urls), name="chaos-check") as bus:
        store = await SessionStore.open(bus.js)
        for client, session_id in sessions.items():
            mine = [t for t in turns if t.client == client and t.outcome in ("completed", "fallback")]
            if not mine:
                continue
            history = await store.transcript(session_id) if session_id else []
            users = [n for n, item in enumerate(history) if isinstance(item, MessageItem) and item.role == "user"]
            for t in mine:
                pos = next((n for n in users if history[n].id == t.item_id), None)
                if pos is None:
                    out.append(f"{session_id}: user message {t.text!r} missing")
                    continue
                end = next((n for n in users if n > pos), len(history))
                said = [i.text for i in history[pos + 1 : end] if isinstance(i, MessageItem) and i.role == "assistant"]
                if t.reply not in said:
                    out.append(f"{session_id}: reply to {t.text!r} missing ({t.reply[:60]!r} not in {said})")
                t.answered_twice = t.asks > 1 and said.count(t.reply) > 1
    return out


async def platform_retries(nats_urls: Sequence[str], session_ids: Iterable[str | None]) -> int | None:
    """Turns whose edge record shows a retried agent or supervisor call (None if the audit is unreadable)."""
    try:
        async with Bus(list(nats_urls), name="chaos-audit") as bus:
            audit = AuditLog(bus.js)
            retried = 0
            for session_id in session_ids:
                if session_id is None:
                    continue
                records = await audit.read_timeline(session_id, timeout_s=5)
                retried += sum(isinstance(r, TurnRecord) and r.retries > 0 for r in records)
            return retried
    except Exception:  # noqa: BLE001 - the audit figure is informational
        return None
