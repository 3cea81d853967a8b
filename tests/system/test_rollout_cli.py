"""``switchboard rollout`` against a real nats-server and real agent processes, and against a cluster
through the official ``kubernetes`` client talking to a scripted Kubernetes API server.

Bad input (an unknown agent, a weight outside 0-100, promoting without a canary, a canary whose agent
configuration does not load) gets a one-line error, exit status 1, and changes nothing."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchboard.bus import Bus
from switchboard.local.stack import Stack
from switchboard.rollout import RolloutStore
from switchboard.schemas import Rollout
from switchboard.testing import ScriptedKubeAPI

from .rollouts import rollout_cli
from .stacks import ROOT, make_stack

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """NATS, an edge, and one canary replica of triage (no stable agents: the CLI does not need them)."""
    with make_stack(tmp_path_factory.mktemp("rollout-cli"), agents=[]) as stack:
        stack.start_agent("triage", track="canary", wait=True)
        yield stack


async def rollouts(stack: Stack) -> dict[str, Rollout]:
    async with Bus(stack.nats_urls, name="check") as bus:
        return await (await RolloutStore.open(bus.js)).all()


async def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(rollout_cli, stack, *args)


async def refused(stack: Stack, *args: str) -> str:
    """Run a command that must fail; check it changed nothing and return its one-line error."""
    before = await rollouts(stack)
    done = await cli(stack, *args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"switchboard rollout {args[0]}: error: "), done.stderr
    assert await rollouts(stack) == before
    return lines[0]


def broken_scenario(tmp: Path) -> Path:
    """The retail scenario with triage asking for a tool that does not exist: it does not load."""
    folder = tmp / "retail-broken"
    shutil.copytree(ROOT / "scenarios" / "retail", folder)
    data = yaml.safe_load((folder / "scenario.yaml").read_text())
    data["agents"][0]["tools"] = ["no_such_tool"]
    (folder / "scenario.yaml").write_text(yaml.safe_dump(data))
    return folder


async def test_bad_input_is_refused_and_changes_nothing(stack: Stack, tmp_path: Path) -> None:
    assert "unknown agent 'nobody'" in await refused(stack, "set-weight", "nobody", "10")
    assert "unknown agent 'nobody'" in await refused(stack, "abort", "nobody")
    assert "outside 0-100" in await refused(stack, "set-weight", "triage", "101")
    assert "outside 0-100" in await refused(stack, "set-weight", "triage", "-1")
    # the gate's options are named as typed (they were reported as SWITCHBOARD_MIN_TURNS)
    assert "--min-turns: Input should be greater than or equal to 1" in await refused(
        stack, "promote", "triage", "--min-turns", "0"
    )
    assert "has no canary running" in await refused(stack, "promote", "triage")
    assert "has no canary running" in await refused(stack, "abort", "triage")
    # the canary's configuration does not load: checked from its scenario, or no canary replica ever answers
    error = await refused(stack, "set-weight", "triage", "10", "--canary-scenario", str(broken_scenario(tmp_path)))
    assert "configuration of 'triage' does not load" in error and "no_such_tool" in error
    assert "no canary replica of 'auth' answers" in await refused(stack, "set-weight", "auth", "10")
    missing = str(tmp_path / "no-kubeconfig")
    assert f"--kube: no usable kubeconfig ({missing})" in await refused(
        stack, "status", "--kube", "--kubeconfig", missing
    )


async def test_a_canary_process_whose_configuration_does_not_load_never_serves(stack: Stack, tmp_path: Path) -> None:
    env = {"SWITCHBOARD_SCENARIO": str(broken_scenario(tmp_path))}
    proc = stack.start_agent("billing", track="canary", env=env)
    assert await asyncio.to_thread(proc.popen.wait, 30) != 0
    assert "no_such_tool" in "\n".join(proc.lines)
    assert "no canary replica of 'billing' answers" in await refused(stack, "set-weight", "billing", "10")


async def test_kube_without_the_kubernetes_client_is_refused_in_one_line(stack: Stack, tmp_path: Path) -> None:
    """The service image leaves the client out (the ``kube`` extra): ``--kube`` says how to get it."""
    shadow = tmp_path / "no-kube" / "kubernetes"  # first on the path: importing kubernetes fails as if absent
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'kubernetes'\", name='kubernetes')\n"
    )
    before = await rollouts(stack)
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "switchboard", "rollout", "set-weight", "triage", "10", "--kube"],
        env=stack.env() | {"PYTHONPATH": str(shadow.parent)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.strip() == (
        "switchboard rollout set-weight: error: --kube needs the Kubernetes client: "
        "pip install 'switchboard[kube]' (nothing was changed)"
    )
    assert await rollouts(stack) == before


def chart_deployments() -> dict[str, dict[str, Any]]:
    """The Deployments the Helm chart renders for triage with a canary (image tag 1.1, scaled to 0)."""
    import helm_python

    helm_python.disable_logging()
    agents: list[dict[str, Any]] = [{"name": a} for a in ("auth", "returns", "billing", "generalist")]
    agents.append(
        {"name": "triage", "replicas": 3, "canary": {"enabled": True, "image": {"tag": "1.1"}, "replicas": 0}}
    )
    values = {"nats": {"url": "nats://nats:4222"}, "image": {"tag": "1.0"}, "agents": agents}
    out = helm_python.Chart.load(ROOT / "charts" / "switchboard").render(values, name="switchboard", namespace="voice")
    docs = [d for path, text in out.items() if path.endswith("components.yaml") for d in yaml.safe_load_all(text) if d]
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[tuple[ScriptedKubeAPI, list[str]]]:
    async with ScriptedKubeAPI(namespace="voice") as api:
        rendered = chart_deployments()
        api.add_deployment(rendered["switchboard-triage"])
        api.add_deployment(rendered["switchboard-triage-canary"])
        flags = ["--kube", "--kubeconfig", str(api.kubeconfig(tmp_path / "kubeconfig")), "-n", "voice"]
        yield api, flags


async def test_kubernetes_canary_that_never_becomes_ready_is_scaled_back(
    stack: Stack, kube: tuple[ScriptedKubeAPI, list[str]]
) -> None:
    api, flags = kube
    api.never_ready.add("switchboard-triage-canary")
    error = await refused(stack, "set-weight", "triage", "10", *flags, "--timeout", "2")
    assert "does not become ready" in error and "0/1 ready" in error
    assert api.replicas("switchboard-triage-canary") == 0
    scales = [body for method, path, body in api.requests if method == "PATCH" and path.endswith("/scale")]
    assert scales == [{"spec": {"replicas": 1}}, {"spec": {"replicas": 0}}]


async def test_kubernetes_set_weight_abort_and_promote(stack: Stack, kube: tuple[ScriptedKubeAPI, list[str]]) -> None:
    api, flags = kube
    done = await cli(stack, "set-weight", "triage", "20", "--replicas", "2", *flags)
    assert done.returncode == 0, done.stderr
    assert api.replicas("switchboard-triage-canary") == 2
    assert (await rollouts(stack))["triage"].weight == 20
    status = await cli(stack, "status", "triage", *flags)
    assert "switchboard-triage-canary: 2/2 ready" in status.stdout and "image switchboard:1.1" in status.stdout

    done = await cli(stack, "abort", "triage", *flags)
    assert done.returncode == 0, done.stderr
    assert api.replicas("switchboard-triage-canary") == 0
    assert (await rollouts(stack))["triage"].state == "aborted"

    assert (await cli(stack, "set-weight", "triage", "20", *flags)).returncode == 0
    assert (await rollouts(stack))["triage"].generation == 2
    done = await cli(stack, "promote", "triage", "--force", *flags)
    assert done.returncode == 0, done.stderr
    stable = api.deployments["switchboard-triage"]
    (container,) = stable["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "switchboard:1.1"  # the canary's pod spec, on the stable track
    assert {"name": "SWITCHBOARD_TRACK", "value": "stable"} in container["env"]
    assert stable["spec"]["selector"]["matchLabels"]["switchboard.dev/track"] == "stable"
    assert stable["spec"]["replicas"] == 3 and stable["metadata"]["generation"] == 2
    assert api.replicas("switchboard-triage-canary") == 0
    assert (await rollouts(stack))["triage"].state == "finished"  # one track again
