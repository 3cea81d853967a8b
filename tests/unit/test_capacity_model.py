"""``switchboard capacity``: the model's arithmetic, the deployment guide's 10,000-call example run as
written, the speech cores of voice calls, figures read from a measurements file, and bad input refused
in one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from switchboard.capacity import Costs, Limits, Workload, costs_from_bench, plan

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deployment.md"
SHARES = {"triage": 45, "auth": 15, "returns": 20, "billing": 15, "generalist": 5}
MEASURED = Costs(edge_cpu_ms=4.5, edge_cpu_ms_per_handoff=2.6, agent_cpu_ms=1.45, nats_cpu_ms=1.1)


def capacity(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "switchboard", "capacity", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_ten_thousand_calls() -> None:
    p = plan(Workload(calls=10_000, shares=SHARES), MEASURED)
    assert (p.turns_per_s, p.hops_per_s) == (1250, 1375)  # a turn every 8 s, 0.1 handoffs per turn
    # edge: 1,250 x (4.5 + 0.1 x 2.6) ms = 5.95 cores, 10 one-core processes at 60 %, 10 for 1,000 sessions each
    assert p.edge["cores"] == 5.95 and p.edge["replicas_for_cpu"] == 10 and p.edge["replicas_for_sessions"] == 10
    assert p.edge["replicas"] == 11  # + one spare
    # triage: 45 % of 1,375 hops/s held 1 s each = 619 turns in flight; 256 slots at 60 % per replica -> 5 + 1
    assert p.agents["triage"] == {"hops_per_s": 618.8, "cores": 0.897, "inflight": 618.8, "replicas": 6}
    assert [a["replicas"] for a in p.agents.values()] == [6, 3, 3, 3, 2]
    # nats: 1,375 hops x 1.1 ms x 2 (R3) = 3.025 cores: the 3 nodes R3 needs are enough
    assert p.nats == {"nodes": 3, "cores": 3.025, "kv_writes_per_s": 2500, "audit_appends_per_s": 1375}


def test_voice_calls_add_the_speech_the_edges_run() -> None:
    voice = MEASURED.model_copy(update={"edge_voice_cores_per_call": 0.052})
    p = plan(Workload(calls=10_000, shares=SHARES), voice)
    assert p.edge["voice_cores"] == 520.0
    assert p.edge["replicas_for_cpu"] == 877  # (5.95 + 520) / 0.6
    assert plan(Workload(calls=10_000, shares=SHARES), MEASURED).edge["voice_cores"] == 0


def test_a_model_bound_agent_is_sized_by_slots_not_cpu() -> None:
    slow_model = plan(Workload(calls=10_000, model_latency_s=4.0, shares={"solo": 1}), MEASURED, Limits(spare=0))
    # 1,375 hops/s x 4 s = 5,500 turns in flight; 256 x 0.6 per replica -> 36
    assert slow_model.agents["solo"]["inflight"] == 5500 and slow_model.agents["solo"]["replicas"] == 36


def _guide_example() -> tuple[list[str], list[str]]:
    """The guide's 10,000-call command (after its ``--share`` list) and the output it shows."""
    text = GUIDE.read_text()
    match = re.search(r"```bash\n(switchboard capacity --share [^`]*?)```\n```\n(.*?)```", text, re.S)
    assert match, "docs/deployment.md: the 10,000-call capacity example is missing"
    command = match.group(1).replace("\\\n", " ").split()[2:]
    return command, match.group(2).strip().splitlines()


def test_the_guides_example_is_what_the_command_prints() -> None:
    command, shown = _guide_example()
    done = capacity(*command)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip().splitlines()[2:]  # after the workload and the costs' source
    memory = re.compile(r"\d+ MiB of session memory")  # edge KiB per session comes from `make bench`'s file
    assert [memory.sub("", line).strip() for line in printed] == [memory.sub("", line).strip() for line in shown]


def test_figures_come_from_the_measurements_file_and_missing_ones_are_named(tmp_path: Path) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"timestamp": "t0", "switchboard": {"plain_paced": {"cpu": {"per_turn_ms": {
        "edge": 2.0, "agent:triage": 0.5, "agent:auth": 0.7, "nats-server": "n/a"}}}}}))  # fmt: skip
    costs = costs_from_bench(bench)
    assert (costs.edge_cpu_ms, costs.agent_cpu_ms) == (2.0, 0.7)  # the costliest agent
    assert costs.nats_cpu_ms == Costs().nats_cpu_ms and "nats_cpu_ms" in costs.source
    done = capacity("--measurements", str(bench), "--calls", "100", "--share", "triage=1", "--json")
    assert json.loads(done.stdout)["costs"]["edge_cpu_ms"] == 2.0


def test_an_unknown_scenario_is_refused_not_sized_as_one_agent() -> None:
    done = capacity("--scenario", "nope")
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.startswith("switchboard capacity: scenario 'nope' not found"), done.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--agent-cpu-ms", "-1"], "--agent-cpu-ms: Input should be greater than 0"),
        (["--calls", "0"], "--calls: Input should be greater than or equal to 1"),
        (["--utilization", "1.5"], "--utilization: Input should be less than or equal to 1"),
        (["--nats-cores", "0"], "--nats-cores: Input should be greater than 0"),
        (["--share", "triage"], "--share 'triage': expected agent=weight with a weight >= 0"),
        (["--share", "triage=lots"], "--share 'triage=lots': expected agent=weight"),
        (["--edge-voice-cores-per-call", "-0.1"], "--edge-voice-cores-per-call: Input should be greater than"),
        (["--measurements", "/nonexistent.json"], "--measurements /nonexistent.json: no such file"),  # not defaults
        (["--measurements", "README.md"], "README.md: not a `make bench` result"),
        (["--measurements", "pyproject.toml", "--share", "triage=1"], "pyproject.toml: not a `make bench` result"),
        (["--share", "nobody=1"], "--share: the scenario has no agent nobody (its agents: triage, "),
    ],
)
def test_bad_input_is_one_line_naming_the_option(args: list[str], error: str) -> None:
    done = capacity(*args)
    assert done.returncode == 1 and not done.stdout, done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"switchboard capacity: error: {error}"), done.stderr
