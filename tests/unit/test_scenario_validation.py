"""A broken scenario fails at load with one line naming the agent, the handoff and the field.

Each case writes a scenario to a temporary folder and loads it the way every process does; the CLI
case runs ``switchboard validate`` and an agent process on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchboard.agents import ScenarioError, load_scenario


def _scenario(**front: Any) -> dict[str, Any]:
    return {
        "name": "broken",
        "entry_agent": "front",
        "fallback_agent": "back",
        "tools_module": None,
        "agents": [
            {"name": "front", "instructions": "Help.", "handoffs": [{"target": "back"}]} | front,
            {"name": "back", "instructions": "Help more."},
        ],
    }


def _contract(**fields: Any) -> dict[str, Any]:
    return _scenario(handoffs=[{"target": "back", "contract": fields}])


def _write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "scenario.yaml").write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return folder


def _load_error(tmp_path: Path, data: dict[str, Any] | str) -> ScenarioError:
    folder = _write(tmp_path, data)
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(folder), tmp_path)
    assert "\n" not in str(info.value), str(info.value)
    return info.value


@pytest.mark.parametrize(
    ("data", "agent", "handoff", "field", "says"),
    [
        pytest.param(
            _contract(order_id={"pattern": "[A-Z"}), "front", "back", "contract.order_id.pattern",
            "invalid regex '[A-Z': unclosed character class", id="unclosed-regex",
        ),
        pytest.param(  # valid for Python's re, refused by the engine contracts are checked with at run time
            _contract(order_id={"pattern": "(?=A)A\\d+"}), "front", "back", "contract.order_id.pattern",
            "look-around", id="look-around-regex",
        ),
        pytest.param(
            _contract(amount={"type": "money"}), "front", "back", "contract.amount.type", "'string'", id="field-type",
        ),
        pytest.param(
            _scenario(max_iterations=0), "front", None, "max_iterations", "greater than or equal to 1",
            id="agent-field",
        ),
        pytest.param(
            _scenario() | {"offline_slots": {"order_id": "(A\\d+"}}, None, None, "offline_slots",
            "slot 'order_id': invalid regex", id="slot-regex",
        ),
    ],
)  # fmt: skip
def test_field_errors_name_the_agent_the_handoff_and_the_field(
    tmp_path: Path, data: dict[str, Any], agent: str | None, handoff: str | None, field: str, says: str
) -> None:
    err = _load_error(tmp_path, data)
    assert (err.agent, err.handoff, err.field) == (agent, handoff, field)
    assert says in err.message
    where = ", ".join(
        [*([f"agent {agent!r}"] if agent else []), *([f"handoff to {handoff!r}"] if handoff else []), field]
    )
    assert str(err).startswith(f"invalid scenario {tmp_path / 'broken' / 'scenario.yaml'}: {where}: ")


def test_unknown_handoff_target_and_unknown_tool(tmp_path: Path) -> None:
    err = _load_error(tmp_path, _scenario(handoffs=[{"target": "ghost"}]))
    assert "agent 'front' hands off to unknown agent 'ghost'" in str(err)
    folder = tmp_path / "tools"
    folder.mkdir()
    data = _scenario(tools=["lookup"]) | {"tools_module": "tools.py"}
    (folder / "scenario.yaml").write_text(yaml.safe_dump(data))
    (folder / "tools.py").write_text("from switchboard.agents import ToolRegistry\nregistry = ToolRegistry()\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(folder), tmp_path)
    assert (info.value.agent, info.value.field) == ("front", "tools")
    assert "unknown tools ['lookup']" in str(info.value) and "\n" not in str(info.value)


def test_an_offline_rule_transferring_to_no_agent_of_the_scenario_is_refused(tmp_path: Path) -> None:
    """It loaded, and the handoff failed only once a caller said the rule's words."""
    rules = [
        {"when_user_says": ["hi"], "say": "Hello."},
        {"when_user_says": ["refund"], "call": "transfer_to_refunds", "args": {"reason": "a refund"}},
    ]
    err = _load_error(tmp_path, _scenario(offline={"rules": rules}))
    assert str(err) == (
        f"invalid scenario {tmp_path / 'broken' / 'scenario.yaml'}: agent 'front' offline rule 2 calls "
        "transfer_to_refunds, but 'refunds' is not an agent of this scenario (agents: ['front', 'back'])"
    )


def test_an_offline_rule_may_transfer_to_an_agent_or_to_a_target_known_at_run_time(tmp_path: Path) -> None:
    rules = [
        {"when_user_says": ["more"], "call": "transfer_to_back", "args": {"reason": "more help"}},
        {"when_context": ["pending_agent"], "call": "transfer_to_{context.pending_agent}", "args": {"reason": "r"}},
    ]
    scenario = load_scenario(str(_write(tmp_path, _scenario(offline={"rules": rules}))), tmp_path)
    front = scenario.config.agent("front")
    assert front is not None
    assert [r.call for r in front.offline.rules] == ["transfer_to_back", "transfer_to_{context.pending_agent}"]


def test_unreadable_yaml_is_one_line(tmp_path: Path) -> None:
    err = _load_error(tmp_path, "name: [unclosed\nagents: {\n")
    assert "cannot read" in str(err)


def test_cli_prints_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    folder = _write(tmp_path, _contract(order_id={"pattern": "[A-Z"}))
    env = os.environ | {"SWITCHBOARD_NATS_URL": "nats://127.0.0.1:1"}  # never reached: the load fails first
    for args in (["validate", str(folder)], ["agent", "--name", "front"]):
        run = subprocess.run(
            [sys.executable, "-m", "switchboard", *args], capture_output=True, text=True, timeout=60,
            env=env | {"SWITCHBOARD_SCENARIO": str(folder)},
        )  # fmt: skip
        assert run.returncode == 2, (args, run.stderr)
        assert run.stdout == "" and run.stderr.count("\n") == 1, run.stderr
        assert "Traceback" not in run.stderr
        assert "agent 'front', handoff to 'back', contract.order_id.pattern: invalid regex '[A-Z'" in run.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "switchboard", "validate", "retail"], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert ok.returncode == 0 and "scenario 'retail' is valid: 5 agents" in ok.stdout, ok.stderr
