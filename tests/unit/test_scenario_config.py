"""ScenarioConfig validation and load_scenario: bad scenarios fail at load time with clear messages."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from switchboard.agents import OfflineRule, ScenarioConfig, ScenarioError, load_scenario


def config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "tiny",
        "entry_agent": "front",
        "fallback_agent": "front",
        "agents": [
            {"name": "front", "instructions": "Help."},
            {"name": "back", "instructions": "Help more."},
        ],
    }
    return base | overrides


def invalid(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        ScenarioConfig.model_validate(data)
    return str(info.value)


def test_minimal_config_is_valid() -> None:
    cfg = ScenarioConfig.model_validate(config())
    assert cfg.agent_names == ["front", "back"]
    assert cfg.agent("back") is not None and cfg.agent("nobody") is None


def test_duplicate_agent_names() -> None:
    msg = invalid(config(agents=[{"name": "front", "instructions": "a"}, {"name": "front", "instructions": "b"}]))
    assert "duplicate agent names: ['front']" in msg


@pytest.mark.parametrize("role", ["entry_agent", "fallback_agent", "auth_agent"])
def test_role_agent_missing(role: str) -> None:
    msg = invalid(config(**{role: "ghost"}))
    assert f"{role} 'ghost' is not an agent of this scenario" in msg
    assert "front" in msg and "back" in msg  # lists the agents that do exist


def test_handoff_to_unknown_agent() -> None:
    agents = [{"name": "front", "instructions": "a", "handoffs": [{"target": "shipping"}]}]
    msg = invalid(config(agents=agents))
    assert "agent 'front' hands off to unknown agent 'shipping'" in msg


def test_requires_auth_without_auth_agent() -> None:
    agents = [
        {"name": "front", "instructions": "a"},
        {"name": "vault", "instructions": "b", "requires_auth": True},
    ]
    msg = invalid(config(agents=agents))
    assert "requires_auth but the scenario names no auth_agent" in msg


def test_requires_auth_with_auth_agent_is_valid() -> None:
    agents = [
        {"name": "front", "instructions": "a"},
        {"name": "vault", "instructions": "b", "requires_auth": True},
    ]
    cfg = ScenarioConfig.model_validate(config(agents=agents, auth_agent="front"))
    assert cfg.auth_agent == "front"


@pytest.mark.parametrize("rule", [{"call": "t", "say": "hi"}, {"when_user_says": ["x"]}])
def test_offline_rule_needs_exactly_one_action(rule: dict[str, Any]) -> None:
    agents = [{"name": "front", "instructions": "a", "offline": {"rules": [rule]}}]
    assert "needs exactly one of 'call' or 'say'" in invalid(config(agents=agents))
    with pytest.raises(ValidationError):
        OfflineRule.model_validate(rule)


@pytest.mark.parametrize("name", ["front desk", "front.desk", "front>", "", "x" * 129, "bücher"])
def test_invalid_agent_name_characters(name: str) -> None:
    msg = invalid(config(entry_agent=name, fallback_agent=name, agents=[{"name": name, "instructions": "a"}]))
    assert "invalid agent name" in msg
    assert "letters, digits, '_' or '-'" in msg


@pytest.mark.parametrize("name", ["front_desk", "front-desk", "A1", "x" * 128])
def test_valid_agent_names(name: str) -> None:
    cfg = ScenarioConfig.model_validate(
        config(entry_agent=name, fallback_agent=name, agents=[{"name": name, "instructions": "a"}])
    )
    assert cfg.agent_names == [name]


def test_unknown_keys_are_rejected() -> None:
    agents = [{"name": "front", "instructions": "a", "handofs": []}]  # typo must not pass silently
    assert "handofs" in invalid(config(agents=agents))


def test_limits_are_bounded() -> None:
    invalid(config(max_handoff_depth=0))
    invalid(config(agents=[{"name": "front", "instructions": "a", "max_iterations": 0}]))
    invalid(config(agents=[{"name": "front", "instructions": "a", "max_iterations": 51}]))


# --- load_scenario ----------------------------------------------------------------------------------


@pytest.fixture
def scenarios_dir(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "scenarios"
    root.mkdir()
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:  # forget tool modules loaded by this test
        if name.startswith("switchboard_scenario_"):
            del sys.modules[name]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def write_scenario(root: Path, folder: str, data: dict[str, Any], tools: str | None) -> Path:
    path = root / folder
    path.mkdir()
    (path / "scenario.yaml").write_text(yaml.safe_dump(data))
    if tools is not None:
        (path / "tools.py").write_text(tools)
    return path


TOOLS_OK = """
from switchboard.agents import ToolRegistry

registry = ToolRegistry()


@registry.tool()
def ping(text: str) -> str:
    \"\"\"Echo.\"\"\"
    return text
"""


def test_load_valid_scenario_from_folder(scenarios_dir: Path) -> None:
    name = unique("ok")
    data = config(name=name, agents=[{"name": "front", "instructions": "a", "tools": ["ping"]}])
    path = write_scenario(scenarios_dir, "ok", data, TOOLS_OK)
    scenario = load_scenario("ok", scenarios_dir)
    assert scenario.config.name == name
    assert scenario.tools.names() == ["ping"]
    assert scenario.path == path
    # by path too (folder or scenario.yaml)
    assert load_scenario(str(path), scenarios_dir).config.name == name
    assert load_scenario(str(path / "scenario.yaml"), scenarios_dir).config.name == name
    other = path / "my.yml"  # not read in place of the folder's scenario.yaml: refused, saying what a scenario is
    other.write_text("name: other\n")
    with pytest.raises(ScenarioError, match="a scenario is a folder holding scenario.yaml"):
        load_scenario(str(other), scenarios_dir)


def test_missing_scenario_lists_known_ones(scenarios_dir: Path) -> None:
    write_scenario(scenarios_dir, "alpha", config(name=unique("alpha"), tools_module=None), None)
    write_scenario(scenarios_dir, "beta", config(name=unique("beta"), tools_module=None), None)
    with pytest.raises(ScenarioError) as info:
        load_scenario("gamma", scenarios_dir)
    msg = str(info.value)
    assert "'gamma' not found" in msg
    assert "['alpha', 'beta']" in msg


def test_missing_scenario_in_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="there is no scenarios folder .*nowhere; .*SWITCHBOARD_SCENARIOS_DIR"):
        load_scenario("gamma", tmp_path / "nowhere")


def test_invalid_yaml_config_is_a_scenario_error(scenarios_dir: Path) -> None:
    data = config(name=unique("bad"), entry_agent="ghost", tools_module=None)
    write_scenario(scenarios_dir, "bad", data, None)
    with pytest.raises(ScenarioError, match="(?s)invalid scenario .*entry_agent 'ghost'"):
        load_scenario("bad", scenarios_dir)


def test_unparseable_yaml_is_a_scenario_error(scenarios_dir: Path) -> None:
    folder = scenarios_dir / "broken"
    folder.mkdir()
    (folder / "scenario.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario("broken", scenarios_dir)


def test_a_scenario_yaml_that_is_not_utf8_is_a_scenario_error(scenarios_dir: Path) -> None:
    folder = scenarios_dir / "latin1"
    folder.mkdir()
    (folder / "scenario.yaml").write_bytes("name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario("latin1", scenarios_dir)


def test_missing_yaml_is_a_scenario_error(scenarios_dir: Path) -> None:
    (scenarios_dir / "empty").mkdir()
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario("empty", scenarios_dir)


def test_tools_module_without_registry_is_rejected(scenarios_dir: Path) -> None:
    write_scenario(scenarios_dir, "noreg", config(name=unique("noreg")), "registry = {}\n")
    with pytest.raises(ScenarioError, match="must define 'registry = ToolRegistry\\(\\)'"):
        load_scenario("noreg", scenarios_dir)


def test_agent_using_unregistered_tool_is_rejected(scenarios_dir: Path) -> None:
    data = config(name=unique("unreg"), agents=[{"name": "front", "instructions": "a", "tools": ["ping", "pong"]}])
    write_scenario(scenarios_dir, "unreg", data, TOOLS_OK)
    with pytest.raises(ScenarioError) as info:
        load_scenario("unreg", scenarios_dir)
    msg = str(info.value)
    assert "agent 'front', tools: unknown tools ['pong']" in msg
    assert "registered: ['ping']" in msg


def test_no_tools_module_gives_empty_registry(scenarios_dir: Path) -> None:
    write_scenario(scenarios_dir, "notools", config(name=unique("notools"), tools_module=None), None)
    assert load_scenario("notools", scenarios_dir).tools.names() == []


def test_missing_tools_file_is_a_scenario_error(scenarios_dir: Path) -> None:
    write_scenario(scenarios_dir, "nofile", config(name=unique("nofile")), None)  # tools_module defaults to tools.py
    with pytest.raises(ScenarioError):
        load_scenario("nofile", scenarios_dir)


def test_failed_tools_import_is_not_cached(scenarios_dir: Path) -> None:
    write_scenario(scenarios_dir, "boom", config(name=unique("boom")), "raise RuntimeError('boom at import')\n")
    for _ in range(2):
        with pytest.raises(Exception) as info:
            load_scenario("boom", scenarios_dir)
        assert "boom at import" in str(info.value)
