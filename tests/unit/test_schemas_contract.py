"""The v1 wire contract: checked-in JSON Schemas, the compatibility checker, and wire round trips."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from switchboard.bus import headers as h
from switchboard.bus.rpc import message_headers, version_error
from switchboard.schemas import (
    EXPORTED_MODELS,
    SCHEMA_VERSION,
    CallerIdentity,
    ErrorCode,
    ErrorReply,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    TurnDelta,
    TurnRequest,
    TurnResult,
    turn_reply_adapter,
)
from switchboard.schemas.export import breaking_changes, current_schemas, export_command

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "v1"


def checked_in() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.json"))}


@pytest.fixture
def old() -> dict[str, dict[str, Any]]:
    return checked_in()


# --- (a) + (b): checked-in schemas are current and compatible -------------------------------------


def test_checked_in_schema_files_match_exported_models() -> None:
    files = checked_in()
    current = current_schemas()
    assert set(files) == set(current), "schemas/v1 has missing or stale files; run 'make schemas'"
    for name, schema in current.items():
        assert files[name] == schema, f"schemas/v1/{name}.json is out of date; run 'make schemas'"


def test_checked_in_schema_files_are_formatted_like_the_exporter() -> None:
    for name, schema in current_schemas().items():
        text = (SCHEMA_DIR / f"{name}.json").read_text()
        assert text == json.dumps(schema, indent=2, sort_keys=True) + "\n", name


@pytest.mark.parametrize("name", sorted(current_schemas()))
def test_no_breaking_change_against_checked_in(name: str) -> None:
    assert breaking_changes(checked_in()[name], current_schemas()[name]) == []


def test_export_command_check_passes_on_up_to_date_folder(tmp_path: Path, capsys: Any) -> None:
    for p in SCHEMA_DIR.glob("*.json"):
        (tmp_path / p.name).write_text(p.read_text())
    assert export_command(tmp_path, check=True, allow_breaking=False) == 0


def test_export_command_check_fails_on_breaking_file(tmp_path: Path, capsys: Any) -> None:
    for p in SCHEMA_DIR.glob("*.json"):
        (tmp_path / p.name).write_text(p.read_text())
    delta = json.loads((tmp_path / "turn_delta.json").read_text())
    delta["properties"]["legacy"] = {"type": "string"}  # an old field the models no longer have
    (tmp_path / "turn_delta.json").write_text(json.dumps(delta))
    assert export_command(tmp_path, check=True, allow_breaking=False) == 1
    assert "BREAKING" in capsys.readouterr().out


def test_export_command_check_fails_on_missing_file(tmp_path: Path, capsys: Any) -> None:
    for p in SCHEMA_DIR.glob("*.json"):
        if p.name != "error.json":
            (tmp_path / p.name).write_text(p.read_text())
    assert export_command(tmp_path, check=True, allow_breaking=False) == 1
    assert not (tmp_path / "error.json").exists(), "check mode must not write files"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{\n  "properties": {\n', "not valid JSON (Expecting property name"),  # truncated
        (b"<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> theirs\n", "not valid JSON (Expecting value: line 1 column 1"),
        (b"\xff\x00\xff\x00", "not valid JSON ("),  # not text
        (b'["a", "list"]', "not the JSON Schema of a message"),
        (b'{"properties": {"text": "string"}}', "not the JSON Schema of a message"),
    ],
)
def test_the_command_over_a_corrupt_schema_file_says_which_in_one_line_and_writes_nothing(
    tmp_path: Path, content: bytes, says: str
) -> None:
    """It was a JSONDecodeError (or AttributeError) traceback."""
    for p in SCHEMA_DIR.glob("*.json"):
        if p.name != "error.json":  # one the command would write
            (tmp_path / p.name).write_text(p.read_text())
    corrupt = tmp_path / "control_record.json"  # compared after error.json would be written
    corrupt.write_bytes(content)
    run = subprocess.run(
        [sys.executable, "-m", "switchboard", "schemas", "--dir", str(tmp_path)], capture_output=True, timeout=60
    )
    stderr = run.stderr.decode()
    assert run.returncode == 2, stderr
    assert stderr.startswith(f"switchboard schemas: {corrupt}: {says}") and stderr.count("\n") == 1, stderr
    assert corrupt.read_bytes() == content and not (tmp_path / "error.json").exists()  # nothing written


# --- (c): the checker detects breaking changes -----------------------------------------------------


def _has(problems: list[str], *needles: str) -> bool:
    return any(all(n in p for n in needles) for p in problems)


def test_removed_property_is_breaking(old: dict[str, dict[str, Any]]) -> None:
    base = old["turn_delta"]
    new = copy.deepcopy(base)
    del new["properties"]["text"]
    new["required"].remove("text")
    problems = breaking_changes(base, new)
    assert _has(problems, "<root>.text", "field removed")


def test_removed_property_in_nested_definition_is_breaking(old: dict[str, dict[str, Any]]) -> None:
    base = old["turn_request"]
    new = copy.deepcopy(base)
    del new["$defs"]["MessageItem"]["properties"]["agent"]
    assert _has(breaking_changes(base, new), "MessageItem.agent", "field removed")


def test_changed_property_type_is_breaking(old: dict[str, dict[str, Any]]) -> None:
    base = old["turn_delta"]
    new = copy.deepcopy(base)
    new["properties"]["seq"]["type"] = "string"
    assert _has(breaking_changes(base, new), "<root>.seq", "type changed")


def test_changed_nested_property_type_is_breaking(old: dict[str, dict[str, Any]]) -> None:
    base = old["turn_request"]
    new = copy.deepcopy(base)
    new["$defs"]["CallerIdentity"]["properties"]["authenticated"]["type"] = "string"
    assert _has(breaking_changes(base, new), "CallerIdentity.authenticated", "type changed")


def test_nullable_becoming_non_nullable_is_breaking(old: dict[str, dict[str, Any]]) -> None:
    base = old["turn_result"]
    new = copy.deepcopy(base)
    new["properties"]["replica"] = {"type": "string", "title": "Replica"}
    assert _has(breaking_changes(base, new), "<root>.replica", "type changed")


def test_newly_required_field_is_breaking(old: dict[str, dict[str, Any]]) -> None:
    base = old["turn_delta"]
    new = copy.deepcopy(base)
    new["properties"]["priority"] = {"type": "integer", "title": "Priority"}
    new["required"].append("priority")
    assert _has(breaking_changes(base, new), "newly required", "priority")


def test_no_longer_required_field_is_breaking(old: dict[str, dict[str, Any]]) -> None:
    base = old["turn_delta"]
    new = copy.deepcopy(base)
    new["required"].remove("turn_id")
    problems = breaking_changes(base, new)
    assert _has(problems, "no longer required", "turn_id")


@pytest.mark.parametrize(
    ("name", "enum_def", "value"),
    [("handoff_decision", "HandoffOutcome", "ping_pong"), ("error", "ErrorCode", "busy")],
)
def test_removed_enum_value_is_breaking(old: dict[str, dict[str, Any]], name: str, enum_def: str, value: str) -> None:
    base = old[name]
    new = copy.deepcopy(base)
    new["$defs"][enum_def]["enum"].remove(value)
    assert _has(breaking_changes(base, new), enum_def, "enum values removed", value)


def test_removed_definition_is_breaking(old: dict[str, dict[str, Any]]) -> None:
    base = old["turn_request"]
    new = copy.deepcopy(base)
    del new["$defs"]["FunctionCallOutputItem"]
    assert _has(breaking_changes(base, new), "FunctionCallOutputItem", "definition removed")


def test_changed_type_string_is_breaking(old: dict[str, dict[str, Any]]) -> None:
    base = old["turn_delta"]
    new = copy.deepcopy(base)
    new["properties"]["type"]["const"] = "switchboard.v2.turn_delta"
    new["properties"]["type"]["default"] = "switchboard.v2.turn_delta"
    assert _has(breaking_changes(base, new), "<root>.type")


def test_added_optional_property_is_compatible(old: dict[str, dict[str, Any]]) -> None:
    base = old["turn_delta"]
    new = copy.deepcopy(base)
    new["properties"]["agent"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    new["$defs"] = {"Extra": {"type": "object", "properties": {"x": {"type": "string"}}}}
    assert breaking_changes(base, new) == []


def test_added_enum_value_is_compatible(old: dict[str, dict[str, Any]]) -> None:
    base = old["handoff_decision"]
    new = copy.deepcopy(base)
    new["$defs"]["HandoffOutcome"]["enum"].append("transferred_to_human")
    assert breaking_changes(base, new) == []


def test_changed_prose_is_compatible(old: dict[str, dict[str, Any]]) -> None:
    base = old["turn_delta"]
    new = copy.deepcopy(base)
    new["description"] = "reworded"
    new["properties"]["seq"]["title"] = "Sequence"
    new["properties"]["seq"]["description"] = "0-based"
    assert breaking_changes(base, new) == []


def test_removed_inline_enum_value_is_breaking(old: dict[str, dict[str, Any]]) -> None:
    base = old["turn_result"]
    new = copy.deepcopy(base)
    assert {"answer", "handoff"} <= set(base["properties"]["outcome"]["enum"])
    new["properties"]["outcome"]["enum"] = base["properties"]["outcome"]["enum"][:-1]
    assert breaking_changes(base, new) != []


# --- (d): type strings -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", EXPORTED_MODELS, ids=lambda m: m.__name__)
def test_exported_type_defaults_are_namespaced(model: Any) -> None:
    default = model.model_fields["type"].default
    assert isinstance(default, str) and default.startswith("switchboard.v1.")


def test_exported_type_strings_are_unique() -> None:
    types = [m.model_fields["type"].default for m in EXPORTED_MODELS]
    assert len(types) == len(set(types))


# --- (e): round trips and forward compatibility ----------------------------------------------------


def _mixed_request() -> TurnRequest:
    return TurnRequest(
        session_id="sess_1",
        turn_id="turn_1",
        agent="returns",
        history=[
            MessageItem(id="item_1", role="user", text="refund A1001"),
            FunctionCallItem(
                id="item_2",
                call_id="call_1",
                name="lookup_order",
                arguments='{"order_id": "A1001"}',
                agent="returns",
            ),
            FunctionCallOutputItem(id="item_3", call_id="call_1", output='{"eligible": true}', agent="returns"),
            MessageItem(id="item_4", role="assistant", text="Shall I?", agent="returns"),
        ],
        context={"order_id": "A1001", "n": 2},
        caller=CallerIdentity(authenticated=True, customer_id="C001", verified_by="auth"),
        handoff_depth=2,
        handoff_reason="wants a refund",
        handoff_from="triage",
    )


def test_turn_request_round_trip_with_mixed_history() -> None:
    req = _mixed_request()
    raw = req.to_bytes()
    back = TurnRequest.model_validate_json(raw)
    assert back == req
    assert [type(i) for i in back.history] == [
        MessageItem,
        FunctionCallItem,
        FunctionCallOutputItem,
        MessageItem,
    ]


def test_to_bytes_omits_none_fields() -> None:
    data = json.loads(TurnRequest(session_id="s", turn_id="t", agent="a", history=[]).to_bytes())
    assert "handoff_reason" not in data and "handoff_from" not in data
    assert data["type"] == "switchboard.v1.turn_request"


def test_unknown_fields_are_ignored() -> None:
    data = json.loads(_mixed_request().to_bytes())
    data["priority"] = "high"  # a field a newer 1.x producer added
    data["history"][0]["emotion"] = "calm"
    data["caller"]["tier"] = "gold"
    back = TurnRequest.model_validate(data)
    assert back == _mixed_request()
    assert not hasattr(back, "priority")


@pytest.mark.parametrize(
    ("message", "cls"),
    [
        (TurnDelta(turn_id="t", seq=0, text="Hi "), TurnDelta),
        (TurnResult(turn_id="t", agent="triage", outcome="answer", text="Hi there"), TurnResult),
        (ErrorReply(code=ErrorCode.BUSY, message="saturated", retryable=True), ErrorReply),
    ],
)
def test_turn_reply_adapter_routes_by_type(message: Any, cls: type) -> None:
    parsed = turn_reply_adapter.validate_json(message.to_bytes())
    assert type(parsed) is cls
    assert parsed == message


def test_turn_reply_adapter_rejects_unknown_type() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        turn_reply_adapter.validate_json(b'{"type": "switchboard.v1.nope", "turn_id": "t"}')


def test_wire_models_are_frozen() -> None:
    from pydantic import ValidationError

    delta = TurnDelta(turn_id="t", seq=0, text="x")
    with pytest.raises(ValidationError):
        delta.text = "y"  # type: ignore[misc]


# --- (f): version header -------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{h.SCHEMA: "2.0"}, {}, None, {h.SCHEMA: "0.9"}])
def test_version_error_for_unsupported_or_missing(headers: dict[str, str] | None) -> None:
    err = version_error(headers)
    assert isinstance(err, ErrorReply)
    assert err.code == ErrorCode.UNSUPPORTED_VERSION
    assert err.supported_versions == [SCHEMA_VERSION]
    assert err.retryable is False


@pytest.mark.parametrize("version", ["1.0", "1.7"])
def test_version_error_none_for_same_major(version: str) -> None:
    assert version_error({h.SCHEMA: version}) is None


def test_message_headers_carry_version_session_and_deadline() -> None:
    out = message_headers("sess_1", deadline=1700000000.5)
    assert out == {h.SCHEMA: SCHEMA_VERSION, h.SESSION: "sess_1", h.DEADLINE: "1700000000500"}
    assert version_error(out) is None
    assert message_headers() == {h.SCHEMA: SCHEMA_VERSION}


def test_history_models_serialize_each_item_once_and_read_back_equal() -> None:
    import gc
    import time

    from switchboard.schemas import (
        ConsultRequest,
        FunctionCallItem,
        FunctionCallOutputItem,
        MessageItem,
        SessionState,
        TurnRequest,
        conversation,
    )

    history = [
        MessageItem(id="i1", role="user", text='say "hi" \u00e9'),
        FunctionCallItem(id="i2", call_id="c1", name="lookup", arguments='{"order": "A1"}', agent="returns"),
        FunctionCallOutputItem(id="i3", call_id="c1", output='{"ok": true}', agent="returns"),
        MessageItem(id="i4", role="assistant", text="done", agent="returns"),
    ]
    now = time.time()
    models = [
        SessionState(session_id="s", scenario="retail", active_agent="returns", history=history,
                     context={"order": "A1"}, created_at=now, updated_at=now),
        TurnRequest(session_id="s", turn_id="t", agent="returns", history=history, handoff_from="triage"),
        ConsultRequest(session_id="s", consult_id="c", agent="front", supervisor="expert", history=history, note="n"),
    ]  # fmt: skip
    for model in models:
        data = model.to_bytes()
        assert json.loads(data) == json.loads(model.model_dump_json(exclude_none=True))
        assert type(model).model_validate_json(data) == model
    first = conversation.item_json(history[0])
    assert conversation.item_json(history[0]) is first  # cached: serialized once per item object
    changed = history[0].model_copy(update={"text": "changed"})
    assert json.loads(conversation.item_json(changed))["text"] == "changed"  # a new object, its own JSON
    cached = len(conversation._item_json)
    del changed
    gc.collect()
    assert len(conversation._item_json) == cached - 1  # the entry goes with its item


def test_a_turn_request_has_nothing_that_only_validation_would_run() -> None:
    """The conductor builds each agent request with ``model_construct`` from parts it has validated (the
    history, the caller, the client's tools): a validator added to ``TurnRequest`` would be skipped there.
    Add one only together with validating the request in ``Conductor._hops``."""
    decorators = TurnRequest.__pydantic_decorators__
    assert not decorators.field_validators and not decorators.model_validators
    constrained = {
        name: field.metadata for name, field in TurnRequest.model_fields.items() if field.metadata and name != "history"
    }
    assert constrained == {}
