"""docs/protocol.md accounts for every GA Realtime event of the installed ``openai`` SDK."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def event_types(union: Any) -> list[str]:
    members = typing.get_args(typing.get_args(union)[0])
    return [typing.get_args(m.model_fields["type"].annotation)[0] for m in members]


def table_rows(heading: str) -> dict[str, str]:
    """``event type -> status`` from the table under ``## heading``."""
    section = DOC.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and "`" in cells[0]:
            for name in re.findall(r"`([a-z_.]+)`", cells[0]):
                rows[name] = cells[1]
    return rows


@pytest.mark.parametrize(("heading", "union"), [("Client events (GA)", RealtimeClientEvent),
                                                ("Server events (GA)", RealtimeServerEvent)])  # fmt: skip
def test_every_ga_event_has_a_status(heading: str, union: Any) -> None:
    rows = table_rows(heading)
    missing = [t for t in event_types(union) if t not in rows]
    assert missing == [], f"{DOC.name} does not say whether these are supported: {missing}"
    assert set(rows.values()) <= {"yes", "no", "partly", "yes, for client items"}
