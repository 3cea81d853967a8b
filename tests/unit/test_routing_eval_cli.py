"""``switchboard routing-eval`` on labelled sets a user writes: a broken set is one line naming it, and the
sets' scenarios are found where every other command finds them (``SWITCHBOARD_SCENARIOS_DIR``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _eval(set_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchboard", "routing-eval", str(set_path), "--backend", "ngram"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=os.environ | (env or {}),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param(
            "scenario: retail\nagent: triage\ncases:\n  - {say: hi}\n", "cases.0.expect: Field required",
            id="missing-field",  # was "SWITCHBOARD_CASES_0_EXPECT: Field required": a variable that does not exist
        ),
        pytest.param(
            "scenario: retail\nagent: nobody\ncases:\n  - {say: hi, expect: answer}\n",
            "scenario 'retail' has no agent 'nobody'", id="unknown-agent",  # was a ValueError traceback
        ),
        pytest.param(
            "scenario: retail\nagent: triage\ncases: [\n", "cannot read it: while parsing", id="unreadable",
        ),  # was a YAML traceback
        pytest.param(
            "scenario: retail\nagent: triage\ncases:\n  - {say: hi, expect: answer}\n"
            "  - {say: refund, expect: retuns}\n",
            "line 2 ('refund') expects 'retuns', which no turn ends in", id="mistyped-label",
        ),  # was scored: a miss that lowered the reported accuracy, with nothing said
    ],
)  # fmt: skip
def test_a_broken_labelled_set_is_one_line_naming_it(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "set.yaml"
    path.write_text(text)
    run = _eval(path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith(f"switchboard routing-eval: labelled set {path}: "), run.stderr
    assert says in run.stderr and run.stderr.count("\n") == 1 and run.stdout == "", run.stderr


def test_the_sets_scenario_is_found_in_switchboard_scenarios_dir(tmp_path: Path) -> None:
    """It was looked up in ./scenarios whatever SWITCHBOARD_SCENARIOS_DIR said: "scenario 'mine' not found in
    scenarios", or, for a scenario named as a shipped one, the shipped one was scored instead."""
    path = tmp_path / "set.yaml"
    path.write_text("scenario: mine\nagent: desk\ncases:\n  - {say: I want a refund, expect: answer}\n")
    mine = tmp_path / "scenarios" / "mine"
    mine.mkdir(parents=True)
    (mine / "scenario.yaml").write_text(
        "name: mine\nentry_agent: desk\nfallback_agent: desk\ntools_module: null\n"
        "agents:\n  - {name: desk, instructions: Help., offline: {default: I can help.}}\n"
    )
    run = _eval(path, {"SWITCHBOARD_SCENARIOS_DIR": str(tmp_path / "scenarios")})
    assert run.returncode == 0, run.stderr
    assert "1 of 1 routed as labelled" in run.stdout, run.stdout
