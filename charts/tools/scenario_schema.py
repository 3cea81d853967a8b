"""Keep the scenario part of charts/switchboard/values.schema.json equal to the scenario's own schema.

The chart's ``scenario.config`` is a scenario YAML as a map; its JSON Schema is the one pydantic
derives from :class:`switchboard.agents.ScenarioConfig` (``additionalProperties: false`` on every
model), stored under ``$defs`` with a ``scenario.`` prefix. ``make chart-schema`` rewrites it;
tests/unit/test_chart.py fails when it is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from switchboard.agents import ScenarioConfig

SCHEMA_PATH = Path(__file__).parents[1] / "switchboard" / "values.schema.json"
PREFIX = "scenario."


def scenario_defs() -> dict[str, Any]:
    """ScenarioConfig's JSON Schema as ``$defs`` entries, every ``$ref`` pointing at the prefixed names."""
    schema = ScenarioConfig.model_json_schema()
    defs = schema.pop("$defs", {})
    defs["ScenarioConfig"] = schema
    text = json.dumps(defs).replace('"#/$defs/', f'"#/$defs/{PREFIX}')
    return {f"{PREFIX}{name}": value for name, value in json.loads(text).items()}


def synced(values_schema: dict[str, Any]) -> dict[str, Any]:
    """``values_schema`` with its ``scenario.*`` definitions replaced by the current ones."""
    defs = {k: v for k, v in values_schema.get("$defs", {}).items() if not k.startswith(PREFIX)}
    return {**values_schema, "$defs": {**defs, **scenario_defs()}}


def main() -> int:
    current = json.loads(SCHEMA_PATH.read_text())
    SCHEMA_PATH.write_text(json.dumps(synced(current), indent=2) + "\n")
    print(f"wrote {SCHEMA_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
