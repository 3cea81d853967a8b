"""Load a scenario (YAML agents + Python tools) from a folder."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import SwitchboardError
from .config import CONSULT_TOOL, ScenarioConfig
from .tools import ToolRegistry


class ScenarioError(SwitchboardError):
    """A scenario cannot be loaded. ``str()`` is one line naming where (agent, handoff, field) and what."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        agent: str | None = None,
        handoff: str | None = None,
        field: str | None = None,
    ) -> None:
        self.message = " ".join(message.split())
        self.path = path
        self.agent = agent
        self.handoff = handoff
        self.field = field
        where = [f"agent {agent!r}"] if agent else []
        where += [f"handoff to {handoff!r}"] if handoff else []
        where += [field] if field else []
        parts = [f"invalid scenario {path}"] if path else []
        parts += [", ".join(where)] if where else []
        super().__init__(": ".join([*parts, self.message]))


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
        if not scenarios_dir.is_dir():
            raise ScenarioError(
                f"scenario {name_or_path!r}: there is no scenarios folder {scenarios_dir.resolve()}; run from the "
                "project's folder, set SWITCHBOARD_SCENARIOS_DIR, or give the scenario's path"
            )
        known = sorted(p.name for p in scenarios_dir.iterdir() if p.is_dir())
        raise ScenarioError(f"scenario {name_or_path!r} not found in {scenarios_dir} (known: {known})")
    candidate = Path(name_or_path)
    if candidate.is_file():
        if candidate.name != "scenario.yaml":  # its folder's scenario.yaml would be read, not this file
            raise ScenarioError(
                f"scenario path {name_or_path!r}: a scenario is a folder holding scenario.yaml (and its tools);"
                " give the folder or its scenario.yaml"
            )
        return candidate.parent
    if candidate.is_dir():
        return candidate
    raise ScenarioError(f"scenario path {name_or_path!r} does not exist")


def load_scenario(name_or_path: str, scenarios_dir: Path) -> Scenario:
    folder = resolve_scenario_dir(name_or_path, scenarios_dir)
    yaml_path = folder / "scenario.yaml"
    try:
        raw = yaml.load(yaml_path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"cannot read {yaml_path}: {exc}") from exc
    _check_expanded_size(raw, yaml_path)
    try:
        config = ScenarioConfig.model_validate(raw)
    except ValidationError as exc:
        raise _one_line(exc, raw, yaml_path) from exc
    registry = _load_tools(folder, config)
    for agent in config.agents:
        missing = [t for t in agent.tools if t != CONSULT_TOOL and registry.get(t) is None]
        if missing:
            raise ScenarioError(
                f"unknown tools {missing} (registered: {registry.names()})",
                path=yaml_path,
                agent=agent.name,
                field="tools",
            )
    return Scenario(config, registry, folder)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key: PyYAML keeps the last one without a word, so
    an agent's second ``handoffs:`` or ``offline:`` silently replaced the first. A key given after a merge
    (``<<: *defaults``) overrides the merged one, as YAML intends."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"found duplicate key {key!r} (the first would be ignored)", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


MAX_YAML_VALUES = 200_000
"""Values a scenario's YAML may hold once its aliases are expanded (the shipped ones hold ~1,000)."""


def _check_expanded_size(raw: Any, yaml_path: Path) -> None:
    """Refuse a document whose aliases expand beyond ``MAX_YAML_VALUES`` (a "billion laughs" bomb). The
    parser shares aliased nodes, so it loads at once; but a field that keeps any value (``model.settings``,
    a rule's ``args``) passed validation, and the agent's first serialisation of its config (its
    fingerprint) then needed gigabytes and aborted the process."""
    count = 0
    stack = [raw]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise ScenarioError(
                f"cannot read {yaml_path}: more than {MAX_YAML_VALUES:,} values once its aliases are expanded "
                "(a YAML bomb?)"
            )
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _one_line(exc: ValidationError, raw: Any, yaml_path: Path) -> ScenarioError:
    """The first validation error as one line naming the agent, the handoff and the field."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    agent = handoff = None
    fields: list[str] = []
    node: Any = raw
    loc = list(first["loc"])
    for i, part in enumerate(loc):
        parent = loc[i - 1] if i else None
        child = node[part] if _has(node, part) else None
        if parent == "agents" and isinstance(part, int):
            agent = str(child.get("name", f"#{part + 1}")) if isinstance(child, dict) else f"#{part + 1}"
        elif parent == "handoffs" and isinstance(part, int):
            handoff = str(child.get("target", f"#{part + 1}")) if isinstance(child, dict) else f"#{part + 1}"
        elif parent == "rules" and isinstance(part, int):
            fields.append(f"rule #{part + 1}")
        elif part not in ("agents", "handoffs") and not isinstance(part, int):
            fields.append(str(part))
        node = child
    message = str(first["msg"]).removeprefix("Value error, ")
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return ScenarioError(message, path=yaml_path, agent=agent, handoff=handoff, field=".".join(fields) or None)


def _has(node: Any, key: str | int) -> bool:
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)


def _load_tools(folder: Path, config: ScenarioConfig) -> ToolRegistry:
    if not config.tools_module:
        return ToolRegistry()
    path = folder / config.tools_module
    if not path.is_file():
        raise ScenarioError(f"tools module {path} not found (set tools_module: null if the scenario has no tools)")
    module_name = f"switchboard_scenario_{config.name}_tools"
    module = sys.modules.get(module_name)
    if module is not None and Path(getattr(module, "__file__", None) or "").resolve() != path.resolve():
        # another folder's scenario of this name was loaded here first (a canary's copy, checked by `rollout
        # set-weight` after the stable one): its tools were taken for these, an added tool was "unknown"
        module_name += "_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ScenarioError(f"cannot import tools module {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # sys.exit() in a tools module ended the process without a word
            del sys.modules[module_name]  # a half-loaded module must not be reused
            raise ScenarioError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    registry = getattr(module, "registry", None)
    if not isinstance(registry, ToolRegistry):
        raise ScenarioError(f"{path} must define 'registry = ToolRegistry()'")
    return registry
