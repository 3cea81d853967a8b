"""Contract: each server event's TypedDict (``switchboard_edge.server_events``) against the official
``openai.types.realtime`` model of the same ``type`` — the same fields, the same required ones, compatible
types — and every event type the edge's code names has its TypedDict. No stack needed: mypy holds every
call site to these types; this test holds the types to the SDK (the system contract test checks the wire)."""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import BaseModel

from switchboard_edge import server_events
from switchboard_edge.protocol import encode_event, new_event_id
from switchboard_edge.server_events import ServerEvent

EDGE = Path(server_events.__file__).parent
PLATFORM = re.compile(r"switchboard\.[a-z_]+")


def type_of(event: Any) -> str:
    """The ``type`` literal of a TypedDict or an SDK model."""
    hint = get_type_hints(event)["type"] if is_typeddict(event) else event.model_fields["type"].annotation
    return str(get_args(hint)[0])


OFFICIAL: dict[str, type[BaseModel]] = {type_of(m): m for m in get_args(get_args(RealtimeServerEvent)[0])}
TYPED: dict[str, Any] = {type_of(t): t for t in get_args(ServerEvent)}
GA = sorted(t for t in TYPED if not PLATFORM.fullmatch(t))


def members(hint: Any) -> list[Any]:
    origin = get_origin(hint)
    if origin is Annotated:
        return members(get_args(hint)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(hint) for m in members(arg)]
    return [hint]


def accepts(official: Any, ours: Any) -> bool:
    """Whether every value our type allows is one the official annotation allows (where checkable:
    ``Any`` and ``dict[str, Any]`` items, responses and sessions are left to the system contract test)."""
    return all(any(_accepts(o, v) for o in members(official)) for v in members(ours))


def _accepts(official: Any, ours: Any) -> bool:
    if ours is Any:
        return True
    if get_origin(ours) is Literal:
        if get_origin(official) is Literal:
            return set(get_args(ours)) <= set(get_args(official))
        return isinstance(official, type) and all(isinstance(v, official) for v in get_args(ours))
    if ours in (str, int, float, bool, type(None)):
        return official is ours or (official is float and ours is int)
    if is_typeddict(ours):
        return isinstance(official, type) and issubclass(official, BaseModel) and not mismatches(ours, official)
    if get_origin(ours) is dict:
        return get_origin(official) is dict or (isinstance(official, type) and issubclass(official, BaseModel))
    if get_origin(ours) is list:
        return get_origin(official) is list and accepts(get_args(official)[0], get_args(ours)[0])
    return False


def mismatches(typed: Any, model: type[BaseModel], *, exact: bool = False) -> list[str]:
    """How ``typed`` departs from ``model``: fields it adds (or, ``exact``, lacks), required-ness, types.
    A nested object may leave out optional fields; an event must declare every field of the model."""
    hints = get_type_hints(typed)
    required = set(typed.__required_keys__)
    official = model.model_fields
    found = [f"undeclared field {k!r}" for k in hints if k not in official]
    if exact:
        found += [f"missing field {k!r}" for k in official if k not in hints]
        found += [f"{k!r} is {'required' if k in required else 'optional'} here, not in the SDK"
                  for k in hints if k in official and (k in required) != official[k].is_required()]  # fmt: skip
    else:
        found += [f"required field {k!r} is optional here" for k, f in official.items()
                  if f.is_required() and k not in required]  # fmt: skip
    found += [f"{k!r}: {hints[k]} does not fit {official[k].annotation}"
              for k in hints if k in official and not accepts(official[k].annotation, hints[k])]  # fmt: skip
    return found


@pytest.mark.parametrize("kind", sorted(TYPED))
def test_each_typed_event_is_an_official_event_or_a_platform_one(kind: str) -> None:
    assert kind in OFFICIAL or PLATFORM.fullmatch(kind), (
        f"{TYPED[kind].__name__} has type {kind!r}: not a GA server event of openai.types.realtime, nor switchboard.*"
    )
    assert "event_id" in TYPED[kind].__required_keys__


@pytest.mark.parametrize("kind", GA)
def test_fields_match_the_official_model(kind: str) -> None:
    assert kind in OFFICIAL, f"the openai SDK knows no server event {kind!r}"
    assert mismatches(TYPED[kind], OFFICIAL[kind], exact=True) == []


def edge_strings() -> set[str]:
    """Every string constant in the edge's code outside ``server_events.py``: the event types it sends are
    among them (each call site names its event's ``type``)."""
    found: set[str] = set()
    for path in EDGE.rglob("*.py"):
        if path.name != "server_events.py":
            found |= {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
                      and isinstance(n.value, str)}  # fmt: skip
    return found


def test_every_event_type_the_edge_names_has_its_typed_dict() -> None:
    named = {s for s in edge_strings() if s in OFFICIAL or PLATFORM.fullmatch(s)}
    assert sorted(named - set(TYPED)) == [], "the edge sends these without a TypedDict in server_events.py"
    assert sorted(set(TYPED) - named) == [], "server_events.py types these; no edge code sends them"


def test_every_event_typed_dict_is_in_the_union() -> None:
    events = {v for v in vars(server_events).values() if is_typeddict(v) and "event_id" in v.__required_keys__}
    assert events == set(get_args(ServerEvent))


def test_a_typed_event_is_a_plain_dict_at_runtime() -> None:
    event = server_events.ResponseOutputTextDelta(
        type="response.output_text.delta", event_id=new_event_id(), response_id="resp_1", output_index=0,
        item_id="item_1", content_index=0, delta="hi",
    )  # fmt: skip
    assert type(event) is dict
    assert encode_event(event).startswith(b'{"type":"response.output_text.delta","event_id":"event_')
