"""Export the v1 JSON Schemas and detect changes that would break v1 consumers.

Compatible (minor) changes: new optional fields, new enum values. Breaking: a field removed or
retyped, a field newly required or no longer required, a type string changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeGuard

from ..errors import ConfigError
from . import EXPORTED_MODELS


def current_schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for model in EXPORTED_MODELS:
        schema = model.model_json_schema()
        name = schema["properties"]["type"]["default"].removeprefix("switchboard.v1.")
        out[name] = schema
    return out


def _signature(prop: dict[str, Any]) -> Any:
    """What a field's wire form is, ignoring prose (titles, descriptions, defaults)."""
    keep = (
        "type", "$ref", "const", "items", "anyOf", "oneOf", "additionalProperties", "discriminator",
        "pattern", "minLength", "maxLength", "minimum", "maximum",
    )  # fmt: skip
    return {k: _signature(v) if isinstance(v, dict) else v for k, v in prop.items() if k in keep}


def _objects(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    objs = {"<root>": schema}
    objs.update(schema.get("$defs", {}))
    return objs


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    new_objs = _objects(new)
    for name, old_obj in _objects(old).items():
        new_obj = new_objs.get(name)
        if new_obj is None:
            problems.append(f"{name}: definition removed")
            continue
        if "enum" in old_obj:
            missing = set(old_obj["enum"]) - set(new_obj.get("enum", []))
            if missing:
                problems.append(f"{name}: enum values removed {sorted(missing)}")
            continue
        old_props, new_props = old_obj.get("properties", {}), new_obj.get("properties", {})
        for field, prop in old_props.items():
            if field not in new_props:
                problems.append(f"{name}.{field}: field removed")
            elif set(prop.get("enum", [])) - set(new_props[field].get("enum", prop.get("enum", []))):
                problems.append(f"{name}.{field}: enum values removed")
            elif _signature(prop) != _signature(new_props[field]):
                problems.append(f"{name}.{field}: type changed")
            elif "default" in prop and prop["default"] != new_props[field].get("default") and field == "type":
                problems.append(f"{name}.type: type string changed")
        old_req, new_req = set(old_obj.get("required", [])), set(new_obj.get("required", []))
        if new_req - old_req:
            problems.append(f"{name}: newly required {sorted(new_req - old_req)}")
        if old_req - new_req:
            problems.append(f"{name}: no longer required {sorted(old_req - new_req)}")
    return problems


def export_command(folder: Path, *, check: bool, allow_breaking: bool) -> int:
    """Write (or with ``check``, verify) ``folder/<name>.json``; exit code for the CLI. Every file there is
    read before any is written: one that cannot be compared is a :class:`ConfigError` and nothing changes."""
    status = 0
    folder.mkdir(parents=True, exist_ok=True)
    current = current_schemas()
    paths = {name: folder / f"{name}.json" for name in current}
    before = {name: _read_schema(path) for name, path in paths.items() if path.exists()}
    for name, schema in current.items():
        path = paths[name]
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        if name in before:
            problems = breaking_changes(before[name], schema)
            if problems and not allow_breaking:
                print(f"{path}: BREAKING for v1 consumers:\n  " + "\n  ".join(problems))
                status = 1
                continue
            if path.read_text() == text:
                continue
        if check:
            print(f"{path}: out of date; run 'make schemas'")
            status = 1
        else:
            path.write_text(text)
            print(f"wrote {path}")
    return status


def _read_schema(path: Path) -> dict[str, Any]:
    """A schema file as exported before, or a one-line :class:`ConfigError` naming it and what is wrong
    (a merge left conflict markers in it, an editor truncated it, ...)."""
    restore = "restore it from version control to compare the models with it"
    try:
        schema = json.loads(path.read_bytes())
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not text
        raise ConfigError(f"{path}: not valid JSON ({exc}); {restore}") from None
    if not _comparable(schema):
        raise ConfigError(f"{path}: not the JSON Schema of a message (objects with properties); {restore}")
    return schema


def _comparable(schema: Any) -> TypeGuard[dict[str, Any]]:
    """Shaped as :func:`breaking_changes` reads it: objects (the root and its ``$defs``) whose properties
    are objects."""
    if not isinstance(schema, dict) or not isinstance(schema.get("$defs", {}), dict):
        return False
    objects = _objects(schema).values()
    if not all(isinstance(obj, dict) and isinstance(obj.get("properties", {}), dict) for obj in objects):
        return False
    return all(isinstance(prop, dict) for obj in objects for prop in obj.get("properties", {}).values())
