"""docs/protocol.md accounts for every GA Realtime event of the installed ``openai`` SDK, and says what the
edge's code does: the client events it parses, the server events it can send, its platform events."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

from switchboard_edge.client_events import SUPPORTED
from switchboard_edge.protocol import KNOWN_UNSUPPORTED

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


EDGE = DOC.parents[1] / "services" / "edge" / "switchboard_edge"


def edge_strings() -> set[str]:
    """Every string constant in the edge's code: the event types it can send are among them."""
    found: set[str] = set()
    for path in EDGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def test_client_event_statuses_match_what_the_edge_parses() -> None:
    rows = table_rows("Client events (GA)")
    served = {name for name, status in rows.items() if status != "no"}
    assert served == set(SUPPORTED), "docs/protocol.md and client_events.SUPPORTED disagree"
    assert {name for name, status in rows.items() if status == "no"} <= KNOWN_UNSUPPORTED


def test_server_event_statuses_match_what_the_edge_sends() -> None:
    rows = table_rows("Server events (GA)")
    sent = edge_strings() & set(event_types(RealtimeServerEvent))
    documented = {name for name, status in rows.items() if status != "no"}
    assert sorted(sent - documented) == [], "the edge sends these, docs/protocol.md says it does not"
    assert sorted(documented - sent) == [], "docs/protocol.md says the edge sends these; no code does"


def test_platform_events_are_the_documented_ones() -> None:
    section = DOC.read_text().split("**Platform events**", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(switchboard\.[a-z_.]+)`", section, flags=re.M))
    assert documented == {s for s in edge_strings() if re.fullmatch(r"switchboard\.[a-z_]+", s)}
