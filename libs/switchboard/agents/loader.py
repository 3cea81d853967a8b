"""Load a scenario (YAML agents + Python tools) from a folder."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .config import CONSULT_TOOL, ScenarioConfig
from .tools import ToolRegistry


class ScenarioError(Exception):
    """A scenario cannot be loaded; the message says what to fix."""


@dataclass(frozen=True)
class Scenario:
    config: ScenarioConfig
    tools: ToolRegistry
    path: Path


def resolve_scenario_dir(name_or_path: str, scenarios_dir: Path) -> Path:
    """A bare name is looked up in ``scenarios_dir``; anything with a path separator is a path."""
    if "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml")):
        by_name = scenarios_dir / name_or_path
        if by_name.is_dir():
            return by_name
        known = sorted(p.name for p in scenarios_dir.iterdir() if p.is_dir()) if scenarios_dir.is_dir() else []
        raise ScenarioError(f"scenario {name_or_path!r} not found in {scenarios_dir} (known: {known})")
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate.parent
    if candidate.is_dir():
        return candidate
    raise ScenarioError(f"scenario path {name_or_path!r} does not exist")


def load_scenario(name_or_path: str, scenarios_dir: Path) -> Scenario:
    folder = resolve_scenario_dir(name_or_path, scenarios_dir)
    yaml_path = folder / "scenario.yaml"
    try:
        raw = yaml.safe_load(yaml_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"cannot read {yaml_path}: {exc}") from exc
    try:
        config = ScenarioConfig.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(f"invalid scenario {yaml_path}: {_first_error(exc, raw)}") from None
    registry = _load_tools(folder, config)
    for agent in config.agents:
        missing = [t for t in agent.tools if t != CONSULT_TOOL and registry.get(t) is None]
        if missing:
            raise ScenarioError(f"agent {agent.name!r} uses unknown tools {missing} (registered: {registry.names()})")
    return Scenario(config, registry, folder)


def _first_error(exc: ValidationError, raw: Any) -> str:
    """One line: where (the agent by name, then the field path) and what is wrong."""
    error = exc.errors()[0]
    loc = list(error["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "agents" and isinstance(loc[1], int):
        agents = raw.get("agents") if isinstance(raw, dict) else None
        name = agents[loc[1]].get("name") if isinstance(agents, list) and isinstance(agents[loc[1]], dict) else None
        where = f"agent {name or loc[1]!r}"
        loc = loc[2:]
    path = ".".join(str(p) for p in loc)
    where = ", ".join(p for p in (where, path) if p)
    message = str(error["msg"]).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


def _load_tools(folder: Path, config: ScenarioConfig) -> ToolRegistry:
    if not config.tools_module:
        return ToolRegistry()
    path = folder / config.tools_module
    if not path.is_file():
        raise ScenarioError(f"tools module {path} not found (set tools_module: null if the scenario has no tools)")
    module_name = f"switchboard_scenario_{config.name}_tools"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ScenarioError(f"cannot import tools module {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]  # a half-loaded module must not be reused
            raise ScenarioError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    registry = getattr(module, "registry", None)
    if not isinstance(registry, ToolRegistry):
        raise ScenarioError(f"{path} must define 'registry = ToolRegistry()'")
    return registry
