"""What `switchboard ... --help` tells a user: each option says what it does and where its default comes from."""

from __future__ import annotations

import pytest

from switchboard.capacity import Costs
from switchboard.cli import main
from switchboard.rollout.gate import GatePolicy
from switchboard.security.api_keys import KeyLimits
from switchboard.settings import Settings


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words


def test_keys_create_help_says_what_each_limit_is_and_which_edge_setting_it_overrides(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(capsys, "keys", "create")
    for name, field in KeyLimits.model_fields.items():
        assert field.description, f"KeyLimits.{name} has no description for --help"
        option = f"--{name.replace('_', '-')}"
        described = text.split(f"{option} {name.upper()} ", 1)[1]  # its line under options, not the usage
        assert described.startswith(" ".join(field.description.split())), option
        setting = described.split("Default: the edge's ", 1)[1].split()[0]
        assert setting.removeprefix("SWITCHBOARD_").lower() in Settings.model_fields, (option, setting)


def test_chat_help_names_its_default_url_and_key(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "chat")
    assert "(default: ws://127.0.0.1:8080/v1)" in text
    assert "default SWITCHBOARD_API_KEY" in text


def test_capacity_help_says_what_each_measured_cost_is(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "capacity")
    for name, field in Costs.model_fields.items():
        if name == "source":
            continue
        assert field.description, f"Costs.{name} has no description for --help"
        described = text.split(f"--{name.replace('_', '-')} {name.upper()} ", 1)[1]
        assert described.startswith(" ".join(field.description.split())), name
        default = described.split("Default: the measurements' figure if they have one, else ", 1)[1]
        assert default.startswith(str(field.default)), name


def test_rollout_promote_help_says_what_each_gate_limit_is(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys, "rollout", "promote")
    for name, field in GatePolicy.model_fields.items():
        assert field.description, f"GatePolicy.{name} has no description for --help"
        described = text.split(f"--{name.replace('_', '-')} {name.upper()} ", 1)[1]
        assert described.startswith(" ".join(field.description.split())), name
        assert f"(default: {field.default})" in described.split(" --", 1)[0], name
