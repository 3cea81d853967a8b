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
from switchboard.guardrails.rules import GuardrailRule, Verdict, check


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
        pytest.param(  # read at the agent's start: a ValueError traceback there, after validate said valid
            _scenario(model={"provider": "offline", "settings": {"delay_s": "abc"}}), "front", None, "model.settings",
            "delay_s must be a number of seconds from 0 to 3600, got 'abc'", id="offline-delay",
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
    var = tmp_path / "var"  # run: refused before it starts anything (it printed its start and stop lines first)
    for args in (["validate", str(folder)], ["agent", "--name", "front"], ["run", "--var-dir", str(var)]):
        run = subprocess.run(
            [sys.executable, "-m", "switchboard", *args], capture_output=True, text=True, timeout=60,
            env=env | {"SWITCHBOARD_SCENARIO": str(folder)},
        )  # fmt: skip
        assert run.returncode == 2, (args, run.stderr)
        assert run.stdout == "" and run.stderr.count("\n") == 1, run.stderr
        assert "Traceback" not in run.stderr
        assert "agent 'front', handoff to 'back', contract.order_id.pattern: invalid regex '[A-Z'" in run.stderr
    assert not var.exists()
    ok = subprocess.run(
        [sys.executable, "-m", "switchboard", "validate", "retail"], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert ok.returncode == 0 and "scenario 'retail' is valid: 5 agents" in ok.stdout, ok.stderr


def _aliased_settings(depth: int) -> str:
    """A scenario whose front agent's ``model.settings`` holds 9 ** (depth + 1) strings through aliases."""
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, depth + 1)]
    settings = "".join(f"\n        {level}" for level in levels)
    return (
        "name: broken\nentry_agent: front\nfallback_agent: back\ntools_module: null\nagents:\n"
        f"  - name: front\n    instructions: Help.\n    model:\n      settings:{settings}\n"
        "  - name: back\n    instructions: Help more.\n"
    )


def test_a_yaml_bomb_is_refused_at_load(tmp_path: Path) -> None:
    """Aliases nine deep under ``model.settings`` (which keeps any value) validated, and the agent process then
    aborted at start, serialising 9**9 strings for its config fingerprint."""
    err = _load_error(tmp_path, _aliased_settings(8))
    assert "more than 200,000 values once its aliases are expanded" in str(err)
    (tmp_path / "shared").mkdir()
    shared = _write(tmp_path / "shared", _aliased_settings(2))  # anchors used a few times are fine
    assert load_scenario(str(shared), tmp_path).config.name == "broken"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        pytest.param(_scenario(handoffs=[{"target": "front"}]), "agent 'front' hands off to itself", id="self"),
        pytest.param(
            _scenario(handoffs=[{"target": "back"}, {"target": "back", "contract": {"x": {}}}]),
            "agent 'front' declares its handoff to 'back' twice", id="twice",
        ),
        pytest.param(
            _scenario() | {"agents": [{"name": "front", "instructions": "a", "handoffs": [{"target": "b" * 60}]},
                                      {"name": "b" * 60, "instructions": "b"}], "fallback_agent": "front"},
            "would be longer than the 64 characters model APIs accept", id="tool-name-too-long",
        ),
        pytest.param(
            _scenario() | {"agents": [
                {"name": "front", "instructions": "a", "tools": ["consult_supervisor"],
                 "consult": {"supervisor": "sup", "fallback": {"target": "sup"}}},
                {"name": "back", "instructions": "b"}, {"name": "sup", "role": "supervisor", "instructions": "c"}]},
            "consult fallback target 'sup' is a supervisor", id="consult-fallback-supervisor",
        ),
        pytest.param(  # pydantic raised from the agent's start, a traceback, once validate had said valid
            _contract(_order={"required": False}), "Fields must not use names with leading underscores",
            id="contract-private-field",
        ),
        pytest.param(  # dropped from the contract model: every handoff carrying it refused_contract
            _contract(model_config={"required": False}), "contract field names ['model_config'] cannot be used",
            id="contract-pydantic-field",
        ),
        pytest.param(  # the transfer tool's own argument, its schema overridden
            _contract(reason={"type": "integer"}), "contract field 'reason' is the transfer tool's own argument",
            id="contract-reason",
        ),
    ],
)  # fmt: skip
def test_handoffs_the_conductor_would_always_refuse_are_refused_at_load(
    tmp_path: Path, data: dict[str, Any], says: str
) -> None:
    """Each loaded, and failed only at a caller's turn: ping_pong (itself), the second contract never used and two
    tools of one name sent to the model (twice), the model API refusing the tool name, a caller sent to a
    supervisor (which serves no turns)."""
    assert says in str(_load_error(tmp_path, data))


_TOOLS = "from switchboard.agents import ToolRegistry\nregistry = ToolRegistry()\n"


@pytest.mark.parametrize(
    ("source", "says"),
    [
        pytest.param("@registry.tool()\ndef f(x: int, /) -> int:\n    return x\n", "x: int is positional-only",
                     id="positional-only"),  # every call: TypeError
        pytest.param("@registry.tool()\ndef f(*args, **kw):\n    return 1\n", "*args is variadic positional",
                     id="varargs"),  # the schema asked for 'args' and 'kw'
        pytest.param("@registry.tool()\ndef f(_x: int) -> int:\n    return _x\n", "parameter names ['_x']",
                     id="private-name"),  # dropped from the schema: never callable
        pytest.param("@registry.tool()\ndef f(model_config: int) -> int:\n    return 1\n",
                     "parameter names ['model_config']", id="pydantic-name"),
        pytest.param("@registry.tool(name='look up')\ndef f(x: int) -> int:\n    return x\n",
                     "tool name 'look up': use 1-64 letters", id="name-model-apis-refuse"),
        pytest.param("@registry.tool()\ndef transfer_to_back(reason: str) -> str:\n    return reason\n",
                     "tool name 'transfer_to_back' is the platform's", id="handoff-name"),  # taken for a handoff
        pytest.param("@registry.tool(name='consult_supervisor')\ndef f(note: str) -> str:\n    return note\n",
                     "tool name 'consult_supervisor' is the platform's", id="consult-name"),
        pytest.param("import sys\nsys.exit(3)\n", "failed: SystemExit: 3", id="sys-exit"),  # exited 3, not a word
    ],
)  # fmt: skip
def test_a_tool_the_model_could_not_call_is_refused_at_load(tmp_path: Path, source: str, says: str) -> None:
    folder = _write(tmp_path, _scenario() | {"tools_module": "tools.py"})
    (folder / "tools.py").write_text(_TOOLS + source)
    sys.modules.pop("switchboard_scenario_broken_tools", None)  # another test's tools of a scenario so named
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(folder), tmp_path)
    assert says in str(info.value) and "\n" not in str(info.value), str(info.value)
    sys.modules.pop("switchboard_scenario_broken_tools", None)


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        pytest.param({"say": "Hello {slot.name}"}, "say template 'Hello {slot.name}': unknown field {slot.name}",
                     id="namespace-typo"),  # KeyError: 'slot' at the turn
        pytest.param({"say": "Your order {slots.order_id"}, "expected '}' before end of string", id="unclosed"),
        pytest.param({"say": "Hi {user}"}, "unknown field {user}", id="whole-namespace"),  # said an object's repr
        pytest.param({"call": "transfer_to_back", "args": {"reason": "{0}"}}, "args.reason template '{0}'",
                     id="positional"),  # IndexError
        pytest.param({"say": "Hi {user.text!z}"}, "unsupported conversion", id="conversion"),
        pytest.param({"when_user_says": ["refund", ""], "say": "Refunds: one moment."},
                     "a blank word in ['refund', ''] would match every line", id="blank-keyword"),  # fired for any line
    ],
)  # fmt: skip
def test_an_offline_rule_that_cannot_work_is_refused_at_load(tmp_path: Path, rule: dict[str, Any], says: str) -> None:
    """Each loaded: a template the model cannot render failed the turn of the first caller line that reached the
    rule (KeyError, ValueError, ...), and a blank keyword made the rule fire for any line."""
    err = _load_error(tmp_path, _scenario(offline={"rules": [{"when_user_says": ["hi"], **rule}]}))
    assert err.agent == "front" and (err.field or "").startswith("offline.rules.rule #1")
    assert says in err.message


def test_a_key_given_twice_is_refused_and_a_merged_key_may_be_overridden(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys without a word: the agent's first ``handoffs`` was dropped and the
    scenario loaded without it."""
    text = (
        "name: broken\nentry_agent: front\nfallback_agent: back\ntools_module: null\nagents:\n"
        "  - name: front\n    instructions: Help.\n    handoffs: [{target: back}]\n    max_iterations: 3\n"
        "    handoffs: []\n"
        "  - {name: back, instructions: Help more.}\n"
    )
    err = _load_error(tmp_path, text)
    assert "found duplicate key 'handoffs' (the first would be ignored)" in str(err) and "line 10" in str(err)
    merged = text.replace("    handoffs: []\n", "").replace(
        "  - {name: back, instructions: Help more.}\n",
        "  - &back {name: back, instructions: Help more., max_iterations: 2}\n"
        "  - {<<: *back, name: other, max_iterations: 5}\n",
    )
    (tmp_path / "merged").mkdir()
    config = load_scenario(str(_write(tmp_path / "merged", merged)), tmp_path).config
    other = config.agent("other")
    assert other is not None and other.max_iterations == 5 and other.instructions == "Help more."


def test_one_example_under_two_intents_is_refused(tmp_path: Path) -> None:
    """Both examples score the same against any line, so the first intent declared won every tie: a caller saying
    that very line never reached the second intent, with nothing said at load."""
    intents = {"returns": ["I want my money back", "send it back"], "billing": ["check my balance", "Send  it BACK"]}
    err = _load_error(tmp_path, _scenario(offline={"intents": intents}))
    assert (err.agent, err.field) == ("front", "offline.intents")
    # (the YAML lists billing first)
    assert err.message == "intent 'returns': example 'send it back' is an example of intent 'billing' too"


def test_a_guardrail_pattern_matching_the_empty_string_is_refused_and_empty_matches_never_fire(tmp_path: Path) -> None:
    """A trailing '|' loaded, and the rule then matched between every two characters: every caller line and every
    answer came out as '[T]h[T]e[T]l[T]l[T]o' (redact), or was blocked (block)."""
    rules = [{"name": "threats", "pattern": "(?i)\\bbomb\\b|", "action": "block"}]
    err = _load_error(tmp_path, _scenario() | {"guardrails": {"rules": rules}})
    assert err.field == "guardrails.rules.rule #1.pattern"
    assert "matches the empty string, so it would match every text" in err.message
    boundary = GuardrailRule(name="t", pattern=r"\b")  # matches only empty strings: never fires
    assert check([boundary], "hello there") == Verdict("hello there")


def test_two_folders_of_one_scenario_name_each_get_their_own_tools(tmp_path: Path) -> None:
    """The tools module was cached by scenario name: a canary's copy loaded in a process that had loaded the stable
    one (``rollout set-weight --canary-scenario`` does) got the stable tools, and refused the canary's new tool as
    unknown."""
    name = f"twin_{os.getpid()}_{tmp_path.name}"
    folders = []
    for version, tools in (("stable", ["ping"]), ("canary", ["ping", "pong"])):
        folder = tmp_path / version
        folder.mkdir()
        data = _scenario(tools=tools) | {"name": name, "tools_module": "tools.py"}
        (folder / "scenario.yaml").write_text(yaml.safe_dump(data))
        source = "".join(f"@registry.tool()\ndef {t}() -> str:\n    return '{version}'\n" for t in tools)
        (folder / "tools.py").write_text(_TOOLS + source)
        folders.append(folder)
    try:
        stable = load_scenario(str(folders[0]), tmp_path)
        canary = load_scenario(str(folders[1]), tmp_path)
        assert (stable.tools.names(), canary.tools.names()) == (["ping"], ["ping", "pong"])
        assert load_scenario(str(folders[0]), tmp_path).tools is stable.tools  # the same folder: loaded once
    finally:
        for module in [m for m in sys.modules if m.startswith(f"switchboard_scenario_{name}_tools")]:
            del sys.modules[module]
